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

The package: ``records`` (the plain dataclasses a run is made of), ``run`` (:class:`Run`,
``load_run``, ``loads_run``), ``validate`` (the checks applied on reading) and ``files`` (the
atomic write and the strict JSON reading). Every name is importable from ``genprof.model``.
"""

from __future__ import annotations

from genprof.model.files import atomic_write_text
from genprof.model.records import (
    END_STATUSES,
    SPAN_KINDS,
    DistributedInfo,
    EndState,
    Event,
    GpuInfo,
    HostInfo,
    Series,
    SoftwareInfo,
    Span,
)
from genprof.model.run import FORMAT_NAME, SCHEMA_VERSION, Run, load_run, loads_run
from genprof.model.validate import MAX_SECONDS

__all__ = [
    "END_STATUSES",
    "FORMAT_NAME",
    "MAX_SECONDS",
    "SCHEMA_VERSION",
    "SPAN_KINDS",
    "DistributedInfo",
    "EndState",
    "Event",
    "GpuInfo",
    "HostInfo",
    "Run",
    "Series",
    "SoftwareInfo",
    "Span",
    "atomic_write_text",
    "load_run",
    "loads_run",
]
