"""Choose how to run a pipeline within a GPU memory budget, and apply the choice.

:func:`plan` estimates every candidate (dtype x offloading x VAE tiling/slicing x layerwise
fp8 storage x attention backend) with :func:`genprof.planning.estimate.estimate`, keeps those
whose predicted peak *reserved* memory fits ``budget * (1 - safety_margin)``, and picks the one
with the smallest predicted time. Time is a model, stated in :class:`TimeModel`: a denoising
step time and a VAE decode time (measured figures when you pass them; otherwise assumptions,
flagged in the plan), plus what each offloading mode moves over PCIe at the measured (or
assumed) bandwidth. When nothing fits, the plan says the smallest achievable peak and what
would be needed.

:func:`apply` applies a plan to a loaded pipeline with diffusers' own APIs, in this order:
dtype, layerwise fp8 storage (before offloading, so offloaded groups move fp8 weights),
offloading, VAE tiling/slicing, attention backend. It returns what it did.

This module holds the plan's data (:class:`Candidate`, :class:`Plan`) and the search
(:func:`plan`); the time and host-RAM model is in :mod:`genprof.planning.plan_costs`, applying
(:func:`apply`, :func:`plan_code`) in :mod:`genprof.planning.plan_apply`. Their names are
re-exported here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from genprof.errors import UsageError
from genprof.planning.estimate import ATTENTION_BACKENDS, OFFLOAD_MODES, Estimate, _resolve, estimate
from genprof.planning.plan_apply import _ATTN_NAMES, apply, plan_code  # noqa: F401 - re-exported
from genprof.planning.plan_costs import (
    TimeModel,
    _calibrated_time_model,
    _host_ram,
    _leaf_count,
    _predict_time,
)

DEFAULT_SAFETY_MARGIN = 0.08
"""Fraction of the budget kept free: a plan fits when ``peak_reserved <= budget * (1 - margin)``.

The rule: the estimator's worst measured under-prediction of peak reserved, rounded up to a whole
percent. Over the 38 configurations measured on the H100 (the ten estimate cases run as whole
pipeline calls, and the 28 offload / tiling candidates of the plan validation) the worst was 7.9%
(Wan 2.1 with streamed leaf-level group offloading and VAE tiling; docs/BENCHMARKS.md).
"""


@dataclass
class Candidate:
    settings: dict[str, Any]
    peak_reserved_bytes: int
    peak_allocated_bytes: int
    peak_phase: str
    fits: bool
    time_s: float
    time_breakdown: dict[str, float]
    host_ram_bytes: int
    pinned_host_ram_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """The chosen settings, why, and what it costs."""

    model: str
    budget_bytes: int
    safety_margin: float
    generation: dict[str, Any]
    chosen: Candidate | None
    candidates: list[Candidate]
    estimate: Estimate | None
    assumptions: list[str] = field(default_factory=list)
    fits: bool = True
    smallest_peak_bytes: int | None = None
    needed: str | None = None

    @property
    def settings(self) -> dict[str, Any]:
        if self.chosen is None:
            raise UsageError(f"no plan fits {self.budget_bytes} bytes: {self.needed}")
        return self.chosen.settings

    def fastest_feasible(self) -> list[Candidate]:
        return sorted((c for c in self.candidates if c.fits), key=lambda c: c.time_s)

    def undominated(self, only_fitting: bool = True) -> list[Candidate]:
        """Candidates no other one beats: none is at least as fast with no more GPU memory and no more host RAM
        (and strictly better in one of them). Sorted by predicted time."""
        pool = [c for c in self.candidates if c.fits or not only_fitting]

        def beats(a: Candidate, b: Candidate) -> bool:
            no_worse = (a.time_s <= b.time_s and a.peak_reserved_bytes <= b.peak_reserved_bytes
                        and a.host_ram_bytes <= b.host_ram_bytes)
            better = (a.time_s < b.time_s or a.peak_reserved_bytes < b.peak_reserved_bytes
                      or a.host_ram_bytes < b.host_ram_bytes)
            return no_worse and better

        return sorted((c for c in pool if not any(beats(o, c) for o in pool)), key=lambda c: c.time_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "budget_bytes": self.budget_bytes,
            "safety_margin": self.safety_margin,
            "usable_bytes": int(self.budget_bytes * (1 - self.safety_margin)),
            "generation": dict(self.generation),
            "fits": self.fits,
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "smallest_peak_bytes": self.smallest_peak_bytes,
            "needed": self.needed,
            "assumptions": list(self.assumptions),
            "candidates": [c.to_dict() for c in self.candidates],
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
        }


def plan(
    pipe_or_config: Any,
    budget_bytes: int,
    *,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    time_model: TimeModel | None = None,
    offload_modes: tuple[str, ...] = OFFLOAD_MODES,
    attention_backends: tuple[str, ...] = ("flash",),
    allow_fp8: bool = True,
    dtypes: tuple[str, ...] = ("bf16",),
    host_ram_bytes: int | None = None,
    use_calibration: bool = True,
    gpu_name: str | None = None,
    **generation: Any,
) -> Plan:
    """The fastest candidate whose predicted peak reserved memory fits the budget.

    ``generation`` holds :func:`estimate`'s size arguments (``height``, ``width``,
    ``num_frames``, ``batch_size``, ``num_inference_steps``, ``guidance_scale``).
    ``host_ram_bytes`` (e.g. ``resources().host_ram_available_bytes``) rules out candidates
    whose offloaded weights would not fit in host RAM. Without a ``time_model``, a calibration
    that ``genprof tune --calibrate`` saved for this model on ``gpu_name`` (default: the current
    CUDA device) supplies the measured step, decode and text-encode times
    (``use_calibration=False`` to ignore it).
    """
    if budget_bytes <= 0:
        raise UsageError(f"budget must be > 0 bytes, got {budget_bytes}")
    if not 0 <= safety_margin < 1:
        raise UsageError(f"safety_margin must be in [0, 1), got {safety_margin}")
    for m in offload_modes:
        if m not in OFFLOAD_MODES:
            raise UsageError(f"offload mode {m!r} is not one of {', '.join(OFFLOAD_MODES)}")
    for a in attention_backends:
        if a not in ATTENTION_BACKENDS:
            raise UsageError(f"attention backend {a!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
    bad = set(generation) - {"height", "width", "num_frames", "batch_size", "num_inference_steps", "guidance_scale", "vae_dtype", "calibration"}
    if bad:
        raise UsageError(f"unknown generation argument(s): {', '.join(sorted(bad))}")
    spec = _resolve(pipe_or_config)
    tm = time_model or TimeModel()
    calibrated: str | None = None
    if time_model is None and use_calibration:
        tm, calibrated = _calibrated_time_model(spec.name, gpu_name)
    usable = int(budget_bytes * (1 - safety_margin))
    batch = int(generation.get("batch_size", 1))
    slicing_opts = (False, True) if batch > 1 else (False,)
    fp8_opts = (False, True) if allow_fp8 else (False,)
    candidates: list[Candidate] = []
    estimates: list[Estimate] = []
    assumptions: list[str] = [calibrated] if calibrated else []
    den_params = None
    leaves = 0
    for dtype, mode, tiling, slicing, fp8, attn in itertools.product(
        dtypes, offload_modes, (False, True), slicing_opts, fp8_opts, attention_backends
    ):
        est = estimate(
            spec,
            dtype=dtype,
            offload=mode,
            vae_tiling=tiling,
            vae_slicing=slicing,
            layerwise_fp8=fp8,
            attention_backend=attn,
            **generation,
        )
        if den_params is None:
            dc = next(c for c in est.components if c.role == "denoiser")
            den_params = dc.params
            leaves = _leaf_count(spec)
        t, breakdown, notes = _predict_time(est, tm, den_params, leaves)
        for n in notes:
            if n not in assumptions:
                assumptions.append(n)
        ram, pinned = _host_ram(est)
        fits = est.peak_reserved_bytes <= usable and (host_ram_bytes is None or ram <= host_ram_bytes)
        s = dict(est.settings)
        candidates.append(
            Candidate(
                settings=s,
                peak_reserved_bytes=est.peak_reserved_bytes,
                peak_allocated_bytes=est.peak_allocated_bytes,
                peak_phase=est.peak_phase,
                fits=fits,
                time_s=t,
                time_breakdown=breakdown,
                host_ram_bytes=ram,
                pinned_host_ram_bytes=pinned,
            )
        )
        estimates.append(est)
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i].time_s, candidates[i].peak_reserved_bytes))
    chosen_i = next((i for i in order if candidates[i].fits), None)
    smallest_i = min(range(len(candidates)), key=lambda i: candidates[i].peak_reserved_bytes)
    smallest = candidates[smallest_i]
    gen_settings = {k: v for k, v in generation.items() if k != "calibration"}
    needed: str | None = None
    if chosen_i is None:
        need = int(smallest.peak_reserved_bytes / (1 - safety_margin)) + 1
        from genprof.units import format_bytes

        needed = (
            f"nothing fits {format_bytes(budget_bytes)} (usable {format_bytes(usable)} with a "
            f"{safety_margin:.0%} margin). The smallest predicted peak is {format_bytes(smallest.peak_reserved_bytes)} "
            f"({_describe(smallest.settings)}, peak in {smallest.peak_phase}); it needs a budget of at least "
            f"{format_bytes(need)}, or fewer frames / a smaller resolution / batch size."
        )
        if host_ram_bytes is not None and smallest.host_ram_bytes > host_ram_bytes:
            needed += f" It also needs {format_bytes(smallest.host_ram_bytes)} of host RAM."
    return Plan(
        model=spec.name,
        budget_bytes=int(budget_bytes),
        safety_margin=safety_margin,
        generation=gen_settings,
        chosen=None if chosen_i is None else candidates[chosen_i],
        candidates=candidates,
        estimate=estimates[smallest_i if chosen_i is None else chosen_i],
        assumptions=assumptions,
        fits=chosen_i is not None,
        smallest_peak_bytes=smallest.peak_reserved_bytes,
        needed=needed,
    )


def _describe(s: Mapping[str, Any]) -> str:
    parts = [s["dtype"], f"offload={s['offload']}"]
    if s.get("layerwise_fp8"):
        parts.append("fp8 weights")
    if s.get("vae_tiling"):
        parts.append("VAE tiling")
    if s.get("vae_slicing"):
        parts.append("VAE slicing")
    parts.append(f"attention={s['attention_backend']}")
    return ", ".join(parts)


__all__ = ["DEFAULT_SAFETY_MARGIN", "Candidate", "Plan", "TimeModel", "apply", "plan", "plan_code"]
