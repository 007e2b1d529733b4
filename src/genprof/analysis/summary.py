"""Summaries of a run: per-phase statistics, percentiles, self time without double counting.

Every function here is pure: it reads a :class:`genprof.model.Run` and returns plain data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from genprof.model import Run, Span


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100), as numpy's default. ``None`` if empty."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * (q / 100.0)
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(xs[lo])
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def bootstrap_median_ci(xs: Sequence[float], n_boot: int = 2000, seed: int = 0,
                        alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile-bootstrap ``1 - alpha`` interval of the median of ``xs`` (seeded: deterministic).

    ``None`` for an empty sample; a single value gives a zero-width interval.
    """
    import random

    if not xs:
        return None
    if len(xs) == 1:
        return float(xs[0]), float(xs[0])
    rng = random.Random(seed)
    k = len(xs)
    meds = sorted(percentile(rng.choices(xs, k=k), 50) or 0.0 for _ in range(n_boot))
    return meds[int(alpha / 2 * n_boot)], meds[min(n_boot - 1, int((1 - alpha / 2) * n_boot))]


@dataclass
class Stats:
    """Descriptive statistics of a list of durations (seconds)."""

    count: int
    total: float | None
    mean: float | None
    p50: float | None
    p95: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stats:
        xs = [float(v) for v in values if v is not None]
        if not xs:
            return cls(0, None, None, None, None, None, None)
        return cls(
            count=len(xs),
            total=sum(xs),
            mean=sum(xs) / len(xs),
            p50=percentile(xs, 50),
            p95=percentile(xs, 95),
            min=min(xs),
            max=max(xs),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PhaseRow:
    """One row of the phase table: all spans with the same path (``generation/denoise/step``).

    ``share_pct`` is the inclusive time of these spans over the run's duration; rows at
    different depths overlap, so only ``self_share_pct`` (time not inside any child span)
    adds up to at most 100 over the whole table.
    """

    path: str
    name: str
    kind: str
    depth: int
    host: Stats
    gpu: Stats
    self_time_s: float
    share_pct: float | None
    self_share_pct: float | None
    peak_allocated_bytes: int | None
    peak_reserved_bytes: int | None
    rss_peak_bytes: int | None
    energy_j: float | None
    energy_reliable: bool | None
    span_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["host"] = self.host.to_dict()
        d["gpu"] = self.gpu.to_dict()
        return d


def span_paths(run: Run, *, pipelines: bool = False) -> dict[int, str]:
    """Map each span id to its path of names from the root.

    ``pipelines``: a generation span with a ``pipeline`` attribute is named ``name [pipeline]``
    (``/`` in the pipeline's name becomes ``-``), so the spans of different pipelines get
    different paths.
    """
    by_id = {s.id: s for s in run.spans}
    cache: dict[int, str] = {}

    def name(s: Span) -> str:
        pipe = s.attributes.get("pipeline") if pipelines and s.kind == "generation" else None
        return s.name if pipe is None else f"{s.name} [{str(pipe).replace('/', '-')}]"

    def path(s: Span, depth: int = 0) -> str:
        if s.id in cache:
            return cache[s.id]
        parent = by_id.get(s.parent_id) if s.parent_id is not None else None
        if parent is None or depth > 1000:
            p = name(s)
        else:
            p = path(parent, depth + 1) + "/" + name(s)
        cache[s.id] = p
        return p

    for s in run.spans:
        path(s)
    return cache


def self_times(run: Run) -> dict[int, float]:
    """Host time of each span not covered by its direct children (never negative).

    Children that ran concurrently in other threads can cover more than their parent; the
    result is clipped at zero, so summing self times never exceeds the run's duration by
    double counting nested spans.
    """
    child_sum: dict[int, float] = {}
    for s in run.spans:
        if s.parent_id is not None and s.duration_s is not None:
            child_sum[s.parent_id] = child_sum.get(s.parent_id, 0.0) + s.duration_s
    out: dict[int, float] = {}
    for s in run.spans:
        d = s.duration_s or 0.0
        out[s.id] = max(0.0, d - child_sum.get(s.id, 0.0))
    return out


def _max_opt(values: Iterable[int | None]) -> int | None:
    xs = [v for v in values if v is not None]
    return max(xs) if xs else None


def phase_table(run: Run, kinds: Sequence[str] | None = None, *, by_pipeline: bool = False) -> list[PhaseRow]:
    """Group spans by path and describe each group. Rows are ordered by first start time.

    ``by_pipeline``: in a run whose generations came from two or more pipelines, each
    pipeline's spans form their own rows (``generation [WanPipeline]/denoise``, ...); a run of
    one pipeline is unchanged.
    """
    split = by_pipeline and len({p for p in span_pipelines(run).values() if p is not None}) >= 2
    paths = span_paths(run, pipelines=split)
    selfs = self_times(run)
    groups: dict[str, list[Span]] = {}
    for s in sorted(run.spans, key=lambda s: s.start_s):
        if kinds is not None and s.kind not in kinds:
            continue
        groups.setdefault(paths[s.id], []).append(s)
    total = run.duration_s
    rows: list[PhaseRow] = []
    for p, spans in groups.items():
        host = Stats.of(s.duration_s for s in spans)
        gpu = Stats.of(s.gpu_time_s for s in spans)
        self_t = sum(selfs[s.id] for s in spans)
        energies = [s.energy_j for s in spans if s.energy_j is not None]
        rows.append(
            PhaseRow(
                path=p,
                # a generation row of one pipeline is named by it ("generation [WanPipeline]")
                name=p.rsplit("/", 1)[-1] if split and spans[0].kind == "generation" else spans[0].name,
                kind=spans[0].kind,
                depth=p.count("/"),
                host=host,
                gpu=gpu,
                self_time_s=self_t,
                share_pct=(100.0 * host.total / total) if (total and host.total is not None) else None,
                self_share_pct=(100.0 * self_t / total) if total else None,
                peak_allocated_bytes=_max_opt(s.peak_allocated_bytes for s in spans),
                peak_reserved_bytes=_max_opt(s.peak_reserved_bytes for s in spans),
                rss_peak_bytes=_max_opt(s.rss_peak_bytes for s in spans),
                energy_j=sum(energies) if energies else None,
                energy_reliable=(
                    all(bool(s.energy_reliable) for s in spans if s.energy_j is not None) if energies else None
                ),
                span_ids=[s.id for s in spans],
            )
        )
    return rows


def step_durations(run: Run, phase: str | None = None, *, gpu: bool = False) -> list[float | None]:
    """Durations of ``step`` spans in order (host or GPU time), optionally under a phase name."""
    by_id = {s.id: s for s in run.spans}
    out: list[float | None] = []
    for s in sorted(run.iter_spans(kind="step"), key=lambda s: s.start_s):
        if phase is not None:
            parent = by_id.get(s.parent_id) if s.parent_id is not None else None
            if parent is None or parent.name != phase:
                continue
        out.append(s.gpu_time_s if gpu else s.duration_s)
    return out


def peak_memory(run: Run) -> dict[str, int | None]:
    """Highest allocator and RSS values seen in spans or samples over the run."""
    def series_max(name: str) -> float | None:
        vals = [v for s in run.series_named(name) for v in s.values]
        return max(vals) if vals else None

    def comb(a: int | None, b: float | None) -> int | None:
        xs = [x for x in (a, b) if x is not None]
        return int(max(xs)) if xs else None

    return {
        "peak_allocated_bytes": comb(_max_opt(s.peak_allocated_bytes for s in run.spans), series_max("allocated_bytes")),
        "peak_reserved_bytes": comb(_max_opt(s.peak_reserved_bytes for s in run.spans), series_max("reserved_bytes")),
        "peak_rss_bytes": comb(_max_opt(s.rss_peak_bytes for s in run.spans), series_max("rss_bytes")),
        "peak_gpu_memory_used_bytes": comb(None, series_max("memory_used_bytes")),
    }


def energy_total(run: Run) -> tuple[float | None, str]:
    """Total GPU energy of the run in joules and where it came from.

    Uses the run-level counter difference recorded by the profiler (``metadata['energy']``)
    when present; otherwise the sum of top-level span energies. ``None`` when neither exists.
    """
    e = run.metadata.get("energy", {})
    if isinstance(e, dict) and e.get("total_j") is not None:
        return float(e["total_j"]), "NVML total-energy counter difference over the whole run"
    top = [s.energy_j for s in run.spans if s.parent_id is None and s.energy_j is not None]
    if top:
        return sum(top), "sum of top-level span energies (NVML counter differences)"
    return None, run.unavailable.get("gpu_energy", "no energy was recorded")



def enclosing_generations(run: Run) -> dict[int, Span | None]:
    """Map each span id to its enclosing generation span (itself for a generation), or ``None``."""
    by_id = {s.id: s for s in run.spans}
    out: dict[int, Span | None] = {}
    for s in run.spans:
        chain: list[int] = []
        cur: Span | None = s
        found: Span | None = None
        while cur is not None and cur.id not in chain:
            if cur.id in out:
                found = out[cur.id]
                break
            chain.append(cur.id)
            if cur.kind == "generation":
                found = cur
                break
            cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
        for i in chain:
            out[i] = found
    return out


def _pipeline_attr(gen: Span | None) -> str | None:
    v = None if gen is None else gen.attributes.get("pipeline")
    return None if v is None else str(v)


def span_pipelines(run: Run) -> dict[int, str | None]:
    """Map each span id to the ``pipeline`` attribute of its enclosing generation span.

    ``None`` for spans outside any generation, and for generations without the attribute (the
    diffusers integration sets it to the pipeline class; a hand-written loop may set it with
    ``prof.generation(pipeline=...)``).
    """
    return {i: _pipeline_attr(g) for i, g in enclosing_generations(run).items()}


@dataclass
class PipelineStats:
    """Generation and step statistics of the generations of one pipeline.

    ``pipeline`` is the generations' ``pipeline`` attribute (``None``: generations without it).
    ``generation`` is the host time of each generation span; ``step`` / ``step_gpu`` the host and
    GPU time of each step inside those generations (in block loops too); ``steps_per_generation``
    their count over the generations.
    """

    pipeline: str | None
    generations: int
    generation: Stats
    step: Stats
    step_gpu: Stats
    steps_per_generation: float | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["generation"] = self.generation.to_dict()
        d["step"] = self.step.to_dict()
        d["step_gpu"] = self.step_gpu.to_dict()
        return d


def pipeline_stats(run: Run) -> list[PipelineStats]:
    """Per-pipeline generation and step statistics, in the order each pipeline first ran.

    One entry per distinct ``pipeline`` attribute of the run's generation spans (generations
    without it form one ``None`` entry). A run of one pipeline gives one entry, a run without
    generation spans none. Pooled figures (``usage_statistics``) mix every pipeline, so a
    renderer shows these whenever there are two or more.
    """
    gen_of = enclosing_generations(run)
    gens: dict[str | None, list[Span]] = {}
    for g in sorted(run.iter_spans(kind="generation"), key=lambda s: (s.start_s, s.id)):
        gens.setdefault(_pipeline_attr(g), []).append(g)
    steps: dict[str | None, list[Span]] = {}
    for s in run.iter_spans(kind="step"):
        owner = gen_of.get(s.id)
        if owner is not None:
            steps.setdefault(_pipeline_attr(owner), []).append(s)
    out: list[PipelineStats] = []
    for pipe, gs in gens.items():
        st = steps.get(pipe, [])
        out.append(PipelineStats(
            pipeline=pipe,
            generations=len(gs),
            generation=Stats.of(g.duration_s for g in gs),
            step=Stats.of(s.duration_s for s in st),
            step_gpu=Stats.of(s.gpu_time_s for s in st),
            steps_per_generation=len(st) / len(gs),
        ))
    return out


def step_loop(by_id: Mapping[int, Span], step: Span) -> tuple[int | None, Span | None]:
    """The denoising loop a step belongs to, and the block holding it (``None`` outside blocks).

    A loop is named by a span id: the step's direct parent, or, in a block loop, the parent of
    the enclosing block (the blocks phase), so that the steps of every block form one loop,
    also when each block nests them in its own phase (``prof.steps(..., phase="denoise")``
    inside ``prof.blocks(...)``). The search for a block stops at a generation span.
    """
    cur = by_id.get(step.parent_id) if step.parent_id is not None else None
    seen: set[int] = set()
    while cur is not None and cur.id not in seen and cur.kind != "generation":
        if cur.kind == "block":
            return cur.parent_id, cur
        seen.add(cur.id)
        cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
    return step.parent_id, None
