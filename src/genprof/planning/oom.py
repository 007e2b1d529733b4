"""Out-of-memory forensics: from a run that ended in ``oom``, say what was happening and what would fit.

Reads ``run.end.oom`` (written by the profiler: ``allocated_bytes``, ``reserved_bytes``,
``largest_free_block_bytes``, ``device_total_bytes``, ``phase``, ``largest_tensors``)
and the generation settings in ``run.metadata["pipeline"]`` / ``run.metadata["generations"]``
(written by the diffusers integration: ``model``/``class_name`` and ``height``, ``width``,
``num_frames``, ``batch_size``, ``num_inference_steps``, ``guidance_scale``). With those it asks
:func:`genprof.planning.plan.plan` for the fastest plan that fits the device.
"""

from __future__ import annotations

import logging
from typing import Any

from genprof.errors import GenprofError
from genprof.model import Run

log = logging.getLogger(__name__)

_GEN_KEYS = ("height", "width", "num_frames", "batch_size", "num_inference_steps", "guidance_scale")


def explain_oom(run: Run, *, budget_bytes: int | None = None) -> dict[str, Any] | None:
    """``None`` unless the run ended out of memory; else the state at the failure and what would fit."""
    if run.end.status != "oom":
        return None
    oom = dict(run.end.oom or {})
    out: dict[str, Any] = {
        "phase": oom.get("phase"),
        "step": oom.get("step"),
        "allocated_bytes": oom.get("allocated_bytes"),
        "reserved_bytes": oom.get("reserved_bytes"),
        "largest_free_block_bytes": oom.get("largest_free_block_bytes"),
        "device_total_bytes": oom.get("device_total_bytes"),
        "biggest_tensors": oom.get("largest_tensors") or oom.get("biggest_tensors") or [],
        "message": run.end.message,
        "fragmentation": None,
        "what_would_fit": None,
        "reason": None,
    }
    res, alloc = oom.get("reserved_bytes"), oom.get("allocated_bytes")
    if isinstance(res, int) and isinstance(alloc, int) and res > 0:
        out["fragmentation"] = {"reserved_minus_allocated_bytes": res - alloc, "reserved_over_allocated": res / max(alloc, 1)}
    budget = budget_bytes or oom.get("device_total_bytes") or (run.gpus[0].total_memory_bytes if run.gpus else None)
    pipe = run.metadata.get("pipeline") or {}
    gens = run.metadata.get("generations") or []
    gen = dict(gens[-1]) if gens and isinstance(gens[-1], dict) else {}
    model = pipe.get("model") or pipe.get("name_or_path") or match_model(pipe)
    if not model:
        out["reason"] = "run.metadata['pipeline'] names no model, so no estimate was made"
        return out
    if not budget:
        out["reason"] = "the device memory is unknown, so no plan was made"
        return out
    settings = {k: gen[k] for k in _GEN_KEYS if k in gen and gen[k] is not None}
    try:
        from genprof.planning.plan import plan

        p = plan(str(model), int(budget), **settings)
    except GenprofError as exc:
        out["reason"] = f"no estimate for {model}: {exc}"
        return out
    out["what_would_fit"] = {
        "budget_bytes": int(budget),
        "fits": p.fits,
        "settings": None if p.chosen is None else p.chosen.settings,
        "predicted_peak_reserved_bytes": None if p.chosen is None else p.chosen.peak_reserved_bytes,
        "needed": p.needed,
    }
    return out


def match_model(pipe_meta: dict[str, Any]) -> str | None:
    """The shipped config (``genprof.catalog``) that a recorded pipeline is.

    Matches the denoiser's class, then the parameter count within 3% (counted on the meta device,
    only for configs with that class). ``None`` when nothing matches, e.g. for the tiny demo models.
    """
    comps = pipe_meta.get("components")
    if not isinstance(comps, dict):
        return None
    try:
        from genprof.catalog import MODEL_NAMES, get_config
        from genprof.planning.build import build_component
    except ImportError as exc:  # torch/diffusers missing: no match possible
        log.info("no model match: %s", exc)
        return None
    for name in MODEL_NAMES:
        spec = get_config(name)
        den = spec.denoiser
        rec = comps.get(den.name)
        if not isinstance(rec, dict) or rec.get("class") != den.class_name or not rec.get("parameters"):
            continue
        try:
            n = sum(p.numel() for p in build_component(den, device="meta").parameters())
        except (ImportError, TypeError, ValueError) as exc:
            log.info("cannot count %s parameters: %s", name, exc)
            continue
        if abs(n - int(rec["parameters"])) <= 0.03 * n:
            return name
    return None

