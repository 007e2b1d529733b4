"""Energy windows: the device's total-energy counter read at span and run begin and end, off the caller's thread."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from genprof.model import Run

if TYPE_CHECKING:  # pragma: no cover
    from genprof.profiler.device import Device
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

    Requests that wait in the queue together share one reading, taken after all of them were
    made, unless that would put a span's start and end on the same reading (its energy would
    read 0). Requests made inside :meth:`together` wait for each other: at a run's exit the
    ends of the spans still open and the run's end cost one read, not one each.
    """

    def __init__(self, read: Callable[[], float | None]) -> None:
        import queue

        self._read = read
        # held by together(): the reader takes it before gathering a batch, so requests made
        # under it are gathered into one batch instead of the first starting a read alone
        self._gate = threading.Lock()
        # (span, True) start read, (span, False) end read, (callback, None) a read handed to callback
        self._q: queue.SimpleQueue[tuple[Any, bool | None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="genprof-energy", daemon=True)
        self._thread.start()

    def request_start(self, o: _OpenSpan) -> None:
        self._q.put((o, True))

    def request_end(self, o: _OpenSpan) -> None:
        self._q.put((o, False))

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Requests made inside this block are served by one reading (as far as the start/end rule allows)."""
        with self._gate:
            yield

    def request(self, callback: Callable[[float | None], None]) -> None:
        """Read the counter on the reader's thread, in order with the span reads, and pass it on."""
        self._q.put((callback, None))

    def _loop(self) -> None:
        import queue

        while True:
            batch = [self._q.get()]
            with self._gate:  # a together() block in progress finishes its requests first
                while True:
                    try:
                        batch.append(self._q.get_nowait())
                    except queue.Empty:
                        break
            group: list[tuple[Any, bool | None]] = []
            started: set[int] = set()
            for item in batch:
                if item is None:
                    self._serve(group)
                    return
                o, is_start = item
                if is_start is False and id(o) in started:
                    self._serve(group)
                    group, started = [], set()
                group.append(item)
                if is_start:
                    started.add(id(o))
            self._serve(group)

    def _serve(self, group: list[tuple[Any, bool | None]]) -> None:
        """One counter reading for every request of ``group``."""
        if not group:
            return
        try:
            v = self._read()
        except Exception as exc:  # noqa: BLE001 - energy is optional; the run goes on
            log.warning("energy read failed: %s: %s", type(exc).__name__, exc)
            v = None
        for o, is_start in group:
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



class EnergyWindows:
    """The run's energy window and its spans' windows over one device's total-energy counter.

    As Zeus does (``begin_window`` / ``end_window``): a window's energy is the difference of
    the counter's readings at its begin and end. Span windows are opened and closed by the
    hot path through :attr:`reader` (None when the counter does not read: the hot path's flag,
    with :attr:`kinds` empty); the run's window by :meth:`begin_run` / :meth:`end_run`, and
    :meth:`finish` records it. Without a counter every method here does nothing and the run
    says why its energy is missing.
    """

    def __init__(self, device: Device, kinds: frozenset[str], unavailable: dict[str, str], *,
                 off_reason: str | None) -> None:
        self.kinds: frozenset[str] = frozenset()
        self.reader: _EnergyReader | None = None
        self._start: float | None = None
        self._end: float | None = None
        if kinds:
            ok, why, first = device.energy_counter()
            if ok:
                self.reader = _EnergyReader(device.energy_j)
                self.kinds = kinds
                self._start = first
                if first is None:  # later runs: the start read on the reader's thread
                    self.reader.request(self._set_start)
            elif why:
                unavailable["gpu_energy"] = why
        elif off_reason is not None:
            unavailable.setdefault("gpu_energy", off_reason)

    def _set_start(self, v: float | None) -> None:
        self._start = v

    def _set_end(self, v: float | None) -> None:
        self._end = v

    def together(self) -> contextlib.AbstractContextManager[None]:
        """Requests made inside are served by one counter reading (see :meth:`_EnergyReader.together`)."""
        return self.reader.together() if self.reader is not None else contextlib.nullcontext()

    def end_run(self) -> None:
        """Ask for the run's end reading (on the reader's thread, after every span's)."""
        if self.reader is not None:
            self.reader.request(self._set_end)

    def drain(self) -> None:
        """Wait for every requested reading."""
        if self.reader is not None:
            self.reader.drain()

    def finish(self, run: Run) -> None:
        """The run's energy from the counter read at its start and end, or why it is missing."""
        e0, e1 = self._start, self._end
        if e0 is None or e1 is None:
            if self.reader is not None and "gpu_energy" not in run.unavailable:
                run.unavailable["gpu_energy"] = ("NVML's energy counter could not be read at the run's "
                                                 f"{'start' if e0 is None else 'end'}")
            return
        total = max(0.0, e1 - e0)
        dur = run.duration_s or 0.0
        run.metadata["energy"] = {
            "total_j": total,
            "average_power_w": (total / dur) if dur > 0 else None,
            "source": "NVML nvmlDeviceGetTotalEnergyConsumption difference over the run (whole GPU)",
            "reliable": dur >= _ENERGY_RELIABLE_MIN_S,
        }
