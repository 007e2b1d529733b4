"""Each config key really changes behaviour (GPU keys checked against fakes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import FakeAllocator, FakeNvml, install_fake_cuda
from genprof.profiler import Profiler

BASE = {"handle_sigterm": False, "gpu_monitor_interval": 0.01, "cpu_monitor_interval": 0.01}


def _run(monkeypatch: pytest.MonkeyPatch, nv: FakeNvml | None = None, **cfg: object) -> Profiler:
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc, nv or FakeNvml())
    with Profiler("fx", **{**BASE, **cfg}) as prof:
        with prof.phase("p"):
            for _ in prof.steps(range(2)):
                alloc.set(10)
    return prof


@pytest.mark.parametrize(
    "key, series",
    [("monitor_gpu_utilization", {"utilization_pct"}),
     ("monitor_gpu_memory", {"memory_used_bytes", "allocated_bytes", "reserved_bytes"}),
     ("monitor_gpu_clocks", {"sm_clock_mhz", "clock_event_reasons"}),
     ("monitor_gpu_temperature", {"temperature_c"}),
     ("monitor_gpu_power", {"power_w"})],
)
def test_gpu_monitor_switches(monkeypatch: pytest.MonkeyPatch, key: str, series: set[str]) -> None:
    on = {s.name for s in _run(monkeypatch).run.series}
    off = {s.name for s in _run(monkeypatch, **{key: False}).run.series}
    assert series <= on
    assert not (series & off)
    assert off  # the other readings go on


def test_gpu_timing_memory_rss_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    prof = _run(monkeypatch)
    s = prof.run.spans[0]
    assert s.gpu_time_s is not None and s.peak_allocated_bytes is not None and s.rss_start_bytes is not None
    prof = _run(monkeypatch, gpu_timing=False, memory_tracking=False, track_rss=False)
    for s in prof.run.spans:
        assert s.gpu_time_s is None and s.peak_allocated_bytes is None and s.rss_start_bytes is None
    assert "gpu_timing: false" in prof.run.unavailable["gpu_time"]


def test_energy_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    def energies(prof: Profiler) -> dict[str, bool]:
        return {s.kind: s.energy_j is not None for s in prof.run.spans}

    assert energies(_run(monkeypatch)) == {"step": False, "phase": True}
    assert energies(_run(monkeypatch, energy_spans="all")) == {"step": True, "phase": True}
    assert energies(_run(monkeypatch, energy_spans="none")) == {"step": False, "phase": False}


def test_device_index_selects_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    prof = _run(monkeypatch, device_index=0)
    assert prof.run.gpus[0].index == 0 and prof.run.spans[0].device_index == 0


def test_session_tags_merge_with_tags() -> None:
    with Profiler("t", tags={"a": 1}, session_tags={"mode": "debug", "a": 0}, **BASE) as prof:
        pass
    assert prof.run.tags == {"mode": "debug", "a": 1}


def test_reports_and_console_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Profiler("rep", output_dir=str(tmp_path), generate_final_report=True, report_format="both",
                  console_summary=True, **BASE) as prof:
        with prof.phase("load"):
            pass
    names = sorted(p.suffix for p in tmp_path.iterdir())
    assert ".html" in names and names.count(".json") == 2  # run file + JSON report
    assert "load" in capsys.readouterr().err
    with Profiler("rep2", output_dir=str(tmp_path / "b"), generate_final_report=False, **BASE):
        pass
    assert [p.suffix for p in (tmp_path / "b").iterdir()] == [".json"]


def test_nvtx_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    pushed: list[str] = []
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc)
    from genprof.profiler import device as device_mod

    class FakeNvtx:
        def __init__(self, torch: object) -> None:
            pass

        def push(self, name: str) -> None:
            pushed.append(name)

        def pop(self) -> None:
            pushed.append("pop")

    monkeypatch.setattr(device_mod, "Nvtx", FakeNvtx)
    with Profiler("n", nvtx=True, **BASE) as prof:
        for _ in prof.steps(range(2)):
            pass
    assert pushed == ["denoise", "step 0", "pop", "step 1", "pop", "pop"]


def test_live_display_draws_progress(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from rich.console import Console

    from genprof.render.live import render_snapshot

    drawn: list[str] = []
    with Profiler("live", real_time_display=True, display_force=True, display_interval=0.05, **BASE) as prof:
        for i in prof.steps(range(5)):
            if i == 2:  # what the panel draws mid-loop, rendered here instead of waiting for a refresh
                buf = io.StringIO()
                Console(file=buf, width=100, color_system=None).print(render_snapshot(prof.live_snapshot()))
                drawn.append(buf.getvalue())
    err = capsys.readouterr().err
    assert "genprof: live" in err  # the panel was shown on stderr (first frame at start, last at stop)
    assert "denoise" in drawn[0] and "2/5" in drawn[0]  # two steps done when the third runs
    with Profiler("quiet", real_time_display=False, end_summary="none", **BASE) as prof:
        for _ in prof.steps(range(2)):
            pass
    assert capsys.readouterr().err == ""


def test_a_run_ends_with_a_short_summary_by_default_and_one_line_in_prod(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with Profiler("short", **BASE) as prof:
        for _ in prof.steps(range(2)):
            pass
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("genprof: run short ok") and err[-1] == "Run file not written"
    with Profiler("prodrun", preset="prod", output_dir=str(tmp_path), **BASE) as prof:
        for _ in prof.steps(range(2)):
            pass
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("genprof: run prodrun ok") and line.endswith(f"run file {prof.run_path}")
