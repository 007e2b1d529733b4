"""Applying a plan to a loaded diffusers pipeline (:func:`apply`), and the same steps as source (:func:`plan_code`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from genprof.errors import UsageError

if TYPE_CHECKING:
    from genprof.planning.plan import Plan

log = logging.getLogger("genprof.planning.plan")


def plan_code(settings: Mapping[str, Any], *, denoiser: str = "transformer", device: str = "cuda") -> list[str]:
    """The diffusers statements that :func:`apply` runs for ``settings``, as Python source lines.

    ``denoiser`` is the pipeline attribute of the denoiser (``"transformer"`` or ``"unet"``).
    """
    dt = {"bf16": "torch.bfloat16", "fp16": "torch.float16", "fp32": "torch.float32"}[settings.get("dtype", "bf16")]
    lines = ["import torch", "", f"pipe.to(dtype={dt})"]
    if settings.get("layerwise_fp8"):
        lines.append(f"pipe.{denoiser}.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype={dt})")
    mode = settings.get("offload", "none")
    if mode == "none":
        lines.append(f"pipe.to({device!r})")
    elif mode == "model":
        lines.append("pipe.enable_model_cpu_offload()")
    elif mode == "sequential":
        lines.append("pipe.enable_sequential_cpu_offload()")
    elif mode.startswith("group_"):
        level = "block_level" if mode.startswith("group_block") else "leaf_level"
        blocks = ", num_blocks_per_group=1" if level == "block_level" else ""
        lines.append(f"pipe.enable_group_offload(onload_device=torch.device({device!r}), offload_device=torch.device('cpu'), "
                     f"offload_type={level!r}{blocks}, use_stream={mode.endswith('_stream')})")
    else:
        raise UsageError(f"unknown offload mode {mode!r}")
    if settings.get("vae_tiling"):
        lines.append("pipe.vae.enable_tiling()")
    if settings.get("vae_slicing"):
        lines.append("pipe.vae.enable_slicing()")
    attn = settings.get("attention_backend", "flash")
    note = "SDPA: flash or efficient" if attn == "flash" else "diffusers >= 0.35"
    lines.append(f"pipe.{denoiser}.set_attention_backend({_ATTN_NAMES[attn]!r})  # {note}")
    return lines


# The planner's "flash" is the class of fused attention that keeps no score matrix. Pinning
# diffusers' "_native_flash" would refuse every model whose attention takes a mask (LTX-Video's
# and HunyuanVideo's text masks, Qwen-Image's): "native" is PyTorch's own choice among flash,
# memory-efficient and cuDNN attention, all linear in memory, which is what the estimate assumes.
_ATTN_NAMES = {"flash": "native", "efficient": "_native_efficient", "cudnn": "_native_cudnn", "math": "_native_math"}


def apply(pipe: Any, plan_or_settings: Plan | Mapping[str, Any], *, device: str = "cuda") -> list[str]:
    """Apply a plan to a loaded diffusers pipeline; returns what was done, in order.

    Order: dtype; layerwise fp8 storage on the denoiser; offloading (or ``pipe.to(device)``);
    VAE tiling and slicing; attention backend. Raises :class:`UsageError` when the pipeline
    lacks an API the plan needs (nothing is silently skipped).
    """
    import torch

    from genprof.planning.plan import Plan

    s = plan_or_settings.settings if isinstance(plan_or_settings, Plan) else dict(plan_or_settings)
    done: list[str] = []
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[s.get("dtype", "bf16")]
    pipe.to(dtype=dt)
    done.append(f"pipe.to(dtype={dt})")
    den_name = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
    den = getattr(pipe, den_name, None)
    if den is None:
        raise UsageError("the pipeline has neither a transformer nor a unet")
    if s.get("layerwise_fp8"):
        if not hasattr(den, "enable_layerwise_casting"):
            raise UsageError(f"{type(den).__name__} has no enable_layerwise_casting (diffusers >= 0.33 needed)")
        den.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dt)
        done.append(f"{den_name}.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype={dt})")
    apply_offload(pipe, s.get("offload", "none"), device, done)
    vae = getattr(pipe, "vae", None)
    if s.get("vae_tiling"):
        if vae is None or not hasattr(vae, "enable_tiling"):
            raise UsageError("the plan asks for VAE tiling but the pipeline's VAE has no enable_tiling")
        vae.enable_tiling()
        done.append("vae.enable_tiling()")
    if s.get("vae_slicing"):
        if vae is None or not hasattr(vae, "enable_slicing"):
            raise UsageError("the plan asks for VAE slicing but the pipeline's VAE has no enable_slicing")
        vae.enable_slicing()
        done.append("vae.enable_slicing()")
    attn = s.get("attention_backend", "flash")
    if attn != "flash" or hasattr(den, "set_attention_backend"):
        if not hasattr(den, "set_attention_backend"):
            raise UsageError(f"{type(den).__name__} has no set_attention_backend (diffusers >= 0.35 needed)")
        den.set_attention_backend(_ATTN_NAMES[attn])
        done.append(f"{den_name}.set_attention_backend({_ATTN_NAMES[attn]!r})")
    log.info("applied plan: %s", "; ".join(done))
    return done


def apply_offload(pipe: Any, mode: str, device: str, done: list[str]) -> None:
    """Place ``pipe`` on ``device`` under offload ``mode`` (the planner's modes) and append the
    diffusers call made to ``done``. Shared by :func:`apply` and tune's recipes."""
    import torch

    dev = torch.device(device)
    if mode == "none":
        pipe.to(dev)
        done.append(f"pipe.to({device!r})")
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=dev)
        done.append("pipe.enable_model_cpu_offload()")
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=dev)
        done.append("pipe.enable_sequential_cpu_offload()")
    elif mode.startswith("group_"):
        level = "block_level" if mode.startswith("group_block") else "leaf_level"
        stream = mode.endswith("_stream")
        kw: dict[str, Any] = {"onload_device": dev, "offload_device": torch.device("cpu"), "offload_type": level,
                              "use_stream": stream}
        if level == "block_level":
            kw["num_blocks_per_group"] = 1
        pipe.enable_group_offload(**kw)
        done.append(f"pipe.enable_group_offload(offload_type={level!r}, num_blocks_per_group=1, use_stream={stream})"
                    if level == "block_level" else f"pipe.enable_group_offload(offload_type={level!r}, use_stream={stream})")
    else:
        raise UsageError(f"unknown offload mode {mode!r}")
