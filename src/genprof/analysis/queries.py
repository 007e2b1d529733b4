"""Span queries: where a span sits in the run's tree, and the run's generations.

Pure functions of a :class:`genprof.model.Run`, shared by the figure table
(:mod:`genprof.analysis.figures`), target checking (:mod:`genprof.analysis.targets`) and the
rules (:mod:`genprof.analysis.rules`). A *container* is a ``phase`` or ``generation`` span: the
spans that steps, blocks and calls are counted towards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from genprof.analysis.summary import span_paths
from genprof.model import Run, Span

CONTAINER_KINDS = ("phase", "generation")


# --------------------------------------------------------------------------- values
def finite_float(v: Any) -> float | None:
    """``v`` as a float when it is a finite number (not a bool), else ``None``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def whole_int(v: Any) -> int | None:
    """``v`` as an int when it is a whole number (``3`` or ``3.0``, not a bool), else ``None``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        return None
    return int(v)


# --------------------------------------------------------------------------- the span tree
def ancestors(by_id: Mapping[int, Span], span: Span) -> Iterator[Span]:
    """The span's parent, its parent's parent, ... to the root.

    Stops at a parent id that is not in the run, and at a cycle (a damaged file), so it always ends.
    """
    seen = {span.id}
    cur = by_id.get(span.parent_id) if span.parent_id is not None else None
    while cur is not None and cur.id not in seen:
        yield cur
        seen.add(cur.id)
        cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None


def is_inside(by_id: Mapping[int, Span], span: Span, ancestor_id: int) -> bool:
    """Whether the span with id ``ancestor_id`` is one of ``span``'s ancestors."""
    return any(a.id == ancestor_id for a in ancestors(by_id, span))


def nearest_container(by_id: Mapping[int, Span], span: Span) -> Span | None:
    """The nearest ancestor of ``span`` that is a phase or a generation."""
    return next((a for a in ancestors(by_id, span) if a.kind in CONTAINER_KINDS), None)


def nearest_phase_name(run: Run, span: Span) -> str | None:
    """The name of the nearest phase or generation holding ``span`` (``None`` at the top level)."""
    c = nearest_container({s.id: s for s in run.spans}, span)
    return None if c is None else c.name


def phase_exclusive_times(run: Run) -> dict[str, float]:
    """Host time of each phase path (``generation/denoise``) not inside a nested phase.

    Steps, blocks and calls count towards the phase that holds them; a phase nested in
    another counts only once (towards itself), so the values add up to at most the run's
    duration. Paths of ``phase`` and ``generation`` spans only.
    """
    by_id = {s.id: s for s in run.spans}
    containers = [s for s in run.spans if s.kind in CONTAINER_KINDS and s.duration_s is not None]
    inner: dict[int, float] = {}
    for s in containers:
        p = nearest_container(by_id, s)
        if p is not None:
            inner[p.id] = inner.get(p.id, 0.0) + (s.duration_s or 0.0)
    paths = span_paths(run)
    out: dict[str, float] = {}
    for s in containers:
        t = max(0.0, (s.duration_s or 0.0) - inner.get(s.id, 0.0))
        out[paths[s.id]] = out.get(paths[s.id], 0.0) + t
    return out


def timed_steps(run: Run) -> list[Span]:
    """The run's ``step`` spans that have a duration, in start order."""
    return sorted((s for s in run.spans if s.kind == "step" and s.duration_s is not None), key=lambda s: s.start_s)


def innermost_peak_phase(run: Run, key: str) -> Span | None:
    """The phase (or generation) holding the run's highest ``key`` (a span memory field such as
    ``peak_reserved_bytes``): of those at the top value, the shortest, which is the innermost."""
    cands = [s for s in run.spans if s.kind in CONTAINER_KINDS and getattr(s, key) is not None]
    if not cands:
        return None
    top = max(getattr(s, key) for s in cands)
    at_top = [s for s in cands if getattr(s, key) == top]
    return min(at_top, key=lambda s: s.duration_s if s.duration_s is not None else math.inf)


# --------------------------------------------------------------------------- generations
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
    pipeline: str | None = None  # the generation span's ``pipeline`` attribute, else the helper's pipeline class


def generations(run: Run) -> tuple[list[GenerationFigures], str]:
    """The run's generations and where they came from.

    ``run.metadata["generations"]`` (written by the diffusers helper: a list of dicts with
    ``duration_s``, ``output_frames``, ``fps``, ...) wins; otherwise the ``generation`` spans
    (``output_frames`` and ``fps`` read from their attributes when present); otherwise each
    blocks phase (the parent of ``block`` spans) counts as one generation.
    """
    md = run.metadata.get("generations")
    out: list[GenerationFigures] = []
    by_id = {s.id: s for s in run.spans}
    if isinstance(md, list) and md:
        for g in md:
            if not isinstance(g, Mapping):
                continue
            d = finite_float(g.get("duration_s"))
            if d is None:
                continue
            out.append(
                GenerationFigures(
                    duration_s=d,
                    output_frames=whole_int(g.get("output_frames")),
                    fps=finite_float(g.get("fps")),
                    energy_j=finite_float(g.get("energy_j")),
                    span_id=whole_int(g.get("span_id")),
                    pipeline=_pipeline_name(by_id, whole_int(g.get("span_id")), g.get("pipeline_class")),
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
                    output_frames=whole_int(s.attributes.get("output_frames")),
                    fps=finite_float(s.attributes.get("fps")),
                    energy_j=s.energy_j,
                    span_id=s.id,
                    start_s=s.start_s,
                    pipeline=_pipeline_name(by_id, s.id, None),
                )
            )
    if out:
        _fill_from_blocks(run, out)
        return out, "generation spans"
    return _block_loop_generations(run)


def _pipeline_name(by_id: Mapping[int, Span], span_id: int | None, fallback: Any) -> str | None:
    span = by_id.get(span_id) if span_id is not None else None
    v = span.attributes.get("pipeline") if span is not None else None
    if v is None:
        v = fallback
    return None if v is None else str(v)


def pipelines_of(gens: list[GenerationFigures]) -> list[str]:
    """The distinct named pipelines of ``gens``, in first-seen order."""
    return list(dict.fromkeys(g.pipeline for g in gens if g.pipeline is not None))


def block_frames(b: Span) -> int | None:
    """A block span's ``frames`` attribute (output frames it produced), when it is a whole number >= 0."""
    n = whole_int(b.attributes.get("frames"))
    return n if n is not None and n >= 0 else None


def _blocks_phases(run: Run) -> dict[int | None, list[Span]]:
    """``block`` spans grouped by their parent (the blocks phase), each list in start order."""
    groups: dict[int | None, list[Span]] = {}
    for b in sorted(run.iter_spans(kind="block"), key=lambda s: s.start_s):
        groups.setdefault(b.parent_id, []).append(b)
    return groups


def _positive_fps(parent: Span | None) -> float | None:
    f = finite_float(parent.attributes.get("fps")) if parent is not None else None
    return f if f is not None and f > 0 else None


def _summed_frames(blocks: list[Span]) -> int | None:
    counts = [block_frames(b) for b in blocks]
    return sum(c for c in counts if c is not None) if all(c is not None for c in counts) else None


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
            parent = by_id.get(pid) if pid is not None else None
            if parent is not None and (parent.id == g.span_id or is_inside(by_id, parent, g.span_id)):
                mine.append((parent, blocks))
        if not mine:
            continue
        g.blocks = [b for _, bs in mine for b in bs]
        if g.output_frames is None:
            g.output_frames = _summed_frames(g.blocks)
        if g.fps is None:
            g.fps = next((f for f in (_positive_fps(p) for p, _ in mine) if f is not None), None)


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
        out.append(GenerationFigures(duration_s=dur, output_frames=_summed_frames(blocks), fps=_positive_fps(parent),
                                     energy_j=parent.energy_j if parent is not None else None,
                                     span_id=pid, blocks=blocks, start_s=start))
    return out, "block spans (no generation span: each blocks phase counts as one)"


__all__ = [
    "CONTAINER_KINDS",
    "GenerationFigures",
    "ancestors",
    "block_frames",
    "finite_float",
    "generations",
    "innermost_peak_phase",
    "is_inside",
    "nearest_container",
    "nearest_phase_name",
    "phase_exclusive_times",
    "timed_steps",
    "whole_int",
]
