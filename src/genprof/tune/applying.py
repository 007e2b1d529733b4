"""``genprof.apply``: one function for what the planner chose and what ``genprof tune`` measured.

``genprof.apply(pipe, plan)`` and ``genprof.apply(pipe, result.best)`` both work: a Plan, one of
its candidates or its settings go to the planner's apply (dtype, fp8 storage, offloading, VAE
tiling/slicing, attention backend); a tune candidate, a recipe, a tune result (its best), or the
dict of any of them (as saved in ``tune.json``) go to :func:`genprof.tune.recipes.apply_recipe`,
which also applies what the planner does not model (``torch.compile``, channels-last, step caches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genprof.errors import UsageError
from genprof.tune import _planning
from genprof.tune.recipes import Recipe, apply_recipe
from genprof.tune.result import CandidateResult, TuneResult

_TUNE_ONLY = ("compile", "channels_last", "cache")


def apply(pipe: Any, what: Any, *, device: str = "cuda") -> list[str]:
    """Apply a plan, plan settings, a tune candidate / recipe / result, or their dicts to a loaded pipeline.

    Returns what was done, in order. Raises :class:`UsageError` naming the problem when ``what``
    is none of those, names no setting, or is a tune result with no best candidate.
    """
    if isinstance(what, TuneResult):
        if what.best is None:
            raise UsageError("this tune result has no best candidate (none ran within the budget and above the "
                             "quality floor); pass one of result.candidates instead")
        what = what.best
    if isinstance(what, CandidateResult):
        what = what.recipe
    if isinstance(what, Recipe):
        return apply_recipe(pipe, what, device=device)
    if isinstance(what, _planning.plan_types()):
        return _planning.apply_plan(pipe, what, device=device)
    if not isinstance(what, Mapping):
        raise UsageError(f"genprof.apply needs a Plan, plan settings, a tune candidate (result.best) or a recipe; "
                         f"got {type(what).__name__}")
    if isinstance(what.get("recipe"), Mapping):  # a tune candidate's dict, as in tune.json
        return apply_recipe(pipe, Recipe.from_dict(what["recipe"]), device=device)
    if "name" in what and isinstance(what.get("settings"), Mapping):  # a recipe's dict
        return apply_recipe(pipe, Recipe.from_dict(what), device=device)
    if not set(what) & set(_planning.PLAN_KEYS + _TUNE_ONLY):  # plan settings also hold generation keys: allowed
        raise UsageError(f"these settings name nothing to apply (keys {', '.join(map(repr, sorted(what))) or 'none'}); "
                         f"use {', '.join(_planning.PLAN_KEYS + _TUNE_ONLY)}")
    if any(what.get(k) for k in _TUNE_ONLY):
        return apply_recipe(pipe, dict(what), device=device)
    return _planning.apply_plan(pipe, what, device=device)
