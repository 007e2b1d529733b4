"""The run: every record of one profiled run, with queries, ``to_dict``/``from_dict`` and the
run file's ``save`` / :func:`load_run` / :func:`loads_run`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprof.errors import RunFileError
from genprof.model.files import _json_default, atomic_write_text, parse_run_json
from genprof.model.records import (
    DistributedInfo,
    EndState,
    Event,
    GpuInfo,
    HostInfo,
    Series,
    SoftwareInfo,
    Span,
    _clean_float,
)
from genprof.model.validate import (
    _check_metadata,
    _dict,
    _finite_tree,
    _int_or_none,
    _list,
    _opt_num,
    _req,
    _unix_time,
)

SCHEMA_VERSION = 1
"""Version of the run-file layout. A reader refuses files with a larger version."""

FORMAT_NAME = "genprof.run"


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
        """Usage statistics (load time, generation count and times, memory peaks), computed from the spans.

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


def _max_or_none(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


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
    return Run.from_dict(parse_run_json(data, source=source), source=source)
