"""Specs: a model name, a diffusers folder or a loaded pipeline turned into a catalogue ModelSpec.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from genprof.catalog import ComponentSpec, ModelSpec, get_config
from genprof.errors import UsageError

log = logging.getLogger(__name__)

def _resolve(pipe_or_config: Any) -> ModelSpec:
    if isinstance(pipe_or_config, ModelSpec):
        return pipe_or_config
    if isinstance(pipe_or_config, (str, os.PathLike)):
        p = Path(pipe_or_config)
        if p.is_dir():
            return spec_from_folder(p)
        return get_config(str(pipe_or_config))
    if hasattr(pipe_or_config, "components") and hasattr(pipe_or_config, "config"):
        return spec_from_pipeline(pipe_or_config)
    raise UsageError(
        f"cannot estimate {type(pipe_or_config).__name__}: pass a model name ({', '.join(_known())}), "
        "a diffusers model folder, a ModelSpec or a diffusers pipeline"
    )


def _known() -> list[str]:
    from genprof.catalog import MODEL_NAMES

    return list(MODEL_NAMES)


# ------------------------------------------------------------------ specs from folders and pipelines
_DENOISER_NAMES = ("transformer", "unet", "transformer_2")
_PIPELINE_CFG = {
    "WanPipeline": "separate",
    "WanImageToVideoPipeline": "separate",
    "QwenImagePipeline": "separate",
    "StableDiffusionPipeline": "batched",
    "StableDiffusionXLPipeline": "batched",
    "CogVideoXPipeline": "batched",
    "StableDiffusion3Pipeline": "batched",
    "LTXPipeline": "batched",
    "FluxPipeline": "distilled",
    "HunyuanVideoPipeline": "distilled",
}


def _spec_from_components(name: str, pipeline_class: str, comps: dict[str, tuple[str, str, dict[str, Any]]]) -> ModelSpec:
    """Build a ModelSpec from ``{component: (library, class_name, config)}``, borrowing facts from a known spec."""
    known = None
    for s in _all_specs():
        den = s.denoiser
        if s.pipeline_class == pipeline_class and any(c[1] == den.class_name for c in comps.values()):
            known = s
            break
    if known is None:
        raise UsageError(
            f"{name}: pipeline {pipeline_class} is not one genprof knows how to estimate; known pipelines: "
            f"{', '.join(sorted({s.pipeline_class for s in _all_specs()}))}"
        )
    parts: list[ComponentSpec] = []
    for cname, (lib, cls, cfg) in comps.items():
        try:
            ref = known.component(cname)
        except UsageError:
            continue
        clean = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
        parts.append(replace(ref, library=lib, class_name=cls, config=clean))
    if not any(p.role == "denoiser" for p in parts) or not any(p.role == "vae" for p in parts):
        raise UsageError(f"{name}: needs a denoiser (transformer/unet) and a vae component")
    vae_cfg = next(p for p in parts if p.role == "vae").config
    latent = int(vae_cfg.get("z_dim") or vae_cfg.get("latent_channels") or known.latent_channels)
    return replace(known, name=name, components=tuple(parts), latent_channels=latent, aliases=())


def _all_specs() -> list[ModelSpec]:
    from genprof.catalog import MODEL_NAMES

    return [get_config(n) for n in MODEL_NAMES]


def spec_from_folder(path: Path) -> ModelSpec:
    """A ModelSpec from a diffusers model folder: ``model_index.json`` and ``<component>/config.json``."""
    index = path / "model_index.json"
    if not index.is_file():
        raise UsageError(f"{path}: no model_index.json; pass a diffusers model folder or a model name")
    try:
        idx = json.loads(index.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{index}: not valid JSON: {exc}") from exc
    comps: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for cname, val in idx.items():
        if cname.startswith("_") or not isinstance(val, list) or len(val) != 2 or val[0] is None:
            continue
        lib, cls = val
        cfg_file = path / cname / "config.json"
        if lib not in ("diffusers", "transformers") or not cfg_file.is_file():
            continue
        try:
            comps[cname] = (lib, cls, json.loads(cfg_file.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise UsageError(f"{cfg_file}: not valid JSON: {exc}") from exc
    return _spec_from_components(path.name, str(idx.get("_class_name", "")), comps)


def spec_from_pipeline(pipe: Any) -> ModelSpec:
    """A ModelSpec from a loaded diffusers pipeline (its component configs only; weights untouched)."""
    comps: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for cname, mod in pipe.components.items():
        cfg = getattr(mod, "config", None)
        if cfg is None:
            continue
        lib = type(mod).__module__.split(".")[0]
        if lib not in ("diffusers", "transformers"):
            continue
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        comps[cname] = (lib, type(mod).__name__, d)
    return _spec_from_components(type(pipe).__name__.lower(), type(pipe).__name__, comps)


