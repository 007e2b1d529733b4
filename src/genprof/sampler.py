"""The background sampler: reads the probes at fixed intervals into bounded series.

* Drift-free: each source has a deadline advanced by its interval, never "now + interval";
  a late tick is not followed by a burst (missed ticks are skipped and counted).
* Bounded memory: each series holds at most ``max_points`` points. When full it is
  decimated 2:1 by keeping the minimum and the maximum of every group of four points, and
  later points are grouped the same way as they arrive, so every extreme survives at the
  resolution left, however long the run. No peak is lost.
* Testable: the clock and the wait function are injected; :meth:`Sampler.tick` samples
  synchronously.
* Never silent: an error that ends the sampler thread is kept, with its time, and read with
  :meth:`Sampler.failure`; a probe's own errors are counted per source and do not end it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genprof.model import Series

log = logging.getLogger(__name__)

Readings = dict[tuple[str, str], "float | int | None"]
"""(device, name) -> value, e.g. ("gpu0", "power_w") -> 312.5"""


class SeriesBuffer:
    """A bounded, min/max-preserving time series."""

    __slots__ = ("name", "device", "kind", "source", "max_points", "t", "v", "level", "_bt", "_bv", "latest")

    def __init__(self, name: str, device: str, max_points: int, *, kind: str = "gauge", source: str = "") -> None:
        if max_points < 8:
            raise ValueError("max_points must be >= 8")
        self.name = name
        self.device = device
        self.kind = kind
        self.source = source
        self.max_points = max_points
        self.t: list[float] = []
        self.v: list[float] = []
        self.level = 0
        self._bt: list[float] = []  # pending incoming bucket (after decimation)
        self._bv: list[float] = []
        self.latest: tuple[float, float] | None = None

    def append(self, t: float, value: float) -> None:
        self.latest = (t, value)
        if self.kind == "state":
            if self.v and self.v[-1] == value:
                return
            self.t.append(t)
            self.v.append(value)
            if len(self.t) > self.max_points:  # a state flapping that fast is kept as its last changes
                del self.t[: len(self.t) - self.max_points]
                del self.v[: len(self.v) - self.max_points]
            return
        if self.level == 0:
            self.t.append(t)
            self.v.append(value)
        else:
            self._bt.append(t)
            self._bv.append(value)
            if len(self._bt) >= self._bucket_size():
                self._flush_bucket()
        if len(self.t) >= self.max_points:
            self._decimate()

    def _bucket_size(self) -> int:
        return 2 ** (self.level + 1)

    def _flush_bucket(self) -> None:
        if not self._bt:
            return
        self._emit_extremes(self._bt, self._bv, self.t, self.v)
        self._bt = []
        self._bv = []

    @staticmethod
    def _emit_extremes(bt: list[float], bv: list[float], out_t: list[float], out_v: list[float]) -> None:
        i_min = min(range(len(bv)), key=bv.__getitem__)
        i_max = max(range(len(bv)), key=bv.__getitem__)
        for i in sorted({i_min, i_max}):
            out_t.append(bt[i])
            out_v.append(bv[i])

    def _decimate(self) -> None:
        nt: list[float] = []
        nv: list[float] = []
        n = len(self.t)
        for start in range(0, n, 4):
            self._emit_extremes(self.t[start : start + 4], self.v[start : start + 4], nt, nv)
        self.t, self.v = nt, nv
        self.level += 1

    def to_series(self) -> Series:
        t = list(self.t)
        v = list(self.v)
        if self._bt:
            self._emit_extremes(self._bt, self._bv, t, v)
        return Series(
            name=self.name, device=self.device, t_s=t, values=v, kind=self.kind, source=self.source,
            decimation_level=self.level,
        )


@dataclass
class Source:
    """A group of readings taken together at one interval."""

    name: str
    interval_s: float
    read: Callable[[], Readings]
    next_deadline: float = 0.0
    missed_ticks: int = 0
    errors: int = 0
    last_error: str | None = None


@dataclass
class SamplerStats:
    ticks: dict[str, int] = field(default_factory=dict)
    missed_ticks: dict[str, int] = field(default_factory=dict)
    read_time_s: dict[str, float] = field(default_factory=dict)  # wall time in reads, GIL waits included
    thread_cpu_s: float = 0.0  # CPU time the sampler thread used after its first tick
    steady_wall_s: float = 0.0  # wall time over which thread_cpu_s was used


class Sampler:
    """Samples :class:`Source` objects on a background thread into :class:`SeriesBuffer` objects."""

    def __init__(
        self,
        sources: list[Source],
        *,
        t0: float,
        max_points: int,
        clock: Callable[[], float] = time.perf_counter,
        sources_meta: dict[tuple[str, str], tuple[str, str]] | None = None,
        on_samples: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        self.sources = sources
        self.t0 = t0
        self.max_points = max_points
        self.clock = clock
        self.buffers: dict[tuple[str, str], SeriesBuffer] = {}
        self._meta = sources_meta or {}
        self._on_samples = on_samples
        self._stop = threading.Event()
        self._final_sample = True
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stats = SamplerStats()
        self._failure: tuple[float, str] | None = None
        for src in sources:
            if not (isinstance(src.interval_s, (int, float)) and math.isfinite(src.interval_s) and src.interval_s > 0):
                raise ValueError(f"sampler source {src.name!r}: interval_s must be a finite number > 0, "
                                 f"got {src.interval_s!r}")

    # ------------------------------------------------------------ sampling
    def tick(self, now: float | None = None) -> float:
        """Take every reading that is due at ``now``; return the next deadline (absolute clock time)."""
        now = self.clock() if now is None else now
        for src in self.sources:
            if now + 1e-9 < src.next_deadline:
                continue
            r0 = self.clock()
            try:
                readings = src.read()
            except Exception as exc:  # noqa: BLE001 - a failing probe must not kill the sampler
                src.errors += 1
                if src.last_error is None:
                    log.warning("sampler source %r failed: %s: %s", src.name, type(exc).__name__, exc)
                src.last_error = f"{type(exc).__name__}: {exc}"
                readings = {}
            dt = self.clock() - r0
            self.stats.read_time_s[src.name] = self.stats.read_time_s.get(src.name, 0.0) + dt
            self.stats.ticks[src.name] = self.stats.ticks.get(src.name, 0) + 1
            t_rel = now - self.t0
            self._record(t_rel, readings)
            # advance the deadline by whole intervals; ticks that were missed are skipped, not replayed
            src.next_deadline += src.interval_s
            if src.next_deadline <= now:
                missed = int(math.floor((now - src.next_deadline) / src.interval_s)) + 1
                src.missed_ticks += missed
                self.stats.missed_ticks[src.name] = src.missed_ticks
                src.next_deadline += missed * src.interval_s
        return min((s.next_deadline for s in self.sources), default=now + 1.0)

    def _record(self, t_rel: float, readings: Readings) -> None:
        on_samples = self._on_samples  # None unless someone listens: then no dict is built
        flat: dict[str, float] | None = {} if on_samples is not None else None
        with self._lock:
            for (device, name), value in readings.items():
                if value is None:
                    continue
                buf = self.buffers.get((device, name))
                if buf is None:
                    kind, source = self._meta.get((device, name), ("gauge", ""))
                    buf = SeriesBuffer(name, device, self.max_points, kind=kind, source=source)
                    self.buffers[(device, name)] = buf
                fv = float(value)
                buf.append(t_rel, fv)
                if flat is not None:
                    flat[f"{device}.{name}"] = fv
        if on_samples is not None and flat:
            try:
                on_samples(flat)
            except Exception as exc:  # noqa: BLE001 - a listener must not kill the sampler
                log.warning("sample listener failed: %s: %s", type(exc).__name__, exc)

    def latest(self) -> dict[str, float]:
        with self._lock:
            return {f"{d}.{n}": b.latest[1] for (d, n), b in self.buffers.items() if b.latest is not None}

    # -------------------------------------------------------------- thread
    def start(self) -> None:
        if self._thread is not None or not self.sources:
            return
        now = self.clock()
        for s in self.sources:
            s.next_deadline = now
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="genprof-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        first = True
        cpu0 = wall0 = 0.0
        try:
            while not self._stop.is_set():
                nxt = self.tick()
                if first:  # steady state starts after the first tick (thread start, probe warm-up)
                    first = False
                    cpu0, wall0 = time.thread_time(), time.perf_counter()
                delay = nxt - self.clock()
                if delay > 0 and self._stop.wait(delay):
                    break
            if self._final_sample:
                # the reading at the stop: taken here, so the stopping thread does other work meanwhile
                now = self.clock()
                for s in self.sources:
                    s.next_deadline = now
                self.tick(now)
        except BaseException as exc:  # noqa: BLE001 - recorded (failure()) and logged; the thread ends
            self._fail(exc)
        finally:
            if not first:
                self.stats.thread_cpu_s += time.thread_time() - cpu0
                self.stats.steady_wall_s += time.perf_counter() - wall0

    def _fail(self, exc: BaseException) -> None:
        """Record why sampling stopped (the first failure only) and say so in the log."""
        try:
            t_rel = float(self.clock() - self.t0)
        except Exception:  # noqa: BLE001 - the injected clock itself failed: the process clock instead
            t_rel = time.perf_counter() - self.t0
        if not math.isfinite(t_rel):
            t_rel = time.perf_counter() - self.t0
        reason = f"{type(exc).__name__}: {exc}"[:500]
        if self._failure is None:
            self._failure = (t_rel, reason)
        log.error("genprof sampler stopped at %.3f s into the run: %s; no samples were taken after it", t_rel, reason)

    def failure(self) -> tuple[float, str] | None:
        """``(seconds since t0, reason)`` if sampling stopped on an error, else None.

        The sampler thread never dies silently: any exception that ends it (a probe's errors are
        counted per source and do not end it) is kept here, with the time it happened. The
        series hold what was sampled before it.
        """
        return self._failure

    def alive(self) -> bool:
        """True while the sampler thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def cpu_share(self) -> float | None:
        """CPU seconds the sampler thread used per second of wall time, in steady state."""
        w = self.stats.steady_wall_s
        return self.stats.thread_cpu_s / w if w > 0 else None

    def request_stop(self, *, final_sample: bool = True) -> None:
        """Tell the thread to take one last reading of every source (``final_sample``) and end.

        Returns at once: the caller goes on with other work and :meth:`stop` then waits for the
        thread, so a stop costs the longer of the two instead of their sum.
        """
        if self._thread is None or self._stop.is_set():
            return
        self._final_sample = final_sample
        self._stop.set()

    def stop(self, *, final_sample: bool = True) -> None:
        """Stop sampling (after one last reading, by default) and wait for the thread to end."""
        if self._thread is None:
            return
        self.request_stop(final_sample=final_sample)
        self._thread.join(timeout=10.0)
        if self._thread.is_alive():
            log.warning("sampler thread did not stop within 10 s; its last readings may be missing")
        self._thread = None

    def series(self) -> list[Series]:
        with self._lock:
            return [b.to_series() for b in self.buffers.values()]

    def missed(self) -> dict[str, Any]:
        return {s.name: s.missed_ticks for s in self.sources if s.missed_ticks}
