"""The records a run is made of: spans, events, sample series, machine and software facts, how the
run ended. Plain dataclasses with ``to_dict``/``from_dict``; :class:`genprof.model.Run` holds them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar, cast

from genprof.model.validate import _build, _check_int

SPAN_KINDS = ("phase", "step", "block", "call", "generation")
END_STATUSES = ("running", "ok", "exception", "interrupted", "oom")


def _clean_float(x: float | None) -> float | None:
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass(slots=True)
class Span:
    """One timed region: a phase, a denoising step, a block, a function call or a generation.

    ``duration_s`` is host (wall) time from ``time.perf_counter``. ``gpu_time_s`` is the time
    between two CUDA events recorded on the current stream at the span's edges; it is ``None``
    when GPU timing was off or impossible, with the reason in ``gpu_time_reason``.
    Memory fields are the PyTorch caching allocator's figures for ``device_index``;
    ``peak_*`` are the highest values inside the span (the allocator's peak counter is reset
    at span start unless the config turns resets off). ``rss_*`` are the process resident set.
    """

    id: int
    name: str
    kind: str
    start_s: float
    parent_id: int | None = None
    index: int | None = None
    duration_s: float | None = None
    gpu_time_s: float | None = None
    gpu_time_reason: str | None = None
    thread: str | None = None
    device_index: int | None = None
    status: str = "ok"
    allocated_start_bytes: int | None = None
    allocated_end_bytes: int | None = None
    reserved_start_bytes: int | None = None
    reserved_end_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_allocated_at_s: float | None = None
    peak_source: str | None = None
    rss_start_bytes: int | None = None
    rss_end_bytes: int | None = None
    rss_peak_bytes: int | None = None
    energy_j: float | None = None
    energy_reliable: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def end_s(self) -> float | None:
        return None if self.duration_s is None else self.start_s + self.duration_s

    def __getattr__(self, name: str) -> Any:
        # a field the profiler's hot path left unset reads as its default (and is set)
        try:
            default = _SPAN_DEFAULTS[name]
        except KeyError:
            raise AttributeError(f"'Span' object has no attribute {name!r}") from None
        value = {} if default is _DICT else default
        object.__setattr__(self, name, value)
        return value

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "attributes":
                if v:
                    d[f.name] = v
                continue
            if v is None and f.name not in ("id", "name", "kind", "start_s"):
                continue
            if isinstance(v, float):
                v = _clean_float(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "span") -> Span:
        return _build(cls, d, what)


_DICT = object()
_SPAN_DEFAULTS: dict[str, Any] = {
    f.name: (_DICT if f.default_factory is not MISSING else f.default)
    for f in fields(Span) if f.default is not MISSING or f.default_factory is not MISSING
}


@dataclass
class Event:
    """A point in time: something happened (a checkpoint loaded, an offload hook fired)."""

    name: str
    t_s: float
    span_id: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "t_s": self.t_s}
        if self.span_id is not None:
            d["span_id"] = self.span_id
        if self.attributes:
            d["attributes"] = self.attributes
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "event") -> Event:
        return _build(cls, d, what)


@dataclass
class Series:
    """A sampled quantity over time, stored as columns.

    ``name`` carries the unit (``power_w``, ``memory_used_bytes``). ``device`` says what was
    measured (``"gpu0"``, ``"host"``, ``"process"``). ``kind`` is ``"gauge"`` for a sampled
    value (decimated with every minimum and maximum kept) or ``"state"`` for a value recorded
    only when it changes (clock-throttle reason bitmasks). ``source`` says where the value came
    from and how to read it (for power: averaged or instant).
    """

    name: str
    device: str
    t_s: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    kind: str = "gauge"
    source: str = ""
    decimation_level: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "kind": self.kind,
            "source": self.source,
            "decimation_level": self.decimation_level,
            "t_s": [round(t, 6) for t in self.t_s],
            "values": list(self.values),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "series") -> Series:
        s = _build(cls, d, what)
        if len(s.t_s) != len(s.values):
            raise ValueError(f"{what} {s.name!r}: {len(s.t_s)} times but {len(s.values)} values")
        return s

    @property
    def key(self) -> str:
        return f"{self.device}.{self.name}"

    def max(self) -> float | None:
        return max(self.values) if self.values else None

    def min(self) -> float | None:
        return min(self.values) if self.values else None


_R = TypeVar("_R", bound="_Record")


class _Record:
    """``to_dict`` and ``from_dict`` of a flat record dataclass: every field as it is, read back with the
    run file's checks (:func:`genprof.model.validate._build`); ``_what`` names the record in errors."""

    _what: ClassVar[str] = "record"

    def to_dict(self) -> dict[str, Any]:
        return asdict(cast(Any, self))

    @classmethod
    def from_dict(cls: type[_R], d: Mapping[str, Any], *, what: str | None = None) -> _R:
        return cast(_R, _build(cls, d, what or cls._what))


@dataclass
class GpuInfo(_Record):
    """A GPU this process used. ``index`` is the torch device index (after CUDA_VISIBLE_DEVICES)."""

    _what: ClassVar[str] = "gpu"

    index: int
    name: str | None = None
    uuid: str | None = None
    nvml_index: int | None = None
    total_memory_bytes: int | None = None
    compute_capability: str | None = None
    power_limit_w: float | None = None
    multiprocessor_count: int | None = None
    mig_mode: bool | None = None
    bf16_supported: bool | None = None


@dataclass
class HostInfo(_Record):
    _what: ClassVar[str] = "host"

    hostname: str | None = None
    os: str | None = None
    cpu_model: str | None = None
    cpu_count_logical: int | None = None
    cpu_count_physical: int | None = None
    ram_total_bytes: int | None = None
    pid: int | None = None


@dataclass
class SoftwareInfo(_Record):
    _what: ClassVar[str] = "software"

    genprof: str | None = None
    python: str | None = None
    torch: str | None = None
    cuda: str | None = None
    cudnn: str | None = None
    driver: str | None = None
    nvml: str | None = None
    diffusers: str | None = None
    transformers: str | None = None


@dataclass
class DistributedInfo(_Record):
    """Set when ``torch.distributed`` was initialised (or torchrun's variables were present)."""

    _what: ClassVar[str] = "distributed"

    rank: int
    world_size: int
    local_rank: int | None = None
    backend: str | None = None
    source: str = "torch.distributed"


@dataclass
class EndState(_Record):
    """How the run ended.

    ``status`` is ``running`` (file written while the run was still going), ``ok``,
    ``exception``, ``interrupted`` (Ctrl-C, SIGTERM) or ``oom`` (CUDA out of memory). For
    ``oom``, ``oom`` holds the allocator state at the failure.
    """

    _what: ClassVar[str] = "end"

    status: str = "running"
    at_s: float | None = None
    exception_type: str | None = None
    message: str | None = None
    open_spans: list[str] = field(default_factory=list)
    oom: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str | None = None) -> EndState:
        e = super().from_dict(d, what=what)
        if e.status not in END_STATUSES:
            raise ValueError(f"end.status is {e.status!r}; allowed: {', '.join(END_STATUSES)}")
        for k, v in (e.oom or {}).items():  # the allocator state: byte counts reports compute with
            if isinstance(k, str) and k.endswith("_bytes") and v is not None:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise TypeError(f"end.oom.{k} must be an integer or null, got {type(v).__name__}")
                _check_int(v, f"end.oom.{k}", k)
        return e
