"""The figure table: what a figure is and how each is computed from a run.

A *figure* is one number computed from a saved run (``generation_time_s``,
``step_time_p95_s``, ``peak_reserved_bytes``, ``energy_per_generation_j``, ``output_fps``, ...).
:data:`FIGURES` names each with its unit, its direction (lower or higher is better), a
description and the function that computes it; :func:`compute_figures` computes them into
:class:`Measurement` values, ``None`` with the reason when the run cannot give the figure.
Limits on figures and the score are in :mod:`genprof.analysis.targets`.

Everything here is a pure function of the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from genprof.analysis.queries import (
    GenerationFigures,
    block_frames,
    generations,
    is_inside,
    pipelines_of,
    timed_steps,
)
from genprof.analysis.summary import energy_total, peak_memory, percentile
from genprof.errors import UsageError
from genprof.model import Run
from genprof.units import format_bytes, format_seconds


@dataclass
class Measurement:
    """A figure's value, or ``None`` with the reason it could not be computed."""

    value: float | None
    reason: str | None = None
    source: str | None = None
    spread: float | None = None  # within-run spread (standard deviation of the samples), if any
    samples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str  # "s", "bytes", "j", "fps", "ratio"
    lower_is_better: bool
    description: str
    compute: Callable[[Run], Measurement]


def _std(xs: Sequence[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _gen_stat(stat: str) -> Callable[[Run], Measurement]:
    def f(run: Run) -> Measurement:
        gens, src = generations(run)
        if not gens:
            return Measurement(
                None, 'no generation spans and no run.metadata["generations"] in the run '
                "(wrap each pipeline call in prof.generation() or use the diffusers helper)"
            )
        xs = [g.duration_s for g in gens]
        v: float | None
        if stat == "mean":
            v = sum(xs) / len(xs)
        elif stat == "p95":
            v = percentile(xs, 95)
        else:
            v = max(xs)
        return Measurement(v, source=f"host time of {len(xs)} generation(s) from {src}", spread=_std(xs), samples=len(xs))

    return f


def _step_stat(stat: str, gpu: bool = False) -> Callable[[Run], Measurement]:
    def f(run: Run) -> Measurement:
        steps = timed_steps(run)
        if not steps:
            return Measurement(None, "no step spans in the run (use prof.steps() or the diffusers helper)")
        xs = [s.gpu_time_s if gpu else s.duration_s for s in steps]
        vals = [x for x in xs if x is not None]
        if not vals:
            reasons = {s.gpu_time_reason for s in steps if s.gpu_time_reason}
            why = "; ".join(sorted(reasons)) or run.unavailable.get("gpu_time", "GPU timing was off")
            return Measurement(None, f"no GPU time on step spans: {why}")
        v: float | None
        if stat == "mean":
            v = sum(vals) / len(vals)
        elif stat == "max":
            v = max(vals)
        else:
            v = percentile(vals, float(stat[1:]))
        kind = "GPU (CUDA event)" if gpu else "host"
        return Measurement(v, source=f"{kind} time of {len(vals)} step span(s)", spread=_std(vals), samples=len(vals))

    return f


def _mem(key: str, what: str) -> Callable[[Run], Measurement]:
    def f(run: Run) -> Measurement:
        v = peak_memory(run).get(key)
        if v is None:
            reason = run.unavailable.get("gpu_memory") or run.unavailable.get("memory") or (
                f"no {what} readings in the run" + ("" if run.gpus else " (no GPU was used)")
            )
            return Measurement(None, reason)
        return Measurement(float(v), source=f"highest {what} in spans and samples")

    return f


def _run_time(run: Run) -> Measurement:
    if run.duration_s is None:
        return Measurement(None, f"the run has no duration (it ended as {run.end.status!r})")
    return Measurement(run.duration_s, source="host time of the whole run")


def _load_time(run: Run) -> Measurement:
    v = run.usage_statistics().get("initialization_time_s")
    if v is None:
        return Measurement(None, "no top-level phase named load* in the run")
    return Measurement(float(v), source="host time of top-level load phases")


def _energy(run: Run) -> Measurement:
    v, src = energy_total(run)
    if v is None:
        return Measurement(None, src)
    return Measurement(v, source=src)


def _energy_per_gen(run: Run) -> Measurement:
    gens, src = generations(run)
    if not gens:
        return Measurement(None, "no generations in the run, so energy per generation is undefined")
    per = [g.energy_j for g in gens]
    if all(e is not None for e in per):
        vals = [e for e in per if e is not None]
        return Measurement(sum(vals) / len(vals), source=f"energy of {len(vals)} generation(s) from {src}",
                           spread=_std(vals), samples=len(vals))
    total, how = energy_total(run)
    if total is None:
        return Measurement(None, how)
    return Measurement(total / len(gens), source=f"run energy ({how}) over {len(gens)} generation(s)")


def _pooled(gens: list[GenerationFigures]) -> str:
    names = pipelines_of(gens)
    if len(names) < 2:
        return ""
    return f", pooled over {len(names)} pipelines ({', '.join(names)}; the per-pipeline table keeps them apart)"


def _output_fps(run: Run) -> Measurement:
    gens, src = generations(run)
    with_frames = [g for g in gens if g.output_frames is not None]
    if not with_frames:
        return Measurement(None, f"no output frame counts in {src} (the diffusers helper records output_frames)"
                           if gens else "no generations in the run")
    t = sum(g.duration_s for g in with_frames)
    if t <= 0:
        return Measurement(None, "generations with frames have zero duration")
    frames = sum(g.output_frames or 0 for g in with_frames)
    per = [(g.output_frames or 0) / g.duration_s for g in with_frames if g.duration_s > 0]
    return Measurement(frames / t, source=f"{frames} output frame(s) over {t:.3f} s of generation from {src}"
                       + _pooled(with_frames), spread=_std(per), samples=len(with_frames))


def _rtf(run: Run) -> Measurement:
    gens, src = generations(run)
    ok = [g for g in gens if g.output_frames is not None and g.fps]
    if not ok:
        return Measurement(None, "no generation records both output_frames and fps (video playback rate)")
    video_s = sum((g.output_frames or 0) / (g.fps or 1.0) for g in ok)
    t = sum(g.duration_s for g in ok)
    if t <= 0:
        return Measurement(None, "generations have zero duration")
    return Measurement(video_s / t, source=f"{video_s:.2f} s of video over {t:.3f} s of generation from {src}"
                       + _pooled(ok))


def _ttff(run: Run) -> Measurement:
    gens, src = generations(run)
    if not gens:
        return Measurement(None, "no generations and no block spans in the run")
    by_id = {s.id: s for s in run.spans}
    vals: list[float] = []
    for g in gens:
        start = g.start_s
        if start is None and g.span_id in by_id:
            start = by_id[g.span_id].start_s
        if start is None:
            continue
        ends = [b.end_s for b in g.blocks[:1] if b.end_s is not None]
        if g.span_id is not None:
            decodes = [s.end_s for s in run.spans if s.kind == "phase" and s.name == "vae_decode"
                       and s.end_s is not None and s.start_s >= start and is_inside(by_id, s, g.span_id)]
            if decodes:
                ends.append(min(decodes))
        if ends:
            vals.append(min(ends) - start)
    if not vals:
        return Measurement(None, f"no first block and no vae_decode phase in the generations from {src}")
    return Measurement(sum(vals) / len(vals), source=f"start of the generation to its first block's end or first "
                       f"vae_decode's end, mean of {len(vals)} from {src}", spread=_std(vals), samples=len(vals))


def _blocks_per_s(run: Run) -> Measurement:
    blocks = sorted(run.iter_spans(kind="block"), key=lambda s: s.start_s)
    ends = [b.end_s for b in blocks if b.end_s is not None]
    if not blocks or not ends:
        return Measurement(None, "no block spans in the run (use prof.blocks())")
    total = max(ends) - blocks[0].start_s
    if total <= 0:
        return Measurement(None, "the blocks have zero duration")
    return Measurement(len(blocks) / total, source=f"{len(blocks)} block(s) over {total:.3f} s from the first "
                       "block's start to the last one's end", samples=len(blocks))


def _deadline_misses(run: Run) -> Measurement:
    gens, src = generations(run)
    with_blocks = [g for g in gens if g.blocks]
    if not with_blocks:
        return Measurement(None, "no block spans in the run (use prof.blocks())")
    misses = 0
    checked = 0
    for g in with_blocks:
        if not g.fps:
            continue
        for b in g.blocks:
            frames = block_frames(b)
            if frames is None or b.duration_s is None:
                continue
            checked += 1
            if b.duration_s > frames / g.fps:
                misses += 1
    if not checked:
        return Measurement(None, "deadlines need an fps (prof.blocks(..., fps=N) or the generation's fps) and "
                           "each block's 'frames'")
    return Measurement(float(misses), source=f"blocks slower than their frames' playback time at the video's "
                       f"fps, {misses} of {checked} from {src}", samples=checked)


FIGURES: dict[str, Figure] = {
    f.name: f
    for f in [
        Figure("generation_time_s", "s", True, "mean host time of one generation (pipeline call)", _gen_stat("mean")),
        Figure("generation_time_p95_s", "s", True, "95th percentile of generation host time", _gen_stat("p95")),
        Figure("generation_time_max_s", "s", True, "slowest generation (host time)", _gen_stat("max")),
        Figure("step_time_mean_s", "s", True, "mean host time of a denoising step", _step_stat("mean")),
        Figure("step_time_p50_s", "s", True, "median host time of a step", _step_stat("p50")),
        Figure("step_time_p95_s", "s", True, "95th percentile of step host time", _step_stat("p95")),
        Figure("step_time_max_s", "s", True, "slowest step (host time)", _step_stat("max")),
        Figure("step_gpu_time_p95_s", "s", True, "95th percentile of step GPU time (CUDA events)",
               _step_stat("p95", gpu=True)),
        Figure("peak_reserved_bytes", "bytes", True, "highest memory reserved by the PyTorch caching allocator",
               _mem("peak_reserved_bytes", "allocator reserved memory")),
        Figure("peak_allocated_bytes", "bytes", True, "highest memory allocated to tensors",
               _mem("peak_allocated_bytes", "allocator allocated memory")),
        Figure("peak_gpu_memory_used_bytes", "bytes", True, "highest device memory used (NVML, all processes)",
               _mem("peak_gpu_memory_used_bytes", "NVML memory-used")),
        Figure("peak_rss_bytes", "bytes", True, "highest resident set size of the process",
               _mem("peak_rss_bytes", "RSS")),
        Figure("energy_j", "j", True, "GPU energy of the whole run", _energy),
        Figure("energy_per_generation_j", "j", True, "GPU energy per generation", _energy_per_gen),
        Figure("output_fps", "fps", False, "output video frames produced per second of generation time",
               _output_fps),
        Figure("real_time_factor", "ratio", False, "seconds of video produced per second of generation time",
               _rtf),
        Figure("time_to_first_frame_s", "s", True, "from a generation's start to its first decoded frames "
               "(end of its first block, or of its first vae_decode phase); mean over generations", _ttff),
        Figure("blocks_per_s", "rate", False, "blocks produced per second, first block's start to last one's end",
               _blocks_per_s),
        Figure("deadline_misses", "count", True, "blocks whose latency exceeds the playback time of their frames "
               "at the video's fps", _deadline_misses),
        Figure("run_time_s", "s", True, "host time of the whole run", _run_time),
        Figure("load_time_s", "s", True, "host time of top-level load phases", _load_time),
    ]
}


def compute_figures(run: Run, names: Iterable[str] | None = None) -> dict[str, Measurement]:
    """Compute figures (all of :data:`FIGURES` by default) from a run."""
    wanted = list(FIGURES) if names is None else list(names)
    out: dict[str, Measurement] = {}
    for n in wanted:
        if n not in FIGURES:
            raise UsageError(f"unknown figure {n!r}; known figures: {', '.join(FIGURES)}")
        out[n] = FIGURES[n].compute(run)
    return out


def format_value(figure: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    unit = FIGURES[figure].unit if figure in FIGURES else ""
    if unit == "bytes":
        return format_bytes(value)
    if unit == "s":
        return format_seconds(value)
    if unit == "j":
        return f"{value / 1000.0:.2f} kJ" if abs(value) >= 1000 else f"{value:.1f} J"
    if unit == "fps":
        return f"{value:.2f} fps"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "rate":
        return f"{value:.3g}/s"
    return f"{value:.3g}"


__all__ = ["FIGURES", "Figure", "Measurement", "compute_figures", "format_value"]
