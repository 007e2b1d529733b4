"""The result of a tuning sweep: plain data, schema-versioned, saved as ``tune.json``."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genprof.analysis.stats import spearman as spearman  # re-exported: genprof.tune imports it from here
from genprof.errors import RunFileError
from genprof.tune.recipes import Recipe, Skipped

SCHEMA = "genprof.tune/1"
STATUSES = ("ok", "oom", "skipped", "failed", "below_quality_floor", "interrupted", "pending")


@dataclass
class CandidateResult:
    """One candidate: its recipe, what was measured, what the planner predicted, and how it ended."""

    recipe: Recipe
    status: str = "pending"
    reason: str | None = None
    times_s: list[float] = field(default_factory=list)
    median_s: float | None = None
    ci_s: tuple[float, float] | None = None
    warmup_s: list[float] = field(default_factory=list)
    compile_s: float | None = None
    setup_s: float | None = None
    peak_reserved_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    quality: dict[str, Any] | None = None
    predicted_time_s: float | None = None
    predicted_peak_reserved_bytes: int | None = None
    predicted_note: str | None = None
    run_file: str | None = None
    applied: list[str] = field(default_factory=list)
    oom: dict[str, Any] | None = None
    observations: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.recipe.settings)

    @property
    def plan_settings(self) -> dict[str, Any]:
        return self.recipe.plan_settings

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recipe"] = self.recipe.to_dict()
        d["ci_s"] = None if self.ci_s is None else list(self.ci_s)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CandidateResult:
        kw = dict(d)
        kw["recipe"] = Recipe.from_dict(kw["recipe"])
        kw["ci_s"] = None if kw.get("ci_s") is None else (float(kw["ci_s"][0]), float(kw["ci_s"][1]))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in kw.items() if k in known})


@dataclass
class TuneResult:
    """Every candidate measured or skipped, the best one, and how well the planner ranked them."""

    model: str | None
    gpu: str | None
    device: str
    budget_bytes: int | None
    generation: dict[str, Any]
    candidates: list[CandidateResult]
    skipped: list[Skipped] = field(default_factory=list)
    status: str = "ok"
    quality_floor: list[dict[str, Any]] = field(default_factory=list)
    warmup: int = 1
    repeats: int = 5
    seed: int = 0
    isolation: str = "reset"
    isolation_reason: str | None = None
    spearman: float | None = None
    spearman_n: int = 0
    spearman_note: str | None = None
    planner: dict[str, Any] = field(default_factory=dict)
    calibration_used: str | None = None
    notes: list[str] = field(default_factory=list)
    created_at: str | None = None
    wall_s: float | None = None
    baseline_again: CandidateResult | None = None
    """The baseline measured a second time, after every other candidate: the sweep's drift."""
    schema: str = SCHEMA

    @property
    def baseline(self) -> CandidateResult | None:
        return self.candidates[0] if self.candidates else None

    def baseline_times(self) -> list[float]:
        """Every timed call of the baseline, both measurements."""
        out: list[float] = []
        for b in (self.baseline, self.baseline_again):
            if b is not None and b.status == "ok":
                out.extend(b.times_s or ([] if b.median_s is None else [b.median_s]))
        return out

    def baseline_drift(self) -> float | None:
        """Second baseline median / first - 1 (negative: the baseline ran faster at the end)."""
        a, b = self.baseline, self.baseline_again
        if a is None or b is None or a.median_s in (None, 0) or b.median_s is None or b.status != "ok":
            return None
        return b.median_s / float(a.median_s or math.inf) - 1.0

    def _beats_baseline(self, c: CandidateResult) -> bool:
        """True when ``c`` ran faster than every timed call of the baseline, its slowest call included."""
        times = self.baseline_times()
        if not times or c.median_s is None:
            return False
        slowest = max(c.times_s) if c.times_s else c.median_s
        return slowest < min(times)

    @property
    def best(self) -> CandidateResult | None:
        """The measured fastest candidate that ran, fits, passed the quality floor and beat the baseline's spread.

        A candidate is chosen over the baseline only when each of its timed calls was faster than
        each timed call of the baseline (both its measurements, before and after the others):
        a difference smaller than the baseline's own run-to-run spread is not a speed-up. Without
        such a candidate the baseline is the best (``None`` when the baseline itself did not run).
        """
        b = self.baseline
        ok = [c for c in self.candidates[1:] if c.status == "ok" and c.median_s is not None and self._beats_baseline(c)]
        if ok:
            return min(ok, key=lambda c: c.median_s or math.inf)
        if b is not None and b.status == "ok" and b.median_s is not None:
            return b
        rest = [c for c in self.candidates if c.status == "ok" and c.median_s is not None]
        return min(rest, key=lambda c: c.median_s or math.inf) if rest else None

    def speedup(self, c: CandidateResult | None = None) -> float | None:
        """Baseline median (over both its measurements) / candidate median (``best`` by default)."""
        c = c or self.best
        times = self.baseline_times()
        if c is None or not times or c.median_s in (None, 0):
            return None
        if c is self.baseline or c is self.baseline_again:
            return 1.0  # the baseline against itself, whatever its two measurements drifted
        return statistics.median(times) / float(c.median_s or math.inf)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "schema": self.schema, "model": self.model, "gpu": self.gpu, "device": self.device,
            "budget_bytes": self.budget_bytes, "generation": dict(self.generation), "status": self.status,
            "quality_floor": list(self.quality_floor), "warmup": self.warmup, "repeats": self.repeats,
            "seed": self.seed, "isolation": self.isolation,
            "isolation_reason": self.isolation_reason, "spearman": self.spearman, "spearman_n": self.spearman_n,
            "spearman_note": self.spearman_note, "planner": dict(self.planner),
            "calibration_used": self.calibration_used, "notes": list(self.notes), "created_at": self.created_at,
            "wall_s": self.wall_s, "best": None if best is None else best.name, "speedup": self.speedup(),
            "baseline_again": None if self.baseline_again is None else self.baseline_again.to_dict(),
            "baseline_drift": self.baseline_drift(),
            "candidates": [c.to_dict() for c in self.candidates], "skipped": [s.to_dict() for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuneResult:
        schema = d.get("schema")
        if schema != SCHEMA:
            raise RunFileError(f"not a genprof tune result (schema {schema!r}, expected {SCHEMA!r})")
        return cls(
            model=d.get("model"), gpu=d.get("gpu"), device=str(d.get("device")), budget_bytes=d.get("budget_bytes"),
            generation=dict(d.get("generation") or {}),
            candidates=[CandidateResult.from_dict(c) for c in d.get("candidates") or []],
            skipped=[Skipped(str(s["name"]), str(s["reason"])) for s in d.get("skipped") or []],
            status=str(d.get("status", "ok")), quality_floor=list(d.get("quality_floor") or []),
            warmup=int(d.get("warmup", 1)), repeats=int(d.get("repeats", 5)), seed=int(d.get("seed", 0)),
            isolation=str(d.get("isolation", "reset")), isolation_reason=d.get("isolation_reason"),
            spearman=d.get("spearman"), spearman_n=int(d.get("spearman_n", 0)),
            spearman_note=d.get("spearman_note"), planner=dict(d.get("planner") or {}),
            calibration_used=d.get("calibration_used"), notes=list(d.get("notes") or []),
            created_at=d.get("created_at"), wall_s=d.get("wall_s"),
            baseline_again=None if not d.get("baseline_again") else CandidateResult.from_dict(d["baseline_again"]),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``tune.json`` atomically (a partial result is valid too)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=str), encoding="utf-8")
        os.replace(tmp, p)
        return p


def load_tune(path: str | os.PathLike[str]) -> TuneResult:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunFileError(f"cannot read tune result {path}: {e}") from e
    return TuneResult.from_dict(data)
