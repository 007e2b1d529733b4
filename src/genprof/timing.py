"""GPU time of spans from CUDA events, resolved lazily.

A span records a start and an end event on the *current stream*; nothing waits for the GPU
on the hot path. Completed pairs are resolved opportunistically (``Event.query`` on the
oldest pending pairs after each span ends) and all remaining pairs once, when the run stops.

What the figure means: the time the current stream took between the two points where the
host enqueued the events. Work on other streams is not in it, and host gaps in which the
stream ran dry are (a launch-bound loop shows GPU time close to host time).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from genprof.model import Span

log = logging.getLogger(__name__)


class GpuTimer:
    """Pools CUDA events and resolves span GPU times without synchronising per span."""

    def __init__(self, torch: Any, *, device_index: int = 0, poll_per_close: int = 4, poll_every: int = 16) -> None:
        self._torch = torch
        self._device_index = device_index
        # torch.cuda.current_stream() builds a Stream object each call (~6.6 us on an H100 VM);
        # the raw id lookup is cheap, so Stream objects are cached by id.
        self._get_stream_id: Callable[[int], Any] | None = getattr(getattr(torch, "_C", None), "_cuda_getCurrentStream", None)
        self._streams: dict[Any, Any] = {}
        self._pool: list[Any] = []
        self._pending: deque[tuple[Span, Any, Any]] = deque()
        self._lock = threading.Lock()
        self._poll_per_close = poll_per_close
        self._poll_every = poll_every
        self._closes = 0
        self._shared: set[int] = set()  # ids of end events that also start the next span
        self._event_cls: Callable[..., Any] = torch.cuda.Event

    def _event(self) -> Any:
        try:
            return self._pool.pop()  # list.pop is atomic
        except IndexError:
            return self._event_cls(enable_timing=True)

    def _current_stream(self) -> Any:
        if self._get_stream_id is None:
            return self._torch.cuda.current_stream()
        key = self._get_stream_id(self._device_index)
        st = self._streams.get(key)
        if st is None:
            st = self._torch.cuda.current_stream(self._device_index)
            if len(self._streams) < 256:
                self._streams[key] = st
        return st

    def start(self) -> Any:
        ev = self._event()
        ev.record(self._current_stream())
        return ev

    def stop(self, span: Span, start_event: Any) -> None:
        end = self._event()
        end.record(self._current_stream())
        self._pending.append((span, start_event, end))  # deque.append is atomic
        self._closes += 1
        if self._closes % self._poll_every == 0:
            # amortised: one query per ~8 spans keeps the queue and the event pool bounded
            with self._lock:
                self._poll(self._poll_per_close)

    def stop_shared(self, span: Span, start_event: Any) -> Any:
        """Like :meth:`stop`, and return the end event to serve as the next span's start event.

        One event marks a boundary between two spans (a step ending where the next begins);
        it goes back to the pool only when the pair that starts with it is resolved.
        """
        end = self._event()
        end.record(self._current_stream())
        self._shared.add(id(end))
        self._pending.append((span, start_event, end))
        self._closes += 1
        if self._closes % self._poll_every == 0:
            with self._lock:
                self._poll(self._poll_per_close)
        return end

    def _poll(self, limit: int) -> None:
        # Called with the lock held. Events on one stream complete in order, so checking the
        # oldest pairs first resolves most of them; pairs from other streams wait their turn.
        n = 0
        while self._pending and n < limit:
            span, a, b = self._pending[0]
            if not b.query():
                return
            self._pending.popleft()
            self._resolve(span, a, b)
            n += 1

    def _resolve(self, span: Span, a: Any, b: Any) -> None:
        try:
            span.gpu_time_s = a.elapsed_time(b) / 1000.0
        except RuntimeError as exc:
            span.gpu_time_s = None
            span.gpu_time_reason = f"CUDA event timing failed: {exc}"
        self._pool.append(a)
        if id(b) in self._shared:
            self._shared.discard(id(b))  # still the start of the next span's pair
        else:
            self._pool.append(b)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def resolve_all(self) -> None:
        """Wait for every pending end event and fill in the GPU times (once, at run end)."""
        with self._lock:
            while self._pending:
                span, a, b = self._pending.popleft()
                try:
                    b.synchronize()
                except RuntimeError as exc:
                    span.gpu_time_reason = f"CUDA event synchronize failed: {exc}"
                    continue
                self._resolve(span, a, b)


class Nvtx:
    """NVTX ranges for spans, so Nsight Systems shows genprof's phases (``nvtx: true``)."""

    def __init__(self, torch: Any) -> None:
        self._push: Callable[[str], Any] = torch.cuda.nvtx.range_push
        self._pop: Callable[[], Any] = torch.cuda.nvtx.range_pop

    def push(self, name: str) -> None:
        self._push(name)

    def pop(self) -> None:
        self._pop()
