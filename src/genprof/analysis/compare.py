"""Before/after comparison of two runs, with a statistic that tells a real change from noise.

:func:`compare` returns a :class:`Comparison`: for the whole run (time per generation, step
time, peak memory, energy, output fps) and for each phase path (mean host time per
occurrence, peak reserved memory, mean energy per occurrence) the value before and after,
the change in percent, the improvement factor, and, where the runs hold repeated samples,
a 95% confidence interval of the percent change.

Statistics (see ``docs/analysis.md``): a percentile bootstrap of the ratio of means. The
samples of each run (step durations, generation durations, or the occurrences of a phase)
are resampled with replacement independently, ``B = 2000`` times, from a fixed seed, so the
result is deterministic; the 2.5th and 97.5th percentiles of ``100 * (mean_after /
mean_before - 1)`` form the interval. The change is called real (``significant``) when the
interval excludes 0. With fewer than 2 samples on either side there is no interval and
``significant`` is ``None``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from genprof.analysis.figures import FIGURES, compute_figures
from genprof.analysis.queries import generations
from genprof.analysis.summary import percentile, phase_table
from genprof.model import Run

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240601
CONFIDENCE = 0.95
MIN_SAMPLES = 2

OVERALL_FIGURES = (
    "generation_time_s",
    "step_time_mean_s",
    "step_time_p95_s",
    "output_fps",
    "peak_reserved_bytes",
    "peak_allocated_bytes",
    "energy_per_generation_j",
    "energy_j",
    "run_time_s",
    "load_time_s",
)

METHOD = (
    f"percentile bootstrap of the ratio of means ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}, "
    f"{int(CONFIDENCE * 100)}% interval); significant when the interval of the percent change excludes 0"
)


@dataclass
class Change:
    """One figure before and after."""

    name: str
    unit: str
    lower_is_better: bool
    before: float | None
    after: float | None
    delta: float | None = None
    change_pct: float | None = None
    factor: float | None = None  # > 1 means better: before/after (lower is better) or after/before
    better: bool | None = None
    ci_low_pct: float | None = None
    ci_high_pct: float | None = None
    significant: bool | None = None
    samples_before: int | None = None
    samples_after: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def verdict(self) -> str:
        if self.before is None or self.after is None:
            return "not comparable"
        if self.delta == 0:
            return "unchanged"
        word = "better" if self.better else "worse"
        if self.significant is None:
            return f"{word} (no samples to test)"
        return word if self.significant else f"{word}, within noise"


@dataclass
class PhaseChange:
    path: str
    time: Change
    peak_reserved: Change
    energy: Change

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "time": self.time.to_dict(), "peak_reserved": self.peak_reserved.to_dict(),
                "energy": self.energy.to_dict()}


@dataclass
class Comparison:
    before: dict[str, Any]
    after: dict[str, Any]
    overall: list[Change]
    phases: list[PhaseChange]
    warnings: list[dict[str, Any]] = field(default_factory=list)
    method: str = METHOD

    def overall_change(self, name: str) -> Change | None:
        return next((c for c in self.overall if c.name == name), None)

    def phase(self, path: str) -> PhaseChange | None:
        return next((p for p in self.phases if p.path == path), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "genprof.comparison",
            "before": self.before,
            "after": self.after,
            "method": self.method,
            "warnings": list(self.warnings),
            "overall": [c.to_dict() for c in self.overall],
            "phases": [p.to_dict() for p in self.phases],
        }


# --------------------------------------------------------------------------- statistics
def bootstrap_pct_change(
    before: Sequence[float],
    after: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:
    """Confidence interval of ``100 * (mean(after) / mean(before) - 1)`` by percentile bootstrap.

    ``None`` when either side has fewer than :data:`MIN_SAMPLES` values or a resampled
    mean of ``before`` is 0.
    """
    a = [float(x) for x in before]
    b = [float(x) for x in after]
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        return None
    rnd = random.Random(seed)
    na, nb = len(a), len(b)
    stats: list[float] = []
    for _ in range(resamples):
        ma = sum(rnd.choices(a, k=na)) / na
        mb = sum(rnd.choices(b, k=nb)) / nb
        if ma == 0:
            return None
        stats.append(100.0 * (mb / ma - 1.0))
    alpha = (1.0 - confidence) / 2.0
    lo = percentile(stats, 100.0 * alpha)
    hi = percentile(stats, 100.0 * (1.0 - alpha))
    if lo is None or hi is None:
        return None
    return lo, hi


def _change(
    name: str,
    unit: str,
    lower_is_better: bool,
    before: float | None,
    after: float | None,
    samples: tuple[Sequence[float], Sequence[float]] | None = None,
    note: str | None = None,
) -> Change:
    c = Change(name, unit, lower_is_better, before, after, note=note)
    if before is None or after is None:
        return c
    c.delta = after - before
    if before != 0:
        c.change_pct = 100.0 * (after - before) / abs(before)
    if lower_is_better:
        c.factor = (before / after) if after > 0 else None
        c.better = after < before
    else:
        c.factor = (after / before) if before > 0 else None
        c.better = after > before
    if samples is not None:
        sa, sb = samples
        c.samples_before, c.samples_after = len(sa), len(sb)
        ci = bootstrap_pct_change(sa, sb)
        if ci is not None:
            c.ci_low_pct, c.ci_high_pct = ci
            c.significant = ci[0] > 0 or ci[1] < 0
    return c


# --------------------------------------------------------------------------- comparing
def _describe(run: Run) -> dict[str, Any]:
    return {"name": run.name, "run_id": run.run_id, "started_at": run.started_at,
            "device": run.gpus[0].name if run.gpus else "cpu"}


_SHAPE_KEYS = ("height", "width", "num_frames", "num_inference_steps", "batch_size", "num_images_per_prompt",
               "guidance_scale", "resolution", "frames")


def _model_of(run: Run) -> Any:
    pipe = run.metadata.get("pipeline")
    if isinstance(pipe, Mapping):
        for k in ("model_id", "name_or_path", "model", "class"):
            if pipe.get(k):
                return pipe[k]
    return run.tags.get("model")


def _shapes_of(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gens = run.metadata.get("generations")
    if isinstance(gens, list) and gens and isinstance(gens[0], Mapping):
        for k in _SHAPE_KEYS:
            if k in gens[0]:
                out[k] = gens[0][k]
        params = gens[0].get("params")
        if isinstance(params, Mapping):
            for k in _SHAPE_KEYS:
                if k in params and k not in out:
                    out[k] = params[k]
    for k in _SHAPE_KEYS:
        if k in run.tags and k not in out:
            out[k] = run.tags[k]
    steps = [s for s in run.spans if s.kind == "step"]
    gens_n = max(1, len(generations(run)[0]))
    if steps and "num_inference_steps" not in out:
        out["steps_per_generation"] = len(steps) / gens_n
    return out


def comparability_warnings(a: Run, b: Run) -> list[dict[str, Any]]:
    """Fields in which two runs differ in a way that makes their figures not like-for-like."""
    warns: list[dict[str, Any]] = []

    def add(fieldname: str, x: Any, y: Any, why: str) -> None:
        if x != y:
            warns.append({"field": fieldname, "before": x, "after": y, "message": f"{fieldname} differs ({x!r} -> "
                          f"{y!r}): {why}"})

    add("model", _model_of(a), _model_of(b), "the runs profile different models")
    sa, sb = _shapes_of(a), _shapes_of(b)
    for k in sorted(set(sa) | set(sb)):
        add(f"shape.{k}", sa.get(k), sb.get(k), "the runs generate different shapes or step counts")
    add("device", a.gpus[0].name if a.gpus else "cpu", b.gpus[0].name if b.gpus else "cpu",
        "the runs used different devices")
    add("gpu_count", len(a.gpus), len(b.gpus), "the runs used a different number of GPUs")
    skip = {"model", *_SHAPE_KEYS}
    for k in sorted((set(a.tags) | set(b.tags)) - skip):
        add(f"tag.{k}", a.tags.get(k), b.tags.get(k), "the runs are tagged differently")
    return warns


def _figure_samples(run: Run, name: str) -> list[float] | None:
    if name in ("step_time_mean_s",):
        return [s.duration_s for s in run.spans if s.kind == "step" and s.duration_s is not None]
    if name == "generation_time_s":
        return [g.duration_s for g in generations(run)[0]]
    if name == "energy_per_generation_j":
        gens = generations(run)[0]
        if gens and all(g.energy_j is not None for g in gens):
            return [g.energy_j for g in gens if g.energy_j is not None]
    return None


def compare(a: Run, b: Run) -> Comparison:
    """Compare run ``a`` (before) with run ``b`` (after). Pure: reads both runs only."""
    fa, fb = compute_figures(a, OVERALL_FIGURES), compute_figures(b, OVERALL_FIGURES)
    overall: list[Change] = []
    for name in OVERALL_FIGURES:
        fig = FIGURES[name]
        sa, sb = _figure_samples(a, name), _figure_samples(b, name)
        samples = (sa, sb) if sa is not None and sb is not None else None
        note = None
        if fa[name].value is None or fb[name].value is None:
            note = "; ".join(
                f"{side}: {m.reason}" for side, m in (("before", fa[name]), ("after", fb[name])) if m.value is None
            )
        overall.append(_change(name, fig.unit, fig.lower_is_better, fa[name].value, fb[name].value, samples, note))

    rows_a = {r.path: r for r in phase_table(a, kinds=("phase", "generation"))}
    rows_b = {r.path: r for r in phase_table(b, kinds=("phase", "generation"))}
    paths = list(rows_a) + [p for p in rows_b if p not in rows_a]
    by_id_a = {s.id: s for s in a.spans}
    by_id_b = {s.id: s for s in b.spans}

    def samples_for(run: Run, by_id: dict[int, Any], ids: list[int]) -> tuple[list[float], str]:
        occ = [by_id[i].duration_s for i in ids if by_id[i].duration_s is not None]
        if len(occ) >= MIN_SAMPLES:
            return occ, "occurrences"
        idset = set(ids)
        steps = [s.duration_s for s in run.spans if s.kind == "step" and s.parent_id in idset
                 and s.duration_s is not None]
        return (steps, "steps") if len(steps) >= MIN_SAMPLES else (occ, "occurrences")

    phases: list[PhaseChange] = []
    for p in paths:
        ra, rb = rows_a.get(p), rows_b.get(p)
        ta = ra.host.mean if ra else None
        tb = rb.host.mean if rb else None
        samples = None
        note = None
        if ra and rb:
            (xa, ka), (xb, kb) = samples_for(a, by_id_a, ra.span_ids), samples_for(b, by_id_b, rb.span_ids)
            if ka == kb:
                samples = (xa, xb)
                if ka == "steps":
                    note = "interval from the step times inside the phase"
        else:
            note = "phase only in the " + ("after" if ra is None else "before") + " run"
        t = _change(p, "s", True, ta, tb, samples, note)
        m = _change(p, "bytes", True,
                    None if ra is None or ra.peak_reserved_bytes is None else float(ra.peak_reserved_bytes),
                    None if rb is None or rb.peak_reserved_bytes is None else float(rb.peak_reserved_bytes))
        ea = ra.energy_j / ra.host.count if ra and ra.energy_j is not None and ra.host.count else None
        eb = rb.energy_j / rb.host.count if rb and rb.energy_j is not None and rb.host.count else None
        e = _change(p, "j", True, ea, eb)
        phases.append(PhaseChange(p, t, m, e))
    return Comparison(_describe(a), _describe(b), overall, phases, comparability_warnings(a, b))


__all__ = ["Change", "Comparison", "PhaseChange", "bootstrap_pct_change", "comparability_warnings", "compare"]
