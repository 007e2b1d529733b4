"""Measured results saved as calibration that the estimator and planner read for that model and GPU.

One JSON file per (model, GPU name) in the user cache dir (``$GENPROF_CACHE_DIR``, else
``$XDG_CACHE_HOME/genprof``, else ``~/.cache/genprof``), under ``calibration/``. It holds the
measured candidates (settings, median time, peak reserved) and, from the baseline's run file,
the measured phase times in :class:`~genprof.planning.plan.TimeModel`'s field names
(``time_model``), plus the median ratio of measured to predicted peak reserved (``peak_scale``).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from genprof.planning.calibration_store import SCHEMA, cache_dir, calibration_path, load_calibration
from genprof.tune.result import TuneResult

__all__ = ["SCHEMA", "cache_dir", "calibration_from", "calibration_path", "load_calibration", "save_calibration"]

def calibration_from(result: TuneResult) -> dict[str, Any]:
    """The calibration a sweep gives (no file written)."""
    measured = []
    ratios = []
    for c in result.candidates:
        if c.median_s is None:
            continue
        measured.append({"name": c.name, "settings": c.recipe.plan_settings, "planner_models_it": c.recipe.planner_models_it,
                         "time_s": c.median_s, "peak_reserved_bytes": c.peak_reserved_bytes})
        if c.peak_reserved_bytes and c.predicted_peak_reserved_bytes:
            ratios.append(c.peak_reserved_bytes / c.predicted_peak_reserved_bytes)
    base = result.baseline
    tm: dict[str, float] = {}
    if base is not None:
        phases = base.observations.get("phase_s") or {}
        steps = int(result.generation.get("num_inference_steps") or 0)
        if phases.get("denoise") is not None and steps:
            tm["step_time_s"] = float(phases["denoise"]) / steps
        if phases.get("vae_decode") is not None:
            tm["vae_decode_s"] = float(phases["vae_decode"])
        if phases.get("text_encode") is not None:
            tm["text_encode_s"] = float(phases["text_encode"])
    return {"schema": SCHEMA, "model": result.model, "gpu": result.gpu, "generation": dict(result.generation),
            "created_at": result.created_at, "time_model": tm,
            "peak_scale": statistics.median(ratios) if ratios else None, "measured": measured}


def save_calibration(result: TuneResult, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the calibration of ``result`` (to the cache dir keyed by its model and GPU unless ``path``)."""
    from genprof.errors import UsageError

    if path is None:
        if not result.model or not result.gpu:
            raise UsageError("calibration needs the model name and the GPU name (run the sweep with model=... on a GPU)")
        path = calibration_path(result.model, result.gpu)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(calibration_from(result), indent=1), encoding="utf-8")
    return p
