"""Candidate discovery and skip reasons, Spearman, calibration, quality parsing."""

from __future__ import annotations

from typing import Any

import pytest

from genprof.tune import load_calibration, parse_floor, parse_recipe, save_calibration, spearman
from genprof.tune.recipes import Machine, discover, probe_machine
from genprof.tune.result import CandidateResult, TuneResult

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sd() -> Any:
    from genprof.integrations.demo import build_pipeline

    return build_pipeline("sd", device="cpu").pipe


def test_discovery_on_this_cpu_machine(sd: Any) -> None:
    m = Machine(cuda=False, bf16=True, c_compiler=None, triton=False)
    ok, skipped = discover(sd, device="cpu", machine=m)
    names = [r.name for r in ok]
    reasons = {s.name: s.reason for s in skipped}
    assert names[0] == "default"
    assert {"vae_tiling", "vae_slicing", "attention=math", "channels_last", "fp8"} <= set(names)
    assert reasons["attention=fa3"] == "FA3 (flash_attn_interface, FlashAttention 3) not installed"
    assert reasons["compile=default"].startswith("compile needs a C compiler")
    assert reasons["offload=model"].startswith("offloading needs CUDA")
    assert reasons["attention=flash"] == "attention=flash needs CUDA"
    assert "cache=first_block" in reasons  # a UNet has no CacheMixin
    real = probe_machine("cpu")
    assert real.cuda is False


def test_subset_and_bf16_reason(sd: Any) -> None:
    m = Machine(cuda=True, bf16=False, c_compiler="/usr/bin/cc", triton=True)
    ok, skipped = discover(sd, device="cuda", names=["vae_tiling", "compile=reduce-overhead+offload=model"],
                           base_dtype="bf16", machine=m)
    assert [r.name for r in ok] == []
    assert all("bf16 unsupported" in s.reason for s in skipped)
    m2 = Machine(cuda=True, bf16=True, c_compiler="/usr/bin/cc", triton=True)
    ok, skipped = discover(sd, device="cuda", names=["vae_tiling", "compile=reduce-overhead+offload=model"], machine=m2)
    assert [r.name for r in ok] == ["default", "vae_tiling"]
    assert "does not work under offload hooks" in skipped[0].reason


def test_recipe_parsing() -> None:
    r = parse_recipe("offload=group_leaf_stream+vae_tiling+compile=max-autotune-no-cudagraphs")
    assert r.settings["offload"] == "group_leaf_stream" and r.settings["vae_tiling"] is True
    assert r.settings["compile"] == "max-autotune-no-cudagraphs" and not r.planner_models_it
    assert r.plan_settings["offload"] == "group_leaf_stream"
    assert parse_floor("psnr>=30, ssim>=0.9")[1].minimum == 0.9


def test_spearman_known_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_calibration_saved_and_loaded(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path))
    base = CandidateResult(parse_recipe("default"), status="ok", median_s=10.0, peak_reserved_bytes=110,
                           predicted_peak_reserved_bytes=100, observations={"phase_s": {"denoise": 8.0, "vae_decode": 1.5}})
    r = TuneResult(model="sdxl", gpu="NVIDIA H200", device="cuda", budget_bytes=None,
                   generation={"num_inference_steps": 4}, candidates=[base])
    assert load_calibration("sdxl", "NVIDIA H200") is None
    p = save_calibration(r)
    assert p.parent == tmp_path / "calibration"
    cal = load_calibration("sdxl", "NVIDIA H200")
    assert cal is not None
    assert cal["time_model"] == {"step_time_s": 2.0, "vae_decode_s": 1.5}
    assert cal["peak_scale"] == pytest.approx(1.1)
    assert load_calibration("sdxl", "NVIDIA H100") is None
