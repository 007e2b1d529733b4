"""Live view: off without a terminal, draws snapshots, never takes a redirected stdout."""

from __future__ import annotations

import io
import logging
import sys
import time

import pytest
from rich.console import Console

from genprof.errors import UsageError
from genprof.render.live import LiveView, render_cost, render_snapshot

GIB = 2**30
SNAP = {
    "name": "wan", "elapsed_s": 12.5, "phase": "denoise", "step_index": 9, "steps_done": 10, "steps_total": 40,
    "step_rate_per_s": 2.0, "eta_s": 15.0,
    "gpu": {"name": "NVIDIA H100", "memory_used_bytes": 30 * GIB, "memory_total_bytes": 80 * GIB,
            "utilization_pct": 97.0, "power_w": 640.0, "temperature_c": 70.0},
    "allocated_bytes": 25 * GIB, "reserved_bytes": 28 * GIB, "cpu_pct": 12.0, "rss_bytes": 3 * GIB,
}


def _text(renderable) -> str:
    buf = io.StringIO()
    Console(file=buf, width=100, color_system=None).print(renderable)
    return buf.getvalue()


def test_panel_shows_every_field():
    out = _text(render_snapshot(SNAP))
    for s in ("denoise", "10/40", "2.00 steps/s", "15.000 s", "30.00 GiB / 80.00 GiB (38%)", "97%", "640 W",
              "70 C", "25.00 GiB", "28.00 GiB", "12%", "3.00 GiB", "[#####---------------] 25%"):
        assert s in out, s


def test_unknown_values_are_na():
    out = _text(render_snapshot({"name": "x", "steps_done": 3, "steps_total": None, "gpu": None}))
    assert "n/a (step count unknown)" in out and "GPU       n/a" in out
    assert "0 B" not in out and "0%" not in out


def test_off_when_not_a_terminal(caplog):
    calls = []
    con = Console(file=io.StringIO(), force_terminal=False)
    with caplog.at_level(logging.DEBUG, logger="genprof.render.live"):
        view = LiveView(lambda: calls.append(1) or SNAP, 0.01, console=con)
        view.start()
        time.sleep(0.05)
        view.stop()
    assert not view.active and calls == [] and con.file.getvalue() == ""
    assert any("not a terminal" in r.getMessage() for r in caplog.records)


def test_refreshes_on_a_terminal_and_stops():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100, color_system=None)
    n = {"calls": 0}

    def snap():
        n["calls"] += 1
        return dict(SNAP, steps_done=n["calls"])

    with LiveView(snap, 0.02, console=con) as view:
        assert view.active
        time.sleep(0.3)
    assert not view.active
    assert n["calls"] >= 3
    assert "genprof: wan" in buf.getvalue()
    after = n["calls"]
    time.sleep(0.1)
    assert n["calls"] == after  # stopped refreshing


def test_forced_view_draws_without_a_terminal():
    view = LiveView(lambda: SNAP, 0.05, force=True)
    assert view._get_console().is_terminal


def test_stdout_to_a_file_is_left_alone():
    # GIVEN stdout is not a terminal (pytest captures it) and the panel draws on a terminal console
    con = Console(file=io.StringIO(), force_terminal=True, width=100)
    before = sys.stdout
    with LiveView(lambda: SNAP, 0.05, console=con):
        assert sys.stdout is before
        print("user output")
    assert sys.stdout is before
    assert "user output" not in con.file.getvalue()


def test_snapshot_failure_is_shown_and_logged_once(caplog):
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100, color_system=None)

    def bad():
        raise RuntimeError("sampler gone")

    with caplog.at_level(logging.WARNING, logger="genprof.render.live"):
        with LiveView(bad, 0.02, console=con):
            time.sleep(0.15)
    assert "snapshot failed: RuntimeError: sampler gone" in buf.getvalue()
    assert sum("snapshot() failed" in r.getMessage() for r in caplog.records) == 1


def test_bad_interval_is_a_usage_error():
    with pytest.raises(UsageError, match="display interval"):
        LiveView(lambda: SNAP, 0)


def test_render_cost_is_small():
    cost = render_cost(lambda: SNAP, repeats=50)
    # one refresh per second at this cost is far below 0.5% of a loop
    assert 0 < cost["per_refresh_s"] < 0.005
