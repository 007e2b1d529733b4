"""The specs a catalogue entry is read into: a pipeline (:class:`ModelSpec`) and its components.

Data only; imports neither torch nor diffusers.
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
