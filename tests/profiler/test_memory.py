"""PeakTracker: per-span peaks from one allocator peak counter, reset at span start and folded into open spans."""

from __future__ import annotations

import threading

from fakes import FakeAllocator
from genprof.profiler.memory import PeakTracker, _window_max
from genprof.profiler.spans import _make_open


def _open(name: str) -> object:
    return _make_open(None, name, "phase", None, {})  # type: ignore[arg-type]


def test_outer_span_keeps_the_peak_of_an_inner_span_after_the_reset() -> None:
    # GIVEN an outer span, and an inner one opened after a 5 MiB peak (so the counter is reset)
    a = FakeAllocator()
    t = PeakTracker(a.stats, a.reset, 0, reset_peaks=True, lock=threading.RLock())
    outer, inner = _open("outer"), _open("inner")
    t.start(outer)  # type: ignore[arg-type]
    a.set(5 << 20)
    a.set(1 << 20)
    t.start(inner)  # type: ignore[arg-type]
    a.set(3 << 20)
    t.end(inner)  # type: ignore[arg-type]
    t.end(outer)  # type: ignore[arg-type]
    # THEN the inner span's peak is its own, and the outer's is the larger peak before the reset
    assert inner.span.peak_allocated_bytes == 3 << 20  # type: ignore[attr-defined]
    assert outer.span.peak_allocated_bytes == 5 << 20  # type: ignore[attr-defined]
    assert inner.span.allocated_start_bytes == 1 << 20  # type: ignore[attr-defined]
    assert a.resets == 2
    assert inner.span.peak_source == "allocator peak counter, reset at span start"  # type: ignore[attr-defined]


def test_without_resets_a_span_peak_is_the_counter_since_the_last_reset_and_says_so() -> None:
    a = FakeAllocator()
    a.set(9 << 20)
    a.set(1 << 20)
    t = PeakTracker(a.stats, a.reset, 0, reset_peaks=False, lock=threading.RLock())
    o = _open("x")
    t.start(o)  # type: ignore[arg-type]
    t.end(o)  # type: ignore[arg-type]
    assert a.resets == 0
    assert o.span.peak_allocated_bytes == 9 << 20  # type: ignore[attr-defined]
    assert "NOT reset" in o.span.peak_source  # type: ignore[attr-defined]


def test_boundary_ends_one_span_and_starts_the_next_with_one_read() -> None:
    a = FakeAllocator()
    t = PeakTracker(a.stats, a.reset, 0, reset_peaks=True, lock=threading.RLock())
    outer, s0, s1 = _open("denoise"), _open("step"), _open("step")
    t.start(outer)  # type: ignore[arg-type]
    t.start(s0)  # type: ignore[arg-type]
    a.set(7 << 20)
    a.set(2 << 20)
    t.boundary(s0, s1, s0.span, s1.span)  # type: ignore[arg-type, attr-defined]
    a.set(4 << 20)
    t.end(s1)  # type: ignore[arg-type]
    t.end(outer)  # type: ignore[arg-type]
    assert s0.span.peak_allocated_bytes == 7 << 20  # type: ignore[attr-defined]
    assert s0.span.allocated_end_bytes == s1.span.allocated_start_bytes == 2 << 20  # type: ignore[attr-defined]
    assert s1.span.peak_allocated_bytes == 4 << 20  # type: ignore[attr-defined]
    assert outer.span.peak_allocated_bytes == 7 << 20  # type: ignore[attr-defined]


def test_window_max_finds_the_largest_sample_inside_the_window_only() -> None:
    ts, vs = [0.0, 1.0, 2.0, 3.0], [5.0, 1.0, 4.0, 9.0]
    assert _window_max(ts, vs, 0.5, 2.5) == (2.0, 4.0)
    assert _window_max(ts, vs, 3.5, 4.0) is None
