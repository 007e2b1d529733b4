"""On a CUDA GPU: GPU step times, achieved TFLOP/s from GPU time, MFU against the peak table."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from genprof.analysis.devices import peak_tflops  # noqa: E402
from genprof.integrations import diffusers as gd  # noqa: E402
from genprof.integrations.demo import build_pipeline  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("kind", ["wan", "sd"])
def test_gpu_steps_have_gpu_time_and_utilization(kind: str) -> None:
    demo = build_pipeline(kind, device="cuda", dtype=torch.bfloat16 if kind == "wan" else torch.float16)
    with gd.profile_pipeline(demo.pipe, name=f"gpu-{kind}") as prof:
        demo.pipe(**demo.call_kwargs)
    run = prof.run
    steps = list(run.iter_spans(kind="step"))
    assert steps and all(s.gpu_time_s is not None and s.gpu_time_s > 0 for s in steps)
    fl = run.metadata["generations"][0]["flops"]
    assert all(s["time_source"] == "gpu" for s in fl["steps"])
    assert all(s["achieved_tflops"] and s["achieved_tflops"] > 0 for s in fl["steps"])
    name = torch.cuda.get_device_name(0)
    peak, _ = peak_tflops(name, fl["dtype"])
    if peak is not None:
        assert all(s["mfu"] is not None and 0 < s["mfu"] < 1 for s in fl["steps"])
    assert run.metadata["pipeline"]["components"]["vae"]["device"].startswith("cuda")


def test_full_size_wan_builds_and_runs_one_step() -> None:
    demo = build_pipeline("wan", "full", device="cuda")
    kw = dict(demo.call_kwargs, num_inference_steps=1, num_frames=5, height=240, width=416)
    with gd.profile_pipeline(demo.pipe, name="wan-full") as prof:
        demo.pipe(**kw)
    g = prof.run.metadata["generations"][0]
    assert g["steps"] == 1 and g["output_frames"] == 5
    assert g["flops"]["total_flops"] and g["flops"]["total_flops"] > 1e12
    assert prof.run.metadata["pipeline"]["total_parameters"] > 1e9


def test_instrument_diagnose_on_gpu_scopes_kernels_to_the_denoiser() -> None:
    import genprof
    from genprof.analysis import diagnose as dg

    demo = build_pipeline("wan", device="cuda", dtype=torch.bfloat16)
    kw = dict(demo.call_kwargs, num_inference_steps=6)
    prof = genprof.Profiler("gpu-diag", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0)
    gd.instrument(demo.pipe, prof, diagnose=True)
    try:
        with prof:
            demo.pipe(**kw)
    finally:
        gd.uninstrument(demo.pipe)
    d = dg.diagnosis_of(prof.run)
    assert d is not None and d.gpu_reason is None, prof.run.metadata["diagnosis"].get("status_reason")
    assert [s.index for s in d.step_windows] == [1, 2]
    mods = dg.by_module(d)
    assert mods["reason"] is None and mods["scoped_share"] is not None
    # the transformer owns most kernels of a denoise step (the rest: scheduler arithmetic, CFG)
    # (scopes are the denoiser's blocks, transformer.blocks.0 ...: their shares add up)
    owned = sum(m["share"] for m in mods["modules"] if m["name"].startswith("transformer"))
    assert mods["modules"][0]["name"].startswith("transformer") and owned > 0.5, mods["modules"]
    assert dg.idle(d)["idle_share"] is not None
    classes = dg.by_class(d)["classes"]
    assert classes["gemm"]["tflops"] is not None and classes["gemm"]["tflops"] > 0, classes["gemm"]
