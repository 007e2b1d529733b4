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


def test_a_candidate_runs_without_what_the_build_and_its_recipe_left_cached(monkeypatch: Any) -> None:
    # a budget cap (set_per_process_memory_fraction) refuses only new segments: free segments left
    # cached by the build (Wan 2.1 on the H100: 30.7 GiB reserved for 14.5 GiB of weights) or by a
    # recipe that moves weights off the GPU stay reserved under it, so the candidate "fits" while
    # holding more than its budget. The cache must be given back once the recipe is applied.
    import types

    from fakes_tune import Clock, FakePipe

    from genprof.tune import _measure

    GiB = 2**30

    class FakeCuda:
        def __init__(self) -> None:
            self.allocated, self.reserved = 14 * GiB, 31 * GiB  # what the build left
            self.reserved_at_calls: list[int] = []

        def is_available(self) -> bool:
            return True

        def synchronize(self) -> None:
            pass

        def empty_cache(self) -> None:
            self.reserved = self.allocated

        def reset_peak_memory_stats(self) -> None:
            pass

        def max_memory_reserved(self) -> int:
            return max(self.reserved_at_calls)

        def max_memory_allocated(self) -> int:
            return self.allocated

    cuda = FakeCuda()
    real_torch = _measure._torch()
    fake = types.SimpleNamespace(cuda=cuda, Generator=real_torch.Generator)
    monkeypatch.setattr(_measure, "_torch", lambda: fake)

    def offload(pipe: Any, recipe: Any, device: str = "cpu") -> list[str]:
        cuda.allocated = 1 * GiB  # the weights went to the host; their segments stay cached
        return ["offload"]

    clock = Clock()
    pipe = FakePipe(clock)
    calls = pipe.__call__

    def call(**kw: Any) -> Any:
        cuda.reserved_at_calls.append(cuda.reserved)
        return calls(**kw)

    pipe.__call__ = call  # type: ignore[method-assign]
    res = CandidateResult(parse_recipe("offload=model"))
    _measure.measure(lambda **kw: pipe.__call__(**kw), res.recipe, res, index=0, device="cuda",
                     call_kwargs={}, seed=0, warmup=1, repeats=2, clock=clock, applier=offload,
                     runs_dir=None, budget_bytes=None, tick=lambda: None)
    assert res.status == "ok", res.reason
    assert cuda.reserved_at_calls == [1 * GiB] * 3  # the warm-up and both timed calls
    assert res.peak_reserved_bytes == 1 * GiB


def test_a_candidates_peaks_are_its_timed_calls_not_the_last_span() -> None:
    # the profiler resets the allocator's peak counters at every span, so the counters read after
    # the calls held the post-processing's peak (13.75 GiB for a Wan call whose decode took 19.1)
    from genprof.model import Run, Span
    from genprof.tune._measure import _peaks_from_run
    from genprof.tune.recipes import parse_recipe as _parse

    run = Run(name="c", run_id="r", started_at="2026-12-07T00:00:00+00:00", started_unix_s=0.0)
    for i, (a, r) in enumerate([(30, 40), (19, 31), (18, 31)]):  # warm-up, then two timed calls
        run.spans.append(Span(id=i, name="generation", kind="generation", start_s=float(i),
                              peak_allocated_bytes=a * 2**30, peak_reserved_bytes=r * 2**30))
    res = CandidateResult(_parse("default"))
    res.peak_allocated_bytes, res.peak_reserved_bytes = 14 * 2**30, 31 * 2**30  # the torch counters
    _peaks_from_run(res, run, warmup=1)
    assert (res.peak_allocated_bytes, res.peak_reserved_bytes) == (19 * 2**30, 31 * 2**30)
