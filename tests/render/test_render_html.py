"""HTML report: content, escaping, determinism, decimation, size and time on a one-hour run."""

from __future__ import annotations

import json
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runs import make_long_run, make_run

from genprof.analysis.findings import Finding
from genprof.errors import MissingDependencyError
from genprof.render import html as html_mod
from genprof.render.html import decimate_minmax, embed_json, render_html, report_data, write_html

XSS_TAG = "<script>document.title='PWNED'</script>"
XSS_IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"


def _blob(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="genprof-data">(.*?)</script>', page, re.S)
    assert m, "the page has no data blob"
    return json.loads(m.group(1))


def _without_scripts(page: str) -> str:
    return re.sub(r"<script\b.*?</script>", "", page, flags=re.S)


def xss_run():
    run = make_run(tags={"model": XSS_TAG, XSS_IMG: "key is hostile too"}, name="run " + XSS_TAG)
    run.spans[1].name = XSS_IMG
    run.events[0].attributes["note"] = "</script><!-- " + XSS_TAG
    run.series[0].source = XSS_TAG
    run.end.status = "exception"
    run.end.exception_type = "RuntimeError"
    run.end.message = XSS_IMG
    return run


def test_user_strings_are_escaped_in_html():
    # GIVEN a run whose name, tags, span names, event data and exception hold markup
    page = render_html(xss_run(), findings=[])
    # THEN outside of script elements no raw tag from the run survives
    body = _without_scripts(page)
    assert "<img" not in body
    assert "document.title='PWNED'</script>" not in page
    assert "&lt;script&gt;document.title=&#39;PWNED&#39;&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=" in body


def test_blob_cannot_close_its_script_element():
    page = render_html(xss_run(), findings=[])
    m = re.search(r'<script type="application/json" id="genprof-data">(.*?)</script>', page, re.S)
    assert m
    raw = m.group(1)
    assert "</" not in raw and "<!--" not in raw and "<" not in raw
    data = json.loads(raw)
    # the strings come back unchanged after JSON parsing
    assert data["run"]["tags"]["model"] == XSS_TAG
    assert any(e["attributes"].get("note", "").startswith("</script><!--") for e in data["events"])


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_embed_json_round_trips_any_string(s):
    text = embed_json({"s": s})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"s": s}


def test_output_is_deterministic():
    a = render_html(make_run(), findings=[])
    b = render_html(make_run(), findings=[])
    assert a == b
    keys = list(_blob(a))
    assert keys == sorted(keys)


def test_page_is_self_contained():
    page = render_html(make_run(), findings=[])
    # no external script, style sheet, image or frame (plotly.js itself names its CDN only for
    # map topologies, which the report never draws)
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", page)
    assert "https://" not in _without_scripts(page)
    assert "Plotly.newPlot" in page and "plotly.js (basic - minified)" in page  # plotly.js inlined
    # the basic partial bundle, not the 4.8 MB full one: a short run's page stays under 1.5 MB
    assert len(page.encode()) < 1_500_000


def test_header_cards_tables_and_sections():
    run = make_run(end_status="oom")
    page = render_html(run, findings=[Finding("r1", "Decode dominates memory", "warning", "decode peak 38 GiB",
                                              "VAE decodes all frames", "enable tiling", code="pipe.vae.enable_tiling()")])
    for text in ("wan-t2v-demo", "ran out of GPU memory", "torch.OutOfMemoryError", "CUDA out of memory",
                 "requested_bytes", "4.00 GiB", "NVIDIA H100 80GB HBM3", "torch 2.13.0", "Total time",
                 "Time per generation", "Peak allocated", "Peak reserved", "Peak RSS", "Energy", "Average power",
                 "Steps per second", 'id="phase-table"', "encode_prompt", "Decode dominates memory",
                 "pipe.vae.enable_tiling()", "Evidence", "checkpoint_loaded", "AMD EPYC"):
        assert text in page, text
    data = _blob(page)
    assert data["run"]["end"]["status"] == "oom"
    # one chart per panel source: spans and every series are in the blob
    assert {s["key"] for s in data["series"]} == {s.key for s in run.series}
    assert data["gantt"]["lanes"][:2] == ["generation", "phase"]


def test_missing_values_show_na_never_zero():
    run = make_run(with_gpu=False)
    page = render_html(run, findings=[])
    card = re.search(r'<div class="label">Peak allocated</div><div class="value">(.*?)</div>', page)
    assert card and card.group(1) == "n/a"
    energy = re.search(r'<div class="label">Energy</div><div class="value">(.*?)</div>', page)
    assert energy and energy.group(1) == "n/a"
    assert "No GPU was used." in page
    assert "no CUDA device visible" in page  # the reason is shown


def test_steps_marked_warmup_per_call():
    data = report_data(make_run(generations=3, steps=5), findings=[])
    steps = data["steps"]
    assert len(steps["n"]) == 15
    # the first step of each of the three calls is warm-up
    assert [i for i, w in enumerate(steps["warmup"]) if w] == [0, 5, 10]
    assert steps["host"][0] > 2 * steps["host"][1]


def test_blocks_chart_data_for_block_diffusion():
    data = report_data(make_run(with_blocks=True, steps=8), findings=[])
    assert len(data["blocks"]["n"]) == 4  # 2 generations x 2 blocks
    assert data["summary"]["blocks_per_s"] is not None


def test_rules_run_when_module_exists():
    data = _blob(render_html(make_run()))
    assert isinstance(data["findings"], list)


def test_comparison_section():
    pytest.importorskip("genprof.analysis.compare")
    from genprof.analysis.compare import compare

    a, b = make_run(), make_run(step_s=0.2, seed=3)
    page = render_html(b, findings=[], comparison=compare(a, b).to_dict())
    assert 'id="comparison"' in page and "Overall (before -&gt; after)" in page
    assert "generation/denoise" in page
    generic = render_html(b, findings=[], comparison={"rows": [{"figure": XSS_TAG, "x": 1}], "note": "hi"})
    assert "&lt;script&gt;" in _without_scripts(generic) and "note" in generic


def test_decimation_keeps_extremes_order_and_ends():
    t = [i * 0.1 for i in range(36000)]
    v = [((i * 7919) % 1000) / 10.0 for i in range(36000)]
    v[12345] = 1e6
    v[23456] = -1e6
    td, vd = decimate_minmax(t, v, 4000)
    assert len(vd) <= 4000
    assert td == sorted(td)
    assert max(vd) == 1e6 and min(vd) == -1e6
    assert td[0] == t[0] and td[-1] == t[-1]


@given(st.lists(st.floats(-1e9, 1e9), min_size=0, max_size=500), st.integers(4, 100))
@settings(max_examples=100, deadline=None)
def test_decimation_properties(values, max_points):
    t = list(range(len(values)))
    td, vd = decimate_minmax(t, values, max_points)
    if len(values) <= max_points:
        assert vd == values
    else:
        assert len(vd) <= max_points
        assert max(vd) == max(values) and min(vd) == min(values)
        assert td == sorted(set(td))


def test_missing_plotly_is_a_clear_error(monkeypatch):
    # GIVEN a build without the vendored basic bundle and without the plotly package
    html_mod._plotly_js.cache_clear()
    monkeypatch.setattr(html_mod, "PLOTLY_BASIC_BUNDLE", "no-such-bundle.js")
    monkeypatch.setitem(sys.modules, "plotly.offline", None)
    monkeypatch.setitem(sys.modules, "plotly", None)
    try:
        with pytest.raises(MissingDependencyError, match="plotly"):
            render_html(make_run(), findings=[])
    finally:
        html_mod._plotly_js.cache_clear()


def test_one_hour_run_renders_small(tmp_path):
    # GIVEN a one-hour run sampled at 10 Hz (36,000 points per series, 8 series, ~3,000 spans)
    run = make_long_run()
    assert len(run.series) == 8 and all(len(s.values) == 36000 for s in run.series)
    render_html(run, findings=[])  # warm the template and plotly.js caches
    # (its render time is measured in bench/bench_reports.py, not asserted here)
    p = write_html(run, tmp_path / "long.html", findings=[])
    size = p.stat().st_size
    assert size < 8 * 10**6, f"report is {size} bytes"


def test_block_loop_report_shows_video_cards():
    from block_loop import block_loop_run

    page = render_html(block_loop_run(generation=False), findings=[])
    for label in ("Output frames per second", "Real-time factor", "Time to first frame", "Deadline misses"):
        assert label in page
    assert f"{36 / 1.1:.2f} fps" in page


def test_block_loop_steps_mark_only_the_loop_warmup_and_carry_their_block():
    from block_loop import block_loop_run
    from genprof.model import Span

    # GIVEN a block loop of 4 blocks x 4 steps, the first step of block 0 the real outlier
    run = block_loop_run(generation=True)
    blocks = [s for s in run.spans if s.kind == "block"]
    nid = max(s.id for s in run.spans) + 1
    for b in blocks:
        for k in range(4):
            d = 0.3 if (b.index == 0 and k == 0) else 0.05
            run.spans.append(Span(id=nid, name="step", kind="step", start_s=b.start_s + 0.06 * k, duration_s=d,
                                  index=k, parent_id=b.id))
            nid += 1
    cols = html_mod.report_data(run, findings=[])["steps"]
    # THEN only the loop's first step is warm-up, and each step names its block and its index
    assert cols["warmup"] == [1] + [0] * 15
    assert cols["block"] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert cols["index"] == [0, 1, 2, 3] * 4
