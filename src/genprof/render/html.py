"""The self-contained HTML report.

One file that opens offline: the page is one Jinja2 template (autoescaped) fed one JSON blob
(sorted keys, so output is deterministic), with plotly.js's basic partial bundle
(vendored beside the templates) inlined (no CDN). Charts are drawn in the browser from the blob by ``templates/report.js``;
tables are rendered on the server so the page is readable without JavaScript.

Escaping: every string from the run (names, tags, attributes, messages) is escaped by Jinja's
autoescape in HTML, and by :func:`embed_json` in the blob (``<``, ``>`` and ``&`` as ``\\uXXXX``,
so neither ``</script>`` nor ``<!--`` can end the script element). The chart code escapes
strings again before handing them to plotly, which otherwise reads a few HTML tags in labels.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from genprof._version import __version__
from genprof.analysis.findings import Finding
from genprof.analysis.summary import PhaseRow, phase_table, span_paths
from genprof.errors import MissingDependencyError
from genprof.model import Run, Span, atomic_write_text
from genprof.render.reports import collect_findings, json_default, summary_figures
from genprof.render.why import why_html
from genprof.units import format_bytes, format_seconds

log = logging.getLogger(__name__)

MAX_SERIES_POINTS = 4000
"""Points drawn per series at most; longer series are reduced keeping each bucket's min and max."""

MAX_GANTT_SPANS = 20000
"""Spans drawn in the timeline at most (``call`` spans are dropped first, then the shortest)."""

MAX_SHADED_PHASES = 2000
"""Phase shading rectangles at most (the longest are kept)."""

MAX_EVENTS_TABLE = 500

WARMUP_STEPS = 1
"""Steps at the start of each denoising loop (one parent of steps, or one block loop) marked as warm-up."""

_TEMPLATES = Path(__file__).parent / "templates"

_UNIT_PANELS: tuple[tuple[str, str, str], ...] = (
    # (name suffix, panel id, axis title)
    ("_bytes", "memory", "memory (GiB)"),
    ("_pct", "utilization", "utilization (%)"),
    ("_w", "power", "power (W)"),
    ("_c", "temperature", "temperature (C)"),
    ("_mhz", "clock", "clock (MHz)"),
)


# --------------------------------------------------------------------- public API
def render_html(
    run: Run,
    *,
    findings: Iterable[Finding | Mapping[str, Any]] | None = None,
    comparison: Mapping[str, Any] | None = None,
    oom_advice: Mapping[str, Any] | None = None,
) -> str:
    """The report page as a string (see :func:`write_html`)."""
    found, note = collect_findings(run, findings)
    data = report_data(run, findings=found, findings_note=note, comparison=comparison)
    env = _jinja_env()
    template = env.get_template("report.html.j2")
    ctx = _context(run, data, found, note, comparison)
    ctx["oom_advice"] = oom_advice_lines(oom_advice)
    ctx["why"] = why_html(run)  # the diagnose window's section; None without one (escaped inside)
    return template.render(
        **ctx,
        data_json=embed_json(data),
        plotly_js=_plotly_js(),
        report_js=_static("report.js"),
        report_css=_static("report.css"),
    )


def write_html(
    run: Run,
    path: str | os.PathLike[str],
    *,
    findings: Iterable[Finding | Mapping[str, Any]] | None = None,
    comparison: Mapping[str, Any] | None = None,
    oom_advice: Mapping[str, Any] | None = None,
) -> Path:
    """Write the self-contained HTML report of ``run`` to ``path`` (atomically); returns the path.

    ``findings`` defaults to ``genprof.analysis.rules.run_rules(run)`` when that module exists
    (the page says when no rules ran). ``comparison`` (a dict, e.g. from
    ``genprof.analysis.compare``) adds a comparison section. ``oom_advice`` (from
    ``genprof.planning.oom.explain_oom``, computed by the caller: renderers sit below the planner)
    says, for a run that ran out of memory, what would have fit.
    """
    p = Path(path)
    atomic_write_text(p, render_html(run, findings=findings, comparison=comparison, oom_advice=oom_advice))
    log.info("wrote HTML report %s", p)
    return p


def embed_json(data: Any) -> str:
    """JSON text that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026`` (so ``</script>`` and
    ``<!--`` cannot appear), and U+2028/U+2029 are escaped too. ``JSON.parse`` reads it back
    unchanged.
    """
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False, default=json_default)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# ----------------------------------------------------------------- data for charts
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


def _panel_of(name: str) -> tuple[str, str]:
    for suffix, panel, title in _UNIT_PANELS:
        if name.endswith(suffix):
            return panel, title
    return "other", "other"


def _series_data(run: Run) -> list[dict[str, Any]]:
    out = []
    for s in run.series:
        t, v = decimate_minmax(s.t_s, s.values, MAX_SERIES_POINTS)
        panel, title = _panel_of(s.name)
        out.append(
            {
                "key": s.key,
                "name": s.name,
                "device": s.device,
                "kind": s.kind,
                "source": s.source,
                "panel": panel,
                "axis_title": title,
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
    blocks phase (so only the loop's first step is warm-up, not the first of every block).
    ``block`` is the index of the block holding the step (``None`` outside block loops) and
    ``pipeline`` the ``pipeline`` attribute of the enclosing generation (``None`` when unset).
    """
    by_id = {s.id: s for s in run.spans}
    seen: dict[int | None, int] = {}
    cols: dict[str, list[Any]] = {k: [] for k in ("n", "host", "gpu", "warmup", "group", "index", "start", "block",
                                                  "pipeline")}
    groups: dict[int | None, int] = {}
    for s in sorted(run.iter_spans(kind=kind), key=lambda s: (s.start_s, s.id)):
        parent = by_id.get(s.parent_id) if s.parent_id is not None else None
        in_block = parent is not None and parent.kind == "block" and kind == "step"
        loop = parent.parent_id if in_block and parent is not None else s.parent_id
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
        cols["block"].append(parent.index if in_block and parent is not None else None)
        cols["pipeline"].append(_pipeline_of(by_id, s))
    return cols


def _pipeline_of(by_id: Mapping[int, Span], span: Span) -> str | None:
    """The ``pipeline`` attribute of the generation span enclosing ``span`` (``None`` when unset)."""
    cur: Span | None = span
    seen: set[int] = set()
    while cur is not None and cur.id not in seen:
        if cur.kind == "generation":
            v = cur.attributes.get("pipeline")
            return str(v) if v is not None else None
        seen.add(cur.id)
        cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
    return None


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
        "events": [
            {"name": e.name, "t": _chart_number(e.t_s), "span_id": e.span_id, "attributes": e.attributes}
            for e in run.events[:MAX_EVENTS_TABLE]
        ],
        "findings": None if findings is None else [f.to_dict() for f in findings],
        "findings_note": findings_note,
        "comparison": None if comparison is None else dict(comparison),
    }


# ------------------------------------------------------------ server-side context
def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}%"


def _fmt_chart_number(x: float | None, unit: str = "", nd: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}{(' ' + unit) if unit else ''}"


def _fmt_energy(j: float | None) -> str:
    if j is None:
        return "n/a"
    if abs(j) >= 3.6e6:
        return f"{j / 3.6e6:.3f} kWh"
    if abs(j) >= 1e3:
        return f"{j / 1e3:.2f} kJ"
    return f"{j:.1f} J"


def _phase_rows(rows: list[PhaseRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append(
            {
                "path": r.path,
                "name": r.name,
                "kind": r.kind,
                "depth": r.depth,
                "count": r.host.count,
                "total": format_seconds(r.host.total),
                "mean": format_seconds(r.host.mean),
                "p50": format_seconds(r.host.p50),
                "p95": format_seconds(r.host.p95),
                "max": format_seconds(r.host.max),
                "gpu_total": format_seconds(r.gpu.total),
                "gpu_mean": format_seconds(r.gpu.mean),
                "share": _fmt_pct(r.share_pct),
                "share_pct": r.share_pct or 0.0,
                "self_share": _fmt_pct(r.self_share_pct),
                "peak_alloc": format_bytes(r.peak_allocated_bytes),
                "peak_reserved": format_bytes(r.peak_reserved_bytes),
                "energy": _fmt_energy(r.energy_j) + ("" if r.energy_reliable in (None, True) else " (unreliable)"),
            }
        )
    return out


VIDEO_CARDS = {
    "output_fps": "Output frames per second",
    "real_time_factor": "Real-time factor",
    "time_to_first_frame_s": "Time to first frame",
    "deadline_misses": "Deadline misses",
}
"""Video figures shown as cards (all of them, with reasons for those not measured, once any is)."""


def _cards(fig: Mapping[str, Any], run: Run) -> list[dict[str, str]]:
    gens = fig["generations"]
    gen_note = "one implicit generation (no generation spans)" if fig["generations_implicit"] else f"{gens} generation(s)"
    cards = [
        {"label": "Total time", "value": format_seconds(fig["total_time_s"]), "note": "host wall time of the run"},
        {"label": "Time per generation", "value": format_seconds(fig["time_per_generation_s"]), "note": gen_note},
        {"label": "Peak allocated", "value": format_bytes(fig["peak_allocated_bytes"]), "note": "PyTorch allocator"},
        {"label": "Peak reserved", "value": format_bytes(fig["peak_reserved_bytes"]), "note": "PyTorch caching allocator"},
        {"label": "Peak RSS", "value": format_bytes(fig["peak_rss_bytes"]), "note": "process resident memory"},
        {"label": "Energy", "value": _fmt_energy(fig["energy_j"]), "note": fig["energy_source"]},
        {"label": "Average power", "value": _fmt_chart_number(fig["average_power_w"], "W", 1), "note": fig["average_power_source"]},
        {
            "label": "Steps per second",
            "value": _fmt_chart_number(fig["steps_per_s"], "", 2),
            "note": f"{fig['steps']} steps, over their summed host time",
        },
    ]
    from genprof.analysis.targets import compute_figures, format_value

    video = compute_figures(run, VIDEO_CARDS)
    if any(m.value is not None for m in video.values()):
        for name, m in video.items():
            cards.append({"label": VIDEO_CARDS[name], "value": format_value(name, m.value),
                          "note": (m.source if m.value is not None else m.reason) or ""})
    if fig["blocks"]:
        cards.append(
            {
                "label": "Blocks per second",
                "value": _fmt_chart_number(fig["blocks_per_s"], "", 3),
                "note": f"{fig['blocks']} blocks, over their summed host time",
            }
        )
    return cards


def _scalar(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=json_default)
    return str(v)


def _flatten(d: Mapping[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k in sorted(d, key=str):
        v = d[k]
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and depth < 4:
            out.extend(_flatten(v, key + ".", depth + 1))
        else:
            out.append((key, _scalar(v)))
    return out


def _fmt_change_value(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if not isinstance(v, (int, float)):
        return _scalar(v)
    if unit in ("s", "seconds"):
        return format_seconds(v)
    if unit in ("bytes", "B"):
        return format_bytes(v)
    if unit in ("J", "j"):
        return _fmt_energy(v)
    return f"{v:.4g} {unit}".strip()


def _change_cells(c: Mapping[str, Any]) -> list[str]:
    unit = str(c.get("unit") or "")
    pct = c.get("change_pct")
    lo, hi = c.get("ci_low_pct"), c.get("ci_high_pct")
    better = c.get("better")
    sig = c.get("significant")
    if c.get("before") is None or c.get("after") is None:
        verdict = "not comparable"
    elif c.get("delta") == 0 or better is None:
        verdict = "unchanged"
    else:
        verdict = ("better" if better else "worse") + ("" if sig in (None, True) else ", within noise")
    return [
        _fmt_change_value(c.get("before"), unit),
        _fmt_change_value(c.get("after"), unit),
        "n/a" if pct is None else f"{pct:+.1f}%",
        "n/a" if lo is None or hi is None else f"{lo:+.1f}% .. {hi:+.1f}%",
        verdict,
    ]


def _comparison_ctx(comparison: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Tables for a ``genprof.comparison`` dict; other dicts as a table of ``rows`` or key/values."""
    if comparison is None:
        return None
    tables: list[dict[str, Any]] = []
    rest: dict[str, Any] = dict(comparison)
    if comparison.get("format") == "genprof.comparison":
        overall = comparison.get("overall") or []
        tables.append(
            {
                "title": "Overall (before -> after)",
                "columns": ["figure", "before", "after", "change", "95% interval", "verdict"],
                "rows": [[str(c.get("name"))] + _change_cells(c) for c in overall if isinstance(c, Mapping)],
            }
        )
        phases = comparison.get("phases") or []
        prow = []
        for ph in phases:
            if not isinstance(ph, Mapping):
                continue
            t = ph.get("time") or {}
            m = ph.get("peak_reserved") or {}
            e = ph.get("energy") or {}
            tc, mc, ec = _change_cells(t), _change_cells(m), _change_cells(e)
            prow.append([str(ph.get("path")), tc[0], tc[1], tc[2], tc[4], mc[2], ec[2]])
        tables.append(
            {
                "title": "Phases",
                "columns": ["path", "time before", "time after", "time change", "verdict",
                            "peak reserved change", "energy change"],
                "rows": prow,
            }
        )
        for k in ("overall", "phases", "format"):
            rest.pop(k, None)
    else:
        rows = comparison.get("rows")
        if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
            cols: list[str] = []
            for r in rows:
                for k in r:
                    if str(k) not in cols:
                        cols.append(str(k))
            tables.append({"title": "", "columns": cols, "rows": [[_scalar(r.get(c)) for c in cols] for r in rows]})
            rest.pop("rows")
    return {"tables": tables, "pairs": _flatten(rest)}


def _end_ctx(run: Run) -> dict[str, Any]:
    e = run.end
    labels = {
        "ok": "completed",
        "running": "still running when written (partial run)",
        "exception": "ended by an exception",
        "interrupted": "interrupted",
        "oom": "ran out of GPU memory",
    }
    oom = None
    if e.oom:
        oom = [(k, format_bytes(v) if k.endswith("_bytes") and isinstance(v, (int, float)) else _scalar(v))
               for k, v in sorted(e.oom.items())]
    return {
        "status": e.status,
        "label": labels.get(e.status, e.status),
        "at": format_seconds(e.at_s),
        "exception_type": e.exception_type,
        "message": e.message,
        "open_spans": e.open_spans,
        "oom": oom,
    }


def oom_advice_lines(advice: Mapping[str, Any] | None) -> list[str] | None:
    """Plain sentences from ``explain_oom``'s dict (the template escapes them)."""
    if not advice:
        return None
    lines: list[str] = []
    frag = advice.get("fragmentation")
    if isinstance(frag, Mapping) and frag.get("reserved_minus_allocated_bytes") is not None:
        lines.append(f"Reserved exceeded allocated by {format_bytes(frag['reserved_minus_allocated_bytes'])} at the "
                     f"failure (x{frag.get('reserved_over_allocated', 0):.2f}); "
                     "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True returns such memory.")
    fit = advice.get("what_would_fit")
    if isinstance(fit, Mapping):
        if fit.get("fits") and fit.get("settings"):
            st = ", ".join(f"{k}={v}" for k, v in sorted(fit["settings"].items()))
            lines.append(f"What would have fit in {format_bytes(fit.get('budget_bytes'))}: {st} "
                         f"(predicted peak reserved {format_bytes(fit.get('predicted_peak_reserved_bytes'))}).")
        else:
            lines.append(f"Nothing genprof can plan fits in {format_bytes(fit.get('budget_bytes'))}: {fit.get('needed')}")
    elif advice.get("reason"):
        lines.append(f"No plan: {advice['reason']}.")
    return lines or None


def _context(
    run: Run,
    data: Mapping[str, Any],
    found: list[Finding] | None,
    note: str | None,
    comparison: Mapping[str, Any] | None,
) -> dict[str, Any]:
    sev_order = {"critical": 0, "warning": 1, "info": 2}
    findings = None if found is None else sorted(found, key=lambda f: (sev_order.get(f.severity, 3), f.rule_id))
    devices = [
        " ".join(x for x in (g.name or f"GPU {g.index}", f"({format_bytes(g.total_memory_bytes)})") if x)
        for g in run.gpus
    ] or ["CPU only"]
    sw = [(k, v) for k, v in run.software.to_dict().items() if v is not None]
    gpus = [[(k, _scalar(v)) for k, v in g.to_dict().items()] for g in run.gpus]
    host = [
        (k, format_bytes(v) if k.endswith("_bytes") else _scalar(v)) for k, v in run.host.to_dict().items()
    ]
    return {
        "run": run,
        "title": f"genprof report: {run.name}",
        "version": __version__,
        "tags": [(str(k), _scalar(v)) for k, v in sorted(run.tags.items(), key=lambda kv: str(kv[0]))],
        "end": _end_ctx(run),
        "devices": devices,
        "software": sw,
        "cards": _cards(data["summary"], run),
        "phases": _phase_rows(phase_table(run)),
        "findings": findings,
        "findings_note": note,
        "comparison": _comparison_ctx(comparison),
        "events": data["events"],
        "events_total": len(run.events),
        "events_shown": min(len(run.events), MAX_EVENTS_TABLE),
        "fmt_t": format_seconds,
        "scalar": _scalar,
        "gpus": gpus,
        "host": host,
        "distributed": None if run.distributed is None else list(run.distributed.to_dict().items()),
        "unavailable": sorted(run.unavailable.items()),
        "config": _flatten(run.config),
        "metadata_json": json.dumps(run.metadata, sort_keys=True, indent=2, default=json_default)[:200_000],
        "has_series": bool(run.series),
        "has_steps": bool(data["steps"]["n"]),
        "has_blocks": bool(data["blocks"]["n"]),
        "warmup_steps": WARMUP_STEPS,
    }


# -------------------------------------------------------------------- resources
@lru_cache(maxsize=1)
def _jinja_env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=4)
def _static(name: str) -> str:
    return (_TEMPLATES / name).read_text(encoding="utf-8")


PLOTLY_BASIC_BUNDLE = "plotly-basic.min.js"
"""plotly.js's basic partial bundle (scatter, bar, pie; zoom and hover kept), minified, vendored
beside the templates (MIT licence in ``plotly-basic.LICENSE.txt``). The ``plotly`` Python
package ships only the full 4.8 MB bundle; the basic one is 1.2 MB and draws every chart of the
report (scatter lines, bar timelines, rectangle shapes)."""


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    basic = _TEMPLATES / PLOTLY_BASIC_BUNDLE
    if basic.is_file():
        js: str = basic.read_text(encoding="utf-8")
    else:  # a build without the vendored bundle: fall back to the plotly package's full one
        try:
            from plotly.offline import get_plotlyjs
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.split(".")[0] == "plotly":
                raise MissingDependencyError("plotly", "the HTML report", extra="html") from exc
            raise
        js = get_plotlyjs()
    # the bundle is inlined in a <script> element: it must not close it early
    return js.replace("</script", "<\\/script")
