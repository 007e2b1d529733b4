"""Key figures of a run, performance targets on them, and a 0-100 score.

A *figure* is one number computed from a saved run (``generation_time_s``,
``step_time_p95_s``, ``peak_reserved_bytes``, ``energy_per_generation_j``, ``output_fps``, ...).
A *target* is a limit on a figure, written ``"generation_time_s<=5"`` or
``"peak_reserved_bytes<=16GiB"``. :func:`check_targets` checks each target against the run and
returns a :class:`TargetReport`: which targets hold, the measured value, the margin, the
phase that missed and by how much, and the score (defined in ``docs/analysis.md``):

* a target that holds scores 100;
* a target that fails scores ``100 * limit / measured`` for a figure where lower is better
  and ``100 * measured / limit`` where higher is better (twice the limit scores 50);
* a target whose figure cannot be computed from the run scores 0 and fails as
  "not measured", with the reason;
* the run's score is the mean of its targets' scores (``None`` when there are no targets).

Everything here is a pure function of the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from genprof.analysis.summary import energy_total, peak_memory, percentile, span_paths
from genprof.errors import UsageError
from genprof.model import Run, Span
from genprof.units import format_bytes, format_seconds, parse_bytes

CONTAINER_KINDS = ("phase", "generation")


# --------------------------------------------------------------------------- helpers
@dataclass
class GenerationFigures:
    """One pipeline call: from ``run.metadata["generations"]`` or a ``generation`` span."""

    duration_s: float
    output_frames: int | None = None
    fps: float | None = None
    energy_j: float | None = None
    span_id: int | None = None
    blocks: list[Span] = field(default_factory=list)  # the generation's block spans, in start order
    start_s: float | None = None


Generation = GenerationFigures  # the former name, kept for callers


def generations(run: Run) -> tuple[list[GenerationFigures], str]:
    """The run's generations and where they came from.

    ``run.metadata["generations"]`` (written by the diffusers helper: a list of dicts with
    ``duration_s``, ``output_frames``, ``fps``, ...) wins; otherwise the ``generation`` spans
    (``output_frames`` and ``fps`` read from their attributes when present).
    """
    md = run.metadata.get("generations")
    out: list[GenerationFigures] = []
    if isinstance(md, list) and md:
        for g in md:
            if not isinstance(g, Mapping):
                continue
            d = _finite_float(g.get("duration_s"))
            if d is None:
                continue
            out.append(
                GenerationFigures(
                    duration_s=d,
                    output_frames=_int(g.get("output_frames")),
                    fps=_finite_float(g.get("fps")),
                    energy_j=_finite_float(g.get("energy_j")),
                    span_id=_int(g.get("span_id")),
                )
            )
        if out:
            _fill_from_blocks(run, out)
            return out, 'run.metadata["generations"]'
    for s in run.spans:
        if s.kind == "generation" and s.duration_s is not None:
            out.append(
                GenerationFigures(
                    duration_s=s.duration_s,
                    output_frames=_int(s.attributes.get("output_frames")),
                    fps=_finite_float(s.attributes.get("fps")),
                    energy_j=s.energy_j,
                    span_id=s.id,
                    start_s=s.start_s,
                )
            )
    if out:
        _fill_from_blocks(run, out)
        return out, "generation spans"
    return _block_loop_generations(run)


def _blocks_phases(run: Run) -> dict[int | None, list[Span]]:
    """``block`` spans grouped by their parent (the blocks phase), each list in start order."""
    groups: dict[int | None, list[Span]] = {}
    for b in sorted(run.iter_spans(kind="block"), key=lambda s: s.start_s):
        groups.setdefault(b.parent_id, []).append(b)
    return groups


def _block_frames(b: Span) -> int | None:
    return _int(b.attributes.get("frames"))


def _fill_from_blocks(run: Run, gens: list[GenerationFigures]) -> None:
    """A generation without an output-frame count gets its blocks' ``frames`` summed, and
    without an fps the ``fps`` attribute of its blocks phase (hand-written block loops)."""
    by_id = {s.id: s for s in run.spans}
    groups = _blocks_phases(run)
    for g in gens:
        if g.span_id is None or g.span_id not in by_id:
            continue
        mine: list[tuple[Span | None, list[Span]]] = []
        for pid, blocks in groups.items():
            cur = by_id.get(pid) if pid is not None else None
            parent = cur
            seen: set[int] = set()
            while cur is not None and cur.id != g.span_id and cur.id not in seen:
                seen.add(cur.id)
                cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
            if cur is not None and cur.id == g.span_id:
                mine.append((parent, blocks))
        if not mine:
            continue
        g.blocks = [b for _, bs in mine for b in bs]
        if g.output_frames is None:
            counts = [_block_frames(b) for b in g.blocks]
            if all(c is not None for c in counts):
                g.output_frames = sum(c for c in counts if c is not None)
        if g.fps is None:
            for parent, _ in mine:
                f = _finite_float(parent.attributes.get("fps")) if parent is not None else None
                if f is not None and f > 0:
                    g.fps = f
                    break


def _block_loop_generations(run: Run) -> tuple[list[GenerationFigures], str]:
    """No generation spans: each blocks phase (the parent of ``block`` spans) is one generation."""
    out: list[GenerationFigures] = []
    by_id = {s.id: s for s in run.spans}
    for pid, blocks in _blocks_phases(run).items():
        parent = by_id.get(pid) if pid is not None else None
        ends = [b.end_s for b in blocks if b.end_s is not None]
        if parent is not None and parent.duration_s is not None:
            dur, start = parent.duration_s, parent.start_s
        elif ends:
            dur, start = max(ends) - blocks[0].start_s, blocks[0].start_s
        else:
            continue
        counts = [_block_frames(b) for b in blocks]
        frames = sum(c for c in counts if c is not None) if all(c is not None for c in counts) else None
        fps = _finite_float(parent.attributes.get("fps")) if parent is not None else None
        out.append(GenerationFigures(duration_s=dur, output_frames=frames, fps=fps if fps and fps > 0 else None,
                                     energy_j=parent.energy_j if parent is not None else None,
                                     span_id=pid, blocks=blocks, start_s=start))
    return out, "block spans (no generation span: each blocks phase counts as one)"


def _finite_float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        return None
    return int(v)


def _container_parent(run: Run) -> dict[int, int | None]:
    """For each span id, the id of its nearest ancestor that is a phase or a generation."""
    by_id = {s.id: s for s in run.spans}
    out: dict[int, int | None] = {}
    for s in run.spans:
        cur = by_id.get(s.parent_id) if s.parent_id is not None else None
        seen = {s.id}
        while cur is not None and cur.kind not in CONTAINER_KINDS and cur.id not in seen:
            seen.add(cur.id)
            cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
        out[s.id] = None if cur is None or cur.kind not in CONTAINER_KINDS else cur.id
    return out


def phase_exclusive_times(run: Run) -> dict[str, float]:
    """Host time of each phase path (``generation/denoise``) not inside a nested phase.

    Steps, blocks and calls count towards the phase that holds them; a phase nested in
    another counts only once (towards itself), so the values add up to at most the run's
    duration. Paths of ``phase`` and ``generation`` spans only.
    """
    nearest = _container_parent(run)
    inner: dict[int, float] = {}
    for s in run.spans:
        if s.kind in CONTAINER_KINDS and s.duration_s is not None:
            p = nearest.get(s.id)
            if p is not None:
                inner[p] = inner.get(p, 0.0) + s.duration_s
    paths = span_paths(run)
    out: dict[str, float] = {}
    for s in run.spans:
        if s.kind in CONTAINER_KINDS and s.duration_s is not None:
            t = max(0.0, s.duration_s - inner.get(s.id, 0.0))
            out[paths[s.id]] = out.get(paths[s.id], 0.0) + t
    return out


def _steps(run: Run) -> list[Span]:
    return sorted((s for s in run.spans if s.kind == "step" and s.duration_s is not None), key=lambda s: s.start_s)


def nearest_phase_name(run: Run, span: Span) -> str | None:
    by_id = {s.id: s for s in run.spans}
    cur = by_id.get(span.parent_id) if span.parent_id is not None else None
    seen: set[int] = set()
    while cur is not None and cur.id not in seen:
        if cur.kind in CONTAINER_KINDS:
            return cur.name
        seen.add(cur.id)
        cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
    return None


# --------------------------------------------------------------------------- figures
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
        steps = _steps(run)
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
    return Measurement(frames / t, source=f"{frames} output frame(s) over {t:.3f} s of generation from {src}",
                       spread=_std(per), samples=len(with_frames))


def _rtf(run: Run) -> Measurement:
    gens, src = generations(run)
    ok = [g for g in gens if g.output_frames is not None and g.fps]
    if not ok:
        return Measurement(None, "no generation records both output_frames and fps (video playback rate)")
    video_s = sum((g.output_frames or 0) / (g.fps or 1.0) for g in ok)
    t = sum(g.duration_s for g in ok)
    if t <= 0:
        return Measurement(None, "generations have zero duration")
    return Measurement(video_s / t, source=f"{video_s:.2f} s of video over {t:.3f} s of generation from {src}")


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
                       and s.end_s is not None and s.start_s >= start and _inside(by_id, s, g.span_id)]
            if decodes:
                ends.append(min(decodes))
        if ends:
            vals.append(min(ends) - start)
    if not vals:
        return Measurement(None, f"no first block and no vae_decode phase in the generations from {src}")
    return Measurement(sum(vals) / len(vals), source=f"start of the generation to its first block's end or first "
                       f"vae_decode's end, mean of {len(vals)} from {src}", spread=_std(vals), samples=len(vals))


def _inside(by_id: dict[int, Span], s: Span, ancestor: int) -> bool:
    cur = by_id.get(s.parent_id) if s.parent_id is not None else None
    seen: set[int] = set()
    while cur is not None and cur.id not in seen:
        if cur.id == ancestor:
            return True
        seen.add(cur.id)
        cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
    return False


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
            frames = _block_frames(b)
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


# --------------------------------------------------------------------------- targets
_OPS = ("<=", ">=", "<", ">")
_TARGET_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|=<|=>)\s*(.+?)\s*$")
_TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0, "h": 3600.0}
_ENERGY_UNITS = {"": 1.0, "j": 1.0, "kj": 1e3, "mj": 1e6, "wh": 3600.0, "kwh": 3.6e6}
_PLAIN_UNITS = {"": 1.0, "fps": 1.0, "x": 1.0}  # also blocks/s and counts
_NUM_UNIT_RE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)$")


@dataclass(frozen=True)
class Target:
    """A limit on a figure: ``figure op limit`` with op one of ``<=``, ``<``, ``>=``, ``>``."""

    figure: str
    op: str
    limit: float

    @property
    def text(self) -> str:
        return f"{self.figure}{self.op}{format_value(self.figure, self.limit)}".replace(" ", "")

    def holds(self, value: float) -> bool:
        return {
            "<=": value <= self.limit,
            "<": value < self.limit,
            ">=": value >= self.limit,
            ">": value > self.limit,
        }[self.op]

    @property
    def upper(self) -> bool:
        return self.op in ("<=", "<")

    def to_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "op": self.op, "limit": self.limit, "text": self.text}


def _parse_limit(figure: str, text: str) -> float:
    unit = FIGURES[figure].unit
    if unit == "bytes":
        return float(parse_bytes(text))
    m = _NUM_UNIT_RE.match(text.strip())
    table = {"s": _TIME_UNITS, "j": _ENERGY_UNITS}.get(unit, _PLAIN_UNITS)
    if not m or m.group(2).lower() not in table:
        examples = {"s": "5, 5s, 800ms, 2min", "j": "500, 500J, 2kJ, 0.1Wh"}.get(unit, "12.5")
        raise UsageError(f"target {figure}: cannot read the limit {text!r}; write it like {examples}")
    v = float(m.group(1)) * table[m.group(2).lower()]
    if not math.isfinite(v):
        raise UsageError(f"target {figure}: the limit {text!r} is not a finite number")
    return v


def parse_target(text: str) -> Target:
    """Parse ``"generation_time_s<=5"``, ``"peak_reserved_bytes<=16GiB"``, ``"output_fps>=8"``."""
    if not isinstance(text, str):
        raise UsageError(f"a target must be text like 'generation_time_s<=5', got {text!r}")
    m = _TARGET_RE.match(text)
    if not m:
        raise UsageError(
            f"cannot read target {text!r}; write FIGURE<=LIMIT or FIGURE>=LIMIT, e.g. "
            "generation_time_s<=5 or peak_reserved_bytes<=16GiB"
        )
    name, op, limit = m.group(1), m.group(2), m.group(3)
    op = {"=<": "<=", "=>": ">="}.get(op, op)
    if name not in FIGURES:
        import difflib

        close = difflib.get_close_matches(name, list(FIGURES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown figure {name!r} in target {text!r}{hint}; known figures: {', '.join(FIGURES)}")
    return Target(name, op, _parse_limit(name, limit))


def parse_targets(targets: Any) -> list[Target]:
    """Targets from a list of strings/:class:`Target`, or a mapping ``{figure: limit}``.

    In a mapping, the limit is an upper bound for a figure where lower is better and a lower
    bound otherwise (``{"generation_time_s": 5, "output_fps": 8}``); a limit may also carry its
    own operator as text (``{"output_fps": ">=8"}``).
    """
    if targets is None:
        return []
    if isinstance(targets, (str, Target)):
        targets = [targets]
    out: list[Target] = []
    if isinstance(targets, Mapping):
        for k, v in targets.items():
            if k not in FIGURES:
                parse_target(f"{k}<=0")  # raises the unknown-figure error
            if isinstance(v, str) and v.strip()[:1] in "<>=":
                out.append(parse_target(f"{k}{v.strip()}"))
                continue
            op = "<=" if FIGURES[k].lower_is_better else ">="
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise UsageError(f"target {k}: the limit must be a number or text like '16GiB', got {v!r}")
            out.append(Target(k, op, _parse_limit(k, str(v)) if isinstance(v, str) else float(v)))
        return out
    for t in targets:
        out.append(t if isinstance(t, Target) else parse_target(t))
    return out


@dataclass
class TargetResult:
    target: Target
    status: str  # "pass", "fail", "not_measured"
    measured: float | None
    margin: float | None  # headroom in the figure's unit: positive holds, negative misses
    margin_pct: float | None  # margin relative to the limit, in percent
    score: float
    reason: str | None = None
    source: str | None = None
    phase: str | None = None  # the phase that missed
    diagnostics: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "status": self.status,
            "holds": self.holds,
            "measured": self.measured,
            "measured_text": format_value(self.target.figure, self.measured),
            "margin": self.margin,
            "margin_pct": self.margin_pct,
            "score": self.score,
            "reason": self.reason,
            "source": self.source,
            "phase": self.phase,
            "diagnostics": list(self.diagnostics),
        }


@dataclass
class TargetReport:
    results: list[TargetResult]
    score: float | None

    @property
    def all_hold(self) -> bool:
        return all(r.holds for r in self.results)

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if not r.holds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "all_hold": self.all_hold,
            "score": self.score,
            "score_definition": "mean over targets of: 100 if it holds; 100*limit/measured (lower is better) or "
            "100*measured/limit (higher is better) if it fails; 0 if not measured",
            "results": [r.to_dict() for r in self.results],
        }


def _diagnose(run: Run, t: Target, measured: float) -> tuple[str | None, list[str]]:
    """The phase that missed the target and by how much."""
    fig = FIGURES[t.figure]
    miss = (measured - t.limit) if t.upper else (t.limit - measured)
    notes: list[str] = []
    if fig.unit == "bytes":
        best: Span | None = None
        key = "peak_reserved_bytes" if "reserved" in t.figure else "peak_allocated_bytes"
        if t.figure in ("peak_rss_bytes",):
            key = "rss_peak_bytes"
        cands = [s for s in run.spans if s.kind in CONTAINER_KINDS and getattr(s, key) is not None]
        if cands:
            top = max(getattr(s, key) for s in cands)
            at_top = [s for s in cands if getattr(s, key) == top]
            # the innermost phase holding the peak: the one with the shortest duration
            best = min(at_top, key=lambda s: s.duration_s if s.duration_s is not None else math.inf)
        if best is None:
            return None, [f"over the limit by {format_bytes(miss)}; no phase recorded its peak"]
        path = run.path_of(best)
        notes.append(
            f"the peak ({format_bytes(getattr(best, key))}) is in phase '{path}'; it must drop by "
            f"{format_bytes(miss)} ({100.0 * miss / measured:.1f}%) to meet the target"
        )
        return path, notes
    if t.figure.startswith("step_"):
        steps = _steps(run)
        vals = [(s.gpu_time_s if "gpu" in t.figure else s.duration_s, s) for s in steps]
        over = [(v, s) for v, s in vals if v is not None and not t.holds(v)]
        if not over:
            return None, [f"missed by {format_seconds(miss)}"]
        v, worst = max(over, key=lambda p: p[0] or 0.0)
        phase = nearest_phase_name(run, worst)
        notes.append(
            f"{len(over)} of {len(vals)} steps exceed {format_seconds(t.limit)}; the slowest is step "
            f"{worst.index if worst.index is not None else '?'} in '{phase or 'no phase'}' ({format_seconds(v)})"
        )
        first = [s for _, s in over if s.index is not None and s.index <= 1]
        if first and len(over) <= 2:
            notes.append("only the first steps are slow: warm-up or compilation; exclude them or warm up first")
        return phase, notes
    if fig.unit in ("s", "fps", "ratio", "j"):
        gens, _ = generations(run)
        n = max(1, len(gens))
        if fig.unit == "j":
            per_phase: dict[str, float] = {}
            for s in run.spans:
                if s.kind == "phase" and s.energy_j is not None:
                    p = run.path_of(s)
                    per_phase[p] = per_phase.get(p, 0.0) + s.energy_j
            # keep innermost phases only: drop a path that is the prefix of another
            inner = {p: v for p, v in per_phase.items() if not any(q.startswith(p + "/") for q in per_phase)}
            if not inner:
                return None, [f"over the limit by {miss:.1f} J; no phase recorded its energy"]
            p, v = max(inner.items(), key=lambda kv: kv[1])
            total = t.figure == "energy_j"
            share = v if total else v / n
            notes.append(
                f"phase '{p}' uses the most energy ({share:.1f} J{'' if total else ' per generation'}); "
                f"the figure must drop by {miss:.1f} J ({100.0 * miss / measured:.1f}%)"
            )
            return p, notes
        excl = phase_exclusive_times(run)
        if t.figure == "run_time_s":
            scale, excess_s = 1.0, miss
            pool = excl
        else:
            gen_roots = {run.path_of(s) for s in run.spans if s.kind == "generation"}
            if gen_roots:
                pool = {p: v for p, v in excl.items() if any(p == g or p.startswith(g + "/") for g in gen_roots)}
            else:  # generations from metadata: everything but the load phases
                pool = {p: v for p, v in excl.items() if not p.split("/")[0].lower().startswith("load")}
            scale = 1.0 / n
            if fig.unit in ("fps", "ratio"):
                # time per generation that would meet the target
                mean_t = sum(g.duration_s for g in gens) / n if gens else 0.0
                need_t = mean_t * measured / t.limit if t.limit else mean_t
                excess_s = mean_t - need_t
            else:
                excess_s = miss
        if t.figure == "load_time_s":
            pool = {p: v for p, v in excl.items() if p.split("/")[0].lower().startswith("load")}
            scale = 1.0
        inner_pool = {p: v * scale for p, v in pool.items() if v > 0}
        if not inner_pool:
            return None, [f"missed by {format_value(t.figure, abs(miss))}; the run has no phases to break it down"]
        p, v = max(inner_pool.items(), key=lambda kv: kv[1])
        unit = "" if t.figure in ("run_time_s", "load_time_s") else " per generation"
        notes.append(
            f"missed by {format_value(t.figure, abs(miss))}; the largest phase is '{p}' "
            f"({format_seconds(v)}{unit}, time not inside nested phases)"
        )
        if v > 0 and excess_s > 0:
            if excess_s < v:
                notes.append(f"cutting '{p}' by {100.0 * excess_s / v:.0f}% ({format_seconds(excess_s)}) would meet it")
            else:
                notes.append(f"even removing '{p}' entirely would not meet it: {format_seconds(excess_s)} must go")
        return p, notes
    return None, notes


def check_targets(run: Run, targets: Any) -> TargetReport:
    """Check targets against a run.

    ``targets``: strings like ``"generation_time_s<=5"``, :class:`Target` objects, or a
    mapping ``{figure: limit}`` (see :func:`parse_targets`). Raises
    :class:`genprof.errors.UsageError` for a target that cannot be read.
    """
    parsed = parse_targets(targets)
    results: list[TargetResult] = []
    cache: dict[str, Measurement] = {}
    for t in parsed:
        m = cache.get(t.figure) or FIGURES[t.figure].compute(run)
        cache[t.figure] = m
        if m.value is None:
            results.append(TargetResult(t, "not_measured", None, None, None, 0.0,
                                        reason=m.reason or "could not be computed", source=m.source))
            continue
        v = m.value
        ok = t.holds(v)
        margin = (t.limit - v) if t.upper else (v - t.limit)
        margin_pct = (100.0 * margin / abs(t.limit)) if t.limit else None
        if ok:
            score = 100.0
        elif t.upper:
            score = 100.0 * t.limit / v if v > 0 else 0.0
        else:
            score = 100.0 * v / t.limit if t.limit > 0 else 0.0
        score = max(0.0, min(100.0, score))
        phase: str | None = None
        diags: list[str] = []
        if not ok:
            phase, diags = _diagnose(run, t, v)
        results.append(TargetResult(t, "pass" if ok else "fail", v, margin, margin_pct, round(score, 1),
                                    source=m.source, phase=phase, diagnostics=diags))
    overall = round(sum(r.score for r in results) / len(results), 1) if results else None
    return TargetReport(results, overall)


__all__ = [
    "FIGURES",
    "Figure",
    "Generation",
    "GenerationFigures",
    "Measurement",
    "Target",
    "TargetReport",
    "TargetResult",
    "check_targets",
    "compute_figures",
    "format_value",
    "generations",
    "nearest_phase_name",
    "parse_target",
    "parse_targets",
    "phase_exclusive_times",
]
