"""Live view: off without a terminal, draws snapshots, never takes a redirected stdout."""

from __future__ import annotations

import io
import logging
import sys
import threading

import pytest
from rich.console import Console

from genprof.errors import UsageError
from genprof.render.live import LiveView, render_cost, render_snapshot

GIB = 2**30
HANDOFF_S = 30.0  # the most a test waits for rich's refresh thread; normally a few ms


class CountingSnapshot:
    """A snapshot() that counts its calls and lets a test wait for the n-th (no timed sleeps)."""

    def __init__(self, snap: dict | None = None, fail: Exception | None = None) -> None:
        self.calls = 0
        self.snap = snap or SNAP
        self.fail = fail
        self._cond = threading.Condition()

    def __call__(self) -> dict:
        with self._cond:
            self.calls += 1
            self._cond.notify_all()
        if self.fail is not None:
            raise self.fail
        return dict(self.snap, steps_done=self.calls)

    def wait_for(self, n: int, timeout: float = HANDOFF_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.calls >= n, timeout)
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
    snap = CountingSnapshot()
    con = Console(file=io.StringIO(), force_terminal=False)
    with caplog.at_level(logging.DEBUG, logger="genprof.render.live"):
        view = LiveView(snap, 0.01, console=con)
        view.start()
        assert not view.active  # decided at start: no refresh thread to wait for
        view.stop()
    assert snap.calls == 0 and con.file.getvalue() == ""
    assert any("not a terminal" in r.getMessage() for r in caplog.records)


def test_refreshes_on_a_terminal_and_stops():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100, color_system=None)
    snap = CountingSnapshot()
    with LiveView(snap, 0.02, console=con) as view:
        assert view.active
        assert snap.wait_for(3), "the panel refreshed fewer than three times"
    assert not view.active
    assert "genprof: wan" in buf.getvalue()
    after = snap.calls
    # stopped: no refresh in the next ten intervals (a bounded wait for something that must not happen)
    assert not snap.wait_for(after + 1, timeout=0.2)


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

    bad = CountingSnapshot(fail=RuntimeError("sampler gone"))
    with caplog.at_level(logging.WARNING, logger="genprof.render.live"):
        with LiveView(bad, 0.02, console=con):
            assert bad.wait_for(3), "the panel refreshed fewer than three times"
    assert "snapshot failed: RuntimeError: sampler gone" in buf.getvalue()
    assert sum("snapshot() failed" in r.getMessage() for r in caplog.records) == 1


def test_bad_interval_is_a_usage_error():
    with pytest.raises(UsageError, match="display interval"):
        LiveView(lambda: SNAP, 0)


def test_render_cost_draws_every_repeat():
    # the cost itself is a benchmark figure (bench/), not a unit-test bound
    snap = CountingSnapshot()
    cost = render_cost(snap, repeats=5)
    assert snap.calls == 5 and cost["repeats"] == 5 and cost["per_refresh_s"] > 0
