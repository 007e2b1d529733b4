"""GIVEN a profiler asked for a diagnose window (keyword, config key or `genprof run --diagnose`)
WHEN a step loop runs THEN the run carries the window's diagnosis; a bad window fails at construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genprof import Profiler
from genprof.cli.main import main
from genprof.errors import ConfigError, UsageError

torch = pytest.importorskip("torch")


def _loop(prof: Profiler, n: int = 5) -> None:
    m = torch.nn.Linear(16, 16)
    x = torch.randn(4, 16)
    for _ in prof.steps(range(n)):
        m(x)


def test_keyword_opens_the_window_on_the_chosen_steps() -> None:
    with Profiler("d", diagnose="steps:2-3", handle_sigterm=False) as prof:
        _loop(prof)
    d = prof.run.metadata["diagnosis"]
    assert d["window"] == "steps:2-3" and d["status"] == "ok"


def test_a_window_can_start_at_step_zero_from_the_profilers_span_start_events() -> None:
    with Profiler("d", diagnose="steps:0-1", handle_sigterm=False) as prof:
        _loop(prof)
    d = prof.run.metadata["diagnosis"]
    assert d["status"] == "ok" and d["steps"] == [0, 1], d.get("status_reason")
    steps = {s.index: s for s in prof.run.spans if s.kind == "step"}
    w0 = d["step_windows"][0]
    assert w0["start_us"] == pytest.approx(steps[0].start_s * 1e6)  # the step's own start, not the previous end


def test_span_start_listeners_see_each_span_as_it_opens_and_others_do_not() -> None:
    seen: list[tuple[str, str, int | None]] = []
    default: list[str] = []
    with Profiler("d", handle_sigterm=False) as prof:
        prof.subscribe(lambda k, s: seen.append((k, s.name, s.index)), kinds=("span_start",))
        prof.subscribe(lambda k, p: default.append(k))
        with prof.phase("denoise"):
            for _ in prof.steps(range(3), phase=None):
                pass
    assert seen == [("span_start", "denoise", None), ("span_start", "step", 0), ("span_start", "step", 1),
                    ("span_start", "step", 2)]
    assert "span_start" not in default and "span_end" in default


def test_config_mapping_key_is_the_same_switch() -> None:
    with Profiler("d", config={"diagnose": True}, handle_sigterm=False) as prof:
        _loop(prof)
    assert prof.run.metadata["diagnosis"]["status"] == "ok"


def test_no_window_by_default() -> None:
    with Profiler("d", handle_sigterm=False) as prof:
        _loop(prof, 3)
    assert "diagnosis" not in prof.run.metadata


def test_a_bad_window_is_refused_before_anything_runs() -> None:
    with pytest.raises(UsageError, match="steps:"):
        Profiler("d", diagnose="frames:1-2")
    with pytest.raises(ConfigError, match="diagnose"):
        Profiler("d", diagnose=3)


def test_genprof_run_diagnose_writes_the_window_into_the_run_file(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(
        "import torch, genprof\n"
        "prof = genprof.current_profiler()\n"
        "m = torch.nn.Linear(16, 16)\n"
        "for _ in prof.steps(range(5)):\n"
        "    m(torch.randn(4, 16))\n"
    )
    out = tmp_path / "runs"
    assert main(["run", "--diagnose", "steps:1-2", "--out", str(out), str(script)]) == 0
    (run_file,) = out.glob("*.json")
    assert json.loads(run_file.read_text())["metadata"]["diagnosis"]["window"] == "steps:1-2"


def test_report_shows_the_why_section_and_merges_the_kernel_trace(tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    with Profiler("d", diagnose=True, handle_sigterm=False) as prof:
        _loop(prof)
    run_file = prof.run.save(tmp_path / "run.json")
    html, trace = tmp_path / "r.html", tmp_path / "r.trace.json"
    assert main(["report", str(run_file), "--html", str(html), "--trace", str(trace)]) == 0
    page = html.read_text()
    assert 'id="why"' in page and "Why: diagnose window" in page
    events = json.loads(trace.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {e.get("args", {}).get("name") for e in events if e.get("ph") == "M"}
    assert any(n and "diagnose window" in n for n in names)


def test_report_without_a_window_has_no_why_section(tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    with Profiler("d", handle_sigterm=False) as prof:
        _loop(prof, 3)
    run_file = prof.run.save(tmp_path / "run.json")
    html = tmp_path / "r.html"
    assert main(["report", str(run_file), "--html", str(html)]) == 0
    assert 'id="why"' not in html.read_text()
