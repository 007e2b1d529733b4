"""The server-rendered parts of the HTML report: summary cards, the per-pipeline table, the
phase table, the comparison tables, how the run ended and the out-of-memory advice, as plain
strings for the template (which escapes them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from genprof.analysis.summary import PhaseRow, PipelineStats, pipeline_stats
from genprof.model import Run
from genprof.render.reports import json_default
from genprof.units import format_bytes, format_seconds


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


def phase_rows(rows: list[PhaseRow]) -> list[dict[str, Any]]:
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
                "peak_rss": format_bytes(r.rss_peak_bytes),
                "energy": _fmt_energy(r.energy_j) + ("" if r.energy_reliable in (None, True) else " (unreliable)"),
            }
        )
    return out


PHASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "path"), ("kind", "kind"), ("count", "count"), ("total", "total"), ("mean", "mean"), ("p50", "p50"),
    ("p95", "p95"), ("max", "max"), ("gpu_total", "GPU total"), ("share", "share"), ("self_share", "self share"),
    ("peak_alloc", "peak allocated"), ("peak_reserved", "peak reserved"), ("peak_rss", "peak RSS"),
    ("energy", "energy"),
)
"""The phase table's columns (row key, header), in page order."""


def phase_table_ctx(rows: list[PhaseRow], run: Run) -> dict[str, Any]:
    """The phase table for the template: ``columns`` (key, header) and ``rows`` (from
    :func:`phase_rows`), and ``note``, which says which columns were left out and why.

    Columns with no value in any row (GPU time, allocator memory and energy on a CPU run) are
    left out; peak RSS is shown when no allocator memory was measured (it is the memory figure
    a CPU run has), and left out otherwise.
    """
    drop: list[str] = []
    if rows:
        if all(r.gpu.count == 0 for r in rows):
            drop.append("gpu_total")
        if all(r.peak_allocated_bytes is None for r in rows):
            drop.append("peak_alloc")
        if all(r.peak_reserved_bytes is None for r in rows):
            drop.append("peak_reserved")
        if all(r.energy_j is None for r in rows):
            drop.append("energy")
    rss = bool(rows) and "peak_alloc" in drop and any(r.rss_peak_bytes is not None for r in rows)
    headers = dict(PHASE_COLUMNS)
    columns = [(k, h) for k, h in PHASE_COLUMNS if k not in drop and (k != "peak_rss" or rss)]
    note = None
    if drop:
        why = run.unavailable.get("gpu") or ("no GPU was used" if not run.gpus else "not measured in this run")
        note = (f"Left out, no value in any row: {', '.join(headers[k] for k in drop)} ({why})."
                + (" Peak RSS (process resident memory) is shown instead of GPU memory." if rss else ""))
    return {"columns": columns, "rows": phase_rows(rows), "note": note}


def _pipeline_label(p: PipelineStats) -> str:
    return p.pipeline if p.pipeline is not None else "(no pipeline attribute)"


def pipeline_rows(run: Run) -> list[dict[str, str]] | None:
    """One row per pipeline (generation and step times), or ``None`` for a run of fewer than two."""
    from genprof.analysis.throughput import pipeline_video

    stats = pipeline_stats(run)
    if len(stats) < 2:
        return None
    video = pipeline_video(run)

    def _video(p: PipelineStats, key: str) -> str:
        v = video.get(p.pipeline, {}).get(key)
        return "n/a" if v is None else f"{v:.3g}"

    return [
        {
            "pipeline": _pipeline_label(p),
            "generations": str(p.generations),
            "gen_mean": format_seconds(p.generation.mean),
            "gen_p50": format_seconds(p.generation.p50),
            "gen_p95": format_seconds(p.generation.p95),
            "steps_per_gen": "n/a" if p.steps_per_generation is None else f"{p.steps_per_generation:g}",
            "step_mean": format_seconds(p.step.mean),
            "step_p95": format_seconds(p.step.p95),
            "step_gpu_mean": format_seconds(p.step_gpu.mean),
            "output_fps": _video(p, "output_frames_per_s"),
            "real_time_factor": _video(p, "real_time_factor"),
        }
        for p in stats
    ]


VIDEO_CARDS = {
    "output_fps": "Output frames per second",
    "real_time_factor": "Real-time factor",
    "time_to_first_frame_s": "Time to first frame",
    "deadline_misses": "Deadline misses",
}
"""Video figures shown as cards (all of them, with reasons for those not measured, once any is)."""


def cards(fig: Mapping[str, Any], run: Run) -> list[dict[str, str]]:
    gens = fig["generations"]
    gen_note = "one implicit generation (no generation spans)" if fig["generations_implicit"] else f"{gens} generation(s)"
    per_pipeline = pipeline_stats(run)
    if len(per_pipeline) >= 2:  # a pooled mean of two pipelines describes neither
        gen_cards = [{"label": f"Time per generation: {_pipeline_label(p)}", "value": format_seconds(p.generation.mean),
                      "note": f"mean of {p.generations} generation(s) of this pipeline"} for p in per_pipeline]
    else:
        gen_cards = [{"label": "Time per generation", "value": format_seconds(fig["time_per_generation_s"]),
                      "note": gen_note}]
    cards = [
        {"label": "Total time", "value": format_seconds(fig["total_time_s"]), "note": "host wall time of the run"},
        *gen_cards,
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


def scalar(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=json_default)
    return str(v)


def flatten(d: Mapping[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k in sorted(d, key=str):
        v = d[k]
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and depth < 4:
            out.extend(flatten(v, key + ".", depth + 1))
        else:
            out.append((key, scalar(v)))
    return out


def _fmt_change_value(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if not isinstance(v, (int, float)):
        return scalar(v)
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


def comparison_ctx(comparison: Mapping[str, Any] | None) -> dict[str, Any] | None:
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
            tables.append({"title": "", "columns": cols, "rows": [[scalar(r.get(c)) for c in cols] for r in rows]})
            rest.pop("rows")
    return {"tables": tables, "pairs": flatten(rest)}


def end_ctx(run: Run) -> dict[str, Any]:
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
        oom = [(k, format_bytes(v) if k.endswith("_bytes") and isinstance(v, (int, float)) else scalar(v))
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

