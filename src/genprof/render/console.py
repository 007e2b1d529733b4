"""Console tables (rich): usage statistics, per-pipeline times, video throughput and the phase table.

A value that was not measured shows as ``n/a``, never as 0. :func:`print_summary` writes to
stderr by default so that it never mixes with a program's own standard output;
``genprof summary`` passes a stdout console.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from genprof.analysis.summary import phase_table as _phase_rows
from genprof.model import Run
from genprof.units import format_bytes, format_seconds

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.table import Table

log = logging.getLogger(__name__)


def _energy(j: float | None) -> str:
    if j is None:
        return "n/a"
    if abs(j) >= 1e3:
        return f"{j / 1e3:.2f} kJ"
    return f"{j:.1f} J"


def usage_rows(run: Run) -> list[tuple[str, str]]:
    """The usage statistics as (label, value) pairs, formatted; shared by the table and the log."""
    u: dict[str, Any] = run.usage_statistics()
    gens = str(u["generations"]) + (" (implicit: no generation spans)" if u["generations_implicit"] else "")
    return [
        ("Initialization time", format_seconds(u["initialization_time_s"])),
        ("Generations", gens),
        ("Peak memory allocated", format_bytes(u["peak_allocated_bytes"])),
        ("Peak memory reserved", format_bytes(u["peak_reserved_bytes"])),
        ("Average inference time", format_seconds(u["average_inference_time_s"])),
        ("Total inference time", format_seconds(u["total_inference_time_s"])),
        ("Current memory allocated", format_bytes(u["current_allocated_bytes"])),
        ("Current memory reserved", format_bytes(u["current_reserved_bytes"])),
        ("Device", str(u["device_name"])),
    ]


def usage_table(run: Run) -> Table:
    """The usage statistics table (from :meth:`Run.usage_statistics`)."""
    from rich.table import Table
    from rich.text import Text

    # Text, not str: user strings (run and device names) must not be read as rich markup
    t = Table(title=Text(f"Usage statistics: {run.name}"), title_justify="left", show_header=True)
    t.add_column("statistic")
    t.add_column("value", justify="right")
    for label, value in usage_rows(run):
        t.add_row(label, Text(value))
    return t


_PHASE_COLUMNS = ("path", "kind", "count", "total", "mean", "p50", "p95", "GPU total", "GPU mean",
                  "GPU p50", "GPU p95", "share", "peak alloc", "peak RSS", "energy")
# (column, width it needs) in the order columns are given up last to first on narrow consoles
_PHASE_PRIORITY = (
    ("path", 20), ("count", 6), ("total", 10), ("mean", 10), ("p95", 10), ("GPU total", 10),
    ("share", 6), ("peak alloc", 10), ("peak RSS", 10), ("energy", 9), ("GPU mean", 10), ("p50", 10),
    ("GPU p95", 10), ("kind", 10), ("GPU p50", 10),
)
_GPU_COLUMNS = ("GPU total", "GPU mean", "GPU p50", "GPU p95")


def _columns_for(width: int | None, available: list[str] | None = None) -> list[str]:
    cols = list(_PHASE_COLUMNS) if available is None else available
    if width is None:
        return cols
    budget = width - 2
    keep: set[str] = set()
    for name, need in _PHASE_PRIORITY:
        if name not in cols:
            continue
        if need + 2 <= budget or name == "path":
            keep.add(name)
            budget -= need + 2
    return [c for c in cols if c in keep]


def phase_table(run: Run, *, width: int | None = None) -> Table:
    """Phase table: count, total, mean, p50 and p95 of host and GPU time, share, peak memory, energy.

    Columns with no value in the whole run (GPU time and energy on a CPU run) are left out, and
    the caption says which and why; peak RSS is shown when no GPU memory was measured. ``width``
    (the console's width) leaves out the least needed columns on narrow terminals (GPU p50
    first, then kind, GPU p95, p50, GPU mean, ...), and the caption names them; ``None`` shows
    every column. Phase names wrap, they are never cut.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = _phase_rows(run, by_pipeline=True)
    empty: list[str] = []
    available = [c for c in _PHASE_COLUMNS if c != "peak RSS"]
    if rows:
        if all(r.gpu.count == 0 for r in rows):
            empty += list(_GPU_COLUMNS)
        if all(r.peak_allocated_bytes is None for r in rows):
            empty.append("peak alloc")
            if any(r.rss_peak_bytes is not None for r in rows):
                available.insert(available.index("energy"), "peak RSS")
        if all(r.energy_j is None for r in rows):
            empty.append("energy")
    available = [c for c in available if c not in empty]
    shown = _columns_for(width, available)
    notes: list[str] = []
    if empty:
        why = run.unavailable.get("gpu") or ("no GPU was used" if not run.gpus else "not measured in this run")
        notes.append(f"no values, left out: {', '.join(empty)} ({why})")
    narrow = [c for c in available if c not in shown]
    if narrow:
        notes.append(f"left out at {width} columns: {', '.join(narrow)} (wider terminal or --width to see them)")
    t = Table(title="Phases (host time; GPU time from CUDA events)", title_justify="left", box=box.SIMPLE_HEAD,
              caption=Text("; ".join(notes)) if notes else None, caption_justify="left")
    for name in shown:
        if name == "path":
            t.add_column(name, overflow="fold", min_width=14)
        else:
            t.add_column(name, justify="left" if name == "kind" else "right", no_wrap=True)
    for r in rows:
        cells: dict[str, Any] = {
            "path": Text("  " * r.depth + r.name),
            "kind": Text(r.kind),
            "count": str(r.host.count),
            "total": format_seconds(r.host.total),
            "mean": format_seconds(r.host.mean),
            "p50": format_seconds(r.host.p50),
            "p95": format_seconds(r.host.p95),
            "GPU total": format_seconds(r.gpu.total),
            "GPU mean": format_seconds(r.gpu.mean),
            "GPU p50": format_seconds(r.gpu.p50),
            "GPU p95": format_seconds(r.gpu.p95),
            "share": "n/a" if r.share_pct is None else f"{r.share_pct:.1f}%",
            "peak alloc": format_bytes(r.peak_allocated_bytes),
            "peak RSS": format_bytes(r.rss_peak_bytes),
            "energy": _energy(r.energy_j),
        }
        t.add_row(*[cells[c] for c in shown])
    if not rows:
        t.add_row("(no spans recorded)", *[""] * (len(shown) - 1))
    return t


NO_PIPELINE = "(no pipeline attribute)"
"""How generations without a ``pipeline`` attribute are named in per-pipeline tables."""


def pipeline_table(run: Run) -> Table | None:
    """Generation and step times per pipeline (``analysis.summary.pipeline_stats``); ``None``
    unless the run's generations came from two or more pipelines. The usage statistics pool them;
    this table keeps them apart (``steps``: steps per generation; ``fps``: output frames per second,
    shown when any pipeline measured it). Pipeline names wrap, never cut; eight columns fit 80."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from genprof.analysis.summary import pipeline_stats

    stats = pipeline_stats(run)
    if len(stats) < 2:
        return None
    t = Table(title="Per pipeline (the usage statistics above pool them)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False)
    from genprof.analysis.throughput import pipeline_video

    video = pipeline_video(run)
    show_fps = any(v["output_frames_per_s"] is not None for v in video.values())
    t.add_column("pipeline", overflow="fold", min_width=10)
    for name in ("gens", "gen mean", "gen p95", "steps", "step mean", "step p95") + (("fps",) if show_fps else ()):
        t.add_column(name, justify="right", no_wrap=True)
    for p in stats:
        spg = "n/a" if p.steps_per_generation is None else f"{p.steps_per_generation:g}"
        cells = [format_seconds(p.generation.mean), format_seconds(p.generation.p95), spg,
                 format_seconds(p.step.mean), format_seconds(p.step.p95)]
        if show_fps:
            fps = video.get(p.pipeline, {}).get("output_frames_per_s")
            cells.append("n/a" if fps is None else f"{fps:.3g}")
        t.add_row(Text(p.pipeline if p.pipeline is not None else NO_PIPELINE), str(p.generations), *cells)
    return t


VIDEO_FIGURES = ("output_fps", "real_time_factor", "time_to_first_frame_s", "blocks_per_s", "deadline_misses")
"""The figures a video user looks for first, in the order the throughput table shows them."""


def video_rows(run: Run) -> list[tuple[str, str, str]]:
    """(figure, value, how it was measured or why not) for :data:`VIDEO_FIGURES`.

    Empty when none of them could be measured (an image run, or a run without frames); once any
    is measured, the others show ``n/a`` with their reason.
    """
    from genprof.analysis.targets import compute_figures, format_value

    figs = compute_figures(run, VIDEO_FIGURES)
    if all(m.value is None for m in figs.values()):
        return []
    return [(name, format_value(name, m.value), (m.source if m.value is not None else m.reason) or "")
            for name, m in figs.items()]


def video_table(run: Run) -> Table | None:
    """Video throughput table (output fps, real-time factor, time to first frame, blocks/s,
    deadline misses); ``None`` when the run has none of them. Long notes wrap, never cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = video_rows(run)
    if not rows:
        return None
    t = Table(title="Video throughput", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("figure", no_wrap=True)
    t.add_column("value", justify="right", no_wrap=True)
    t.add_column("measured from", overflow="fold", ratio=1)
    for name, value, note in rows:
        t.add_row(name, Text(value), Text(note))
    return t


def short_summary(run: Run, run_file: str | None, *, prod: bool = False) -> str:
    """The few lines printed at the end of a profiled script: what ran, its key figures and where
    the run file is. ``prod=True`` gives one line. Figures that were not measured are left out."""
    from genprof.analysis.targets import compute_figures, format_value

    u: dict[str, Any] = run.usage_statistics()
    figs = compute_figures(run, ("generation_time_s", "peak_reserved_bytes", "peak_rss_bytes") + VIDEO_FIGURES)
    parts = [f"genprof: run {run.name} {run.end.status}",
             f"{u['generations']} generation(s)" + (" (implicit)" if u["generations_implicit"] else "")]
    shown = {"generation_time_s": "per generation", "output_fps": "", "real_time_factor": "real-time factor",
             "time_to_first_frame_s": "to first frame", "deadline_misses": "deadline misses",
             "peak_reserved_bytes": "peak reserved"}
    if figs["peak_reserved_bytes"].value is None:
        shown["peak_rss_bytes"] = "peak RSS"
    for name, label in shown.items():
        m = figs[name]
        if m.value is not None:
            parts.append(f"{format_value(name, m.value)} {label}".strip())
    where = f"run file {run_file}" if run_file else "run file not written"
    if prod:
        return "; ".join(parts) + f"; {where}"
    return "\n".join([parts[0] + ": " + ", ".join(parts[1:4]), *([", ".join(parts[4:])] if parts[4:] else []),
                      where[0].upper() + where[1:]])


def print_short_summary(run: Run, run_file: str | None, *, prod: bool = False) -> None:
    """Write :func:`short_summary` to stderr: what a profiled script shows when its run stops."""
    import sys

    sys.stderr.write(short_summary(run, run_file, prod=prod) + "\n")


def print_summary(run: Run, console: Console | None = None) -> None:
    """Print the usage table, then the phase table (stderr unless ``console`` says otherwise)."""
    from rich.console import Console

    con = console if console is not None else Console(stderr=True)
    con.print(usage_table(run))
    per_pipeline = pipeline_table(run)
    if per_pipeline is not None:
        con.print(per_pipeline)
    video = video_table(run)
    if video is not None:
        con.print(video)
    con.print(phase_table(run, width=con.width))
    if run.end.status != "ok":
        detail = ": ".join(x for x in (run.end.exception_type, run.end.message) if x)
        con.print(f"Run ended with status {run.end.status}" + (f" ({detail})" if detail else ""), markup=False)


def log_summary(run: Run, logger: logging.Logger | None = None) -> None:
    """Write the usage statistics to ``logger`` at INFO, one line each (for the log file)."""
    lg = logger or log
    lg.info("usage statistics of run %s (%s)", run.name, run.run_id)
    for label, value in usage_rows(run):
        lg.info("%s: %s", label, value)
