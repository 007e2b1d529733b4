"""Final reports written from a saved run: HTML, a JSON report, both or none.

:func:`write_reports` is what the profiler calls at stop when ``generate_final_report`` is on;
``report_format`` picks the outputs. The run file itself is written by the profiler, not here.

The helpers :func:`summary_figures` and :func:`collect_findings` are shared with the HTML
report so that the page and the JSON report show the same numbers.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from genprof.analysis.findings import Finding
from genprof.analysis.rules import run_rules
from genprof.analysis.summary import energy_total, peak_memory, phase_table
from genprof.errors import UsageError
from genprof.model import Run, atomic_write_text

log = logging.getLogger(__name__)

REPORT_FORMAT_NAME = "genprof.report"
REPORT_SCHEMA_VERSION = 1
"""Version of the JSON report layout (``<stem>.report.json``); bumped on incompatible changes."""

REPORT_FORMATS = ("html", "json", "both", "none")

# ---------------------------------------------------------------- summary figures
def summary_figures(run: Run) -> dict[str, Any]:
    """The figures of the summary cards, each ``None`` when it was not measured.

    * ``total_time_s``: run duration (host);
    * ``generations`` / ``time_per_generation_s``: from :meth:`Run.usage_statistics`
      (``generations_implicit`` when the run had no generation span);
    * ``peak_allocated_bytes`` / ``peak_reserved_bytes`` / ``peak_rss_bytes``: highest value
      in any span or sample;
    * ``energy_j`` with ``energy_source``; ``average_power_w`` with ``average_power_source``:
      energy over the time it was measured over, or the mean of sampled power when no energy
      counter was read;
    * ``steps`` / ``steps_per_s`` and ``blocks`` / ``blocks_per_s``: count over the summed host
      time of those spans.
    """
    usage = run.usage_statistics()
    peaks = peak_memory(run)
    energy, energy_src = energy_total(run)
    avg_power: float | None = None
    avg_power_src = "no energy counter and no power samples"
    if energy is not None:
        meta = run.metadata.get("energy")
        if isinstance(meta, Mapping) and meta.get("total_j") is not None:
            window = run.duration_s
        else:
            window = sum(
                s.duration_s or 0.0 for s in run.spans if s.parent_id is None and s.energy_j is not None
            )
        if window:
            avg_power = energy / window
            avg_power_src = "energy / time it was measured over"
    if avg_power is None:
        power = [v for s in run.series_named("power_w") for v in s.values]
        if power:
            avg_power = sum(power) / len(power)
            avg_power_src = "mean of sampled power"

    def rate(kind: str) -> tuple[int, float | None]:
        durs = [s.duration_s for s in run.iter_spans(kind=kind) if s.duration_s is not None]
        total = sum(durs)
        return len(durs), (len(durs) / total if total > 0 else None)

    steps, steps_per_s = rate("step")
    blocks, blocks_per_s = rate("block")
    return {
        "total_time_s": run.duration_s,
        "generations": usage["generations"],
        "generations_implicit": usage["generations_implicit"],
        "time_per_generation_s": usage["average_inference_time_s"],
        "initialization_time_s": usage["initialization_time_s"],
        "peak_allocated_bytes": peaks["peak_allocated_bytes"],
        "peak_reserved_bytes": peaks["peak_reserved_bytes"],
        "peak_rss_bytes": peaks["peak_rss_bytes"],
        "peak_gpu_memory_used_bytes": peaks["peak_gpu_memory_used_bytes"],
        "energy_j": energy,
        "energy_source": energy_src,
        "average_power_w": avg_power,
        "average_power_source": avg_power_src,
        "steps": steps,
        "steps_per_s": steps_per_s,
        "blocks": blocks,
        "blocks_per_s": blocks_per_s,
    }


# --------------------------------------------------------------------- findings
def collect_findings(
    run: Run, findings: Iterable[Finding | Mapping[str, Any]] | None = None
) -> tuple[list[Finding] | None, str | None]:
    """Findings to show: the given ones, else those of ``genprof.analysis.rules.run_rules``.

    Returns ``(findings, note)``; ``note`` (a reason shown instead of findings) is ``None``
    here, since the rules are part of genprof and always run.
    """
    if findings is not None:
        return [f if isinstance(f, Finding) else Finding.from_dict(dict(f)) for f in findings], None
    return list(run_rules(run)), None


# ------------------------------------------------------------------ JSON report
def report_dict(
    run: Run,
    *,
    findings: Iterable[Finding | Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON report: run identity, summary, usage statistics, phase table and findings."""
    found, note = collect_findings(run, findings)
    return {
        "format": REPORT_FORMAT_NAME,
        "schema_version": REPORT_SCHEMA_VERSION,
        "run": {
            "name": run.name,
            "run_id": run.run_id,
            "started_at": run.started_at,
            "duration_s": run.duration_s,
            "tags": run.tags,
            "end": run.end.to_dict(),
            "gpus": [g.to_dict() for g in run.gpus],
            "software": run.software.to_dict(),
            "run_schema_version": run.schema_version,
        },
        "summary": summary_figures(run),
        "usage_statistics": run.usage_statistics(),
        "phases": [_row_dict(r) for r in phase_table(run)],
        "findings": None if found is None else [f.to_dict() for f in found],
        "findings_note": note,
        "unavailable": dict(run.unavailable),
    }


def _row_dict(row: Any) -> dict[str, Any]:
    d: dict[str, Any] = row.to_dict()
    d.pop("span_ids", None)
    d["span_count"] = len(row.span_ids)
    return d


def render_json_report(run: Run, **kwargs: Any) -> str:
    """:func:`report_dict` as deterministic JSON text (sorted keys, no NaN)."""
    return json.dumps(report_dict(run, **kwargs), sort_keys=True, indent=2, allow_nan=False, default=json_default)


def json_default(o: Any) -> Any:
    """JSON encoder fallback for values found in user attributes (numpy scalars, paths, sets)."""
    if hasattr(o, "item"):
        try:
            return o.item()
        except (TypeError, ValueError):
            return repr(o)
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o, key=repr) if isinstance(o, (set, frozenset)) else list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return repr(o)


# ------------------------------------------------------------------- write them
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_stem(run: Run) -> str:
    """File stem for a run's reports: ``<name>-<run_id>`` with unsafe characters replaced."""
    name = _UNSAFE.sub("_", run.name).strip("._") or "run"
    rid = _UNSAFE.sub("_", run.run_id).strip("._")
    return f"{name}-{rid}" if rid else name


def report_paths(run: Run, out_dir: str | os.PathLike[str], report_format: str, *,
                 stem: str | None = None) -> list[Path]:
    """The files :func:`write_reports` writes for ``report_format``, in its order, without writing them."""
    if report_format not in REPORT_FORMATS:
        raise UsageError(f"report_format is {report_format!r}; allowed values: {', '.join(REPORT_FORMATS)}")
    out = Path(out_dir)
    st = stem or default_stem(run)
    return ([out / f"{st}.html"] if report_format in ("html", "both") else []) + (
        [out / f"{st}.report.json"] if report_format in ("json", "both") else [])


def write_reports(
    run: Run,
    out_dir: str | os.PathLike[str],
    report_format: str,
    *,
    stem: str | None = None,
    findings: Sequence[Finding | Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write the reports ``report_format`` asks for into ``out_dir``; returns their paths.

    ``"html"``: ``<stem>.html``; ``"json"``: ``<stem>.report.json``; ``"both"``: both;
    ``"none"``: nothing. ``stem`` defaults to :func:`default_stem`. Rules run once and their
    findings go into both files.
    """
    planned = report_paths(run, out_dir, report_format, stem=stem)
    if not planned:
        return []
    found, _note = collect_findings(run, findings)
    paths: list[Path] = []
    if report_format in ("html", "both"):
        from genprof.render.html import write_html

        paths.append(write_html(run, planned[0], findings=found))
    if report_format in ("json", "both"):
        p = planned[-1]
        text = render_json_report(run, findings=found) if found is not None else render_json_report(run)
        atomic_write_text(p, text + "\n")
        paths.append(p)
    for p in paths:
        log.info("wrote report %s", p)
    return paths
