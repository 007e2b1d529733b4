"""Real-size configurations of common diffusion pipelines, as data, so that nothing has to be downloaded.

Each :class:`ModelSpec` names the diffusers pipeline class, the class and config dict of every
component (denoiser, VAE, text encoders) exactly as ``diffusers`` / ``transformers`` would read
them from the checkpoint's ``config.json`` (field names checked against diffusers 0.42.1 and
transformers 5.23 by instantiating every component on the meta device in
``tests/planning/test_model_configs.py``), plus the pipeline facts that the memory estimator
and the demo need: VAE scale factors, latent channels, default size, fps, text lengths and how
the pipeline runs classifier-free guidance.

Only sizes matter here: the VAE ``latents_mean``/``latents_std`` lists are placeholders of the
right length (zeros and ones); real checkpoints carry their own values.

This module is data only; it imports neither torch nor diffusers. Build modules from a spec
with :func:`genprof.planning.estimate.build_component` (meta device) or with
``diffusers``/``transformers`` yourself::

    spec = get_config("wan2.1-1.3b")
    comp = spec.component("transformer")
    cls = getattr(importlib.import_module(comp.library), comp.class_name)
    model = cls.from_config(comp.config)           # diffusers
    model = cls(config_cls(**comp.config))         # transformers (see ``comp.config_class``)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from genprof.errors import UsageError

ROLES = ("denoiser", "vae", "text_encoder")
CFG_MODES = ("batched", "separate", "distilled")
"""How a pipeline runs classifier-free guidance.

* ``batched``: conditional and unconditional inputs concatenated into one denoiser call of
  twice the batch (SD 1.5, SDXL, CogVideoX);
* ``separate``: two denoiser calls per step, one after the other (Wan, Qwen-Image's
  ``true_cfg_scale``, HunyuanVideo's ``true_cfg_scale``);
* ``distilled``: guidance is an input embedding; one call per step (Flux.1 dev, HunyuanVideo,
  Flux.1 schnell which has no guidance at all).
"""


@dataclass(frozen=True)
class ComponentSpec:
    """One pipeline component: where its class lives and the config it is built from.

    ``library`` is ``"diffusers"`` or ``"transformers"``. For transformers components,
    ``config_class`` names the ``PretrainedConfig`` subclass that ``config`` fills.
    ``seq_len`` (text encoders) is the token count the pipeline pads prompts to.
    ``hidden_states_kept`` (text encoders) is how many layers' hidden states the pipeline asks
    for (``output_hidden_states=True`` keeps all of them alive until the call returns).
    """

    name: str
    role: str
    library: str
    class_name: str
    config: dict[str, Any]
    config_class: str | None = None
    seq_len: int | None = None
    output_hidden_states: bool = False

    def config_copy(self) -> dict[str, Any]:
        return copy.deepcopy(self.config)


@dataclass(frozen=True)
class ModelSpec:
    """A pipeline: its components and the facts about how it runs.

    ``vae_scale_factor_spatial`` / ``_temporal``: pixels per latent pixel and frames per latent
    frame (``latent_frames = (num_frames - 1) // temporal + 1`` for causal video VAEs).
    ``patch_size`` is the denoiser's (t, h, w) patch; tokens are
    ``latent_frames/pt * latent_h/ph * latent_w/pw``.
    """

    name: str
    title: str
    kind: str  # "image" or "video"
    pipeline_class: str
    components: tuple[ComponentSpec, ...]
    latent_channels: int
    vae_scale_factor_spatial: int
    vae_scale_factor_temporal: int = 1
    patch_size: tuple[int, int, int] = (1, 1, 1)
    default_height: int = 1024
    default_width: int = 1024
    default_num_frames: int = 1
    default_fps: int | None = None
    default_steps: int = 50
    default_guidance_scale: float = 5.0
    cfg_mode: str = "batched"
    vae_decode_frame_batch: int | None = None  # latent frames the VAE decodes per call (video)
    vae_upcast_fp16: bool = False  # the pipeline upcasts the VAE to fp32 when it is fp16
    aliases: tuple[str, ...] = ()
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def component(self, name: str) -> ComponentSpec:
        for c in self.components:
            if c.name == name:
                return c
        raise UsageError(f"{self.name} has no component {name!r}; it has {', '.join(c.name for c in self.components)}")

    @property
    def denoiser(self) -> ComponentSpec:
        return next(c for c in self.components if c.role == "denoiser")

    @property
    def vae(self) -> ComponentSpec:
        return next(c for c in self.components if c.role == "vae")

    @property
    def text_encoders(self) -> list[ComponentSpec]:
        return [c for c in self.components if c.role == "text_encoder"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "pipeline_class": self.pipeline_class,
            "latent_channels": self.latent_channels,
            "vae_scale_factor_spatial": self.vae_scale_factor_spatial,
            "vae_scale_factor_temporal": self.vae_scale_factor_temporal,
            "patch_size": list(self.patch_size),
            "default_height": self.default_height,
            "default_width": self.default_width,
            "default_num_frames": self.default_num_frames,
            "default_fps": self.default_fps,
            "default_steps": self.default_steps,
            "default_guidance_scale": self.default_guidance_scale,
            "cfg_mode": self.cfg_mode,
            "components": [
                {
                    "name": c.name,
                    "role": c.role,
                    "library": c.library,
                    "class_name": c.class_name,
                    "config_class": c.config_class,
                    "seq_len": c.seq_len,
                    "config": c.config_copy(),
                }
                for c in self.components
            ],
        }


# ------------------------------------------------------------------ text encoders
def _clip_l() -> dict[str, Any]:
    # openai/clip-vit-large-patch14 text tower (SD 1.5, SDXL text_encoder, Flux, HunyuanVideo)
    return {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "projection_dim": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }


def _clip_bigg() -> dict[str, Any]:
    # laion CLIP-ViT-bigG-14 text tower (SDXL text_encoder_2)
    return {
        "vocab_size": 49408,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "projection_dim": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }


def _t5_xxl() -> dict[str, Any]:
    # google/t5-v1_1-xxl encoder (Flux text_encoder_2, CogVideoX)
    return {
        "vocab_size": 32128,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
    }


def _umt5_xxl() -> dict[str, Any]:
    # google/umt5-xxl encoder (Wan 2.1 / 2.2): the T5 v1.1 XXL shape with UMT5's vocabulary
    return {**_t5_xxl(), "vocab_size": 256384}


def _llama3_8b_llava() -> dict[str, Any]:
    # text tower of llava-llama-3-8b as HunyuanVideo ships it (LlamaModel)
    return {
        "vocab_size": 128320,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "rope_theta": 500000.0,
    }


def _qwen25_vl_7b() -> dict[str, Any]:
    # Qwen/Qwen2.5-VL-7B-Instruct (Qwen-Image's text encoder), transformers 5 layout
    return {
        "text_config": {
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "hidden_act": "silu",
        },
        "vision_config": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        "tie_word_embeddings": False,
    }


def _te(name: str, cls: str, config_cls: str, cfg: dict[str, Any], seq_len: int, hidden: bool = False) -> ComponentSpec:
    return ComponentSpec(
        name=name,
        role="text_encoder",
        library="transformers",
        class_name=cls,
        config=cfg,
        config_class=config_cls,
        seq_len=seq_len,
        output_hidden_states=hidden,
    )


# ------------------------------------------------------------------ VAEs
def _sd_vae(latent_channels: int = 4, *, sample_size: int = 512, scaling: float = 0.18215,
            shift: float | None = None, quant: bool = True) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": latent_channels,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "scaling_factor": scaling,
        "force_upcast": True,
        "use_quant_conv": quant,
        "use_post_quant_conv": quant,
    }
    if shift is not None:
        cfg["shift_factor"] = shift
    return cfg


def _wan_vae_21() -> dict[str, Any]:
    return {
        "base_dim": 96,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "latents_mean": [0.0] * 16,
        "latents_std": [1.0] * 16,
    }


def _wan_vae_22() -> dict[str, Any]:
    return {
        "base_dim": 160,
        "decoder_base_dim": 256,
        "z_dim": 48,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_temporal": 4,
        "scale_factor_spatial": 16,
        "latents_mean": [0.0] * 48,
        "latents_std": [1.0] * 48,
    }


def _vae(cls: str, cfg: dict[str, Any]) -> ComponentSpec:
    return ComponentSpec(name="vae", role="vae", library="diffusers", class_name=cls, config=cfg)


def _den(name: str, cls: str, cfg: dict[str, Any]) -> ComponentSpec:
    return ComponentSpec(name=name, role="denoiser", library="diffusers", class_name=cls, config=cfg)


# ------------------------------------------------------------------ denoisers
def _wan_transformer(heads: int, ffn: int, layers: int, channels: int = 16) -> dict[str, Any]:
    return {
        "patch_size": [1, 2, 2],
        "num_attention_heads": heads,
        "attention_head_dim": 128,
        "in_channels": channels,
        "out_channels": channels,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": ffn,
        "num_layers": layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    }


_SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "act_fn": "silu",
}

_SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "act_fn": "silu",
}


def _flux(guidance: bool) -> dict[str, Any]:
    return {
        "patch_size": 1,
        "in_channels": 64,
        "out_channels": None,
        "num_layers": 19,
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": guidance,
        "axes_dims_rope": [16, 56, 56],
    }


def _cogvideox(heads: int, layers: int, rotary: bool) -> dict[str, Any]:
    return {
        "num_attention_heads": heads,
        "attention_head_dim": 64,
        "in_channels": 16,
        "out_channels": 16,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "time_embed_dim": 512,
        "text_embed_dim": 4096,
        "num_layers": layers,
        "dropout": 0.0,
        "attention_bias": True,
        "sample_width": 90,
        "sample_height": 60,
        "sample_frames": 49,
        "patch_size": 2,
        "temporal_compression_ratio": 4,
        "max_text_seq_length": 226,
        "activation_fn": "gelu-approximate",
        "timestep_activation_fn": "silu",
        "norm_elementwise_affine": True,
        "norm_eps": 1e-5,
        "spatial_interpolation_scale": 1.875,
        "temporal_interpolation_scale": 1.0,
        "use_rotary_positional_embeddings": rotary,
        "use_learned_positional_embeddings": False,
    }


def _cogvideox_vae(scaling: float) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["CogVideoXDownBlock3D"] * 4,
        "up_block_types": ["CogVideoXUpBlock3D"] * 4,
        "block_out_channels": [128, 256, 256, 512],
        "latent_channels": 16,
        "layers_per_block": 3,
        "act_fn": "silu",
        "norm_eps": 1e-6,
        "norm_num_groups": 32,
        "temporal_compression_ratio": 4,
        "sample_height": 480,
        "sample_width": 720,
        "scaling_factor": scaling,
        "force_upcast": True,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
    }


# ------------------------------------------------------------------ the catalogue
def _build() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec(
            name="wan2.1-t2v-1.3b",
            title="Wan 2.1 text-to-video 1.3B",
            kind="video",
            pipeline_class="WanPipeline",
            components=(
                _den("transformer", "WanTransformer3DModel", _wan_transformer(12, 8960, 30)),
                _vae("AutoencoderKLWan", _wan_vae_21()),
                _te("text_encoder", "UMT5EncoderModel", "UMT5Config", _umt5_xxl(), 512),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            vae_scale_factor_temporal=4,
            patch_size=(1, 2, 2),
            default_height=480,
            default_width=832,
            default_num_frames=81,
            default_fps=16,
            default_steps=50,
            default_guidance_scale=5.0,
            cfg_mode="separate",
            vae_decode_frame_batch=1,
            aliases=("wan2.1-1.3b", "wan-1.3b", "wan2.1-t2v-1.3b-diffusers", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
        ),
        ModelSpec(
            name="wan2.1-t2v-14b",
            title="Wan 2.1 text-to-video 14B",
            kind="video",
            pipeline_class="WanPipeline",
            components=(
                _den("transformer", "WanTransformer3DModel", _wan_transformer(40, 13824, 40)),
                _vae("AutoencoderKLWan", _wan_vae_21()),
                _te("text_encoder", "UMT5EncoderModel", "UMT5Config", _umt5_xxl(), 512),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            vae_scale_factor_temporal=4,
            patch_size=(1, 2, 2),
            default_height=720,
            default_width=1280,
            default_num_frames=81,
            default_fps=16,
            default_steps=50,
            default_guidance_scale=5.0,
            cfg_mode="separate",
            vae_decode_frame_batch=1,
            aliases=("wan2.1-14b", "wan-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
        ),
        ModelSpec(
            name="wan2.2-ti2v-5b",
            title="Wan 2.2 text/image-to-video 5B",
            kind="video",
            pipeline_class="WanPipeline",
            components=(
                _den("transformer", "WanTransformer3DModel", _wan_transformer(24, 14336, 30, channels=48)),
                _vae("AutoencoderKLWan", _wan_vae_22()),
                _te("text_encoder", "UMT5EncoderModel", "UMT5Config", _umt5_xxl(), 512),
            ),
            latent_channels=48,
            vae_scale_factor_spatial=16,
            vae_scale_factor_temporal=4,
            patch_size=(1, 2, 2),
            default_height=704,
            default_width=1280,
            default_num_frames=121,
            default_fps=24,
            default_steps=50,
            default_guidance_scale=5.0,
            cfg_mode="separate",
            vae_decode_frame_batch=1,
            aliases=("wan2.2-5b", "wan2.2-ti2v", "Wan-AI/Wan2.2-TI2V-5B-Diffusers"),
            notes="The Wan 2.2 VAE works on 2x2 pixel patches (patch_size 2): spatial factor 16.",
        ),
        ModelSpec(
            name="sd1.5",
            title="Stable Diffusion 1.5",
            kind="image",
            pipeline_class="StableDiffusionPipeline",
            components=(
                _den("unet", "UNet2DConditionModel", dict(_SD15_UNET)),
                _vae("AutoencoderKL", _sd_vae()),
                _te("text_encoder", "CLIPTextModel", "CLIPTextConfig", _clip_l(), 77),
            ),
            latent_channels=4,
            vae_scale_factor_spatial=8,
            default_height=512,
            default_width=512,
            default_steps=50,
            default_guidance_scale=7.5,
            cfg_mode="batched",
            aliases=("sd15", "stable-diffusion-1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ),
        ModelSpec(
            name="sdxl",
            title="Stable Diffusion XL 1.0 base",
            kind="image",
            pipeline_class="StableDiffusionXLPipeline",
            components=(
                _den("unet", "UNet2DConditionModel", dict(_SDXL_UNET)),
                _vae("AutoencoderKL", _sd_vae(sample_size=1024, scaling=0.13025)),
                _te("text_encoder", "CLIPTextModel", "CLIPTextConfig", _clip_l(), 77, hidden=True),
                _te("text_encoder_2", "CLIPTextModelWithProjection", "CLIPTextConfig", _clip_bigg(), 77, hidden=True),
            ),
            latent_channels=4,
            vae_scale_factor_spatial=8,
            default_height=1024,
            default_width=1024,
            default_steps=50,
            default_guidance_scale=5.0,
            cfg_mode="batched",
            vae_upcast_fp16=True,
            aliases=("sdxl-base", "sdxl-1.0", "stabilityai/stable-diffusion-xl-base-1.0"),
        ),
        ModelSpec(
            name="flux.1-dev",
            title="FLUX.1 [dev]",
            kind="image",
            pipeline_class="FluxPipeline",
            components=(
                _den("transformer", "FluxTransformer2DModel", _flux(True)),
                _vae("AutoencoderKL", _sd_vae(16, sample_size=1024, scaling=0.3611, shift=0.1159, quant=False)),
                _te("text_encoder", "CLIPTextModel", "CLIPTextConfig", _clip_l(), 77),
                _te("text_encoder_2", "T5EncoderModel", "T5Config", _t5_xxl(), 512),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            patch_size=(1, 2, 2),
            default_height=1024,
            default_width=1024,
            default_steps=28,
            default_guidance_scale=3.5,
            cfg_mode="distilled",
            aliases=("flux-dev", "flux", "flux.1", "black-forest-labs/FLUX.1-dev"),
            notes="Latents are packed 2x2 into 64 channels: tokens = (h/16)*(w/16).",
        ),
        ModelSpec(
            name="flux.1-schnell",
            title="FLUX.1 [schnell]",
            kind="image",
            pipeline_class="FluxPipeline",
            components=(
                _den("transformer", "FluxTransformer2DModel", _flux(False)),
                _vae("AutoencoderKL", _sd_vae(16, sample_size=1024, scaling=0.3611, shift=0.1159, quant=False)),
                _te("text_encoder", "CLIPTextModel", "CLIPTextConfig", _clip_l(), 77),
                _te("text_encoder_2", "T5EncoderModel", "T5Config", _t5_xxl(), 256),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            patch_size=(1, 2, 2),
            default_height=1024,
            default_width=1024,
            default_steps=4,
            default_guidance_scale=0.0,
            cfg_mode="distilled",
            aliases=("flux-schnell", "black-forest-labs/FLUX.1-schnell"),
        ),
        ModelSpec(
            name="qwen-image",
            title="Qwen-Image",
            kind="image",
            pipeline_class="QwenImagePipeline",
            components=(
                _den(
                    "transformer",
                    "QwenImageTransformer2DModel",
                    {
                        "patch_size": 2,
                        "in_channels": 64,
                        "out_channels": 16,
                        "num_layers": 60,
                        "attention_head_dim": 128,
                        "num_attention_heads": 24,
                        "joint_attention_dim": 3584,
                        "guidance_embeds": False,
                        "axes_dims_rope": [16, 56, 56],
                    },
                ),
                _vae(
                    "AutoencoderKLQwenImage",
                    {
                        "base_dim": 96,
                        "z_dim": 16,
                        "dim_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                        "attn_scales": [],
                        "temperal_downsample": [False, True, True],
                        "dropout": 0.0,
                        "latents_mean": [0.0] * 16,
                        "latents_std": [1.0] * 16,
                    },
                ),
                _te(
                    "text_encoder",
                    "Qwen2_5_VLForConditionalGeneration",
                    "Qwen2_5_VLConfig",
                    _qwen25_vl_7b(),
                    1058,
                    hidden=True,
                ),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            patch_size=(1, 2, 2),
            default_height=1328,
            default_width=1328,
            default_steps=50,
            default_guidance_scale=4.0,
            cfg_mode="separate",
            aliases=("qwenimage", "Qwen/Qwen-Image"),
            notes="CFG is true_cfg_scale (two calls per step) when a negative prompt is given. "
            "Text length: the prompt template (34 tokens, dropped) plus up to 1024 prompt tokens.",
        ),
        ModelSpec(
            name="hunyuanvideo",
            title="HunyuanVideo (13B)",
            kind="video",
            pipeline_class="HunyuanVideoPipeline",
            components=(
                _den(
                    "transformer",
                    "HunyuanVideoTransformer3DModel",
                    {
                        "in_channels": 16,
                        "out_channels": 16,
                        "num_attention_heads": 24,
                        "attention_head_dim": 128,
                        "num_layers": 20,
                        "num_single_layers": 40,
                        "num_refiner_layers": 2,
                        "mlp_ratio": 4.0,
                        "patch_size": 2,
                        "patch_size_t": 1,
                        "qk_norm": "rms_norm",
                        "guidance_embeds": True,
                        "text_embed_dim": 4096,
                        "pooled_projection_dim": 768,
                        "rope_theta": 256.0,
                        "rope_axes_dim": [16, 56, 56],
                    },
                ),
                _vae(
                    "AutoencoderKLHunyuanVideo",
                    {
                        "in_channels": 3,
                        "out_channels": 3,
                        "latent_channels": 16,
                        "down_block_types": ["HunyuanVideoDownBlock3D"] * 4,
                        "up_block_types": ["HunyuanVideoUpBlock3D"] * 4,
                        "block_out_channels": [128, 256, 512, 512],
                        "layers_per_block": 2,
                        "act_fn": "silu",
                        "norm_num_groups": 32,
                        "scaling_factor": 0.476986,
                        "spatial_compression_ratio": 8,
                        "temporal_compression_ratio": 4,
                        "mid_block_add_attention": True,
                    },
                ),
                _te("text_encoder", "LlamaModel", "LlamaConfig", _llama3_8b_llava(), 351, hidden=True),
                _te("text_encoder_2", "CLIPTextModel", "CLIPTextConfig", _clip_l(), 77),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            vae_scale_factor_temporal=4,
            patch_size=(1, 2, 2),
            default_height=720,
            default_width=1280,
            default_num_frames=129,
            default_fps=24,
            default_steps=50,
            default_guidance_scale=6.0,
            cfg_mode="distilled",
            aliases=("hunyuan-video", "hunyuanvideo-community/HunyuanVideo"),
            notes="Text length is the 256 prompt tokens plus the 95-token template the pipeline crops.",
        ),
        ModelSpec(
            name="cogvideox-2b",
            title="CogVideoX 2B",
            kind="video",
            pipeline_class="CogVideoXPipeline",
            components=(
                _den("transformer", "CogVideoXTransformer3DModel", _cogvideox(30, 30, False)),
                _vae("AutoencoderKLCogVideoX", _cogvideox_vae(1.15258426)),
                _te("text_encoder", "T5EncoderModel", "T5Config", _t5_xxl(), 226),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            vae_scale_factor_temporal=4,
            patch_size=(1, 2, 2),
            default_height=480,
            default_width=720,
            default_num_frames=49,
            default_fps=8,
            default_steps=50,
            default_guidance_scale=6.0,
            cfg_mode="batched",
            vae_decode_frame_batch=2,
            aliases=("cogvideox2b", "THUDM/CogVideoX-2b"),
        ),
        ModelSpec(
            name="cogvideox-5b",
            title="CogVideoX 5B",
            kind="video",
            pipeline_class="CogVideoXPipeline",
            components=(
                _den("transformer", "CogVideoXTransformer3DModel", _cogvideox(48, 42, True)),
                _vae("AutoencoderKLCogVideoX", _cogvideox_vae(0.7)),
                _te("text_encoder", "T5EncoderModel", "T5Config", _t5_xxl(), 226),
            ),
            latent_channels=16,
            vae_scale_factor_spatial=8,
            vae_scale_factor_temporal=4,
            patch_size=(1, 2, 2),
            default_height=480,
            default_width=720,
            default_num_frames=49,
            default_fps=8,
            default_steps=50,
            default_guidance_scale=6.0,
            cfg_mode="batched",
            vae_decode_frame_batch=2,
            aliases=("cogvideox5b", "cogvideox", "THUDM/CogVideoX-5b"),
        ),
    ]
    return {s.name: s for s in specs}


_SPECS = _build()
MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)
ALIASES: dict[str, str] = {}
for _s in _SPECS.values():
    for _a in _s.aliases:
        ALIASES[_a.lower()] = _s.name


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def get_config(name: str) -> ModelSpec:
    """The spec of a known model by name or alias (case-insensitive, ``_`` or ``-``).

    Raises :class:`UsageError` listing the known names when ``name`` is unknown. Every call
    returns the same frozen spec; use :meth:`ComponentSpec.config_copy` before changing a config.
    """
    key = _norm(name)
    for cand in (key, name.strip().lower()):
        if cand in _SPECS:
            return _SPECS[cand]
        if cand in ALIASES:
            return _SPECS[ALIASES[cand]]
    import difflib

    close = difflib.get_close_matches(key, list(_SPECS) + list(ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(
        f"unknown model {name!r}{hint}; known models: {', '.join(MODEL_NAMES)}. "
        "Or pass a diffusers model folder (with model_index.json)."
    )


def build_component(comp: ComponentSpec, *, device: str = "meta", dtype: Any = None, overrides: dict[str, Any] | None = None) -> Any:
    """Instantiate ``comp`` with random (or, on ``"meta"``, no) weights.

    ``device="meta"`` builds the module without allocating any weight (used by the estimator);
    ``overrides`` replaces config keys (the estimator uses it to build fewer identical layers).
    Needs torch and diffusers (and transformers for text encoders); imported here, lazily.
    """
    from genprof.errors import MissingDependencyError

    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is present in the test env
        raise MissingDependencyError("torch", "building model components", "torch") from exc
    cfg = comp.config_copy()
    if overrides:
        cfg.update(overrides)
    try:
        lib = __import__(comp.library)
    except ImportError as exc:
        raise MissingDependencyError(comp.library, f"building {comp.class_name}", "diffusers") from exc
    cls = getattr(lib, comp.class_name)
    with torch.device(device):
        if comp.library == "diffusers":
            module = cls.from_config(cfg)
        else:
            config_cls = getattr(lib, comp.config_class or "")
            config = config_cls(**cfg)
            module = cls(config)
    if dtype is not None:
        _cast(module, dtype, torch, comp.library)
    return module.eval()


def _cast(module: Any, dtype: Any, torch: Any, library: str) -> None:
    """Cast floating weights to ``dtype``, keeping fp32 modules where ``from_pretrained`` would.

    diffusers keeps ``_keep_in_fp32_modules`` in fp32 always; transformers only when loading in
    fp16 (plus ``_keep_in_fp32_modules_strict`` for fp16 and bf16).
    """
    keep: tuple[str, ...] = ()
    if library == "diffusers" or dtype == torch.float16:
        keep += tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    if library == "transformers" and dtype in (torch.float16, torch.bfloat16):
        keep += tuple(getattr(module, "_keep_in_fp32_modules_strict", None) or ())
    done: dict[int, Any] = {}  # tied weights (shared embeddings) stay one parameter
    for name, sub in module.named_modules():
        fp32 = bool(keep) and any(k in name for k in keep)
        target = torch.float32 if fp32 else dtype
        for pname, p in list(sub.named_parameters(recurse=False)):
            if id(p) in done:
                setattr(sub, pname, done[id(p)])
            elif p.is_floating_point() and p.dtype != target:
                new = torch.nn.Parameter(p.detach().to(target), requires_grad=False)
                done[id(p)] = new
                setattr(sub, pname, new)
        for bname, b in list(sub.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point() and b.dtype != target:
                sub._buffers[bname] = b.to(target)
