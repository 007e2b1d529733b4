"""The public profiler: spans (phases, steps, blocks, calls, generations), events, sampling.

Usage::

    with genprof.Profiler("wan-t2v", tags={"model": "wan2.1-1.3b"}) as prof:
        with prof.phase("load"):
            ...
        for t in prof.steps(timesteps, phase="denoise"):
            ...
    run = prof.run

This module holds the ``Profiler``'s state and lifecycle (start, stop, listeners, events);
its span methods are in :mod:`~genprof.profiler.spans` (the hot path) and
:mod:`~genprof.profiler.loops` (steps and blocks), and the rest of its work in one module a
concern: :mod:`~genprof.profiler.device` (the GPU, or its null stand-in),
:mod:`~genprof.profiler.facts`, :mod:`~genprof.profiler.sources` (the sampler's sources),
:mod:`~genprof.profiler.memory` (per-span peaks), :mod:`~genprof.profiler.energy`,
:mod:`~genprof.profiler.endings`, :mod:`~genprof.profiler.output` and
:mod:`~genprof.profiler.progress`.

Nothing here calls ``torch.cuda.synchronize()`` while the run goes on: GPU times come from
CUDA events resolved lazily (see :mod:`genprof.timing`). Per-span peak memory needs the
allocator's peak counter reset at span start; nested and concurrent spans are handled by
folding the counter into every open span before each reset. Turn resets off with
``reset_peak_memory=False`` for code that reads the peak itself.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from genprof.config import ProfilerConfig, load_config
from genprof.errors import UsageError
from genprof.lifecycle import notify_started
from genprof.model import Event, Run
from genprof.probes import host as host_probe
from genprof.profiler import endings, output
from genprof.profiler.device import Device, NullDevice, nvml_probe, open_device
from genprof.profiler.energy import EnergyWindows, _EnergyReader
from genprof.profiler.facts import _detect_distributed, _job_id, host_info, software_info
from genprof.profiler.loops import LoopMethods
from genprof.profiler.memory import PeakTracker, fill_sampled_peaks
from genprof.profiler.progress import Progress
from genprof.profiler.registry import _active, _active_lock, _current
from genprof.profiler.sources import build_sampler
from genprof.profiler.spans import _OpenSpan
from genprof.sampler import Sampler
from genprof.timing import GpuTimer, Nvtx

log = logging.getLogger("genprof")

_ENERGY_KINDS = {"phases": ("phase", "generation"), "all": ("phase", "generation", "step", "block", "call"), "none": ()}
_MEMORY_KINDS = ("phase", "generation", "step", "block")
_EVENT_KINDS = ("span_start", "span_end", "samples", "run_end")
_DEFAULT_KINDS = ("span_end", "samples", "run_end")


class Profiler(LoopMethods):
    """Collects a :class:`genprof.model.Run`.

    ``config`` is a YAML path, a mapping or a :class:`ProfilerConfig`; ``preset`` names
    ``"dev"`` or ``"prod"``; further keyword arguments override config keys. ``clock`` is the
    monotonic clock in seconds that times every span and event (the sampler's seam; tests
    pass a fake one). Reports, the console summary and the live view are attached when the
    profiler starts, by :mod:`genprof.outputs` (see :mod:`genprof.lifecycle`).
    """

    def __init__(
        self,
        name: str = "genprof",
        *,
        tags: dict[str, Any] | None = None,
        config: str | os.PathLike[str] | dict[str, Any] | ProfilerConfig | None = None,
        preset: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
        **config_keys: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError("Profiler name must be a non-empty string")
        self.config = load_config(config, preset=preset, **config_keys)
        self._diagnose_spec: Any = None
        self._diagnose: Any = None  # the kernel-trace window (genprof.diagnose), when asked for
        if self.config.diagnose:
            from genprof.diagnose import parse_window  # only when asked: it is not on the import path

            self._diagnose_spec = parse_window(self.config.diagnose)  # a bad window fails here, early
        self.name = name
        self._clock = clock  # read on the hot path: a plain instance attribute
        self._t0 = clock()
        self._ids = itertools.count(1)
        self._tls = threading.local()  # per-thread stack of open spans (a list, mutated in place; root first)
        self._all_stacks: list[list[_OpenSpan]] = []
        self._energy: _EnergyReader | None = None  # the span energy windows' reader (hot path)
        self._energy_win: EnergyWindows | None = None
        self._running = False
        self._stopped = False
        self._lock = threading.RLock()
        # listeners by event kind; the hot path reads only _listeners (span_end)
        self._listeners: list[Callable[[str, Any], None]] = []
        self._start_listeners: list[Callable[[str, Any], None]] = []  # span_start: read at every span open
        self._sample_listeners: list[Callable[[str, Any], None]] = []
        self._end_listeners: list[Callable[[str, Any], None]] = []
        # the device until start() finds it; its flags below are what the hot path reads
        self._device: Device = NullDevice("no device read: profiling is disabled or has not started",
                                             nvml_probe())
        self._on_gpu = False
        self._device_index: int | None = None
        self._timer: GpuTimer | None = None
        self._nvtx: Nvtx | None = None
        self._peaks: PeakTracker | None = None
        self._rss: host_probe.RssReader | None = None
        self._host: host_probe.HostProbe | None = None
        self._sampler: Sampler | None = None
        self._energy_kinds: frozenset[str] = frozenset(
            _ENERGY_KINDS[self.config.energy_spans] if self.config.monitor_gpu_power else ())
        self._on = False  # running and enabled: the one flag the hot path reads
        self._mem_kinds: frozenset[str] = frozenset()
        self._rss_kinds: frozenset[str] = frozenset()
        self._extras = False
        self._plain = True  # no GPU timer and no extras: the hot path skips both (set in start)
        self._failure_paths: list[str] = []
        self._abort_path: list[str] | None = None
        self._abort_mark: int | None = None
        self._oom_state: dict[str, Any] | None = None
        self._log_file = output.LogFile()
        self._sigterm = endings.SigtermGuard()
        self._token: Any = None
        self._saved_path: Path | None = None
        tags_all = dict(self.config.session_tags)
        tags_all.update(tags or {})
        now = time.time()
        self.run = Run(
            name=name,
            run_id=uuid.uuid4().hex,
            started_at=datetime.fromtimestamp(now, timezone.utc).isoformat(),
            started_unix_s=now,
            tags=tags_all,
            config=self.config.to_dict(),
        )
        # the list the hot path appends closed spans to (an attribute holding a bound method is
        # not a method to CPython 3.11's LOAD_METHOD specialiser; list.append on a list is)
        self._spans = self.run.spans
        self._prog = Progress(self.run, self._lock)
        self._progress = self._prog.state  # the hot path writes the open phase here

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def diagnose_window(self) -> Any:
        """The diagnose window attached to this run (``genprof.diagnose.DiagnoseWindow``), or None."""
        return self._diagnose

    @diagnose_window.setter
    def diagnose_window(self, window: Any) -> None:
        if self._diagnose is not None and window is not self._diagnose:
            raise UsageError("this run already has a diagnose window; a run records one window")
        self._diagnose = window

    @property
    def running(self) -> bool:
        return self._running

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> Profiler:
        self.start()
        self._token = _current.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            with contextlib.suppress(ValueError):
                _current.reset(self._token)
            self._token = None
        self.stop(exc)

    def start(self) -> Profiler:
        """Start collecting: read machine facts, start the sampler. Idempotent."""
        if self._running:
            return self
        if self._stopped:
            raise UsageError("this Profiler has already run; create a new Profiler for a new run")
        if self.config.enabled:
            self._log_file.open(self.config)
            self._collect_facts()  # before the clock starts: importing torch is not part of the run
        self._t0 = self._clock()
        now = time.time()
        self.run.started_at = datetime.fromtimestamp(now, timezone.utc).isoformat()
        self.run.started_unix_s = now
        self._running = True
        with _active_lock:
            _active.append(self)
        if not self.config.enabled:
            self.run.unavailable["profiling"] = "disabled by config (enabled: false)"
            return self
        if self._peaks is not None and self.config.memory_tracking:
            self._mem_kinds = frozenset(_MEMORY_KINDS)
        if self._rss is not None:
            self._rss_kinds = frozenset(_MEMORY_KINDS)
        # whether opening a span does more than host timing (read on every span open)
        self._extras = self._on_gpu or bool(self._rss_kinds) or bool(self._energy_kinds)
        # fixed while the run goes on (_timer is set by _collect_facts, above): open spans rely on it
        self._plain = self._timer is None and not self._extras
        self._on = True
        self._sampler, self._host = build_sampler(
            self.config, self._device, t0=self._t0, clock=self._clock,
            on_samples=self._on_samples if self._sample_listeners else None, unavailable=self.run.unavailable)
        if self.config.handle_sigterm:
            self._sigterm.install()
        self._write_run_file(partial=True)
        if self._diagnose_spec is not None:
            from genprof.diagnose import DiagnoseWindow

            self._diagnose = DiagnoseWindow(self._diagnose_spec).attach(self)
        notify_started(self)  # genprof.outputs attaches the live view, reports and summary here
        log.info("genprof run %r started (%s)", self.name, self.run.run_id)
        return self


    def stop(self, exc: BaseException | None = None) -> Run:
        """Stop collecting, resolve GPU times, record how the run ended, write configured outputs."""
        if not self._running:
            return self.run
        self._running = False
        self._on = False
        self._stopped = True
        with _active_lock:
            if self in _active:
                _active.remove(self)
        end = self.run.end
        end.at_s = self.now()
        self.run.duration_s = end.at_s
        if exc is None:
            end.status = "ok"
        else:
            endings.record_failure(self.run, exc, self._failure_paths or self._abort_path_if_last(),
                                   self._device, self._oom_state)
        if not self.config.enabled:
            return self.run
        # the last readings (the sampler's final sample, the energy counter, ~2.3 ms a read on
        # an H100) are taken on their own threads while this one resolves GPU times and memory.
        # The sampler is asked first: its reading is quick alone but waits behind a counter read
        if self._sampler is not None:
            self._sampler.request_stop()
        win = self._energy_win
        with win.together() if win is not None else contextlib.nullcontext():
            # one counter read ends every span still open and the run
            self._close_left_open_spans()
            if win is not None:
                win.end_run()
        if self._timer is not None:
            try:
                self._timer.resolve_all()
            except RuntimeError as e:  # a broken CUDA context after a failure
                log.warning("could not resolve GPU timings: %s", e)
        self._final_memory()
        if self._sampler is not None:
            self._sampler.stop()
            self.run.series = self._sampler.series()
            missed = self._sampler.missed()
            if missed:
                self.run.metadata["sampler_missed_ticks"] = missed
            failure = self._sampler.failure()
            if failure is not None:
                at, reason = failure
                self.run.metadata["sampler_failure"] = {"at_s": at, "reason": reason}
                self.run.unavailable["sampler"] = f"sampling stopped at {at:.3f} s: {reason}; no samples after it"
                self.run.events.append(Event("sampler_failed", t_s=at, attributes={"reason": reason}))
            share = self._sampler.cpu_share()
            if share is not None:
                self.run.metadata["sampler_cpu_share"] = share  # its own cost, so reports can state it
        if win is not None:
            win.drain()
            win.finish(self.run)
        fill_sampled_peaks(self.run, self._device.label)
        self.run.unavailable.update({f"nvml.{k}": v for k, v in self._device.nvml_unavailable().items()})
        output.log_usage(self.run)
        self._write_run_file(partial=False)
        # after the run file: a failing listener (a report writer) cannot lose it. The SIGTERM
        # handler stays until the listeners are done, so a SIGTERM here raises SystemExit(143)
        # inside the report writer, which records what it could not write, instead of killing
        # the process with nothing said.
        try:
            for cb in list(self._end_listeners):
                self._notify_one(cb, "run_end", self.run)
        finally:
            self._sigterm.restore()
            if self._host is not None:
                self._host.close()
            if self._rss is not None:
                self._rss.close()
            self._log_file.close()
        return self.run

    # ---------------------------------------------------------------- facts
    def _collect_facts(self) -> None:
        """The machine's facts (kept for the process: :mod:`genprof.profiler.facts`) and the device's flags."""
        run, cfg = self.run, self.config
        device, torch = open_device(cfg.device_index)
        self._device = device
        run.software = software_info(torch, device)
        run.host = host_info()
        run.gpus = device.gpus()
        run.unavailable.update(device.unavailable())
        self._on_gpu = device.is_gpu
        self._device_index = device.index
        if cfg.gpu_timing:
            self._timer = device.timer()
        else:
            run.unavailable.setdefault("gpu_time", "GPU timing turned off by config (gpu_timing: false)")
        if cfg.nvtx:
            self._nvtx = device.nvtx()
        alloc = device.allocator()
        if alloc is not None:
            self._peaks = PeakTracker(alloc[0], alloc[1], device.index or 0,
                                      reset_peaks=cfg.reset_peak_memory, lock=self._lock)
        win = EnergyWindows(
            device, self._energy_kinds, run.unavailable,
            off_reason=None if cfg.monitor_gpu_power else
            "GPU power monitoring turned off by config (monitor_gpu_power: false)")
        self._energy_win = win
        self._energy, self._energy_kinds = win.reader, win.kinds  # the hot path reads these
        if cfg.track_rss:
            self._rss = host_probe.RssReader()
        run.distributed = _detect_distributed(torch)
        if run.distributed is not None:
            job, src = _job_id()
            run.metadata.setdefault("distributed", {
                "rank": run.distributed.rank, "world_size": run.distributed.world_size,
                "local_rank": run.distributed.local_rank, "job_id": job, "job_id_source": src,
                "host": run.host.hostname,
            })

    def _final_memory(self) -> None:
        if not self._on_gpu:
            return
        try:
            self.run.metadata["final_memory"] = {
                k: v for k, v in self._device.memory().items() if k in ("allocated_bytes", "reserved_bytes")}
        except RuntimeError as exc:
            log.warning("could not read final allocator state: %s", exc)

    def _on_samples(self, flat: dict[str, float]) -> None:
        for cb in list(self._sample_listeners):
            self._notify_one(cb, "samples", flat)

    # ----------------------------------------------------------- listeners
    # ----------------------------------------------------------- listeners
    def subscribe(self, callback: Callable[[str, Any], None],
                  kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(kind, payload)`` on ``("span_end", Span)``, ``("samples", dict)``, ``("run_end", Run)``.

        ``kinds`` limits the calls to those event kinds (default: those three); ``"span_start"``
        (the ``Span`` just opened: name, kind, index, ``start_s``) is sent only to listeners that
        ask for it. A listener that does not ask for span events costs nothing per span, and
        without a ``samples`` listener the sampler does not build the per-tick dict of readings.
        """
        wanted = _DEFAULT_KINDS if kinds is None else tuple(kinds)
        bad = [k for k in wanted if k not in _EVENT_KINDS]
        if bad:
            raise UsageError(f"unknown listener event kind(s) {', '.join(map(repr, bad))}; "
                             f"choose from {', '.join(_EVENT_KINDS)}")
        lists = {"span_start": self._start_listeners, "span_end": self._listeners,
                 "samples": self._sample_listeners, "run_end": self._end_listeners}
        for k in wanted:
            lists[k].append(callback)
        if "samples" in wanted and self._sampler is not None:
            self._sampler._on_samples = self._on_samples

        def unsubscribe() -> None:
            for lst in lists.values():
                with contextlib.suppress(ValueError):
                    lst.remove(callback)
            if not self._sample_listeners and self._sampler is not None:
                self._sampler._on_samples = None

        return unsubscribe


    # ----------------------------------------------------------------- events
    def event(self, name: str, **attributes: Any) -> Event | None:
        """Record a point in time (``checkpoint_loaded``, ``offload``...), inside the current span."""
        if not self._on:
            return None
        stack = self._stack()
        ev = Event(name=name, t_s=self.now(), span_id=stack[-1].id, attributes=attributes)  # the root's: None
        self.run.events.append(ev)
        return ev

    def set_metadata(self, key: str, value: Any) -> None:
        """Store free-form data in ``run.metadata[key]`` (integrations use their own keys)."""
        self.run.metadata[key] = value

    def add_tags(self, **tags: Any) -> None:
        self.run.tags.update(tags)


    # ------------------------------------------------------------- endings
    def _abort_path_if_last(self) -> list[str]:
        """The open spans of the last loop left early, if no span was opened after it."""
        with self._lock:
            stacks = list(self._all_stacks)
        return endings.abort_path_if_last(self._abort_path, self._abort_mark, self.run.spans, stacks)

    def _close_left_open_spans(self) -> None:
        with self._lock:
            stacks = [st[1:] for st in self._all_stacks]  # each without its root
        for st in stacks:
            for o in reversed(st):
                self.close_span(o, status="open_at_end")
        self._all_stacks = []
        self._tls = threading.local()

    # --------------------------------------------------------------- output
    def default_run_path(self) -> Path | None:
        return output.default_run_path(self.config, self.run, self.name)

    def _write_run_file(self, *, partial: bool) -> None:
        path = output.write_run_file(self.config, self.run, self.name, partial=partial)
        if path is not None:
            self._saved_path = path

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save the run file (to ``path`` or ``output_dir``); works while running (status ``running``)."""
        p = Path(path) if path is not None else self.default_run_path()
        if p is None:
            raise UsageError("no path given and no output_dir configured: pass a path to save()")
        return output.run_for_file(self.config, self.run).save(p)

    @property
    def run_path(self) -> Path | None:
        """Where the run file was written, if it was."""
        return self._saved_path

    # ------------------------------------------------------------ live view
    def live_snapshot(self) -> dict[str, Any]:
        """Current progress and the latest samples, for the live view and exporters."""
        latest = self._sampler.latest() if self._sampler is not None else {}
        return self._prog.snapshot(self.name, self.now(), latest, self._device.label)
