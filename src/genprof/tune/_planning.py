"""The one place genprof.tune touches the planner, the profiler's OOM forensics and the run model.

The planner and the estimator are being reorganised; everything tune needs from them goes
through these functions, so a rename touches this file only.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PLAN_KEYS = ("dtype", "offload", "vae_tiling", "vae_slicing", "layerwise_fp8", "attention_backend")
"""The settings the planner predicts (its candidate space)."""


def apply_offload(pipe: Any, mode: str, device: str, done: list[str]) -> None:
    """The planner's offload placement (``planning.plan_apply.apply_offload``)."""
    from genprof.planning.plan_apply import apply_offload as _apply

    _apply(pipe, mode, device, done)


def offload_modes() -> tuple[str, ...]:
    from genprof.planning.estimate import OFFLOAD_MODES

    return tuple(OFFLOAD_MODES)


def attention_backends() -> tuple[str, ...]:
    from genprof.planning.estimate import ATTENTION_BACKENDS

    return tuple(ATTENTION_BACKENDS)


def make_time_model(**fields: Any) -> Any:
    from genprof.planning.plan import TimeModel

    known = set(TimeModel.__dataclass_fields__)
    return TimeModel(**{k: v for k, v in fields.items() if k in known})


def plan(model: Any, budget_bytes: int, *, time_model: Any = None, offload: tuple[str, ...] | None = None,
         attention: tuple[str, ...] | None = None, dtypes: tuple[str, ...] = ("bf16",), **generation: Any) -> Any:
    """``genprof.plan`` over the given part of its candidate space."""
    from genprof.planning.plan import plan as _plan

    kw: dict[str, Any] = {"time_model": time_model, "dtypes": dtypes}
    if offload is not None:
        kw["offload_modes"] = offload
    if attention is not None:
        kw["attention_backends"] = attention
    return _plan(model, int(budget_bytes), **kw, **generation)


def plan_candidates(p: Any) -> list[tuple[dict[str, Any], float, int]]:
    """(settings restricted to :data:`PLAN_KEYS`, predicted time s, predicted peak reserved bytes) per candidate."""
    out = []
    for c in p.candidates:
        s = {k: c.settings.get(k) for k in PLAN_KEYS}
        out.append((s, float(c.time_s), int(c.peak_reserved_bytes)))
    return out


def plan_chosen(p: Any) -> dict[str, Any] | None:
    if p.chosen is None:
        return None
    return {k: p.chosen.settings.get(k) for k in PLAN_KEYS}


def plan_model_name(p: Any) -> str:
    return str(p.model)


def explain_oom(run: Any, budget_bytes: int | None = None) -> dict[str, Any] | None:
    from genprof.planning.oom import explain_oom as _explain

    try:
        return _explain(run, budget_bytes=budget_bytes)
    except Exception as e:  # noqa: BLE001 - forensics must not lose the measured sweep
        log.warning("OOM forensics failed: %s", e)
        return {"reason": f"OOM forensics failed: {type(e).__name__}: {e}"}


def is_oom_error(exc: BaseException) -> bool:
    from genprof.probes.torch_cuda import get_torch
    from genprof.probes.torch_cuda import is_oom_error as _is_oom

    return bool(_is_oom(get_torch(import_if_needed=False), exc))


def parse_bytes(text: str | int | float) -> int:
    from genprof.units import parse_bytes as _parse

    return int(_parse(text)) if isinstance(text, str) else int(text)


def plan_types() -> tuple[type, ...]:
    """The planner's Plan and Candidate classes (what ``genprof.apply`` hands to the planner's apply)."""
    from genprof.planning.plan import Candidate, Plan

    return (Plan, Candidate)


def apply_plan(pipe: Any, plan_or_settings: Any, *, device: str) -> list[str]:
    """The planner's apply (dtype, fp8 storage, offloading, VAE tiling/slicing, attention), on a Plan or its settings."""
    from genprof.planning.plan import Plan, apply

    settings = plan_or_settings if isinstance(plan_or_settings, Plan) else dict(getattr(plan_or_settings, "settings", plan_or_settings))
    return apply(pipe, settings, device=device)
