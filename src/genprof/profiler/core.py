"""The public profiler: spans (phases, steps, blocks, calls, generations), events, sampling.

Usage::

    with genprof.Profiler("wan-t2v", tags={"model": "wan2.1-1.3b"}) as prof:
        with prof.phase("load"):
            ...
        for t in prof.steps(timesteps, phase="denoise"):
            ...
    run = prof.run

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
import platform
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from genprof._version import __version__
from genprof.config import ProfilerConfig, load_config
from genprof.errors import UsageError
from genprof.lifecycle import notify_started
from genprof.model import (
    Event,
    GpuInfo,
    HostInfo,
    Run,
    SoftwareInfo,
    Span,
)
from genprof.probes import host as host_probe
from genprof.probes import torch_cuda
from genprof.probes.nvml import NvmlDevice, NvmlProbe
from genprof.profiler.energy import _ENERGY_RELIABLE_MIN_S, _EnergyReader
from genprof.profiler.facts import (
    _ENERGY_COUNTER,
    _allocator_fns,
    _detect_distributed,
    _job_id,
    _module_version,
)
from genprof.profiler.registry import _active, _active_lock, _current
from genprof.profiler.spans import (
    _LOGGED_KINDS,
    _NULL,
    _log_span,
    _make_open,
    _new,
    _OpenSpan,
    _root,
    _stack_paths,
)
from genprof.sampler import Readings, Sampler, Source
from genprof.timing import GpuTimer, Nvtx

log = logging.getLogger("genprof")

_ENERGY_KINDS = {"phases": ("phase", "generation"), "all": ("phase", "generation", "step", "block", "call"), "none": ()}
_MEMORY_KINDS = ("phase", "generation", "step", "block")
_EVENT_KINDS = ("span_start", "span_end", "samples", "run_end")
_DEFAULT_KINDS = ("span_end", "samples", "run_end")



class Profiler:
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
        self._energy: _EnergyReader | None = None
        self._running = False
        self._stopped = False
        self._lock = threading.RLock()
        self._mem_open: list[_OpenSpan] = []  # open spans that track allocator peaks
        # listeners by event kind; the hot path reads only _listeners (span_end)
        self._listeners: list[Callable[[str, Any], None]] = []
        self._start_listeners: list[Callable[[str, Any], None]] = []  # span_start: read at every span open
        self._sample_listeners: list[Callable[[str, Any], None]] = []
        self._end_listeners: list[Callable[[str, Any], None]] = []
        self._torch: Any = None
        self._cuda_index: int | None = None
        self._timer: GpuTimer | None = None
        self._nvtx: Nvtx | None = None
        self._nvml = NvmlProbe()
        self._nvml_dev: NvmlDevice | None = None
        self._host: host_probe.HostProbe | None = None
        self._rss: host_probe.RssReader | None = None
        self._sampler: Sampler | None = None
        self._stats_fn: Callable[[int], Any] | None = None
        self._reset_fn: Callable[[int], Any] | None = None
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
        self._log_handler: logging.Handler | None = None
        self._prev_sigterm: Any = None
        self._token: Any = None
        self._progress: dict[str, Any] = {"phase": None, "step_index": None, "steps_total": None, "first_step_s": None}
        # progress for the live view, counted from run.spans when asked (not on the hot path):
        # step spans closed since the last step loop started, and when the last one ended
        self._steps_done = 0
        self._last_step_end_s: float | None = None
        self._step_scan_pos = 0
        self._run_energy_start: float | None = None
        self._run_energy_end: float | None = None
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

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """Seconds since the run started (monotonic)."""
        return self._clock() - self._t0

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
            self._setup_log_file()
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
        if self._stats_fn is not None and self.config.memory_tracking:
            self._mem_kinds = frozenset(_MEMORY_KINDS)
        if self._rss is not None:
            self._rss_kinds = frozenset(_MEMORY_KINDS)
        # whether opening a span does more than host timing (read on every span open)
        self._extras = self._cuda_index is not None or bool(self._rss_kinds) or bool(self._energy_kinds)
        # fixed while the run goes on (_timer is set by _collect_facts, above): open spans rely on it
        self._plain = self._timer is None and not self._extras
        self._on = True
        self._setup_sampler()
        if self.config.handle_sigterm:
            self._install_sigterm()
        if self.config.output_dir:
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
            self._record_failure(exc)
        if not self.config.enabled:
            return self.run
        self._close_left_open_spans()
        # the last readings (energy counter, the sampler's final sample, ~3 ms each on an H100)
        # are taken on their own threads while this one resolves GPU times and memory
        if self._energy is not None:
            self._energy.request(self._set_run_energy_end)
        if self._sampler is not None:
            self._sampler.request_stop()
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
        if self._energy is not None:
            self._energy.drain()
        self._finish_energy()
        self._fill_sampled_peaks()
        self.run.unavailable.update({f"nvml.{k}": v for k, v in self._nvml.unavailable.items()})
        self._log_usage()
        if self.config.output_dir:
            self._write_run_file(partial=False)
        # after the run file: a failing listener (a report writer) cannot lose it. The SIGTERM
        # handler stays until the listeners are done, so a SIGTERM here raises SystemExit(143)
        # inside the report writer, which records what it could not write, instead of killing
        # the process with nothing said.
        try:
            for cb in list(self._end_listeners):
                self._notify_one(cb, "run_end", self.run)
        finally:
            self._restore_sigterm()
            if self._host is not None:
                self._host.close()
            if self._rss is not None:
                self._rss.close()
            self._teardown_log_file()
        return self.run

    # ---------------------------------------------------------------- facts
    def _collect_facts(self) -> None:
        run = self.run
        run.software = SoftwareInfo(
            genprof=__version__, python=platform.python_version(), diffusers=_module_version("diffusers"),
            transformers=_module_version("transformers"),
        )
        run.host = HostInfo(**host_probe.host_facts())
        torch = torch_cuda.get_torch()
        sw = torch_cuda.software_versions(torch)
        run.software.torch, run.software.cuda, run.software.cudnn = sw["torch"], sw["cuda"], sw["cudnn"]
        reason = torch_cuda.cuda_unavailable_reason(torch)
        if reason is None and torch is not None:
            self._torch = torch
            idx = self.config.device_index
            self._cuda_index = int(torch.cuda.current_device()) if idx is None else idx
            facts = torch_cuda.device_facts(torch, self._cuda_index)
            gpu = GpuInfo(**facts)
            if self.config.gpu_timing:
                self._timer = GpuTimer(torch, device_index=self._cuda_index)
            else:
                run.unavailable["gpu_time"] = "GPU timing turned off by config (gpu_timing: false)"
            if self.config.nvtx:
                self._nvtx = Nvtx(torch)
            self._stats_fn, self._reset_fn = _allocator_fns(torch)
            # NVML device of *this* process's GPU, by UUID (honours CUDA_VISIBLE_DEVICES)
            if gpu.uuid and self._nvml.available:
                self._nvml_dev = self._nvml.device_by_uuid(gpu.uuid)
            elif self._nvml.available:
                vis = self._nvml.visible_devices()
                if self._cuda_index < len(vis):
                    self._nvml_dev = vis[self._cuda_index]
            if self._nvml_dev is not None:
                nf = self._nvml.device_facts(self._nvml_dev)
                gpu.nvml_index = nf["nvml_index"]
                gpu.power_limit_w = nf["power_limit_w"]
                gpu.mig_mode = nf["mig_mode"]
                if gpu.mig_mode:
                    run.unavailable["mig"] = "MIG is enabled: NVML utilization, power and energy are per GPU, not per instance"
            run.gpus = [gpu]
        else:
            why = reason or "torch is not installed"
            run.unavailable["cuda"] = why
            run.unavailable["gpu_time"] = why
            run.unavailable["gpu_memory"] = why
        if self._nvml.available:
            run.software.driver = self._nvml.driver_version()
            run.software.nvml = self._nvml.nvml_version()
        else:
            run.unavailable["nvml"] = self._nvml.reason or "NVML unavailable"
        if self._nvml_dev is None:
            run.unavailable.setdefault("gpu_energy", "no NVML device for this process's GPU")
        elif self._energy_kinds:
            dev = self._nvml_dev
            nvml = self._nvml
            key = dev.uuid or f"nvml{dev.nvml_index}"
            known = _ENERGY_COUNTER.get(key)
            if known is None:  # the process's first run on this GPU: is the counter there? (one read, ~3 ms)
                self._run_energy_start = nvml.energy_j(dev)
                known = (self._run_energy_start is not None, nvml.unavailable.get("gpu_energy"))
                _ENERGY_COUNTER[key] = known
            if known[0]:
                self._energy = _EnergyReader(lambda: nvml.energy_j(dev))
                if self._run_energy_start is None:  # later runs: the start read on the reader's thread
                    self._energy.request(self._set_run_energy_start)
            elif known[1]:
                run.unavailable["gpu_energy"] = known[1]
        elif not self.config.monitor_gpu_power:
            run.unavailable["gpu_energy"] = "GPU power monitoring turned off by config (monitor_gpu_power: false)"
        if self._energy is None:
            self._energy_kinds = frozenset()  # the hot path reads only this set
        if self.config.track_rss:
            self._rss = host_probe.RssReader()
        run.distributed = _detect_distributed(torch)
        if run.distributed is not None:
            job, src = _job_id()
            run.metadata.setdefault("distributed", {
                "rank": run.distributed.rank, "world_size": run.distributed.world_size,
                "local_rank": run.distributed.local_rank, "job_id": job, "job_id_source": src,
                "host": run.host.hostname,
            })


    # --------------------------------------------------------------- sampler
    def _setup_sampler(self) -> None:
        cfg = self.config
        sources: list[Source] = []
        meta: dict[tuple[str, str], tuple[str, str]] = {}
        dev = self._nvml_dev
        gpu_name = f"gpu{self._cuda_index}" if self._cuda_index is not None else "gpu"
        want_gpu = cfg.monitor_gpu_memory or cfg.monitor_gpu_utilization or cfg.monitor_gpu_temperature or \
            cfg.monitor_gpu_power or cfg.monitor_gpu_clocks
        if want_gpu and (dev is not None or self._stats_fn is not None):
            nvml = self._nvml
            stats_fn = self._stats_fn if cfg.monitor_gpu_memory else None
            idx = self._cuda_index
            nvml_read = None if dev is None else nvml.reader(
                dev, memory=cfg.monitor_gpu_memory, utilization=cfg.monitor_gpu_utilization,
                temperature=cfg.monitor_gpu_temperature, power=cfg.monitor_gpu_power,
                clocks=cfg.monitor_gpu_clocks, clock_events=cfg.monitor_gpu_clocks,
                key=lambda name: (gpu_name, name),
            )

            def read_gpu() -> Readings:
                out: Readings = nvml_read() if nvml_read is not None else {}
                if stats_fn is not None and idx is not None:
                    st = stats_fn(idx)
                    out[(gpu_name, "allocated_bytes")] = st[0]
                    out[(gpu_name, "reserved_bytes")] = st[2]
                return out

            sources.append(Source("gpu", cfg.gpu_monitor_interval, read_gpu))
            if dev is not None:
                meta[(gpu_name, "utilization_pct")] = (
                    "gauge", "NVML busy time: percent of the last sample period (1/6 s to 1 s) in which a kernel ran")
                meta[(gpu_name, "power_w")] = ("gauge", self._nvml.power_source(dev))
                meta[(gpu_name, "memory_used_bytes")] = ("gauge", "NVML device memory used (all processes)")
                meta[(gpu_name, "temperature_c")] = ("gauge", "NVML GPU core temperature")
                meta[(gpu_name, "sm_clock_mhz")] = ("gauge", "NVML SM clock")
                meta[(gpu_name, "clock_event_reasons")] = (
                    "state", "NVML clock event (throttle) reason bitmask, recorded when it changes")
            meta[(gpu_name, "allocated_bytes")] = ("gauge", "PyTorch caching allocator: allocated (this process)")
            meta[(gpu_name, "reserved_bytes")] = ("gauge", "PyTorch caching allocator: reserved (this process)")
        elif want_gpu and "cuda" in self.run.unavailable:
            self.run.unavailable["gpu_samples"] = self.run.unavailable["cuda"]
        if cfg.monitor_cpu_usage or cfg.monitor_system_memory:
            self._host = host_probe.HostProbe()
            hp = self._host

            def read_host() -> Readings:
                r = hp.read(cpu=cfg.monitor_cpu_usage, memory=cfg.monitor_system_memory)
                out: Readings = {}
                for k, v in r.items():
                    out[("process" if k in ("rss_bytes", "process_cpu_pct") else "host", k)] = v
                return out

            sources.append(Source("host", cfg.cpu_monitor_interval, read_host))
            meta[("host", "cpu_pct")] = ("gauge", f"{hp.source}: system-wide CPU percent since the last sample")
            meta[("process", "process_cpu_pct")] = ("gauge", f"{hp.source}: this process's CPU percent (100 = one core)")
            meta[("process", "rss_bytes")] = ("gauge", "resident set size of this process")
        if sources:
            self._sampler = Sampler(
                sources, t0=self._t0, clock=self._clock, max_points=cfg.max_data_points, sources_meta=meta,
                on_samples=self._on_samples if self._sample_listeners else None,
            )
            self._sampler.start()

    def _on_samples(self, flat: dict[str, float]) -> None:
        for cb in list(self._sample_listeners):
            self._notify_one(cb, "samples", flat)

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

    @staticmethod
    def _notify_one(cb: Callable[[str, Any], None], kind: str, payload: Any) -> None:
        try:
            cb(kind, payload)
        except Exception as exc:  # noqa: BLE001 - a listener must not break the profiled code
            log.warning("genprof listener %r failed on %s: %s: %s", cb, kind, type(exc).__name__, exc)

    # ----------------------------------------------------------------- spans
    def _stack(self) -> list[_OpenSpan]:
        """This thread's stack of open spans: its root first (see :func:`_root`), innermost last."""
        try:
            stack: list[_OpenSpan] = self._tls.stack
            return stack
        except AttributeError:
            st = [_root(threading.current_thread().name)]
            self._tls.stack = st
            with self._lock:
                self._all_stacks.append(st)
            return st

    def open_span(self, name: str, kind: str = "call", *, index: int | None = None, **attributes: Any) -> _OpenSpan | None:
        """Open a span without a ``with`` block (for hooks and callbacks); close it with :meth:`close_span`.

        Returns None when profiling is disabled or the profiler is not running.
        """
        if not self._on:
            return None
        o = _make_open(self, name, kind, index, attributes)
        o.__enter__()
        return o

    def next_span(self, o: _OpenSpan | None, *, index: int | None = None, **attributes: Any) -> _OpenSpan | None:
        """Close ``o`` and open the next span of the same name and kind at the same instant.

        For step and block loops: the two spans share their boundary, so it is measured once
        (one clock read, one CUDA event, one allocator read and peak reset, one RSS read), and
        the next span's start values are exactly the previous span's end values. Falls back to
        :meth:`close_span` plus :meth:`open_span` when ``o`` is not the innermost open span of
        the calling thread. Returns the new open span (None when profiling is off).
        """
        if o is None:
            return None
        stack = o.stack
        try:
            mine = self._tls.stack is stack
        except AttributeError:
            mine = False
        if not self._on or not mine or stack[-1] is not o:
            span = o.span
            self.close_span(o)
            return self.open_span(span.name, span.kind, index=index, **attributes)
        span = o.span
        kind = o.kind
        # _make_open inlined (a loop's boundary is a hot path); Span fields are written, and read
        # only where no copy exists on the _OpenSpan (name, parent_id)
        ns = _new(Span)
        ns.name = span.name
        ns.kind = kind
        ns.index = index
        if attributes:  # see _LAZY_ATTRIBUTES
            ns.attributes = attributes
        n = _OpenSpan()
        n._p = self
        n.span = ns
        n.kind = kind
        ns.id = n.id = next(self._ids)
        ns.parent_id = span.parent_id
        ns.thread = stack[0].thread  # o is on this thread's stack
        n.stack = stack
        if self._plain:
            t = self._clock() - self._t0
            span.duration_s = t - o.start
            ns.start_s = n.start = t
        else:
            n.gpu_start = None
            if o.gpu_start is not None:
                n.gpu_start = self._timer.stop_shared(span, o.gpu_start)  # type: ignore[union-attr]
            t = self._clock() - self._t0
            span.duration_s = t - o.start
            ns.start_s = n.start = t
            n.extra = o.extra
            if o.extra:
                self._boundary_extra(o, n, span, ns, kind)
        stack[-1] = n
        self._spans.append(span)
        if self._listeners:
            for cb in self._listeners:
                self._notify_one(cb, "span_end", span)
        if self._start_listeners:
            for cb in self._start_listeners:
                self._notify_one(cb, "span_start", ns)
        if kind in _LOGGED_KINDS and log.isEnabledFor(logging.INFO):
            _log_span(span)
        return n

    def _boundary_extra(self, o: _OpenSpan, n: _OpenSpan, span: Span, ns: Span, kind: str) -> None:
        """:meth:`next_span`'s allocator, RSS, energy and NVTX work: each read once for both spans."""
        n.nvtx = n.mem = False
        ns.device_index = span.device_index
        if o.mem:
            assert self._stats_fn is not None
            idx = self._cuda_index or 0
            alloc, peak_a, res, peak_r = self._stats_fn(idx)
            span.allocated_end_bytes = ns.allocated_start_bytes = alloc
            span.reserved_end_bytes = ns.reserved_start_bytes = res
            with self._lock:
                pa, pr = o.peak_alloc, o.peak_res
                span.peak_allocated_bytes = peak_a if pa is None or pa < peak_a else pa
                span.peak_reserved_bytes = peak_r if pr is None or pr < peak_r else pr
                mem_open = self._mem_open
                if mem_open and mem_open[-1] is o:
                    mem_open[-1] = n
                else:
                    if o in mem_open:
                        mem_open.remove(o)
                    mem_open.append(n)
                self._fold_peaks(peak_a, peak_r, skip=n)
                if self.config.reset_peak_memory and self._reset_fn is not None:
                    self._reset_fn(idx)
                    n.peak_alloc, n.peak_res = alloc, res
                else:
                    n.peak_alloc = n.peak_res = None
            ns.peak_source = span.peak_source
            n.mem = True
        if span.rss_start_bytes is not None and self._rss is not None:
            span.rss_end_bytes = ns.rss_start_bytes = self._rss.read_bytes()
        if kind in self._energy_kinds:
            self._energy.request_end(o)  # type: ignore[union-attr]
            self._energy.request_start(n)  # type: ignore[union-attr]
        if o.nvtx and self._nvtx is not None:
            self._nvtx.pop()
            self._nvtx.push(ns.name if ns.index is None else f"{ns.name} {ns.index}")
            n.nvtx = True

    def _open_extra(self, o: _OpenSpan, span: Span, kind: str) -> bool:
        """Opening work beyond host timing: device, NVTX range, allocator state, RSS, energy.

        Returns whether the span needs :meth:`_close_extra`.
        """
        o.nvtx = o.mem = False
        if self._cuda_index is not None:
            span.device_index = self._cuda_index
            if self._nvtx is not None:
                self._nvtx.push(span.name if span.index is None else f"{span.name} {span.index}")
                o.nvtx = True
            if kind in self._mem_kinds:
                self._mem_start(o)
        if kind in self._rss_kinds:
            span.rss_start_bytes = self._rss.read_bytes()  # type: ignore[union-attr]
        if kind in self._energy_kinds:
            self._energy.request_start(o)  # type: ignore[union-attr]
        return True

    def _close_extra(self, o: _OpenSpan, span: Span, kind: str) -> None:
        if o.mem:
            self._mem_end(o)
        if span.rss_start_bytes is not None and self._rss is not None:
            span.rss_end_bytes = self._rss.read_bytes()
        if kind in self._energy_kinds:
            self._energy.request_end(o)  # type: ignore[union-attr]
        if o.nvtx and self._nvtx is not None:
            self._nvtx.pop()

    def close_span(self, o: _OpenSpan | None, exc: BaseException | None = None, *, status: str | None = None) -> Span | None:
        """Close a span opened with :meth:`open_span`. ``exc`` marks it failed; ``status`` sets its status."""
        if o is None:
            return None
        if exc is None:
            o.__exit__(None, None, None, status)
        else:
            o.__exit__(type(exc), exc, exc.__traceback__)
        return o.span

    def _end_logged(self, span: Span, kind: str, stack: list[_OpenSpan]) -> None:
        """The end of a phase or generation span (off the hot path): progress, listeners, log line."""
        if kind == "phase" and self._progress["phase"] == span.name:
            outer = [x.span.name for x in stack[1:] if x.kind == "phase"]
            self._progress["phase"] = outer[-1] if outer else None
        if self._listeners:
            for cb in self._listeners:
                self._notify_one(cb, "span_end", span)
        if log.isEnabledFor(logging.INFO):
            _log_span(span)

    def _span_failed(self, span: Span, et: type[BaseException], exc: BaseException | None) -> None:
        span.status = "error"
        span.attributes.setdefault("error", f"{et.__name__}: {'' if exc is None else exc}"[:500])
        if not self._failure_paths:
            paths = _stack_paths(self._stack()) or [span.name]
            # a step loop aborted inside an outer span: its open step is deeper than the stack
            ab = self._abort_path_if_last()
            if len(ab) > len(paths) and ab[: len(paths)] == paths:
                paths = ab
            self._failure_paths = paths
            if self._torch is not None and self._oom_state is None and exc is not None and torch_cuda.is_oom_error(self._torch, exc):
                self._oom_state = torch_cuda.allocator_state(self._torch, self._cuda_index or 0)

    def span(self, name: str, kind: str = "call", *, index: int | None = None,
             **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
        """A span of any kind around a ``with`` block; yields the open Span (None when disabled)."""
        if not self._on:
            return _NULL
        # _make_open inlined: this is the hot path of hand-written loops
        span = _new(Span)
        span.name = name
        span.kind = kind
        span.index = index
        if attributes:  # see _LAZY_ATTRIBUTES
            span.attributes = attributes
        o = _OpenSpan()
        o._p = self
        o.span = span
        o.kind = kind
        return o

    def phase(self, name: str, **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
        """A phase (``load``, ``text_encode``, ``denoise``, ``vae_decode``...). Phases nest."""
        if not self._on or not self.phase_enabled(name):
            return _NULL
        return _make_open(self, name, "phase", None, attributes)

    def generation(self, name: str = "generation", **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
        """One generation (one image or video): the unit of usage statistics and throughput."""
        return self.span(name, "generation", **attributes)

    def phase_enabled(self, name: str) -> bool:
        """Whether :meth:`phase` records a phase of this name (``profile_vae_decode`` / ``profile_text_encoding``)."""
        return self._phase_enabled(name)

    def _phase_enabled(self, name: str) -> bool:
        c = self.config
        if not c.profile_vae_decode and name in ("vae_decode", "vae_encode"):
            return False
        return c.profile_text_encoding or name != "text_encode"

    def steps(self, iterable: Iterable[Any], phase: str | None = "denoise", *, total: int | None = None,
              name: str = "step", **attributes: Any) -> Iterator[Any]:
        """Iterate ``iterable`` with one ``step`` span per item, inside phase ``phase`` (None: no phase)."""
        if not self._on:
            return iter(iterable)
        return self._loop(iterable, phase, total, name, "step", attributes, self.config.profile_inference_steps)

    def blocks(self, iterable: Iterable[Any], phase: str | None = "blocks", *, total: int | None = None,
               steps_per_block: int | None = None, output_frames_per_block: int | None = None,
               latent_frames_per_block: int | None = None, vae_temporal_factor: int | None = None,
               fps: float | None = None, name: str = "block", frames_per_block: int | None = None,
               **attributes: Any) -> Iterator[Any]:
        """Like :meth:`steps` for block-diffusion loops: one ``block`` span per item.

        Each block span carries the attribute ``frames``: the output (decoded) frames it
        produces, which throughput analysis uses for blocks/s, latency and deadline misses.
        Give ``output_frames_per_block``, or ``latent_frames_per_block`` with the causal video
        VAE's ``vae_temporal_factor`` k: block 0 then decodes to ``1 + k * (n - 1)`` frames and
        every later block to ``k * n``. ``fps`` (the playback rate the output is meant for) is
        recorded as the attribute ``fps`` of the enclosing blocks phase span.
        ``frames_per_block`` is the old name of ``output_frames_per_block`` (deprecated).
        """
        if frames_per_block is not None:
            _warn_frames_per_block_once()
            if output_frames_per_block is None:
                output_frames_per_block = frames_per_block
        first_frames = later_frames = output_frames_per_block
        if latent_frames_per_block is not None:
            if output_frames_per_block is not None:
                raise UsageError("pass output_frames_per_block or latent_frames_per_block, not both")
            if vae_temporal_factor is None:
                raise UsageError("latent_frames_per_block needs the VAE's temporal compression: pass "
                                 "vae_temporal_factor= (4 for most causal video VAEs), or pass "
                                 "output_frames_per_block= instead")
            n, k = int(latent_frames_per_block), int(vae_temporal_factor)
            if n < 1 or k < 1:
                raise UsageError(f"latent_frames_per_block ({n}) and vae_temporal_factor ({k}) must be >= 1")
            first_frames, later_frames = 1 + k * (n - 1), k * n
        if steps_per_block is not None:
            attributes["steps"] = steps_per_block
        if not self._on:
            return iter(iterable)
        phase_attrs = {} if fps is None else {"fps": fps}
        if first_frames is not None and first_frames != later_frames:
            return self._loop(iterable, phase, total, name, "block", attributes, True, phase_attrs,
                              first_frames, later_frames)
        if first_frames is not None:
            attributes["frames"] = first_frames
        return self._loop(iterable, phase, total, name, "block", attributes, True, phase_attrs)

    def _loop(self, iterable: Iterable[Any], phase: str | None, total: int | None, name: str, kind: str,
              attributes: dict[str, Any], per_item: bool, phase_attrs: dict[str, Any] | None = None,
              first_frames: int | None = None, later_frames: int | None = None) -> Iterator[Any]:
        if total is None and hasattr(iterable, "__len__"):
            with contextlib.suppress(TypeError):
                total = len(iterable)  # type: ignore[arg-type]
        if kind == "step":
            self._progress["steps_total"] = total
            with self._lock:
                self._step_scan_pos = len(self.run.spans)
                self._steps_done = 0
            self._progress["first_step_s"] = self.now()
        outer = self.phase(phase, total=total, **(phase_attrs or {})) if phase else contextlib.nullcontext()
        with outer:
            o: _OpenSpan | None = None
            try:
                for i, item in enumerate(iterable):
                    if later_frames is not None:  # causal VAE: block 0 decodes to fewer frames
                        attributes = {**attributes, "frames": first_frames if i == 0 else later_frames}
                    if per_item:
                        # one boundary between consecutive items: the previous span ends where
                        # this one starts (producing the next item counts in the previous one)
                        o = self.open_span(name, kind, index=i, **attributes) if o is None else \
                            self.next_span(o, index=i, **attributes)
                    if kind == "step":
                        self._progress["step_index"] = i
                    try:
                        yield item
                    except GeneratorExit:
                        # the loop was left early: break, return, or an exception in its body
                        if o is not None and not self._failure_paths:
                            self._abort_path = _stack_paths(self._stack())
                            self._abort_mark = next(self._ids)  # spans opened later have larger ids
                        self.close_span(o, status="aborted")
                        o = None
                        raise
                    except BaseException as exc:
                        self.close_span(o, exc)
                        o = None
                        raise
            except BaseException as exc:
                if o is not None:  # the iterable itself failed while producing the next item
                    self.close_span(o, exc)
                    o = None
                raise
            self.close_span(o)

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

    # ------------------------------------------------------------- memory
    def _mem_start(self, o: _OpenSpan) -> None:
        assert self._stats_fn is not None
        idx = self._cuda_index or 0
        alloc, peak_a, res, peak_r = self._stats_fn(idx)
        span = o.span
        span.allocated_start_bytes = alloc
        span.reserved_start_bytes = res
        with self._lock:
            if self.config.reset_peak_memory and self._reset_fn is not None:
                self._fold_peaks(peak_a, peak_r)  # into every open span, before the reset
                self._reset_fn(idx)
                o.peak_alloc, o.peak_res = alloc, res
                span.peak_source = "allocator peak counter, reset at span start"
            else:
                o.peak_alloc, o.peak_res = None, None
                span.peak_source = "allocator peak counter NOT reset (reset_peak_memory: false): peak since the last reset"
            self._mem_open.append(o)
            o.mem = True

    def _fold_peaks(self, peak_a: int, peak_r: int, skip: _OpenSpan | None = None) -> None:
        """Raise the running peaks of the open memory-tracking spans to the counter's (lock held)."""
        for other in self._mem_open:
            if other is skip:
                continue
            if other.peak_alloc is None or other.peak_alloc < peak_a:
                other.peak_alloc = peak_a
            if other.peak_res is None or other.peak_res < peak_r:
                other.peak_res = peak_r

    def _mem_end(self, o: _OpenSpan) -> None:
        assert self._stats_fn is not None
        idx = self._cuda_index or 0
        alloc, peak_a, res, peak_r = self._stats_fn(idx)
        span = o.span
        span.allocated_end_bytes = alloc
        span.reserved_end_bytes = res
        with self._lock:
            pa, pr = o.peak_alloc, o.peak_res
            span.peak_allocated_bytes = peak_a if pa is None or pa < peak_a else pa
            span.peak_reserved_bytes = peak_r if pr is None or pr < peak_r else pr
            mem_open = self._mem_open
            if mem_open and mem_open[-1] is o:
                mem_open.pop()
            elif o in mem_open:
                mem_open.remove(o)
            self._fold_peaks(peak_a, peak_r)  # into the spans still open around this one

    def _final_memory(self) -> None:
        if self._stats_fn is None or self._cuda_index is None:
            return
        try:
            alloc, _pa, res, _pr = self._stats_fn(self._cuda_index)
            self.run.metadata["final_memory"] = {"allocated_bytes": alloc, "reserved_bytes": res}
        except RuntimeError as exc:
            log.warning("could not read final allocator state: %s", exc)

    def _fill_sampled_peaks(self) -> None:
        """Time of each span's allocator peak and its RSS peak, from the sampled series."""
        series = {(s.device, s.name): s for s in self.run.series}
        gname = f"gpu{self._cuda_index}" if self._cuda_index is not None else None
        alloc = series.get((gname, "allocated_bytes")) if gname else None
        rss = series.get(("process", "rss_bytes"))
        for sp in self.run.spans:
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

    # ------------------------------------------------------------- energy
    def _set_run_energy_start(self, v: float | None) -> None:
        self._run_energy_start = v

    def _set_run_energy_end(self, v: float | None) -> None:
        self._run_energy_end = v

    def _finish_energy(self) -> None:
        """The run's energy from the counter read at its start and end (on the reader's thread)."""
        e0, e1 = self._run_energy_start, self._run_energy_end
        if e0 is None or e1 is None:
            if self._energy is not None and "gpu_energy" not in self.run.unavailable:
                self.run.unavailable["gpu_energy"] = ("NVML's energy counter could not be read at the run's "
                                                      f"{'start' if e0 is None else 'end'}")
            return
        total = max(0.0, e1 - e0)
        dur = self.run.duration_s or 0.0
        self.run.metadata["energy"] = {
            "total_j": total,
            "average_power_w": (total / dur) if dur > 0 else None,
            "source": "NVML nvmlDeviceGetTotalEnergyConsumption difference over the run (whole GPU)",
            "reliable": dur >= _ENERGY_RELIABLE_MIN_S,
        }

    # ------------------------------------------------------------- endings
    def _abort_path_if_last(self) -> list[str]:
        """The open spans of the last loop left early, if no span was opened after it.

        The mark is an id taken when the loop was left; a span opened later has a larger id.
        (Checked here, once, instead of clearing the path at every span open.)
        """
        path, mark = self._abort_path, self._abort_mark
        if not path or mark is None:
            return []
        with self._lock:
            stacks = list(self._all_stacks)
        if any(sp.id is not None and sp.id > mark for sp in self.run.spans):
            return []
        if any(o.id is not None and o.id > mark for st in stacks for o in st[1:]):
            return []
        return list(path)

    def _record_failure(self, exc: BaseException) -> None:
        end = self.run.end
        end.exception_type = type(exc).__name__
        end.message = str(exc)[:2000]
        end.open_spans = self._failure_paths or self._abort_path_if_last()
        if torch_cuda.is_oom_error(torch_cuda.get_torch(import_if_needed=False), exc):
            end.status = "oom"
            state = self._oom_state
            if state is None and self._torch is not None:
                try:
                    state = torch_cuda.allocator_state(self._torch, self._cuda_index or 0)
                except RuntimeError as e:
                    state = {"error": f"allocator state unreadable: {e}"}
            if state is None:
                state = {"reason": self.run.unavailable.get("cuda", "no CUDA allocator in this run")}
            state["phase"] = next((p for p in reversed(end.open_spans)), None)
            end.oom = state
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            end.status = "ok"  # sys.exit(0) inside the profiled block is a normal ending
            end.exception_type = end.message = None
        elif isinstance(exc, KeyboardInterrupt):
            end.status = "interrupted"
            end.message = end.message or "KeyboardInterrupt (Ctrl-C)"
        elif isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM:
            end.status = "interrupted"
            end.message = "SIGTERM"
        else:
            end.status = "exception"
        log.info("genprof run %r ended with %s: %s", self.name, end.status, end.message)

    def _close_left_open_spans(self) -> None:
        with self._lock:
            stacks = [st[1:] for st in self._all_stacks]  # each without its root
        for st in stacks:
            for o in reversed(st):
                self.close_span(o, status="open_at_end")
        self._all_stacks = []
        self._tls = threading.local()

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            prev = signal.getsignal(signal.SIGTERM)
        except (ValueError, OSError):
            return
        if prev not in (signal.SIG_DFL, None):
            return  # the program handles SIGTERM itself; leave it alone

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        self._prev_sigterm = prev

    def _restore_sigterm(self) -> None:
        if self._prev_sigterm is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._prev_sigterm = None

    # --------------------------------------------------------------- output
    def default_run_path(self) -> Path | None:
        if not self.config.output_dir:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)[:80] or "run"
        return Path(self.config.output_dir) / f"{safe}-{self.run.run_id[:8]}.json"

    def _run_for_file(self) -> Run:
        if self.config.save_raw_data:
            return self.run
        import copy

        r = copy.copy(self.run)
        r.series = []
        r.unavailable = dict(self.run.unavailable)
        r.unavailable["series"] = "not saved: save_raw_data is false"
        return r

    def _write_run_file(self, *, partial: bool) -> None:
        path = self.default_run_path()
        if path is None:
            return
        try:
            self._run_for_file().save(path)
            self._saved_path = path
            if not partial:
                log.info("genprof run file written: %s", path)
        except OSError as exc:
            log.error("could not write the run file %s: %s", path, exc)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save the run file (to ``path`` or ``output_dir``); works while running (status ``running``)."""
        p = Path(path) if path is not None else self.default_run_path()
        if p is None:
            raise UsageError("no path given and no output_dir configured: pass a path to save()")
        return self._run_for_file().save(p)

    @property
    def run_path(self) -> Path | None:
        """Where the run file was written, if it was."""
        return self._saved_path

    def _log_usage(self) -> None:
        st = self.run.usage_statistics()
        from genprof.units import format_bytes, format_seconds

        log.info(
            "usage: initialization %s, generations %d, peak allocated %s, peak reserved %s, average %s, total %s, device %s",
            format_seconds(st["initialization_time_s"]), st["generations"], format_bytes(st["peak_allocated_bytes"]),
            format_bytes(st["peak_reserved_bytes"]), format_seconds(st["average_inference_time_s"]),
            format_seconds(st["total_inference_time_s"]), st["device_name"],
        )

    def _setup_log_file(self) -> None:
        if not (self.config.log_file and self.config.output_dir):
            return
        Path(self.config.output_dir).mkdir(parents=True, exist_ok=True)
        h = logging.FileHandler(Path(self.config.output_dir) / "genprof.log", encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h.setLevel(logging.INFO)
        lg = logging.getLogger("genprof")
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
        lg.addHandler(h)
        self._log_handler = h

    def _teardown_log_file(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("genprof").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    # ------------------------------------------------------------ live view
    def _scan_steps(self) -> tuple[int, float | None]:
        """Step spans closed since the last step loop started, and the end of the latest one.

        Counted from ``run.spans`` past the last position read, so the hot path stores nothing
        for progress. Items below a list's length never move, so reading them while another
        thread appends is safe.
        """
        with self._lock:
            spans = self.run.spans
            n = len(spans)
            for i in range(self._step_scan_pos, n):
                sp = spans[i]
                if sp.kind == "step" and sp.start_s is not None and sp.duration_s is not None:
                    self._steps_done += 1
                    end = sp.start_s + sp.duration_s
                    if self._last_step_end_s is None or end > self._last_step_end_s:
                        self._last_step_end_s = end
            self._step_scan_pos = n
            return self._steps_done, self._last_step_end_s

    def live_snapshot(self) -> dict[str, Any]:
        """Current progress and the latest samples, for the live view and exporters."""
        p = self._progress
        latest = self._sampler.latest() if self._sampler is not None else {}
        g = f"gpu{self._cuda_index}" if self._cuda_index is not None else "gpu"
        rate = eta = None
        done, last_end = self._scan_steps()
        if done and p["first_step_s"] is not None and last_end is not None:
            dt = last_end - p["first_step_s"]
            if dt > 0:
                rate = done / dt
                if p["steps_total"]:
                    eta = max(0, p["steps_total"] - done) / rate
        gpu = None
        if self.run.gpus:
            gi = self.run.gpus[0]
            gpu = {
                "name": gi.name,
                "memory_used_bytes": latest.get(f"{g}.memory_used_bytes"),
                "memory_total_bytes": gi.total_memory_bytes,
                "utilization_pct": latest.get(f"{g}.utilization_pct"),
                "power_w": latest.get(f"{g}.power_w"),
                "temperature_c": latest.get(f"{g}.temperature_c"),
            }
        return {
            "name": self.name,
            "elapsed_s": self.now(),
            "phase": p["phase"],
            "step_index": p["step_index"],
            "steps_done": done,
            "steps_total": p["steps_total"],
            "step_rate_per_s": rate,
            "eta_s": eta,
            "gpu": gpu,
            "allocated_bytes": latest.get(f"{g}.allocated_bytes"),
            "reserved_bytes": latest.get(f"{g}.reserved_bytes"),
            "cpu_pct": latest.get("host.cpu_pct"),
            "rss_bytes": latest.get("process.rss_bytes"),
        }


# ---------------------------------------------------------------------- helpers
_frames_alias_warned = False


def _warn_frames_per_block_once() -> None:
    global _frames_alias_warned
    if not _frames_alias_warned:
        _frames_alias_warned = True
        log.warning("Profiler.blocks(frames_per_block=) is deprecated: use output_frames_per_block= "
                    "(or latent_frames_per_block= with vae_temporal_factor=)")


def _window_max(ts: list[float], vs: list[float], start: float, end: float) -> tuple[float, float] | None:
    import bisect

    i = bisect.bisect_left(ts, start)
    j = bisect.bisect_right(ts, end)
    if i >= j:
        return None
    k = max(range(i, j), key=vs.__getitem__)
    return ts[k], vs[k]


