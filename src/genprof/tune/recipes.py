"""Tuning candidates: what each recipe changes, whether this machine and install support it, how to apply it.

A :class:`Recipe` is plain data: a name and settings. Settings hold the planner's keys
(``dtype``, ``offload``, ``vae_tiling``, ``vae_slicing``, ``layerwise_fp8``, ``attention_backend``)
plus the speed recipes the planner does not model: ``compile`` (a ``torch.compile`` mode),
``channels_last`` and ``cache`` (a diffusers step cache). Names are ``+``-joined atoms:
``"offload=model+vae_tiling"``, ``"compile=max-autotune-no-cudagraphs+channels_last"``.

:func:`apply_recipe` applies one with diffusers' own APIs, in the planner's order (dtype,
layerwise fp8 storage, offloading, VAE tiling/slicing, attention backend), then channels-last
is applied before all of them, the step cache after them and ``torch.compile`` last.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from genprof.errors import UsageError
from genprof.tune import _planning

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
CACHES = {
    "first_block": "FirstBlockCacheConfig",
    "pab": "PyramidAttentionBroadcastConfig",
    "faster": "FasterCacheConfig",
    "taylorseer": "TaylorSeerCacheConfig",
}
# the planner's attention names -> diffusers' attention dispatcher backends
ATTENTION = {
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "cudnn": "_native_cudnn",
    "math": "_native_math",
    "native": "native",
    "fa2": "flash",
    "fa3": "_flash_3",
    "sage": "sage",
}
_ATTN_PACKAGE = {"fa2": ("flash_attn", "FA2 (flash-attn) not installed"),
                 "fa3": ("flash_attn_interface", "FA3 (flash_attn_interface, FlashAttention 3) not installed"),
                 "sage": ("sageattention", "SageAttention not installed")}
_CUDA_ATTENTION = ("flash", "efficient", "cudnn", "fa2", "fa3", "sage")
_DEFAULT_SETTINGS: dict[str, Any] = {
    "dtype": None, "offload": "none", "vae_tiling": False, "vae_slicing": False, "layerwise_fp8": False,
    "attention_backend": None, "compile": None, "channels_last": False, "cache": None,
}


@dataclass
class Recipe:
    """One candidate: a name (``+``-joined atoms) and the settings it stands for.

    ``None`` for ``dtype`` / ``attention_backend`` means "leave as loaded".
    """

    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def plan_settings(self) -> dict[str, Any]:
        """The part the planner predicts (its keys only)."""
        return {k: self.settings.get(k, _DEFAULT_SETTINGS[k]) for k in _planning.PLAN_KEYS}

    @property
    def planner_models_it(self) -> bool:
        """False when a speed recipe the planner does not model (compile, channels-last, cache) is on."""
        s = self.settings
        return not (s.get("compile") or s.get("channels_last") or s.get("cache"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "settings": dict(self.settings)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        return cls(name=str(d["name"]), settings=dict(d.get("settings") or {}))


@dataclass
class Skipped:
    name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason}


def _atom_settings(atom: str, base_dtype: str | None) -> dict[str, Any]:
    key, _, val = atom.partition("=")
    if atom in ("default", "baseline"):
        return {}
    if key == "offload" and val:
        if val not in _planning.offload_modes():
            raise UsageError(f"unknown offload mode {val!r} in {atom!r}; choose from {', '.join(_planning.offload_modes())}")
        return {"offload": val}
    if atom in ("vae_tiling", "vae_slicing", "channels_last"):
        return {atom: True}
    if atom in ("fp8", "layerwise_fp8"):
        return {"layerwise_fp8": True}
    if key == "attention" and val:
        if val not in ATTENTION:
            raise UsageError(f"unknown attention backend {val!r} in {atom!r}; choose from {', '.join(ATTENTION)}")
        return {"attention_backend": val}
    if key == "compile":
        mode = val or "default"
        if mode not in COMPILE_MODES:
            raise UsageError(f"unknown torch.compile mode {mode!r} in {atom!r}; choose from {', '.join(COMPILE_MODES)}")
        return {"compile": mode}
    if key == "cache" and val:
        if val not in CACHES:
            raise UsageError(f"unknown step cache {val!r} in {atom!r}; choose from {', '.join(CACHES)}")
        return {"cache": val}
    if key == "dtype" and val in ("bf16", "fp16", "fp32"):
        return {"dtype": val}
    raise UsageError(
        f"unknown tuning candidate {atom!r}: use default, offload=MODE, vae_tiling, vae_slicing, fp8, "
        f"attention=BACKEND, compile[=MODE], channels_last, cache=KIND or dtype=bf16|fp16|fp32, joined with '+'"
    )


def parse_recipe(name: str, base_dtype: str | None = None) -> Recipe:
    """``"offload=model+vae_tiling"`` -> a :class:`Recipe` (``UsageError`` naming the bad part)."""
    name = name.strip()
    if not name:
        raise UsageError("empty tuning candidate name")
    settings: dict[str, Any] = {"dtype": base_dtype}
    for atom in name.split("+"):
        settings.update(_atom_settings(atom.strip(), base_dtype))
    return Recipe(name=name, settings={**_DEFAULT_SETTINGS, **settings})


@dataclass
class Machine:
    """What the recipes depend on; :func:`probe_machine` fills it, tests pass their own."""

    cuda: bool
    bf16: bool
    c_compiler: str | None
    triton: bool
    packages: dict[str, bool] = field(default_factory=dict)


def probe_machine(device: str) -> Machine:
    try:
        import torch
    except ImportError:
        return Machine(cuda=False, bf16=False, c_compiler=None, triton=False)
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    bf16 = bool(cuda and torch.cuda.is_bf16_supported()) or not cuda  # CPU kernels support bf16
    cc = next((shutil.which(c) for c in ("cc", "gcc", "clang", "g++", "c++") if shutil.which(c)), None)
    pkgs = {mod: importlib.util.find_spec(mod) is not None for mod, _ in _ATTN_PACKAGE.values()}
    return Machine(cuda=cuda, bf16=bf16, c_compiler=cc, triton=importlib.util.find_spec("triton") is not None, packages=pkgs)


def _denoiser(pipe: Any) -> tuple[str, Any]:
    for name in ("transformer", "unet"):
        m = getattr(pipe, name, None)
        if m is not None:
            return name, m
    raise UsageError("the pipeline has neither a transformer nor a unet")


def why_unsupported(recipe: Recipe, pipe: Any, machine: Machine) -> str | None:
    """``None`` when ``recipe`` can run here, else why not ("FA3 not installed", "needs CUDA", ...)."""
    s = recipe.settings
    try:
        _, den = _denoiser(pipe)
    except UsageError as e:
        return str(e)
    vae = getattr(pipe, "vae", None)
    if s.get("dtype") == "bf16" and not machine.bf16:
        return "bf16 unsupported on this GPU (compute capability < 8.0)"
    if s.get("offload", "none") != "none" and not machine.cuda:
        return "offloading needs CUDA (it moves weights between the GPU and the host)"
    if s.get("offload", "none").startswith("group_") and not hasattr(pipe, "enable_group_offload"):
        return f"{type(pipe).__name__} has no enable_group_offload (diffusers >= 0.33)"
    if s.get("vae_tiling") and (vae is None or not hasattr(vae, "enable_tiling")):
        return "the VAE has no enable_tiling"
    if s.get("vae_slicing") and (vae is None or not hasattr(vae, "enable_slicing")):
        return "the VAE has no enable_slicing"
    if s.get("layerwise_fp8") and not hasattr(den, "enable_layerwise_casting"):
        return f"{type(den).__name__} has no enable_layerwise_casting (diffusers >= 0.33)"
    attn = s.get("attention_backend")
    if attn is not None:
        if not hasattr(den, "set_attention_backend"):
            return f"{type(den).__name__} has no set_attention_backend (diffusers' attention dispatcher, >= 0.35)"
        if attn in _ATTN_PACKAGE and not machine.packages.get(_ATTN_PACKAGE[attn][0], False):
            return _ATTN_PACKAGE[attn][1]
        if attn in _CUDA_ATTENTION and not machine.cuda:
            return f"attention={attn} needs CUDA"
    mode = s.get("compile")
    if mode:
        if machine.c_compiler is None:
            return "compile needs a C compiler (none of cc, gcc, clang on PATH)"
        if machine.cuda and not machine.triton:
            return "compile on CUDA needs triton (not installed)"
        if mode == "reduce-overhead" and not machine.cuda:
            return "compile=reduce-overhead needs CUDA (CUDA graphs)"
        if mode == "reduce-overhead" and s.get("offload", "none") != "none":
            return "compile=reduce-overhead does not work under offload hooks (CUDA graphs need fixed addresses)"
    if s.get("channels_last"):
        if getattr(pipe, "unet", None) is None and vae is None:
            return "channels-last speeds convolutions; the pipeline has neither a UNet nor a VAE"
        if getattr(pipe, "unet", None) is None:
            return "channels-last speeds convolutions (UNet/VAE); this denoiser is a transformer"
    cache = s.get("cache")
    if cache:
        try:
            hooks = importlib.import_module("diffusers.hooks")
        except ImportError:
            return "step caching needs diffusers"
        if not hasattr(hooks, CACHES[cache]):
            return f"the installed diffusers has no {CACHES[cache]}"
        if not hasattr(den, "enable_cache"):
            return f"{type(den).__name__} does not support diffusers' step caches (no CacheMixin)"
    return None


SINGLE_RECIPES = (
    "vae_tiling", "vae_slicing", "fp8", "channels_last",
    *(f"attention={a}" for a in ("flash", "efficient", "cudnn", "math", "fa3", "sage")),
    *(f"compile={m}" for m in COMPILE_MODES),
    *(f"cache={c}" for c in CACHES),
    *(f"offload={m}" for m in ("model", "group_block", "group_block_stream", "group_leaf", "group_leaf_stream", "sequential")),
)


def discover(pipe: Any, *, device: str, names: Sequence[str] | None = None, base_dtype: str | None = None,
             machine: Machine | None = None, extra: Sequence[Recipe] = ()) -> tuple[list[Recipe], list[Skipped]]:
    """The candidates to measure (``"default"`` first) and those skipped, each with why.

    ``names`` picks a subset (recipe names, ``+``-joined for combinations); without it every
    single recipe this machine and install support is tried. ``extra``: recipes added as they
    are (the planner's choice, custom recipes).
    """
    m = machine or probe_machine(device)
    wanted = list(names) if names else ["default", *SINGLE_RECIPES]
    if "default" not in wanted and "baseline" not in wanted:
        wanted.insert(0, "default")
    recipes: list[Recipe] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for n in wanted:
        r = parse_recipe(n, base_dtype)
        if r.name in seen:
            continue
        seen.add(r.name)
        reason = why_unsupported(r, pipe, m)
        if reason is None:
            recipes.append(r)
        else:
            skipped.append(Skipped(r.name, reason))
    for r in extra:
        if r.name not in seen:
            seen.add(r.name)
            reason = why_unsupported(r, pipe, m)
            (recipes.append(r) if reason is None else skipped.append(Skipped(r.name, reason)))
    if recipes and recipes[0].name not in ("default", "baseline"):
        d = next((i for i, r in enumerate(recipes) if r.name in ("default", "baseline")), None)
        if d is not None:
            recipes.insert(0, recipes.pop(d))
    return recipes, skipped


def _cache_config(kind: str, pipe: Any) -> Any:
    hooks = importlib.import_module("diffusers.hooks")
    cls = getattr(hooks, CACHES[kind])

    def timestep() -> Any:
        return getattr(pipe, "current_timestep", None)

    if kind == "first_block":
        return cls(threshold=0.05)
    if kind == "pab":
        return cls(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(100, 800),
                   current_timestep_callback=timestep)
    if kind == "faster":
        return cls(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
                   current_timestep_callback=timestep, attention_weight_callback=lambda _: 0.3,
                   low_frequency_weight_update_timestep_range=(99, 901),
                   high_frequency_weight_update_timestep_range=(-1, 301), is_guidance_distilled=False)
    return cls(cache_interval=5, disable_cache_before_step=10, max_order=1)


def apply_recipe(pipe: Any, recipe: Recipe | Mapping[str, Any], *, device: str = "cuda") -> list[str]:
    """Apply a recipe (or a :class:`~genprof.tune.result.CandidateResult`, or its settings) to a loaded pipeline.

    Returns what was done, in order; raises :class:`UsageError` when the pipeline lacks an API the
    recipe needs (nothing is silently skipped).
    """
    import torch

    if hasattr(recipe, "recipe"):
        recipe = recipe.recipe
    s = {**_DEFAULT_SETTINGS, **(recipe.settings if isinstance(recipe, Recipe) else dict(recipe))}
    done: list[str] = []
    den_name, den = _denoiser(pipe)
    vae = getattr(pipe, "vae", None)
    if s["channels_last"]:
        for name in ("unet", "vae"):
            mod = getattr(pipe, name, None)
            if mod is not None:
                mod.to(memory_format=torch.channels_last)
                done.append(f"{name}.to(memory_format=torch.channels_last)")
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(s["dtype"] or "")
    if dt is not None:
        pipe.to(dtype=dt)
        done.append(f"pipe.to(dtype={dt})")
    compute = dt or getattr(den, "dtype", torch.float32)
    if s["layerwise_fp8"]:
        if not hasattr(den, "enable_layerwise_casting"):
            raise UsageError(f"{type(den).__name__} has no enable_layerwise_casting (diffusers >= 0.33 needed)")
        den.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        done.append(f"{den_name}.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype={compute})")
    _planning.apply_offload(pipe, s["offload"], device, done)
    if s["vae_tiling"]:
        if vae is None or not hasattr(vae, "enable_tiling"):
            raise UsageError("the recipe asks for VAE tiling but the pipeline's VAE has no enable_tiling")
        vae.enable_tiling()
        done.append("vae.enable_tiling()")
    if s["vae_slicing"]:
        if vae is None or not hasattr(vae, "enable_slicing"):
            raise UsageError("the recipe asks for VAE slicing but the pipeline's VAE has no enable_slicing")
        vae.enable_slicing()
        done.append("vae.enable_slicing()")
    attn = s["attention_backend"]
    if attn is not None:
        if not hasattr(den, "set_attention_backend"):
            raise UsageError(f"{type(den).__name__} has no set_attention_backend (diffusers >= 0.35 needed)")
        den.set_attention_backend(ATTENTION[attn])
        done.append(f"{den_name}.set_attention_backend({ATTENTION[attn]!r})")
    if s["cache"]:
        den.enable_cache(_cache_config(s["cache"], pipe))
        done.append(f"{den_name}.enable_cache({CACHES[s['cache']]}(...))")
    if s["compile"]:
        cmode = None if s["compile"] == "default" else s["compile"]
        den.compile(mode=cmode)
        done.append(f"{den_name}.compile(mode={cmode!r})")
    log.info("applied recipe %s: %s", getattr(recipe, "name", "?"), "; ".join(done))
    return done
