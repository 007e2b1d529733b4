"""Generation settings: what one pipeline call asks for, and the inputs the denoiser is traced with.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genprof.catalog import ModelSpec
from genprof.errors import UsageError
from genprof.planning.estimate.trace import _round_alloc, _torch

log = logging.getLogger(__name__)

OFFLOAD_MODES = (
    "none",
    "model",
    "group_block",
    "group_block_stream",
    "group_leaf",
    "group_leaf_stream",
    "sequential",
)
"""What stays on the GPU.

* ``none``: every component on the GPU all the time (``pipe.to("cuda")``);
* ``model``: ``enable_model_cpu_offload()``: one whole component at a time;
* ``group_block`` / ``group_leaf``: ``enable_group_offload(offload_type="block_level",
  num_blocks_per_group=1)`` / ``"leaf_level"``: the parameters outside block lists plus one
  block (one leaf module), and one more with ``use_stream=True`` (prefetch);
* ``sequential``: ``enable_sequential_cpu_offload()``: one leaf module's weights at a time.
"""

ATTENTION_BACKENDS = ("flash", "efficient", "cudnn", "math")
"""``math`` materialises the attention matrix (quadratic in tokens); the others are linear."""

_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

DTYPE_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4}


#: Allocator and workspace constants, used by :func:`reserved_model`:
#: ``reserved = max(weights_reserved_factor * Wr, Wr + kept + reserved_factor[phase] * activations + workspace)``.
#: Fitted with ``python bench/fit_estimate.py --data bench/results/estimate_h100_uncalibrated.json``
#: (NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, diffusers 0.42.1, 10 cases, 2026-11-22). CAUTION: that
#: bench built every component with random fp32 weights ON the GPU and then cast them, which leaves
#: the weights' segments partly empty (measured reserved/allocated 1.04-1.46 during text encoding there); weights loaded with
#: ``from_pretrained`` + ``.to("cuda")`` are packed (about 1.01 by the allocator model,
#: :class:`CachingAllocatorModel`). So these values over-predict (safe side) for loaded weights
#: until the fixed bench (weights built on the CPU, then ``.to("cuda")``) is re-run and refitted.
# ------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class GenerationSettings:
    """The settings of one pipeline call that memory depends on."""

    height: int
    width: int
    num_frames: int
    batch_size: int
    num_inference_steps: int
    guidance_scale: float
    dtype: str
    offload: str
    vae_tiling: bool
    vae_slicing: bool
    attention_backend: str
    layerwise_fp8: bool
    vae_dtype: str

    def latent_shape(self, spec: ModelSpec) -> tuple[int, int, int]:
        s = spec.vae_scale_factor_spatial
        lf = 1 if spec.kind == "image" else (self.num_frames - 1) // spec.vae_scale_factor_temporal + 1
        return lf, self.height // s, self.width // s

    def cfg_passes(self, spec: ModelSpec) -> int:
        """Conditional + unconditional inputs the pipeline feeds per step (1 without CFG)."""
        if spec.cfg_mode == "distilled":
            return 1
        return 2 if self.guidance_scale > 1.0 else 1


def _denoiser_inputs(spec: ModelSpec, gen: GenerationSettings, batch: int) -> dict[str, Any]:
    torch = _torch()
    dt = getattr(torch, _TORCH_DTYPES[gen.dtype])
    lf, lh, lw = gen.latent_shape(spec)
    cls = spec.denoiser.class_name
    cfg = spec.denoiser.config
    meta = "meta"

    def e(*shape: int, dtype: Any = dt) -> Any:
        return torch.empty(*shape, device=meta, dtype=dtype)

    te = {c.name: c for c in spec.text_encoders}
    if cls == "WanTransformer3DModel":
        return {
            "hidden_states": e(batch, spec.latent_channels, lf, lh, lw),
            "timestep": e(batch, dtype=torch.long),
            "encoder_hidden_states": e(batch, te["text_encoder"].seq_len or 512, cfg["text_dim"]),
            "return_dict": False,
        }
    if cls == "UNet2DConditionModel":
        kw: dict[str, Any] = {
            "sample": e(batch, spec.latent_channels, lh, lw),
            "timestep": e(batch, dtype=torch.long),
            "encoder_hidden_states": e(batch, 77, cfg["cross_attention_dim"]),
            "return_dict": False,
        }
        if cfg.get("addition_embed_type") == "text_time":
            pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
            kw["added_cond_kwargs"] = {"text_embeds": e(batch, pooled), "time_ids": e(batch, 6)}
        return kw
    if cls == "FluxTransformer2DModel":
        n = (lh // 2) * (lw // 2)
        seq = te["text_encoder_2"].seq_len or 512
        kw = {
            "hidden_states": e(batch, n, cfg["in_channels"]),
            "encoder_hidden_states": e(batch, seq, cfg["joint_attention_dim"]),
            "pooled_projections": e(batch, cfg["pooled_projection_dim"]),
            "timestep": e(batch),
            "img_ids": e(n, 3),
            "txt_ids": e(seq, 3),
            "return_dict": False,
        }
        if cfg.get("guidance_embeds"):
            kw["guidance"] = e(batch, dtype=torch.float32)
        return kw
    if cls == "QwenImageTransformer2DModel":
        n = (lh // 2) * (lw // 2)
        seq = te["text_encoder"].seq_len or 1024
        return {
            "hidden_states": e(batch, n, cfg["in_channels"]),
            "encoder_hidden_states": e(batch, seq, cfg["joint_attention_dim"]),
            "encoder_hidden_states_mask": None,
            "timestep": e(batch),
            "img_shapes": [[(1, lh // 2, lw // 2)]] * batch,
            "return_dict": False,
        }
    if cls == "HunyuanVideoTransformer3DModel":
        seq = te["text_encoder"].seq_len or 256
        seq -= 95  # the pipeline crops the prompt template
        return {
            "hidden_states": e(batch, spec.latent_channels, lf, lh, lw),
            "timestep": e(batch, dtype=torch.long),
            "encoder_hidden_states": e(batch, seq, cfg["text_embed_dim"]),
            "encoder_attention_mask": torch.ones(batch, seq, device=meta, dtype=torch.bool),
            "pooled_projections": e(batch, cfg["pooled_projection_dim"]),
            "guidance": e(batch, dtype=torch.float32),
            "return_dict": False,
        }
    if cls == "CogVideoXTransformer3DModel":
        kw = {
            "hidden_states": e(batch, lf, spec.latent_channels, lh, lw),
            "encoder_hidden_states": e(batch, cfg["max_text_seq_length"], cfg["text_embed_dim"]),
            "timestep": e(batch, dtype=torch.long),
            "return_dict": False,
        }
        if cfg.get("use_rotary_positional_embeddings"):
            n = lf * (lh // 2) * (lw // 2)
            hd = cfg["attention_head_dim"]
            kw["image_rotary_emb"] = (e(n, hd, dtype=torch.float32), e(n, hd, dtype=torch.float32))
        return kw
    if cls == "SD3Transformer2DModel":
        # StableDiffusion3Pipeline: the two CLIP towers' penultimate states side by side (768 + 1280),
        # zero-padded to T5's width and followed by the T5 states along the sequence; pooled = both
        # CLIP projections (768 + 1280); timestep = the scheduler's float timestep, expanded
        seq = sum(te[n].seq_len or 77 for n in ("text_encoder", "text_encoder_3"))
        return {
            "hidden_states": e(batch, spec.latent_channels, lh, lw),
            "encoder_hidden_states": e(batch, seq, cfg["joint_attention_dim"]),
            "pooled_projections": e(batch, cfg["pooled_projection_dim"]),
            "timestep": e(batch, dtype=torch.float32),
            "return_dict": False,
        }
    if cls == "LTXVideoTransformer3DModel":
        # LTXPipeline: latents packed into (B, frames*h*w, C) tokens (patch 1x1x1), the T5 states and
        # their attention mask, and the latent grid and RoPE scale as plain numbers (frame_rate 25,
        # the pipeline's default; neither changes a shape)
        seq = te["text_encoder"].seq_len or 128
        pt, p = int(cfg.get("patch_size_t", 1)), int(cfg.get("patch_size", 1))
        n = (lf // pt) * (lh // p) * (lw // p)
        return {
            "hidden_states": e(batch, n, cfg["in_channels"] * pt * p * p),
            "encoder_hidden_states": e(batch, seq, cfg["caption_channels"]),
            "timestep": e(batch, dtype=torch.float32),
            "encoder_attention_mask": torch.ones(batch, seq, device=meta, dtype=torch.bool),
            "num_frames": lf,
            "height": lh,
            "width": lw,
            "rope_interpolation_scale": (spec.vae_scale_factor_temporal / 25, spec.vae_scale_factor_spatial,
                                         spec.vae_scale_factor_spatial),
            "return_dict": False,
        }
    raise UsageError(
        f"no input recipe for denoiser class {cls}; supported: WanTransformer3DModel, UNet2DConditionModel, "
        "FluxTransformer2DModel, QwenImageTransformer2DModel, HunyuanVideoTransformer3DModel, "
        "CogVideoXTransformer3DModel, SD3Transformer2DModel, LTXVideoTransformer3DModel"
    )


def _vae_decode_args(spec: ModelSpec, batch: int, dtype: str) -> tuple[Any, ...]:
    """Positional inputs ``vae.decode`` takes after the latents, as the pipeline passes them (meta tensors).

    LTX-Video's timestep-conditioned decoders (0.9.1 on) get the decode timestep, one per video
    (``LTXPipeline``'s ``decode_timestep``); every other VAE takes the latents alone.
    """
    if spec.vae.class_name == "AutoencoderKLLTXVideo" and spec.vae.config.get("timestep_conditioning"):
        torch = _torch()
        return (torch.empty(batch, device="meta", dtype=getattr(torch, _TORCH_DTYPES[dtype])),)
    return ()


def _input_bytes(obj: Any) -> int:
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        return _round_alloc(obj.numel() * obj.element_size())
    if isinstance(obj, Mapping):
        return sum(_input_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_input_bytes(v) for v in obj)
    return 0


def _nbytes(*shape: int, esize: int) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return _round_alloc(n * esize)


