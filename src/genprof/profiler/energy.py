"""Energy windows: NVML's total-energy counter read at span begin and end, off the caller's thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from genprof.profiler.spans import _OpenSpan

log = logging.getLogger("genprof")

ENERGY_RELIABLE_MIN_S = 0.1
"""A span's energy is marked reliable from this duration on (NVML's counter updates every few ms)."""
_ENERGY_RELIABLE_MIN_S = ENERGY_RELIABLE_MIN_S


class _EnergyReader:
    """Reads NVML's total-energy counter on its own thread, in request order.

    A read takes about 4 ms on an H100; doing it on the caller's thread would stall the
    launch of GPU work at every phase edge. Requests are served first in, first out, so a
    span's start reading always precedes its end reading; :meth:`drain` waits for all.
    """

    def __init__(self, read: Callable[[], float | None]) -> None:
        import queue

        self._read = read
        # (span, True) start read, (span, False) end read, (callback, None) a read handed to callback
        self._q: queue.SimpleQueue[tuple[Any, bool | None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="genprof-energy", daemon=True)
        self._thread.start()

    def request_start(self, o: _OpenSpan) -> None:
        self._q.put((o, True))

    def request_end(self, o: _OpenSpan) -> None:
        self._q.put((o, False))

    def request(self, callback: Callable[[float | None], None]) -> None:
        """Read the counter on the reader's thread, in order with the span reads, and pass it on."""
        self._q.put((callback, None))

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            o, is_start = item
            try:
                v = self._read()
            except Exception as exc:  # noqa: BLE001 - energy is optional; the run goes on
                log.warning("energy read failed: %s: %s", type(exc).__name__, exc)
                v = None
            if is_start is None:
                try:
                    o(v)
                except Exception as exc:  # noqa: BLE001 - a failing consumer must not end the reader
                    log.warning("energy reading consumer failed: %s: %s", type(exc).__name__, exc)
            elif is_start:
                o.energy_start_j = v
            elif v is not None and o.energy_start_j is not None:
                span = o.span
                span.energy_j = max(0.0, v - o.energy_start_j)
                span.energy_reliable = (span.duration_s or 0.0) >= _ENERGY_RELIABLE_MIN_S

    def drain(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30.0)
        if self._thread.is_alive():
            log.warning("energy reader did not finish within 30 s; some span energies are missing")

