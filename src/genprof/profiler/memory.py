"""Per-span peak memory: the allocator's peak counter, reset at span start, folded into open spans.

The caching allocator has one peak counter per device. A span's own peak needs the counter
reset when it opens; a span that is still open around it (a phase around its steps, or a
span on another thread) would lose the part of its peak before that reset, so before each
reset the counter's value is folded into the running peak of every open span, and a span's
peak at its end is the larger of its running peak and the counter. ``reset_peak_memory:
false`` leaves the counter alone (for code that reads it itself): a span's peak is then the
peak since the last reset, and says so.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from genprof.model import Run, Span

if TYPE_CHECKING:  # pragma: no cover
    from genprof.profiler.spans import _OpenSpan

_RESET_SOURCE = "allocator peak counter, reset at span start"
_NO_RESET_SOURCE = "allocator peak counter NOT reset (reset_peak_memory: false): peak since the last reset"


class PeakTracker:
    """The open spans that track allocator peaks, and the folding of the counter into them.

    ``stats(index)`` returns (allocated, peak allocated, reserved, peak reserved) bytes and
    ``reset(index)`` resets the peaks; ``lock`` is the profiler's, held while the open spans
    change (spans open and close on several threads).
    """

    def __init__(self, stats: Callable[[int], tuple[int, int, int, int]], reset: Callable[[int], Any],
                 index: int, *, reset_peaks: bool, lock: threading.RLock) -> None:
        self._stats = stats
        self._reset = reset
        self._idx = index
        self._reset_peaks = reset_peaks
        self._lock = lock
        self._open: list[_OpenSpan] = []

    def start(self, o: _OpenSpan) -> None:
        """A span opens: its start bytes, and (with resets) the counter folded and reset."""
        alloc, peak_a, res, peak_r = self._stats(self._idx)
        span = o.span
        span.allocated_start_bytes = alloc
        span.reserved_start_bytes = res
        with self._lock:
            if self._reset_peaks:
                self._fold(peak_a, peak_r)  # into every open span, before the reset
                self._reset(self._idx)
                o.peak_alloc, o.peak_res = alloc, res
                span.peak_source = _RESET_SOURCE
            else:
                o.peak_alloc, o.peak_res = None, None
                span.peak_source = _NO_RESET_SOURCE
            self._open.append(o)
            o.mem = True

    def end(self, o: _OpenSpan) -> None:
        """A span closes: its end bytes and peaks; its counter reading folded into the spans around it."""
        alloc, peak_a, res, peak_r = self._stats(self._idx)
        span = o.span
        span.allocated_end_bytes = alloc
        span.reserved_end_bytes = res
        with self._lock:
            pa, pr = o.peak_alloc, o.peak_res
            span.peak_allocated_bytes = peak_a if pa is None or pa < peak_a else pa
            span.peak_reserved_bytes = peak_r if pr is None or pr < peak_r else pr
            mem_open = self._open
            if mem_open and mem_open[-1] is o:
                mem_open.pop()
            elif o in mem_open:
                mem_open.remove(o)
            self._fold(peak_a, peak_r)  # into the spans still open around this one

    def boundary(self, o: _OpenSpan, n: _OpenSpan, span: Span, ns: Span) -> None:
        """``o`` ends where ``n`` starts (``Profiler.next_span``): one read and one reset for both."""
        alloc, peak_a, res, peak_r = self._stats(self._idx)
        span.allocated_end_bytes = ns.allocated_start_bytes = alloc
        span.reserved_end_bytes = ns.reserved_start_bytes = res
        with self._lock:
            pa, pr = o.peak_alloc, o.peak_res
            span.peak_allocated_bytes = peak_a if pa is None or pa < peak_a else pa
            span.peak_reserved_bytes = peak_r if pr is None or pr < peak_r else pr
            mem_open = self._open
            if mem_open and mem_open[-1] is o:
                mem_open[-1] = n
            else:
                if o in mem_open:
                    mem_open.remove(o)
                mem_open.append(n)
            self._fold(peak_a, peak_r, skip=n)
            if self._reset_peaks:
                self._reset(self._idx)
                n.peak_alloc, n.peak_res = alloc, res
            else:
                n.peak_alloc = n.peak_res = None
        ns.peak_source = span.peak_source
        n.mem = True

    def _fold(self, peak_a: int, peak_r: int, skip: _OpenSpan | None = None) -> None:
        """Raise the running peaks of the open memory-tracking spans to the counter's (lock held)."""
        for other in self._open:
            if other is skip:
                continue
            if other.peak_alloc is None or other.peak_alloc < peak_a:
                other.peak_alloc = peak_a
            if other.peak_res is None or other.peak_res < peak_r:
                other.peak_res = peak_r


def fill_sampled_peaks(run: Run, gpu_label: str) -> None:
    """Time of each span's allocator peak and its RSS peak, from the sampled series."""
    series = {(s.device, s.name): s for s in run.series}
    alloc = series.get((gpu_label, "allocated_bytes"))
    rss = series.get(("process", "rss_bytes"))
    for sp in run.spans:
        end = sp.end_s
        if end is None:
            continue
        if alloc is not None and sp.peak_allocated_bytes is not None:
            best = _window_max(alloc.t_s, alloc.values, sp.start_s, end)
            if best is not None:
                sp.peak_allocated_at_s = best[0]
        if rss is not None and sp.rss_start_bytes is not None:
            cands = [sp.rss_start_bytes, sp.rss_end_bytes or 0]
            best = _window_max(rss.t_s, rss.values, sp.start_s, end)
            if best is not None:
                cands.append(int(best[1]))
            sp.rss_peak_bytes = max(cands)
        elif sp.rss_start_bytes is not None:
            sp.rss_peak_bytes = max(sp.rss_start_bytes, sp.rss_end_bytes or 0)


def _window_max(ts: list[float], vs: list[float], start: float, end: float) -> tuple[float, float] | None:
    i = bisect.bisect_left(ts, start)
    j = bisect.bisect_right(ts, end)
    if i >= j:
        return None
    k = max(range(i, j), key=vs.__getitem__)
    return ts[k], vs[k]
