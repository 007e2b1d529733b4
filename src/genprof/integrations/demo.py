"""Random-weight diffusers pipelines built from configs in code: nothing is downloaded.

``build_pipeline(kind, size="tiny")`` builds one of:

* ``"wan"`` (Wan 2.1 text-to-video, ``WanPipeline``), ``"wan22-5b"`` (Wan 2.2 TI2V 5B style:
  ``expand_timesteps=True``, 48-channel VAE with patchified input), ``"sd"``
  (``StableDiffusionPipeline``), ``"sdxl"``, ``"flux"``, ``"cogvideox"``.

``size="tiny"`` uses 1-2 layer configs with a few channels (seconds on a CPU); ``size="full"``
builds the real architectures of :mod:`genprof.catalog` with random weights
(for a GPU; ``wan``, ``wan22-5b``, ``sd``, ``sdxl``, ``flux``, ``cogvideox``).

Tokenizers are built in code: a word-level ``tokenizers`` model wrapped in transformers'
``PreTrainedTokenizerFast``; unknown words map to ``<unk>``. Outputs of random weights are
noise; what matters is that every module runs with the real shapes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from genprof.errors import MissingDependencyError, UsageError

log = logging.getLogger(__name__)

KINDS = ("wan", "wan22-5b", "sd", "sdxl", "flux", "cogvideox")
SIZES = ("tiny", "full")

_WORDS = (
    "a cat dog sitting on the beach at sunset sea waves sky red blue green small large "
    "photo of an astronaut riding horse city night rain walking in forest mountain snow "
    "video slow motion camera pans across river bird flying over field flowers"
).split()

_FULL_NAMES = {
    "wan": "wan2.1-t2v-1.3b",
    "wan22-5b": "wan2.2-ti2v-5b",
    "sd": "sd1.5",
    "sdxl": "sdxl",
    "flux": "flux.1-dev",
    "cogvideox": "cogvideox-2b",
}


@dataclass
class DemoPipeline:
    """A built pipeline and the call arguments the demo uses for it."""

    kind: str
    size: str
    pipe: Any
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    fps: int | None = None
    description: str = ""


def _require() -> tuple[Any, Any, Any]:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "the demo pipelines", "torch") from exc
    try:
        import diffusers
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("diffusers", "the demo pipelines", "diffusers") from exc
    return torch, diffusers, transformers


def build_tokenizer(model_max_length: int = 16, *, clip_style: bool = False) -> Any:
    """A word-level fast tokenizer built in code (no files, no download).

    ``clip_style`` gives ids ``<s>``=0, ``<pad>``=1, ``</s>``=2 (CLIP's defaults) and wraps
    each text in ``<s> ... </s>``; otherwise ``<pad>``=0, ``</s>``=1 and texts end in ``</s>``
    (T5's convention).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"] if clip_style else ["<pad>", "</s>", "<unk>", "<s>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in _WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if clip_style:
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
        )
    else:
        tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        model_max_length=model_max_length,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
    )


def _t5(transformers: Any, umt5: bool = False) -> Any:
    cls_cfg = transformers.UMT5Config if umt5 else transformers.T5Config
    cls = transformers.UMT5EncoderModel if umt5 else transformers.T5EncoderModel
    cfg = cls_cfg(vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return cls(cfg).eval()


def _clip(transformers: Any, with_projection: bool = False) -> Any:
    cfg = transformers.CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=64,
        hidden_act="gelu", projection_dim=32, max_position_embeddings=77,
    )
    cls = transformers.CLIPTextModelWithProjection if with_projection else transformers.CLIPTextModel
    return cls(cfg).eval()


def _tiny(kind: str, torch: Any, d: Any, tr: Any) -> DemoPipeline:
    if kind in ("wan", "wan22-5b"):
        five_b = kind == "wan22-5b"
        if five_b:
            vae = d.AutoencoderKLWan(
                base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
            )
            ch = 48
        else:
            vae = d.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, True, True])
            ch = 16
        transformer = d.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=ch, out_channels=ch,
            text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )
        pipe = d.WanPipeline(
            tokenizer=build_tokenizer(16), text_encoder=_t5(tr, umt5=True), transformer=transformer, vae=vae,
            scheduler=d.FlowMatchEulerDiscreteScheduler(shift=7.0), expand_timesteps=five_b,
        )
        hw = 32 if five_b else 16
        kw = {"height": hw, "width": hw, "num_frames": 9, "num_inference_steps": 3, "guidance_scale": 5.0,
              "max_sequence_length": 16, "output_type": "np"}
        title = "Wan 2.2 TI2V-5B style" if five_b else "Wan 2.1 T2V style"
        return DemoPipeline(kind, "tiny", pipe, kw, fps=24 if five_b else 16, description=f"tiny {title}")
    if kind == "sd":
        unet = d.UNet2DConditionModel(
            block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, norm_num_groups=2, attention_head_dim=2,
        )
        vae = d.AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3,
                              down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                              latent_channels=4, norm_num_groups=2)
        pipe = d.StableDiffusionPipeline(
            vae=vae, text_encoder=_clip(tr), tokenizer=build_tokenizer(16, clip_style=True), unet=unet,
            scheduler=d.DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        kw = {"height": 16, "width": 16, "num_inference_steps": 3, "guidance_scale": 7.5, "output_type": "np"}
        return DemoPipeline(kind, "tiny", pipe, kw, description="tiny Stable Diffusion 1.5 style")
    if kind == "sdxl":
        unet = d.UNet2DConditionModel(
            block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
            cross_attention_dim=64, norm_num_groups=2,
        )
        vae = d.AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3,
                              down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                              latent_channels=4, norm_num_groups=2, sample_size=16)
        pipe = d.StableDiffusionXLPipeline(
            vae=vae, text_encoder=_clip(tr), text_encoder_2=_clip(tr, with_projection=True),
            tokenizer=build_tokenizer(16, clip_style=True), tokenizer_2=build_tokenizer(16, clip_style=True),
            unet=unet, scheduler=d.EulerDiscreteScheduler(), force_zeros_for_empty_prompt=True,
        )
        kw = {"height": 16, "width": 16, "num_inference_steps": 2, "guidance_scale": 5.0, "output_type": "np"}
        return DemoPipeline(kind, "tiny", pipe, kw, description="tiny SDXL style")
    if kind == "flux":
        transformer = d.FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        )
        vae = d.AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 8),
                              down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                              layers_per_block=1, latent_channels=1, norm_num_groups=1, use_quant_conv=False,
                              use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
        pipe = d.FluxPipeline(
            scheduler=d.FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_clip(tr),
            tokenizer=build_tokenizer(77, clip_style=True), text_encoder_2=_t5(tr), tokenizer_2=build_tokenizer(16),
            transformer=transformer,
        )
        kw = {"height": 16, "width": 16, "num_inference_steps": 2, "guidance_scale": 3.5,
              "max_sequence_length": 16, "output_type": "np"}
        return DemoPipeline(kind, "tiny", pipe, kw, description="tiny Flux.1 style")
    if kind == "cogvideox":
        transformer = d.CogVideoXTransformer3DModel(
            num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=16,
        )
        vae = d.AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
            layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
        )
        pipe = d.CogVideoXPipeline(tokenizer=build_tokenizer(16), text_encoder=_t5(tr), transformer=transformer,
                                   vae=vae, scheduler=d.CogVideoXDDIMScheduler())
        kw = {"height": 16, "width": 16, "num_frames": 9, "num_inference_steps": 2, "guidance_scale": 6.0,
              "max_sequence_length": 16, "output_type": "np"}
        return DemoPipeline(kind, "tiny", pipe, kw, fps=8, description="tiny CogVideoX style")
    raise UsageError(f"unknown demo pipeline {kind!r}; choose from {', '.join(KINDS)}")


def _full(kind: str, torch: Any, d: Any, tr: Any, device: str, dtype: Any) -> DemoPipeline:
    from genprof import catalog
    from genprof.planning.build import build_component

    spec = catalog.get_config(_FULL_NAMES[kind])
    comps: dict[str, Any] = {}
    for c in spec.components:
        # build directly on the target device in the target dtype: random weights, no download
        comps[c.name] = build_component(c, device=device, dtype=dtype)
    for c in spec.text_encoders:
        tok_name = c.name.replace("text_encoder", "tokenizer")
        clip_style = "CLIP" in c.class_name
        comps[tok_name] = build_tokenizer(c.seq_len or 77, clip_style=clip_style)
    sched_name = {"wan": "UniPCMultistepScheduler", "wan22-5b": "UniPCMultistepScheduler",
                  "sd": "PNDMScheduler", "sdxl": "EulerDiscreteScheduler",
                  "flux": "FlowMatchEulerDiscreteScheduler", "cogvideox": "CogVideoXDDIMScheduler"}[kind]
    sched_cls = getattr(d, sched_name)
    sched_table: dict[str, dict[str, Any]] = {
        "wan": {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0},
        "wan22-5b": {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 5.0},
        "sd": {"skip_prk_steps": True, "steps_offset": 1},
        "sdxl": {"steps_offset": 1},
    }
    sched_kwargs = sched_table.get(kind, {})
    sched = sched_cls(**sched_kwargs)
    pipe_cls = getattr(d, spec.pipeline_class)
    extra: dict[str, Any] = {}
    if kind == "sd":
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if kind == "wan22-5b":
        extra = {"expand_timesteps": True}
    import inspect

    params = inspect.signature(pipe_cls.__init__).parameters
    kwargs = {k: v for k, v in comps.items() if k in params}
    for k in params:
        if k not in kwargs and k not in ("self", "scheduler") and k not in extra and params[k].default is inspect.Parameter.empty:
            kwargs[k] = None
    pipe = pipe_cls(scheduler=sched, **kwargs, **extra)
    kw: dict[str, Any] = {"height": spec.default_height, "width": spec.default_width,
                          "num_inference_steps": min(spec.default_steps, 4), "output_type": "np"}
    if spec.kind == "video":
        kw["num_frames"] = spec.default_num_frames
    if kind == "wan":
        kw.update(height=480, width=832, num_frames=33)
    return DemoPipeline(kind, "full", pipe, kw, fps=spec.default_fps, description=f"{spec.title} (random weights)")


def build_pipeline(kind: str, size: str = "tiny", *, device: str | None = None, dtype: Any = None) -> DemoPipeline:
    """Build the demo pipeline ``kind`` of ``size`` on ``device`` (default: CUDA if present, else CPU)."""
    if kind not in KINDS:
        raise UsageError(f"unknown demo pipeline {kind!r}; choose from {', '.join(KINDS)}")
    if size not in SIZES:
        raise UsageError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    torch, d, tr = _require()
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if size == "full":
        if not dev.startswith("cuda"):
            raise UsageError("--size full builds real-size models (billions of parameters); it needs --device cuda")
        dt = dtype or torch.bfloat16
        if kind == "sd" and dtype is None:
            dt = torch.float16
        demo = _full(kind, torch, d, tr, dev, dt)
    else:
        torch.manual_seed(0)
        demo = _tiny(kind, torch, d, tr)
        demo.pipe.to(dev)
        if dtype is not None:
            demo.pipe.to(dtype=dtype)
    demo.pipe.set_progress_bar_config(disable=True)
    demo.call_kwargs.setdefault("prompt", "a cat sitting on the beach at sunset")
    return demo
