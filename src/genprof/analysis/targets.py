"""Performance targets on a run's figures, and a 0-100 score.

A *target* is a limit on a figure (see :mod:`genprof.analysis.figures`), written
``"generation_time_s<=5"`` or ``"peak_reserved_bytes<=16GiB"``. :func:`check_targets` checks
each target against the run and returns a :class:`TargetReport`: which targets hold, the
measured value, the margin, the phase that missed and by how much, and the score (defined in
``docs/analysis.md``):

* a target that holds scores 100;
* a target that fails scores ``100 * limit / measured`` for a figure where lower is better
  and ``100 * measured / limit`` where higher is better (twice the limit scores 50);
* a target whose figure cannot be computed from the run scores 0 and fails as
  "not measured", with the reason;
* the run's score is the mean of its targets' scores (``None`` when there are no targets).

The figure table and the span queries that this module used to hold are re-exported here, so
``from genprof.analysis.targets import FIGURES, compute_figures, generations`` keeps working.
Everything here is a pure function of the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genprof.analysis.figures import FIGURES, Figure, Measurement, compute_figures, format_value
from genprof.analysis.queries import (
    CONTAINER_KINDS,
    GenerationFigures,
    generations,
    innermost_peak_phase,
    nearest_phase_name,
    phase_exclusive_times,
    timed_steps,
)
from genprof.errors import UsageError
from genprof.model import Run
from genprof.units import format_bytes, format_seconds, parse_bytes

Generation = GenerationFigures  # the former name, kept for callers


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
        key = "peak_reserved_bytes" if "reserved" in t.figure else "peak_allocated_bytes"
        if t.figure in ("peak_rss_bytes",):
            key = "rss_peak_bytes"
        best = innermost_peak_phase(run, key)
        if best is None:
            return None, [f"over the limit by {format_bytes(miss)}; no phase recorded its peak"]
        path = run.path_of(best)
        notes.append(
            f"the peak ({format_bytes(getattr(best, key))}) is in phase '{path}'; it must drop by "
            f"{format_bytes(miss)} ({100.0 * miss / measured:.1f}%) to meet the target"
        )
        return path, notes
    if t.figure.startswith("step_"):
        steps = timed_steps(run)
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
    "CONTAINER_KINDS",
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
