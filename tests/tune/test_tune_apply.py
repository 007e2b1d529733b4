"""One public genprof.apply for a plan, plan settings, a tune candidate, a recipe, a tune result and their dicts."""

from __future__ import annotations

from typing import Any

import pytest

import genprof
from genprof.errors import UsageError
from genprof.tune import CandidateResult, TuneResult, parse_recipe

pytest.importorskip("diffusers")


@pytest.fixture()
def pipe() -> Any:
    from genprof.integrations.demo import build_pipeline

    return build_pipeline("sd", device="cpu").pipe


def _result(*cands: CandidateResult) -> TuneResult:
    return TuneResult(model=None, gpu=None, device="cpu", budget_bytes=None, generation={}, candidates=list(cands))


def test_apply_a_tune_candidate_its_dict_and_its_recipe(pipe: Any) -> None:
    torch = pytest.importorskip("torch")
    best = CandidateResult(parse_recipe("vae_tiling+channels_last"), status="ok", median_s=1.0)
    done = genprof.apply(pipe, best, device="cpu")
    assert "vae.enable_tiling()" in done and "unet.to(memory_format=torch.channels_last)" in done
    assert pipe.vae.use_tiling is True
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert genprof.apply(pipe, best.to_dict(), device="cpu") == done  # as saved in tune.json
    assert genprof.apply(pipe, best.recipe.to_dict(), device="cpu") == done
    assert genprof.apply(pipe, best.recipe, device="cpu") == done


def test_apply_a_tune_result_applies_its_best(pipe: Any) -> None:
    slow = CandidateResult(parse_recipe("default"), status="ok", median_s=2.0)
    fast = CandidateResult(parse_recipe("vae_slicing"), status="ok", median_s=1.0)
    done = genprof.apply(pipe, _result(slow, fast), device="cpu")
    assert done[-1] == "vae.enable_slicing()" and pipe.vae.use_slicing is True
    with pytest.raises(UsageError, match="no best candidate"):
        genprof.apply(pipe, _result(CandidateResult(parse_recipe("default"), status="oom")), device="cpu")


def test_apply_a_plan_and_plan_settings_go_to_the_planner(pipe: Any) -> None:
    torch = pytest.importorskip("torch")
    plan = genprof.plan("sd1.5", 8 * 2**30, height=512, width=512)
    done = genprof.apply(pipe, plan, device="cpu")
    assert done[0] == "pipe.to(dtype=torch.bfloat16)" and pipe.unet.dtype == torch.bfloat16
    assert genprof.apply(pipe, plan.settings, device="cpu") == done  # generation keys in the settings are fine
    done = genprof.apply(pipe, {"dtype": "fp32", "vae_tiling": True}, device="cpu")
    assert done[0] == "pipe.to(dtype=torch.float32)" and "vae.enable_tiling()" in done
    assert pipe.unet.dtype == torch.float32


def test_apply_bad_input_is_a_clear_error(pipe: Any) -> None:
    with pytest.raises(UsageError, match="needs a Plan, plan settings, a tune candidate"):
        genprof.apply(pipe, "fastest", device="cpu")
    with pytest.raises(UsageError, match="name nothing to apply"):
        genprof.apply(pipe, {"turbo": True}, device="cpu")
