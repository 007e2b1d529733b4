"""The run as data.

A :class:`Run` holds everything genprof recorded: spans (phases, steps, blocks, calls,
generations), events, sampled series, machine and software information, and how the run
ended. Everything a report shows comes from a Run, so a saved run file can be rendered,
compared and aggregated later, on another machine.

Conventions (see ``docs/run-file.md``):

* times inside a run are seconds since the run started, from a monotonic clock
  (``time.perf_counter``); the wall-clock start is recorded once in ``started_at``;
* every field name carries its unit (``_s``, ``_bytes``, ``_w``, ``_j``, ``_pct``, ``_c``,
  ``_mhz``);
* a value that could not be measured is ``None``; the reason is recorded once in
  :attr:`Run.unavailable`, never as a zero.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from genprof.errors import RunFileError

SCHEMA_VERSION = 1
"""Version of the run-file layout. A reader refuses files with a larger version."""

FORMAT_NAME = "genprof.run"

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


@dataclass
class GpuInfo:
    """A GPU this process used. ``index`` is the torch device index (after CUDA_VISIBLE_DEVICES)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "gpu") -> GpuInfo:
        return _build(cls, d, what)


@dataclass
class HostInfo:
    hostname: str | None = None
    os: str | None = None
    cpu_model: str | None = None
    cpu_count_logical: int | None = None
    cpu_count_physical: int | None = None
    ram_total_bytes: int | None = None
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HostInfo:
        return _build(cls, d, "host")


@dataclass
class SoftwareInfo:
    genprof: str | None = None
    python: str | None = None
    torch: str | None = None
    cuda: str | None = None
    cudnn: str | None = None
    driver: str | None = None
    nvml: str | None = None
    diffusers: str | None = None
    transformers: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SoftwareInfo:
        return _build(cls, d, "software")


@dataclass
class DistributedInfo:
    """Set when ``torch.distributed`` was initialised (or torchrun's variables were present)."""

    rank: int
    world_size: int
    local_rank: int | None = None
    backend: str | None = None
    source: str = "torch.distributed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "distributed") -> DistributedInfo:
        return _build(cls, d, what)


@dataclass
class EndState:
    """How the run ended.

    ``status`` is ``running`` (file written while the run was still going), ``ok``,
    ``exception``, ``interrupted`` (Ctrl-C, SIGTERM) or ``oom`` (CUDA out of memory). For
    ``oom``, ``oom`` holds the allocator state at the failure.
    """

    status: str = "running"
    at_s: float | None = None
    exception_type: str | None = None
    message: str | None = None
    open_spans: list[str] = field(default_factory=list)
    oom: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EndState:
        e = _build(cls, d, "end")
        if e.status not in END_STATUSES:
            raise ValueError(f"end.status is {e.status!r}; allowed: {', '.join(END_STATUSES)}")
        for k, v in (e.oom or {}).items():  # the allocator state: byte counts reports compute with
            if isinstance(k, str) and k.endswith("_bytes") and v is not None:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise TypeError(f"end.oom.{k} must be an integer or null, got {type(v).__name__}")
                _check_int(v, f"end.oom.{k}", k)
        return e


@dataclass
class Run:
    """A profiled run: plain data, saved as JSON with :meth:`save`, read with :func:`load_run`."""

    name: str
    run_id: str
    started_at: str
    started_unix_s: float
    duration_s: float | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    software: SoftwareInfo = field(default_factory=SoftwareInfo)
    host: HostInfo = field(default_factory=HostInfo)
    gpus: list[GpuInfo] = field(default_factory=list)
    distributed: DistributedInfo | None = None
    spans: list[Span] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    end: EndState = field(default_factory=EndState)
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # ----------------------------------------------------------------- queries
    def span_by_id(self, span_id: int) -> Span | None:
        for s in self.spans:
            if s.id == span_id:
                return s
        return None

    def children(self, span: Span | None) -> list[Span]:
        pid = None if span is None else span.id
        return [s for s in self.spans if s.parent_id == pid]

    def iter_spans(self, kind: str | None = None, name: str | None = None) -> Iterator[Span]:
        for s in self.spans:
            if kind is not None and s.kind != kind:
                continue
            if name is not None and s.name != name:
                continue
            yield s

    def series_named(self, name: str, device: str | None = None) -> list[Series]:
        return [s for s in self.series if s.name == name and (device is None or s.device == device)]

    def path_of(self, span: Span) -> str:
        """``"generation/denoise/step"`` style path of names from the root to ``span``."""
        by_id = {s.id: s for s in self.spans}
        names = [span.name]
        cur = span
        seen = {span.id}
        while cur.parent_id is not None and cur.parent_id in by_id and cur.parent_id not in seen:
            cur = by_id[cur.parent_id]
            seen.add(cur.id)
            names.append(cur.name)
        return "/".join(reversed(names))

    def usage_statistics(self) -> dict[str, Any]:
        """Seed 000's usage statistics, computed from the recorded spans.

        * ``initialization_time_s``: total host time of top-level phases named ``load`` or
          starting with ``load`` (``None`` if there are none);
        * ``generations``: number of ``generation`` spans; when there are none the run,
          less its load phases, counts as one implicit generation (``generations_implicit``);
        * ``peak_allocated_bytes`` / ``peak_reserved_bytes``: highest allocator values seen in
          any span or sample (``None`` without a GPU);
        * ``average_inference_time_s`` / ``total_inference_time_s``: host time of generations;
        * ``current_allocated_bytes`` / ``current_reserved_bytes``: the allocator at run end;
        * ``device_name``: the first GPU's name, or ``"cpu"``.
        """
        top = [s for s in self.spans if s.parent_id is None]
        loads = [s for s in top if s.kind == "phase" and s.name.lower().startswith("load")]
        init = sum(s.duration_s or 0.0 for s in loads) if loads else None
        gens = [s for s in self.spans if s.kind == "generation" and s.duration_s is not None]
        implicit = False
        times: list[float]
        if gens:
            times = [s.duration_s for s in gens if s.duration_s is not None]
        elif self.duration_s is not None and any(s.kind in ("step", "block") for s in self.spans):
            implicit = True
            times = [max(0.0, self.duration_s - (init or 0.0))]
        else:
            times = []
        peak_alloc = _max_or_none(
            [s.peak_allocated_bytes for s in self.spans]
            + [v for ser in self.series_named("allocated_bytes") for v in ser.values]
        )
        peak_res = _max_or_none(
            [s.peak_reserved_bytes for s in self.spans]
            + [v for ser in self.series_named("reserved_bytes") for v in ser.values]
        )
        fin = self.metadata.get("final_memory")
        fin = fin if isinstance(fin, dict) else {}
        return {
            "initialization_time_s": init,
            "generations": len(times),
            "generations_implicit": implicit,
            "peak_allocated_bytes": None if peak_alloc is None else int(peak_alloc),
            "peak_reserved_bytes": None if peak_res is None else int(peak_res),
            "average_inference_time_s": (sum(times) / len(times)) if times else None,
            "total_inference_time_s": sum(times) if times else None,
            "current_allocated_bytes": _int_or_none(fin.get("allocated_bytes")),
            "current_reserved_bytes": _int_or_none(fin.get("reserved_bytes")),
            "device_name": self.gpus[0].name if self.gpus else "cpu",
        }

    # ----------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "schema_version": self.schema_version,
            "name": self.name,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "started_unix_s": self.started_unix_s,
            "duration_s": _clean_float(self.duration_s),
            "tags": self.tags,
            "config": self.config,
            "software": self.software.to_dict(),
            "host": self.host.to_dict(),
            "gpus": [g.to_dict() for g in self.gpus],
            "distributed": None if self.distributed is None else self.distributed.to_dict(),
            "end": self.end.to_dict(),
            "unavailable": dict(self.unavailable),
            "metadata": self.metadata,
            "spans": [s.to_dict() for s in self.spans],
            "events": [e.to_dict() for e in self.events],
            "series": [s.to_dict() for s in self.series],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>") -> Run:
        """Build a Run from :meth:`to_dict` output; raises :class:`RunFileError` naming ``source``."""
        if not isinstance(d, Mapping):
            raise RunFileError(f"{source}: not a genprof run file (top level is {type(d).__name__}, not an object)")
        if d.get("format") != FORMAT_NAME:
            raise RunFileError(
                f"{source}: not a genprof run file (no \"format\": \"{FORMAT_NAME}\" key); "
                "pass a file written by genprof (Run.save or the profiler's output_dir)"
            )
        version = d.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise RunFileError(f"{source}: schema_version is {version!r}, expected an integer")
        if version > SCHEMA_VERSION:
            raise RunFileError(
                f"{source}: written by a newer genprof (schema_version {version}, this genprof reads "
                f"up to {SCHEMA_VERSION}); upgrade genprof to read it"
            )
        if version < 1:
            raise RunFileError(f"{source}: schema_version {version} is not valid")
        try:
            dist = d.get("distributed")
            run = cls(
                name=_req(d, "name", str),
                run_id=_req(d, "run_id", str),
                started_at=_req(d, "started_at", str),
                started_unix_s=_unix_time(_req(d, "started_unix_s", (int, float))),
                duration_s=_opt_num(d.get("duration_s"), "duration_s"),
                tags=_finite_tree(_dict(d.get("tags", {}), "tags"), "tags"),
                config=_dict(d.get("config", {}), "config"),
                software=SoftwareInfo.from_dict(_dict(d.get("software", {}), "software")),
                host=HostInfo.from_dict(_dict(d.get("host", {}), "host")),
                gpus=[GpuInfo.from_dict(g, what=f"gpus[{i}]") for i, g in enumerate(_list(d.get("gpus", []), "gpus"))],
                distributed=None if dist is None else DistributedInfo.from_dict(dist),
                spans=[Span.from_dict(s, what=f"spans[{i}]") for i, s in enumerate(_list(d.get("spans", []), "spans"))],
                events=[Event.from_dict(e, what=f"events[{i}]")
                        for i, e in enumerate(_list(d.get("events", []), "events"))],
                series=[Series.from_dict(s, what=f"series[{i}]")
                        for i, s in enumerate(_list(d.get("series", []), "series"))],
                unavailable={str(k): str(v) for k, v in _dict(d.get("unavailable", {}), "unavailable").items()},
                end=EndState.from_dict(_dict(d.get("end", {}), "end")),
                metadata=_check_metadata(_finite_tree(_dict(d.get("metadata", {}), "metadata"), "metadata")),
                schema_version=version,
            )
        except RunFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise RunFileError(f"{source}: damaged genprof run file: {exc}") from exc
        return run

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False, default=_json_default)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the run file atomically (temporary file in the same folder, then rename)."""
        p = Path(path)
        atomic_write_text(p, self.to_json())
        return p

    # ------------------------------------------------------------- renderers
    # Façades for convenience; the renderers live in genprof.render and read the run only.


def _json_default(o: Any) -> Any:
    # numpy scalars, tuples in attributes, paths: written as plain JSON values.
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return repr(o)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``.

    The temporary file is created with ``os.open(..., 0o666)``, so the kernel gives it the
    mode a plain ``open()`` would (the umask and any default ACL applied): the process umask
    is never read or changed (changing it, even briefly, races with other threads creating files).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read a run file written by :meth:`Run.save`.

    Raises :class:`genprof.errors.RunFileError` with the file name and the problem for a
    missing, truncated, corrupt, non-genprof or newer-schema file.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise RunFileError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise RunFileError(f"{p}: is a folder, not a run file") from None
    except OSError as exc:
        raise RunFileError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    return loads_run(raw, source=str(p))


def loads_run(data: bytes | str, *, source: str = "<string>") -> Run:
    """Parse run-file JSON held in memory (see :func:`load_run`)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunFileError(f"{source}: not a genprof run file (not UTF-8 text: {exc.reason})") from exc
    else:
        text = data
    if not text.strip():
        raise RunFileError(f"{source}: empty file, not a genprof run file")
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise RunFileError(f"{source}: holds {exc.args[0]}, which genprof never writes: not a genprof run file") from None
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        hint = " (the file looks truncated: was the run still being written?)" if truncated else ""
        raise RunFileError(f"{source}: not valid JSON at line {exc.lineno} column {exc.colno}{hint}") from exc
    except RecursionError as exc:
        raise RunFileError(f"{source}: JSON nested too deeply to be a genprof run file") from exc
    except ValueError as exc:  # Python's limit on integer literals (4,300 digits)
        raise RunFileError(f"{source}: holds a number genprof cannot read ({exc}); not a genprof run file") from None
    if _SURROGATE_ESCAPE.search(text):
        obj = _escape_lone_surrogates(obj)
    return Run.from_dict(obj, source=source)


# ------------------------------------------------------------------ helpers
class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    """Python's JSON parser accepts NaN and Infinity, which are not JSON and never in a run file."""
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    """A JSON number such as ``1e400`` reads as infinity: refused like ``Infinity``."""
    v = float(text)
    if not math.isfinite(v):
        raise _NonFinite(f"the number {text[:40]} (out of the range of a float)")
    return v


# a \uD800-\uDFFF escape in the JSON text: the only way a lone surrogate gets into a run file's
# strings (raw surrogates are not valid UTF-8 and are refused when the bytes are decoded)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _escape_lone_surrogates(obj: Any) -> Any:
    """Replace lone surrogates in every string and key by their ``\\udxxx`` text.

    JSON joins a valid surrogate pair into one character; a lone one cannot be encoded as UTF-8,
    so reports and the console would fail on it. It is kept, visibly, as the six characters of its
    escape (a string that genprof wrote from a file name with undecodable bytes stays readable).
    """
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, list):
        return [_escape_lone_surrogates(x) for x in obj]
    if isinstance(obj, dict):
        return {_escape_lone_surrogates(k): _escape_lone_surrogates(v) for k, v in obj.items()}
    return obj


# metadata keys the profiler writes with a fixed shape, which reports read: (type, numeric sub-keys)
_METADATA_SHAPES: dict[str, tuple[type, tuple[str, ...]]] = {
    "energy": (dict, ("total_j", "average_power_w")),
    "final_memory": (dict, ("allocated_bytes", "reserved_bytes")),
    "generations": (list, ()),
    "sampler_missed_ticks": (dict, ()),
}


def _check_metadata(md: dict[str, Any]) -> dict[str, Any]:
    """The shape of the metadata entries genprof itself writes; free-form entries are kept as they are."""
    for key, (typ, numeric) in _METADATA_SHAPES.items():
        if key not in md or md[key] is None:
            continue
        if not isinstance(md[key], typ):
            raise TypeError(f"metadata.{key} must be {'an object' if typ is dict else 'a list'}, "
                            f"got {type(md[key]).__name__}")
        v: Any = md[key]
        for sub in numeric:
            x = v.get(sub)
            if x is not None:
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    raise TypeError(f"metadata.{key}.{sub} must be a number or null, got {type(x).__name__}")
                _check_float(x, f"metadata.{key}.{sub}", sub)
        if typ is list and any(not isinstance(x, dict) for x in v):
            raise TypeError(f"metadata.{key} must be a list of objects")
    share = md.get("sampler_cpu_share")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))):
        raise TypeError(f"metadata.sampler_cpu_share must be a number or null, got {type(share).__name__}")
    return md


def _int_or_none(v: Any) -> int | None:
    """A byte count read from free-form metadata: an int, else None (a damaged value is not shown)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_INT else None


def _max_or_none(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _req(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise KeyError(f"missing key {key!r}")
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool):
        raise TypeError(f"{key!r} has type {type(v).__name__}")
    return v


def _opt_num(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name!r} must be a number or null, got {type(v).__name__}")
    return _check_float(v, repr(name), name)


_MAX_UNIX_S = 32503680000.0  # 3000-01-01: a start time past it is a damaged file, not a date to print


def _unix_time(v: int | float) -> float:
    x = _check_float(v, "'started_unix_s'", "started_unix")
    if not 0 <= x < _MAX_UNIX_S:
        raise ValueError(f"'started_unix_s' is {x:g}, not a time between 1970 and 3000")
    return x


def _dict(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"{what!r} must be an object, got {type(v).__name__}")
    return v


def _finite_tree(v: Any, what: str) -> Any:
    """``v`` if no number in it (at any depth) is infinite or NaN; a run file holds finite numbers only
    (it is saved as strict JSON), so a damaged free-form section is refused on load, not on save."""
    stack: list[tuple[Any, str]] = [(v, what)]
    while stack:
        x, where = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"{where} is {x!r}; run files hold finite numbers only")
        if isinstance(x, dict):
            stack.extend((y, f"{where}[{k!r}]") for k, y in x.items())
        elif isinstance(x, list):
            stack.extend((y, f"{where}[{i}]") for i, y in enumerate(x))
    return v


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise TypeError(f"{what!r} must be a list, got {type(v).__name__}")
    return v


_NUMERIC = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,)}

MAX_SECONDS = 1e9
"""Largest time or duration (seconds, about 31 years) a run file may hold; more is a damaged file."""

_MAX_INT = 2**63 - 1  # every integer genprof writes (ids, indexes, byte counts) fits in 64 bits
_NON_NEGATIVE_S = frozenset({"duration_s", "gpu_time_s"})


def _check_float(v: int | float, where: str, name: str) -> float:
    """``v`` as a finite float within the range its field allows, else ValueError naming the field."""
    try:
        x = float(v)
    except OverflowError:
        raise ValueError(f"{where} is an integer of {len(str(abs(int(v))))} digits, out of the range of a float") \
            from None
    if not math.isfinite(x):
        raise ValueError(f"{where} is {x}, not a finite number")
    if name.endswith("_s"):
        if abs(x) > MAX_SECONDS:
            raise ValueError(f"{where} is {x:g} s, beyond {MAX_SECONDS:g} s: not a time genprof records")
        if name in _NON_NEGATIVE_S and x < 0:
            raise ValueError(f"{where} is {x:g} s; a duration is never negative")
    return x


def _check_int(v: int, where: str, name: str) -> int:
    if abs(v) > _MAX_INT:
        raise ValueError(f"{where} is an integer of {len(str(abs(v)))} digits, beyond 64 bits")
    if name.endswith("_bytes") and v < 0:
        raise ValueError(f"{where} is {v}; a byte count is never negative")
    return v


def _build(cls: Any, d: Any, what: str) -> Any:
    """Build dataclass ``cls`` from mapping ``d``, checking scalar field types and numeric ranges."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be an object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        f = known.get(k)
        if f is None:
            continue  # fields added by a later minor version are ignored
        t = str(f.type)
        if v is not None:
            base = t.split("|")[0].strip()
            if base in _NUMERIC:
                ok = isinstance(v, _NUMERIC[base]) and (base == "bool" or not isinstance(v, bool))
                if not ok:
                    raise TypeError(f"{what}.{k} must be {base}, got {type(v).__name__}")
                if base == "float":
                    v = _check_float(v, f"{what}.{k}", k)
                elif base == "int":
                    v = _check_int(v, f"{what}.{k}", k)
            elif base.startswith("dict") and not isinstance(v, dict):
                raise TypeError(f"{what}.{k} must be an object, got {type(v).__name__}")
            elif base.startswith("list"):
                if not isinstance(v, list):
                    raise TypeError(f"{what}.{k} must be a list, got {type(v).__name__}")
                if base == "list[float]":
                    bad = [x for x in v if isinstance(x, bool) or not isinstance(x, (int, float))]
                    if bad:
                        raise TypeError(f"{what}.{k} holds a non-number: {bad[0]!r}")
                    v = [_check_float(x, f"{what}.{k}[{n}]", k) for n, x in enumerate(v)]
                elif base == "list[str]":
                    v = [str(x) for x in v]
        elif "None" not in t and k in known and f.default is not None:
            # a required or non-optional field given as null
            if t.split("|")[0].strip() in _NUMERIC or t.startswith(("dict", "list")):
                raise TypeError(f"{what}.{k} must not be null")
        kwargs[k] = v
    return cls(**kwargs)
