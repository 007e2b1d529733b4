"""Console tables: snapshot of the summary, n/a for missing values, markup-safe names."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from rich.console import Console
from runs import make_run

from genprof.render.console import log_summary, phase_table, print_summary, usage_rows

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _render(run, width: int = 160) -> str:
    buf = io.StringIO()
    print_summary(run, Console(file=buf, width=width, color_system=None, force_terminal=False))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("GENPROF_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"output differs from {path}; rerun with GENPROF_UPDATE_SNAPSHOTS=1 if intended"


def test_summary_snapshot_gpu_run():
    _check_snapshot("summary_gpu_160.txt", _render(make_run()))


def test_summary_snapshot_cpu_run_narrow():
    _check_snapshot("summary_cpu_100.txt", _render(make_run(with_gpu=False, end_status="exception"), width=100))


def test_missing_values_are_na_never_zero():
    rows = dict(usage_rows(make_run(with_gpu=False)))
    assert rows["Peak memory allocated"] == "n/a"
    assert rows["Device"] == "cpu"
    text = _render(make_run(with_gpu=False))
    assert " 0 B" not in text


def test_cpu_run_drops_all_na_columns_saying_why_and_shows_peak_rss():
    # GIVEN a CPU run: no GPU time, no allocator memory, no energy, but RSS at span edges
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(phase_table(make_run(with_gpu=False), width=200))
    out = buf.getvalue()
    header = next(line for line in out.splitlines() if "path" in line)
    assert "GPU total" not in header and "energy" not in header and "peak alloc" not in header
    assert "peak RSS" in header and "GiB" in out
    assert "no values, left out: GPU total, GPU mean, GPU p50, GPU p95, peak alloc, energy" in " ".join(out.split())


def test_narrow_console_says_which_columns_it_left_out():
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(phase_table(make_run(), width=80))
    flat = " ".join(buf.getvalue().split())
    assert "left out at 80 columns:" in flat and "GPU p50" in flat


def test_names_are_not_read_as_markup():
    run = make_run(name="[bold red]x[/nope]")
    run.spans[0].name = "[red]y[/]"
    text = _render(run)
    assert "[bold red]x[/nope]" in text and "[red]y[/]" in text


def test_narrow_console_keeps_path_and_totals():
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(phase_table(make_run(), width=80))
    out = buf.getvalue()
    assert "encode_prompt" in out and "total" in out and "count" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_print_summary_defaults_to_stderr(capsys):
    print_summary(make_run())
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Usage statistics" in captured.err


def test_log_summary_writes_each_statistic(caplog):
    with caplog.at_level(logging.INFO, logger="genprof.render.console"):
        log_summary(make_run())
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Initialization time: 6.000 s") for m in msgs)
    assert any(m.startswith("Device: NVIDIA H100") for m in msgs)


def test_block_loop_summary_shows_video_throughput_at_80_columns():
    from block_loop import block_loop_run
    from genprof.render.console import short_summary

    # GIVEN a hand-written block loop with an fps, one block slower than its frames play
    run = block_loop_run(generation=True, block_s=(0.9, 0.2, 0.2, 0.2))
    con = Console(width=80, record=True, file=io.StringIO())
    print_summary(run, console=con)
    text = con.export_text()
    for name in ("output_fps", "real_time_factor", "time_to_first_frame_s", "blocks_per_s", "deadline_misses"):
        assert name in text
    assert f"{36 / 1.7:.2f} fps" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    # the end-of-run summary: one line in prod, a few lines otherwise, naming the run file
    one = short_summary(run, "/tmp/loop.json", prod=True)
    assert "\n" not in one and "/tmp/loop.json" in one and "fps" in one and "1 deadline misses" in one
    assert "/tmp/loop.json" in short_summary(run, "/tmp/loop.json")
