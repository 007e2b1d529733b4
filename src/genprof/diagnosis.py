"""The diagnose window's data: plain, schema-versioned records of a few profiled steps.

The collector (:mod:`genprof.diagnose`) fills a :class:`Diagnosis` from torch.profiler's
events; the analysis (:mod:`genprof.analysis.diagnose`) turns it into figures and findings;
renderers only read it. All times are microseconds since the genprof run started (the same
origin as the run's spans), so kernels and spans share one clock.

A run carries its diagnosis as ``run.metadata["diagnosis"]`` (the dict of
:meth:`Diagnosis.to_dict`); :func:`genprof.analysis.diagnose.diagnosis_of` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

DIAGNOSIS_SCHEMA_VERSION = 1

T = TypeVar("T")


def _build(cls: type[T], d: Mapping[str, Any]) -> T:
    """``cls(**d)`` keeping only the fields ``cls`` knows (a newer minor writer may add keys)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class KernelInterval:
    """One GPU activity: a kernel, a memcpy or a memset (``category``)."""

    name: str
    start_us: float
    end_us: float
    stream: int | None = None
    device: int | None = None
    correlation: int | None = None
    category: str = "kernel"  # "kernel" | "memcpy" | "memset"
    scope: str | None = None  # innermost module scope active when the host launched it
    step: int | None = None  # step index whose host time contains the launch

    @property
    def dur_us(self) -> float:
        return max(0.0, self.end_us - self.start_us)


@dataclass
class RuntimeCall:
    """A CUDA runtime call on the host that can make it wait for the device."""

    name: str  # cudaStreamSynchronize, cudaDeviceSynchronize, cudaMemcpyAsync, ...
    start_us: float
    end_us: float
    kind: str  # "sync" | "memcpy_d2h" | "memcpy_sync" | "event_sync"
    tid: int | None = None
    correlation: int | None = None
    op: str | None = None  # the outermost torch op around it (aten::item, aten::nonzero, ...)
    site: str | None = None  # "file.py:512" of the innermost Python frame outside torch and genprof
    function: str | None = None  # that frame's function name
    step: int | None = None
    stack: list[str] = field(default_factory=list)  # "file.py:512 fn", innermost first, where torch reported the line
    site_source: str | None = None  # "sync_debug_mode" (the exact line) | "profiler_stack" (the function's entry line)

    @property
    def wait_us(self) -> float:
        return max(0.0, self.end_us - self.start_us)


@dataclass
class CpuOp:
    """A top-level torch op on the host (outermost ``aten::`` op of its thread)."""

    name: str
    start_us: float
    end_us: float
    tid: int | None = None
    scope: str | None = None
    site: str | None = None
    step: int | None = None


@dataclass
class HostFrame:
    """A Python frame outside torch and genprof that ran in the window (for idle gaps)."""

    name: str  # "file.py:512 function"
    start_us: float
    end_us: float
    tid: int | None = None


@dataclass
class StepWindow:
    """One step of the window on the host clock; ``span_id`` is the run's step span."""

    index: int
    start_us: float
    end_us: float
    span_id: int | None = None


@dataclass
class GraphBreak:
    reason: str
    file: str | None = None
    line: int | None = None
    function: str | None = None
    count: int = 1


@dataclass
class Recompile:
    function: str | None
    file: str | None
    line: int | None
    reason: str  # the guard that failed


@dataclass
class CompileInfo:
    """What torch.compile did during the run, from torch._dynamo's own records."""

    frames_compiled: int = 0
    compile_time_s: float | None = None
    graph_breaks: list[GraphBreak] = field(default_factory=list)
    recompiles: list[Recompile] = field(default_factory=list)
    reason: str | None = None  # why nothing could be read (torch._dynamo absent, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompileInfo:
        c = _build(cls, d)
        c.graph_breaks = [_build(GraphBreak, x) for x in d.get("graph_breaks", [])]
        c.recompiles = [_build(Recompile, x) for x in d.get("recompiles", [])]
        return c


@dataclass
class Diagnosis:
    """A diagnose window's records. ``reason`` says why GPU records are absent (None: present)."""

    window: str  # the spec, e.g. "steps:2-3"
    steps: list[int] = field(default_factory=list)  # step indices that were recorded
    device: str = "cpu"  # "cuda" | "cpu"
    device_name: str | None = None
    dtype: str | None = None  # the denoiser's parameter dtype, for the peak table
    gpu_reason: str | None = None  # why there are no GPU records; None when kernels were recorded
    status: str = "ok"  # "ok" | "skipped" | "incomplete"
    status_reason: str | None = None
    step_windows: list[StepWindow] = field(default_factory=list)
    kernels: list[KernelInterval] = field(default_factory=list)
    runtime: list[RuntimeCall] = field(default_factory=list)
    cpu_ops: list[CpuOp] = field(default_factory=list)
    host_frames: list[HostFrame] = field(default_factory=list)
    scope_roots: list[str] = field(default_factory=list)  # top-level module scopes (blocks.0, ...)
    scopes_reason: str | None = None  # why there are no module scopes
    sync_sites_reason: str | None = None  # why sync sites are function-level, not exact lines
    flops_by_class: dict[str, float] | None = None  # FLOPs of one step by op class
    flops_source: str | None = None
    compile: CompileInfo | None = None
    collector_overhead_s: float | None = None  # host time spent converting the events after the window
    # host time of torch.profiler's start (paid inside the first window or warm-up step) and of its
    # stop and trace flush (paid inside the step after the window: the steps share their boundary)
    start_cost_s: float | None = None
    stop_cost_s: float | None = None
    torch_version: str | None = None
    schema_version: int = DIAGNOSIS_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compile"] = None if self.compile is None else self.compile.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Diagnosis:
        if not isinstance(d, Mapping):
            raise ValueError(f"diagnosis: expected an object, got {type(d).__name__}")
        version = d.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"diagnosis: schema_version is {version!r}, expected an integer")
        if version > DIAGNOSIS_SCHEMA_VERSION:
            raise ValueError(f"diagnosis: written by a newer genprof (schema_version {version}, this genprof "
                             f"reads up to {DIAGNOSIS_SCHEMA_VERSION}); upgrade genprof to read it")
        x = _build(cls, d)
        x.step_windows = [_build(StepWindow, s) for s in d.get("step_windows", [])]
        x.kernels = [_build(KernelInterval, s) for s in d.get("kernels", [])]
        x.runtime = [_build(RuntimeCall, s) for s in d.get("runtime", [])]
        x.cpu_ops = [_build(CpuOp, s) for s in d.get("cpu_ops", [])]
        x.host_frames = [_build(HostFrame, s) for s in d.get("host_frames", [])]
        x.steps = [int(s) for s in d.get("steps", [])]
        x.scope_roots = [str(s) for s in d.get("scope_roots", [])]
        c = d.get("compile")
        x.compile = None if c is None else CompileInfo.from_dict(c)
        return x


__all__ = ["DIAGNOSIS_SCHEMA_VERSION", "CompileInfo", "CpuOp", "Diagnosis", "GraphBreak", "HostFrame",
           "KernelInterval", "Recompile", "RuntimeCall", "StepWindow"]
