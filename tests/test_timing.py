"""GpuTimer: lazily resolved span GPU times and event recycling (fake CUDA events)."""

from __future__ import annotations

import types
from typing import Any

from genprof.model import Span
from genprof.timing import GpuTimer


class CountingEvent:
    """A fake CUDA event that completes only when the test says so; counts creations."""

    created = 0
    clock_ms = [0.0]

    def __init__(self, enable_timing: bool = True) -> None:
        CountingEvent.created += 1
        self.t: float | None = None
        self.done = False

    def record(self, stream: object = None) -> None:
        self.t = CountingEvent.clock_ms[0]
        self.done = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.done = True

    def elapsed_time(self, other: CountingEvent) -> float:
        assert self.t is not None and other.t is not None
        return other.t - self.t


def fake_torch() -> Any:
    cuda = types.SimpleNamespace(Event=CountingEvent, current_stream=lambda device=None: "stream")
    return types.SimpleNamespace(cuda=cuda, _C=types.SimpleNamespace(_cuda_getCurrentStream=lambda idx: 7))


def span(i: int) -> Span:
    return Span(id=i, name="step", kind="step", start_s=0.0)


def test_periodic_poll_resolves_completed_pairs_and_recycles_their_events() -> None:
    CountingEvent.created = 0
    timer = GpuTimer(fake_torch(), poll_every=2, poll_per_close=4)
    spans = [span(i) for i in range(2)]
    start = timer.start()
    CountingEvent.clock_ms[0] += 5.0
    timer.stop(spans[0], start)
    for _, a, b in list(timer._pending):  # the GPU catches up
        a.done = b.done = True
    start = timer.start()
    timer.stop(spans[1], start)  # second close: polls, resolves the first pair
    assert spans[0].gpu_time_s == 0.005 and spans[1].gpu_time_s is None and timer.pending == 1
    timer.start()  # takes an event back from the pool instead of creating one
    assert CountingEvent.created == 4


def test_pending_pairs_not_complete_are_left_alone() -> None:
    CountingEvent.created = 0
    timer = GpuTimer(fake_torch(), poll_every=10_000)
    s = span(1)
    timer.stop(s, timer.start())
    timer.stop(span(2), timer.start())  # the first pair is still running: new events are made
    assert CountingEvent.created == 4 and s.gpu_time_s is None and timer.pending == 2
    timer.resolve_all()  # waits (synchronize) and fills every time in
    assert s.gpu_time_s == 0.0 and timer.pending == 0
