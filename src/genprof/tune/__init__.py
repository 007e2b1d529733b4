"""Measured tuning: try the speed and memory recipes on your pipeline and GPU, keep the fastest that fits.

``genprof.tune(pipe, budget="16GiB", quality="psnr>=30", prompt=..., num_inference_steps=30)``
returns a :class:`TuneResult`; ``result.best`` is the measured fastest candidate that ran within
the budget and above the quality floor; ``genprof.apply(pipe, result.best)`` applies it.

This package is callable: ``genprof.tune(...)`` is :func:`genprof.tune.runner.tune`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from genprof.tune.applying import apply
from genprof.tune.calibration import load_calibration, save_calibration
from genprof.tune.quality import parse_floor
from genprof.tune.recipes import Recipe, Skipped, apply_recipe, discover, parse_recipe
from genprof.tune.result import CandidateResult, TuneResult, load_tune, spearman
from genprof.tune.runner import tune

__all__ = ["CandidateResult", "Recipe", "Skipped", "TuneResult", "apply", "apply_recipe", "discover", "load_calibration",
           "load_tune", "parse_floor", "parse_recipe", "save_calibration", "spearman", "tune"]


class _CallableModule(types.ModuleType):
    """``genprof.tune`` is both this package and the function (``import genprof.tune`` rebinds the attribute)."""

    def __call__(self, *args: Any, **kwargs: Any) -> TuneResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
