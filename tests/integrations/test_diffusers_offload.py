"""Hooks survive offloading applied before or after instrument (CPU stand-ins for GPU offload).

Real ``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload`` need a CUDA device; on CPU
we apply diffusers' group offloading (onload and offload device both CPU) and accelerate hooks
directly, including the remove-and-re-add that ``maybe_free_model_hooks`` does after a call.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import genprof  # noqa: E402
from genprof.integrations import diffusers as gd  # noqa: E402
from genprof.integrations.demo import build_pipeline  # noqa: E402


def _run(pipe: Any, kwargs: dict[str, Any], calls: int = 1) -> genprof.Run:
    with genprof.Profiler("offload", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0) as prof:
        for _ in range(calls):
            pipe(**kwargs)
    return prof.run


def _group_offload(module: Any) -> None:
    module.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                offload_type="block_level", num_blocks_per_group=1)


@pytest.mark.parametrize("order", ["offload_then_instrument", "instrument_then_offload"])
def test_group_offloading_either_order(order: str) -> None:
    demo = build_pipeline("wan", device="cpu")
    pipe = demo.pipe
    if order == "offload_then_instrument":
        _group_offload(pipe.transformer)
        gd.instrument(pipe)
    else:
        gd.instrument(pipe)
        _group_offload(pipe.transformer)
    try:
        run = _run(pipe, demo.call_kwargs, calls=2)
    finally:
        gd.uninstrument(pipe)
    gens = run.metadata["generations"]
    assert [g["denoiser_forwards"]["per_step"] for g in gens] == [[2, 2, 2], [2, 2, 2]]
    off = gens[0]["offload"]
    assert off is not None and off["hook_calls"]
    assert any("Offload" in k for k in off["hook_calls"])
    assert off["transfer_s_by_phase"].get("denoise", 0) > 0
    comp = run.metadata["pipeline"]["components"]["transformer"]
    assert comp["offload"]


@pytest.mark.parametrize("order", ["hooks_then_instrument", "instrument_then_hooks"])
def test_accelerate_hooks_removed_and_readded_between_calls(order: str) -> None:
    accel_hooks = pytest.importorskip("accelerate.hooks")
    demo = build_pipeline("sd", device="cpu")
    pipe = demo.pipe

    def add() -> None:
        # what enable_model_cpu_offload installs (a CpuOffload hook per component), on CPU
        for comp in (pipe.text_encoder, pipe.unet, pipe.vae):
            accel_hooks.add_hook_to_module(comp, accel_hooks.CpuOffload(execution_device="cpu"))

    def remove() -> None:
        for comp in (pipe.text_encoder, pipe.unet, pipe.vae):
            accel_hooks.remove_hook_from_module(comp, recurse=True)

    if order == "hooks_then_instrument":
        add()
        gd.instrument(pipe)
    else:
        gd.instrument(pipe)
        add()
    try:
        with genprof.Profiler("acc", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0) as prof:
            pipe(**demo.call_kwargs)
            remove()  # diffusers' maybe_free_model_hooks: remove all hooks, then re-apply
            add()
            pipe(**demo.call_kwargs)
    finally:
        gd.uninstrument(pipe)
        remove()
    gens = prof.run.metadata["generations"]
    assert [g["denoiser_forwards"]["per_step"] for g in gens] == [[1, 1, 1], [1, 1, 1]]
    assert all(g["text_encoder_forwards"].get("text_encoder") for g in gens)
    for g in gens:
        assert g["offload"] is not None and g["offload"]["hook_calls"].get("CpuOffload", 0) >= 3
    # our hooks are gone after uninstrument
    assert not any(getattr(h, "_genprof_hook", False) for h in pipe.unet._forward_pre_hooks.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["model", "sequential"])
@pytest.mark.parametrize("order", ["offload_then_instrument", "instrument_then_offload"])
def test_real_cpu_offload_on_gpu(mode: str, order: str) -> None:
    pytest.importorskip("accelerate")
    demo = build_pipeline("sd", device="cpu")
    pipe = demo.pipe

    def offload() -> None:
        if mode == "model":
            pipe.enable_model_cpu_offload()
        else:
            pipe.enable_sequential_cpu_offload()

    if order == "offload_then_instrument":
        offload()
        gd.instrument(pipe)
    else:
        gd.instrument(pipe)
        offload()
    try:
        run = _run(pipe, demo.call_kwargs, calls=2)
    finally:
        gd.uninstrument(pipe)
    gens = run.metadata["generations"]
    assert [g["denoiser_forwards"]["per_step"] for g in gens] == [[1, 1, 1], [1, 1, 1]]
    assert all(g["offload"] and sum(g["offload"]["transfer_s_by_phase"].values()) > 0 for g in gens)
