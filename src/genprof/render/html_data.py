"""The chart data of the HTML report: the one JSON blob the page's charts are drawn from.

Sample series (reduced to at most ``MAX_SERIES_POINTS`` points each, keeping minima and maxima),
the span timeline, and the step and block durations with their warm-up marks, block and
pipeline; plus the run's summary, events, findings and comparison. Pure functions of a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from genprof._version import __version__
from genprof.analysis.findings import Finding
from genprof.analysis.summary import pipeline_stats, span_paths, span_pipelines, step_loop
from genprof.model import Run, Span
from genprof.render.reports import summary_figures

MAX_SERIES_POINTS = 4000
"""Points drawn per series at most; longer series are reduced keeping each bucket's min and max."""

MAX_GANTT_SPANS = 20000
"""Spans drawn in the timeline at most (``call`` spans are dropped first, then the shortest)."""

MAX_SHADED_PHASES = 2000
"""Phase shading rectangles at most (the longest are kept)."""

MAX_EVENTS_TABLE = 500

WARMUP_STEPS = 1
"""Steps at the start of each denoising loop (one parent of steps, or one block loop) marked as warm-up."""

_UNIT_PANELS: tuple[tuple[str, str, str], ...] = (
    # (name suffix, panel id, axis title); bytes off a GPU go to "host_memory" (see _panel_of)
    ("_bytes", "memory", "GPU memory (GiB)"),
    ("_pct", "utilization", "utilization (%)"),
    ("_w", "power", "power (W)"),
    ("_c", "temperature", "temperature (C)"),
    ("_mhz", "clock", "clock (MHz)"),
)



def decimate_minmax(t: Sequence[float], v: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """Reduce a series to at most ``max_points`` points, keeping each bucket's min and max.

    Points stay in time order; the first and last points are always kept, so are the global
    minimum and maximum. Series at or under the limit come back unchanged.
    """
    n = len(v)
    if n <= max_points or max_points < 4:
        return list(t), list(v)
    buckets = (max_points - 2) // 2
    out_i: list[int] = [0]
    step = (n - 2) / buckets
    for b in range(buckets):
        lo = 1 + int(b * step)
        hi = 1 + int((b + 1) * step)
        if hi <= lo:
            continue
        seg = range(lo, hi)
        i_min = min(seg, key=v.__getitem__)
        i_max = max(seg, key=v.__getitem__)
        if i_min == i_max:
            out_i.append(i_min)
        else:
            out_i.extend(sorted((i_min, i_max)))
    out_i.append(n - 1)
    return [t[i] for i in out_i], [v[i] for i in out_i]


def _chart_number(x: float | None, nd: int = 6) -> float | int | None:
    if x is None:
        return None
    if isinstance(x, int):
        return x
    if float(x).is_integer() and abs(x) < 2**53:
        return int(x)
    return round(float(x), nd)


HOST_RAM_TOTAL = "ram_total_bytes"
"""The host's total RAM series: a flat line far above the process's RSS, so it is not drawn when
it never changes; the host memory panel's title gives its value instead."""


def _panel_of(name: str, device: str = "gpu0") -> tuple[str, str]:
    for suffix, panel, title in _UNIT_PANELS:
        if name.endswith(suffix):
            if panel == "memory" and device == "process":
                return "process_memory", "process memory (GiB)"
            if panel == "memory" and not device.startswith("gpu"):
                return "host_memory", "host RAM (GiB)"
            return panel, title
    return "other", "other"


def _series_data(run: Run) -> list[dict[str, Any]]:
    """Each series' chart data. GPU memory, the process's memory (RSS) and the host's RAM get a
    panel each, so that RSS is never flattened by a GPU's or the whole host's scale; a constant
    host-RAM-total series is left out and its value noted on the host RAM panel."""
    out = []
    totals = [s for s in run.series if s.name == HOST_RAM_TOTAL and s.values and min(s.values) == max(s.values)]
    total_note = None
    if totals:
        from genprof.units import format_bytes

        total_note = f"host RAM total {format_bytes(int(totals[0].values[0]))} (constant, not drawn)"
    for s in run.series:
        if any(s is x for x in totals):
            continue
        t, v = decimate_minmax(s.t_s, s.values, MAX_SERIES_POINTS)
        panel, title = _panel_of(s.name, s.device)
        out.append(
            {
                "key": s.key,
                "name": s.name,
                "device": s.device,
                "kind": s.kind,
                "source": s.source,
                "panel": panel,
                "axis_title": title,
                "panel_note": total_note if panel == "host_memory" else None,
                "points": len(s.values),
                "shown_points": len(v),
                "t": [_chart_number(x) for x in t],
                "v": [_chart_number(x, 4) for x in v],
            }
        )
    return out


def _lane_of(span: Span, phase_depth: int) -> str:
    if span.kind == "phase":
        return "phase" if phase_depth == 0 else f"phase (nested {phase_depth})"
    return span.kind


_LANE_ORDER = {"generation": 0, "phase": 1, "block": 50, "step": 60, "call": 70}


def _phase_depths(run: Run) -> dict[int, int]:
    """For each span, how many ``phase`` ancestors it has."""
    by_id = {s.id: s for s in run.spans}
    out: dict[int, int] = {}
    for s in run.spans:
        d = 0
        cur = s
        seen = {s.id}
        while cur.parent_id is not None and cur.parent_id in by_id and cur.parent_id not in seen:
            cur = by_id[cur.parent_id]
            seen.add(cur.id)
            if cur.kind == "phase":
                d += 1
        out[s.id] = d
    return out


def _gantt_data(run: Run) -> dict[str, Any]:
    depths = _phase_depths(run)
    paths = span_paths(run)
    spans = [s for s in run.spans if s.duration_s is not None]
    open_spans = [s for s in run.spans if s.duration_s is None]
    omitted = 0
    if len(spans) > MAX_GANTT_SPANS:
        prio = {"generation": 0, "phase": 0, "block": 1, "step": 2, "call": 3}
        spans.sort(key=lambda s: (prio.get(s.kind, 3), -(s.duration_s or 0.0)))
        omitted = len(spans) - MAX_GANTT_SPANS
        spans = spans[:MAX_GANTT_SPANS]
    spans.sort(key=lambda s: (s.start_s, s.id))
    lanes: dict[str, int] = {}
    for s in spans:
        lanes.setdefault(_lane_of(s, depths[s.id]), 0)
    lane_names = sorted(lanes, key=lambda n: (_LANE_ORDER.get(n.split(" ")[0], 40), n))
    lane_idx = {n: i for i, n in enumerate(lane_names)}
    names: dict[str, int] = {}
    cols: dict[str, list[Any]] = {k: [] for k in ("id", "lane", "name", "start", "dur", "gpu", "peak", "energy", "index")}
    for s in spans:
        label = paths[s.id]
        if label not in names:
            names[label] = len(names)
        cols["id"].append(s.id)
        cols["lane"].append(lane_idx[_lane_of(s, depths[s.id])])
        cols["name"].append(names[label])
        cols["start"].append(_chart_number(s.start_s))
        cols["dur"].append(_chart_number(s.duration_s))
        cols["gpu"].append(_chart_number(s.gpu_time_s))
        cols["peak"].append(s.peak_allocated_bytes)
        cols["energy"].append(_chart_number(s.energy_j, 3))
        cols["index"].append(s.index)
    # shading: outermost phases (no phase ancestor), longest first when capped
    shade = [s for s in spans if s.kind == "phase" and depths[s.id] == 0]
    if len(shade) > MAX_SHADED_PHASES:
        shade = sorted(shade, key=lambda s: -(s.duration_s or 0.0))[:MAX_SHADED_PHASES]
        shade.sort(key=lambda s: (s.start_s, s.id))
    return {
        "lanes": lane_names,
        "names": sorted(names, key=names.__getitem__),
        "spans": cols,
        "omitted": omitted,
        "open": [{"name": paths[s.id], "start": _chart_number(s.start_s), "kind": s.kind} for s in open_spans],
        "shade": [
            {"name": s.name, "start": _chart_number(s.start_s), "end": _chart_number(s.start_s + (s.duration_s or 0.0))}
            for s in shade
        ],
    }


def _steps_data(run: Run, kind: str) -> dict[str, Any]:
    """Per-step (or per-block) durations in run order, the first ``WARMUP_STEPS`` of each loop marked.

    A loop is the steps of one parent span; in a block loop, the steps of all blocks of one
    blocks phase, also when each block nests its steps in a phase of its own (so only the
    loop's first step is warm-up, not the first of every block).
    ``block`` is the index of the block holding the step (``None`` outside block loops) and
    ``pipeline`` the ``pipeline`` attribute of the enclosing generation (``None`` when unset).
    """
    by_id = {s.id: s for s in run.spans}
    pipes = span_pipelines(run)
    seen: dict[int | None, int] = {}
    cols: dict[str, list[Any]] = {k: [] for k in ("n", "host", "gpu", "warmup", "group", "index", "start", "block",
                                                  "pipeline")}
    groups: dict[int | None, int] = {}
    for s in sorted(run.iter_spans(kind=kind), key=lambda s: (s.start_s, s.id)):
        loop, block = step_loop(by_id, s) if kind == "step" else (s.parent_id, None)
        k = seen.get(loop, 0)
        seen[loop] = k + 1
        groups.setdefault(loop, len(groups))
        cols["n"].append(len(cols["n"]) + 1)
        cols["host"].append(_chart_number(s.duration_s))
        cols["gpu"].append(_chart_number(s.gpu_time_s))
        cols["warmup"].append(1 if k < WARMUP_STEPS else 0)
        cols["group"].append(groups[loop])
        cols["index"].append(s.index)
        cols["start"].append(_chart_number(s.start_s))
        cols["block"].append(block.index if block is not None else None)
        cols["pipeline"].append(pipes.get(s.id))
    return cols


def report_data(
    run: Run,
    *,
    findings: Sequence[Finding] | None = None,
    findings_note: str | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The one JSON blob the page is built from (chart data, summary, findings)."""
    return {
        "genprof_version": __version__,
        "run": {
            "name": run.name,
            "run_id": run.run_id,
            "started_at": run.started_at,
            "duration_s": _chart_number(run.duration_s),
            "tags": run.tags,
            "end": run.end.to_dict(),
        },
        "summary": summary_figures(run),
        "series": _series_data(run),
        "gantt": _gantt_data(run),
        "steps": _steps_data(run, "step"),
        "blocks": _steps_data(run, "block"),
        "warmup_steps": WARMUP_STEPS,
        "pipelines": [p.to_dict() for p in pipeline_stats(run)],
        "events": [
            {"name": e.name, "t": _chart_number(e.t_s), "span_id": e.span_id, "attributes": e.attributes}
            for e in run.events[:MAX_EVENTS_TABLE]
        ],
        "findings": None if findings is None else [f.to_dict() for f in findings],
        "findings_note": findings_note,
        "comparison": None if comparison is None else dict(comparison),
    }

