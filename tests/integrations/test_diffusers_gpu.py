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
