"""Prometheus exporter for inference servers: step, generation and phase times, GPU memory,
utilisation, power and energy, while a profiler runs.

``genprof.serve_metrics(port=9464)`` starts an HTTP endpoint on 127.0.0.1 (loopback unless
``addr`` says otherwise) serving a fresh :class:`prometheus_client.CollectorRegistry`, and
attaches to the active profiler (or the one given) through ``Profiler.subscribe``; profilers
started later are attached through ``genprof.profiler.on_profiler_start``. The metric list is
in ``docs/analysis.md`` and :data:`METRICS`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from genprof.errors import MissingDependencyError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# sample key suffix -> (metric name, help)
SAMPLE_METRICS: dict[str, tuple[str, str]] = {
    "power_w": ("genprof_gpu_power_watts", "GPU board power (NVML; averaged or instant as the driver reports)"),
    "utilization_pct": ("genprof_gpu_utilization_percent", "NVML GPU utilisation: share of time a kernel ran"),
    "memory_used_bytes": ("genprof_gpu_memory_used_bytes", "GPU memory used by all processes (NVML)"),
    "allocated_bytes": ("genprof_gpu_memory_allocated_bytes", "memory allocated to tensors (PyTorch allocator)"),
    "reserved_bytes": ("genprof_gpu_memory_reserved_bytes", "memory reserved by the PyTorch caching allocator"),
    "temperature_c": ("genprof_gpu_temperature_celsius", "GPU temperature"),
    "sm_clock_mhz": ("genprof_gpu_sm_clock_mhz", "GPU SM clock"),
}

METRICS: dict[str, str] = {
    "genprof_step_duration_seconds": "histogram{phase,model}: host time of each denoising step",
    "genprof_generation_duration_seconds": "histogram{model}: host time of each generation",
    "genprof_phase_duration_seconds": "histogram{phase,model}: host time of each phase",
    "genprof_phase_energy_joules_total": "counter{phase,model}: GPU energy of phases (NVML counter differences)",
    "genprof_phase_peak_reserved_bytes": "gauge{phase,model}: peak reserved memory in the last span of the phase",
    "genprof_runs_total": "counter{model,status}: profiled runs that ended",
    "genprof_profiler_active": "gauge{model}: 1 while a profiler is running",
    **{name: f"gauge{{gpu,gpu_uuid,model}}: {help_}" for name, help_ in SAMPLE_METRICS.values()},
}


class MetricsExporter:
    """Turns profiler events into Prometheus metrics on one registry."""

    def __init__(self, registry: Any = None) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise MissingDependencyError("prometheus-client", "genprof.serve_metrics", "prometheus") from exc
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.step = Histogram("genprof_step_duration_seconds", "host time of each denoising step",
                              ["phase", "model"], buckets=STEP_BUCKETS, registry=r)
        self.generation = Histogram("genprof_generation_duration_seconds", "host time of each generation",
                                    ["model"], buckets=GENERATION_BUCKETS, registry=r)
        self.phase = Histogram("genprof_phase_duration_seconds", "host time of each phase", ["phase", "model"],
                               buckets=GENERATION_BUCKETS, registry=r)
        self.energy = Counter("genprof_phase_energy_joules", "GPU energy of phases (NVML counter differences)",
                              ["phase", "model"], registry=r)
        self.peak_reserved = Gauge("genprof_phase_peak_reserved_bytes", "peak reserved memory in the last span "
                                   "of the phase", ["phase", "model"], registry=r)
        self.runs = Counter("genprof_runs", "profiled runs that ended", ["model", "status"], registry=r)
        self.active = Gauge("genprof_profiler_active", "1 while a profiler is running", ["model"], registry=r)
        self.samples = {
            key: Gauge(name, help_, ["gpu", "gpu_uuid", "model"], registry=r)
            for key, (name, help_) in SAMPLE_METRICS.items()
        }
        self._lock = threading.Lock()
        self._unsubscribe: list[Callable[[], Any]] = []
        self._ignored: set[str] = set()
        self._pending: dict[tuple[int, int], list[float]] = {}

    # -------------------------------------------------------------- attaching
    def attach(self, profiler: Any) -> None:
        """Subscribe to a profiler (anything with ``subscribe(callback) -> unsubscribe``)."""
        model = _model_of(profiler)

        def callback(kind: str, payload: Any) -> None:
            self.handle(kind, payload, profiler=profiler, model=model)

        unsub = profiler.subscribe(callback)
        if callable(unsub):
            self._unsubscribe.append(unsub)
        self.active.labels(model=model).set(1)

    def close(self) -> None:
        for u in self._unsubscribe:
            u()
        self._unsubscribe.clear()

    # -------------------------------------------------------------- events
    def handle(self, kind: str, payload: Any, *, profiler: Any = None, model: str = "") -> None:
        with self._lock:
            if kind == "span_end":
                self._span(payload, profiler, model)
            elif kind == "samples":
                self._samples(payload, profiler, model)
            elif kind == "run_end":
                for key in [k for k in self._pending if k[0] == id(profiler)]:
                    for sd in self._pending.pop(key):
                        self.step.labels(phase="", model=model).observe(sd)
                status = getattr(getattr(payload, "end", None), "status", None) or "unknown"
                self.runs.labels(model=model, status=str(status)).inc()
                self.active.labels(model=model).set(0)

    def _span(self, span: Any, profiler: Any, model: str) -> None:
        d = getattr(span, "duration_s", None)
        kind = getattr(span, "kind", None)
        name = str(getattr(span, "name", ""))
        sid = getattr(span, "id", None)
        waiting = self._pending.pop((id(profiler), sid), None) if sid is not None else None
        for sd in waiting or []:
            self.step.labels(phase=name, model=model).observe(sd)
        if kind == "step" and d is not None:
            phase = _parent_phase(span, profiler)
            pid = getattr(span, "parent_id", None)
            if phase is None and pid is not None:
                # the profiler files a span when it ends, so the parent is still open: observe the step
                # when its parent ends, under the parent's name
                self._pending.setdefault((id(profiler), pid), []).append(d)
            else:
                self.step.labels(phase=phase or "", model=model).observe(d)
        elif kind == "generation" and d is not None:
            self.generation.labels(model=model).observe(d)
        elif kind == "phase":
            if d is not None:
                self.phase.labels(phase=name, model=model).observe(d)
            e = getattr(span, "energy_j", None)
            if e is not None and e >= 0:
                self.energy.labels(phase=name, model=model).inc(e)
            pk = getattr(span, "peak_reserved_bytes", None)
            if pk is not None:
                self.peak_reserved.labels(phase=name, model=model).set(pk)

    def _samples(self, samples: Any, profiler: Any, model: str) -> None:
        if not isinstance(samples, dict):
            return
        uuids = _gpu_uuids(profiler)
        for key, value in samples.items():
            if value is None or "." not in key:
                continue
            device, metric = key.split(".", 1)
            g = self.samples.get(metric)
            if g is None or not device.startswith("gpu"):
                if key not in self._ignored:
                    self._ignored.add(key)
                    log.debug("prometheus exporter: no metric for sample %s", key)
                continue
            g.labels(gpu=device, gpu_uuid=uuids.get(device, ""), model=model).set(float(value))


def _model_of(profiler: Any) -> str:
    run = getattr(profiler, "run", None)
    tags = getattr(run, "tags", None) or getattr(profiler, "tags", None) or {}
    if isinstance(tags, dict) and tags.get("model"):
        return str(tags["model"])
    return str(getattr(run, "name", None) or getattr(profiler, "name", None) or "")


def _gpu_uuids(profiler: Any) -> dict[str, str]:
    run = getattr(profiler, "run", None)
    out: dict[str, str] = {}
    for g in getattr(run, "gpus", None) or []:
        if getattr(g, "uuid", None):
            out[f"gpu{g.index}"] = str(g.uuid)
    return out


def _parent_phase(span: Any, profiler: Any) -> str | None:
    attrs = getattr(span, "attributes", None) or {}
    if isinstance(attrs, dict) and attrs.get("phase"):
        return str(attrs["phase"])
    run = getattr(profiler, "run", None)
    pid = getattr(span, "parent_id", None)
    if run is not None and pid is not None and hasattr(run, "span_by_id"):
        parent = run.span_by_id(pid)
        if parent is not None:
            return str(parent.name)
    return None if pid is not None else ""


class MetricsServer:
    """A running exporter: ``url``, ``port``, ``registry``; ``close()`` stops it."""

    def __init__(self, exporter: MetricsExporter, server: Any, thread: Any, addr: str) -> None:
        self.exporter = exporter
        self.registry = exporter.registry
        self._server = server
        self._thread = thread
        self.addr = addr
        self.port = int(server.server_port)
        self._stop_hook: Callable[[], Any] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._stop_hook is not None:
            self._stop_hook()
            self._stop_hook = None
        self.exporter.close()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(
    port: int = DEFAULT_PORT,
    addr: str = "127.0.0.1",
    profiler: Any = None,
    *,
    registry: Any = None,
    follow_new_profilers: bool = True,
) -> MetricsServer:
    """Serve Prometheus metrics of the active profiler (or ``profiler``) on ``addr:port``.

    ``port=0`` picks a free port (see :attr:`MetricsServer.port`). With
    ``follow_new_profilers``, profilers started later are attached too.
    """
    try:
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise MissingDependencyError("prometheus-client", "genprof.serve_metrics", "prometheus") from exc
    exporter = MetricsExporter(registry)
    if profiler is None:
        profiler = _current_profiler()
    if profiler is not None:
        exporter.attach(profiler)
    try:
        started = start_http_server(port, addr=addr, registry=exporter.registry)
    except OSError as exc:
        from genprof.errors import UsageError

        exporter.close()
        raise UsageError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}; choose another port") from exc
    if not isinstance(started, tuple):  # prometheus-client < 0.17 returns None
        raise MissingDependencyError("prometheus-client>=0.19", "genprof.serve_metrics", "prometheus")
    server = MetricsServer(exporter, started[0], started[1], addr)
    if follow_new_profilers:
        server._stop_hook = _follow(exporter, skip=profiler)
    log.info("serving metrics on %s", server.url)
    return server


def _current_profiler() -> Any:
    try:
        from genprof import profiler as prof_mod
    except ImportError as exc:
        log.info("no profiler module to attach to: %s", exc)
        return None
    fn = getattr(prof_mod, "current_profiler", None)
    return fn() if callable(fn) else None


def _follow(exporter: MetricsExporter, skip: Any) -> Callable[[], Any] | None:
    try:
        from genprof import profiler as prof_mod
    except ImportError as exc:
        log.info("cannot follow new profilers: %s", exc)
        return None
    hook = getattr(prof_mod, "on_profiler_start", None)
    if not callable(hook):
        log.info("genprof.profiler has no on_profiler_start; only the current profiler is exported")
        return None

    def on_start(p: Any) -> None:
        if p is not skip:
            exporter.attach(p)

    unsub = hook(on_start)
    return unsub if callable(unsub) else None


__all__ = ["METRICS", "MetricsExporter", "MetricsServer", "serve_metrics"]
