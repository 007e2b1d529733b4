"""The HTML report in a real browser (headless Chromium): loads offline, no errors, charts drawn.

Skipped when Chromium is absent (install Debian's ``chromium`` package). The page writes its
state to ``#genprof-status`` (charts drawn, errors caught by ``window.onerror`` and
``console.error``); ``--dump-dom`` returns the DOM after the scripts ran.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from runs import make_run

from genprof.render.html import write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)"),
]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _status(dom: str) -> dict[str, str]:
    m = re.search(r'<div id="genprof-status"[^>]*>', dom)
    assert m, "no #genprof-status in the DOM (did the page load?)"
    return dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', m.group(0)))


def test_report_loads_without_errors_and_draws_charts(tmp_path):
    page = write_html(make_run(generations=3, steps=10), tmp_path / "report.html", findings=[])
    res = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    st = _status(res.stdout)
    assert st["data-state"] == "done"
    assert st["data-errors"] == "0", st.get("data-error-text")
    assert st["data-charts"] == "2"  # timeline and per-step chart
    assert "Uncaught" not in res.stderr
    # plotly drew SVG into both chart containers
    for cid in ("chart-timeline", "chart-steps"):
        block = res.stdout.split(f'id="{cid}"', 1)[1][:20000]
        assert "main-svg" in block, cid
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000


def test_hostile_strings_stay_text_in_the_browser(tmp_path):
    run = make_run(tags={"model": "<script>document.title='PWNED'</script>",
                         "x": "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"},
                   name="<script>document.title='PWNED'</script>")
    run.spans[1].name = "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">"
    run.events[0].attributes["note"] = "</script><script>document.title='PWNED'</script>"
    page = write_html(run, tmp_path / "xss.html", findings=[])
    res = _chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = res.stdout
    st = _status(dom)
    assert st["data-errors"] == "0", st.get("data-error-text")
    assert st["data-charts"] == "2"
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and title.group(1).startswith("genprof report: ")  # no injected script changed it
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)  # type: ignore[union-attr]
    # the tag is shown as text
    assert "model: &lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom


def test_long_run_renders_in_the_browser(tmp_path):
    from runs import make_long_run

    page = write_html(make_long_run(hours=0.25), tmp_path / "long.html", findings=[])
    res = _chromium(tmp_path, "--dump-dom", page.as_uri())
    st = _status(res.stdout)
    assert st["data-state"] == "done" and st["data-errors"] == "0", st.get("data-error-text")


def test_a_run_of_two_pipelines_draws_a_step_chart_per_pipeline(tmp_path):
    run = make_run(generations=4, steps=6, pipelines=(("WanPipeline", 0.5), ("StableDiffusionPipeline", 0.05)))
    page = write_html(run, tmp_path / "two.html", findings=[])
    res = _chromium(tmp_path, "--dump-dom", page.as_uri())
    st = _status(res.stdout)
    assert st["data-errors"] == "0", st.get("data-error-text")
    assert st["data-charts"] == "3"  # the timeline, then one step chart per pipeline
    steps = res.stdout.split('id="chart-steps"', 1)[1]
    assert "<h3>WanPipeline</h3>" in steps and "<h3>StableDiffusionPipeline</h3>" in steps
    for k in (0, 1):
        assert "main-svg" in steps.split(f'id="chart-steps-{k}"', 1)[1][:20000]
