"""The sampler: drift-free deadlines on a fake clock, bounded series that keep every extreme."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from genprof.sampler import Sampler, SeriesBuffer, Source


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_ticks_follow_deadlines_without_drift() -> None:
    clock = FakeClock()
    seen: list[float] = []

    def read() -> dict:
        seen.append(clock.t)
        return {("gpu0", "power_w"): 1.0}

    s = Sampler([Source("gpu", 0.1, read)], t0=100.0, max_points=1000, clock=clock)
    s.sources[0].next_deadline = clock.t
    # each tick is 30 ms late and reading costs nothing: deadlines stay on the 0.1 s grid
    for _ in range(50):
        nxt = s.tick()
        clock.t = nxt + 0.03
    assert len(seen) == 50
    assert abs(s.sources[0].next_deadline - (100.0 + 50 * 0.1)) < 1e-9
    assert s.sources[0].missed_ticks == 0


def test_late_ticks_are_skipped_not_replayed() -> None:
    clock = FakeClock()
    n = {"reads": 0}

    def read() -> dict:
        n["reads"] += 1
        return {}

    s = Sampler([Source("gpu", 0.1, read)], t0=100.0, max_points=100, clock=clock)
    s.sources[0].next_deadline = clock.t
    s.tick()
    clock.t += 1.05  # stalled: deadlines 100.1 .. 101.0 passed
    s.tick()  # serves 100.1 late, skips the nine after it
    s.tick()  # not due again yet: no burst
    assert n["reads"] == 2
    assert s.sources[0].missed_ticks == 9
    assert abs(s.sources[0].next_deadline - 101.1) < 1e-9


def test_two_intervals_in_one_thread() -> None:
    clock = FakeClock()
    counts = {"gpu": 0, "host": 0}

    def mk(name: str):
        def read() -> dict:
            counts[name] += 1
            return {(name, "x"): 1.0}

        return read

    s = Sampler([Source("gpu", 0.1, mk("gpu")), Source("host", 1.0, mk("host"))], t0=100.0, max_points=100, clock=clock)
    for src in s.sources:
        src.next_deadline = clock.t
    end = clock.t + 10.0
    while clock.t < end - 1e-9:
        clock.t = s.tick()
    assert counts["gpu"] == 100 and counts["host"] == 10


def test_failing_source_is_recorded_and_sampling_goes_on() -> None:
    clock = FakeClock()

    def bad() -> dict:
        raise OSError("device gone")

    s = Sampler([Source("gpu", 0.1, bad)], t0=100.0, max_points=100, clock=clock)
    s.tick()
    s.tick(clock.t + 0.1)
    assert s.sources[0].errors == 2 and "device gone" in (s.sources[0].last_error or "")


def test_thread_starts_and_stops() -> None:
    import threading

    calls: list[int] = []
    third = threading.Event()

    def read() -> dict:
        calls.append(1)
        if len(calls) >= 3:
            third.set()
        return {("host", "v"): 1.0}

    s = Sampler([Source("h", 0.01, read)], t0=0.0, max_points=100)
    s.start()
    # the thread samples on its own: wait for its third reading (the timeout only guards a hang)
    assert third.wait(timeout=30.0), "the sampler thread took no third reading"
    s.stop()
    series = s.series()
    assert series and len(series[0].t_s) >= 3
    assert not s.alive()  # stop() joined the thread


def test_decimation_keeps_global_extremes_and_bound() -> None:
    buf = SeriesBuffer("v", "gpu0", max_points=64)
    rng = random.Random(1)
    values = [rng.gauss(0, 1) for _ in range(36_000)]
    values[12_345] = 99.0  # a one-sample spike
    values[30_001] = -99.0
    for i, v in enumerate(values):
        buf.append(i * 0.1, v)
    s = buf.to_series()
    assert len(s.values) <= 64 + 2
    assert max(s.values) == 99.0 and min(s.values) == -99.0
    assert s.t_s == sorted(s.t_s)
    assert s.decimation_level > 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=3000), st.integers(8, 64))
def test_decimation_property(values: list[float], cap: int) -> None:
    buf = SeriesBuffer("v", "d", max_points=cap)
    for i, v in enumerate(values):
        buf.append(float(i), v)
    s = buf.to_series()
    assert max(s.values) == max(values)
    assert min(s.values) == min(values)
    assert len(s.values) <= cap + 2
    assert all(a < b for a, b in zip(s.t_s, s.t_s[1:], strict=False))


def test_state_series_records_changes_only() -> None:
    buf = SeriesBuffer("clock_event_reasons", "gpu0", max_points=16, kind="state")
    for i, v in enumerate([0, 0, 0, 4, 4, 0, 0, 64]):
        buf.append(float(i), float(v))
    s = buf.to_series()
    assert s.values == [0.0, 4.0, 0.0, 64.0] and s.t_s == [0.0, 3.0, 5.0, 7.0]


# ------------------------------------------------------------------ failures and missed ticks
import math  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402


def test_a_dying_sampler_thread_records_its_reason_and_time() -> None:
    clock = FakeClock()
    reached = threading.Event()

    def read() -> dict:
        clock.t += 0.5  # the fake clock: the failing read happens 0.5 s after t0
        reached.set()
        return {("host", "v"): "not a number"}  # _record's float() fails: the thread ends

    s = Sampler([Source("host", 0.01, read)], t0=100.0, max_points=100, clock=clock)
    assert s.failure() is None
    s.start()
    assert reached.wait(10.0)
    s.stop()  # joins the thread; the final sample is skipped after a failure
    fail = s.failure()
    assert fail is not None
    at, reason = fail
    assert at == pytest.approx(0.5)
    assert reason.startswith("ValueError") and "not a number" in reason
    assert not s.alive()


def test_a_failing_final_sample_is_recorded_not_raised() -> None:
    clock = FakeClock()  # never advances: after the first tick, only the stop's final sample reads again
    calls: list[int] = []
    first = threading.Event()

    def read() -> dict[tuple[str, str], Any]:
        calls.append(1)
        first.set()
        return {("host", "v"): 1.0} if len(calls) == 1 else {("host", "v"): object()}

    s = Sampler([Source("host", 0.1, read)], t0=100.0, max_points=100, clock=clock)
    s.start()
    assert first.wait(10.0)
    s.stop()  # the final sample fails on the sampler's thread: recorded, not raised here
    fail = s.failure()
    assert len(calls) == 2 and fail is not None and "TypeError" in fail[1]
    assert [p for ser in s.series() for p in ser.values] == [1.0]  # what was sampled before it stays


def test_request_stop_returns_at_once_and_stop_waits_for_the_final_sample() -> None:
    clock = FakeClock()
    gate = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def read() -> dict[tuple[str, str], Any]:
        calls.append(1)
        if len(calls) == 1:
            started.set()
        else:
            gate.wait(10.0)  # the final sample is slow
        return {("host", "v"): float(len(calls))}

    s = Sampler([Source("host", 0.1, read)], t0=100.0, max_points=100, clock=clock)
    s.start()
    assert started.wait(10.0)
    s.request_stop()  # does not wait for the slow final read
    assert len(calls) <= 2 and s.alive()
    gate.set()
    s.stop()
    assert not s.alive() and [p for ser in s.series() for p in ser.values] == [1.0, 2.0]


@pytest.mark.parametrize("interval", [math.inf, math.nan, 0.0, -1.0])
def test_bad_intervals_are_refused_at_construction(interval: float) -> None:
    with pytest.raises(ValueError, match="interval_s must be a finite number > 0"):
        Sampler([Source("host", interval, lambda: {})], t0=0.0, max_points=100)


def test_missed_ticks_at_one_millisecond_are_counted_exactly() -> None:
    clock = FakeClock()
    reads = {"n": 0}

    def read() -> dict:
        reads["n"] += 1
        return {("host", "v"): 1.0}

    s = Sampler([Source("host", 0.001, read)], t0=100.0, max_points=100, clock=clock)
    s.sources[0].next_deadline = clock.t
    for k in range(4001):  # a reading takes 2.5 ms: one tick served, one or two skipped, for 10 s
        s.tick(100.0 + 0.0025 * k)
    deadlines = 10001  # 100.000, 100.001, ..., 110.000 (the last one may fall just after 110.0 in floating point)
    assert reads["n"] + s.missed()["host"] in (deadlines - 1, deadlines)
    assert s.missed()["host"] > 5000
    # exactly on time at 1 ms: nothing is counted as missed
    s2 = Sampler([Source("host", 0.001, read)], t0=100.0, max_points=100, clock=clock)
    s2.sources[0].next_deadline = 100.0
    for k in range(10000):
        s2.tick(100.0 + 0.001 * k)
    assert s2.missed() == {}
