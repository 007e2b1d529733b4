"""Facts about a diffusers pipeline read from its modules: components, architecture, attention.

Used by the rest of :mod:`genprof.integrations.diffusers` (and importable as
``genprof.integrations.diffusers_facts``); torch is imported lazily.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

DENOISER_NAMES = ("transformer", "unet", "transformer_2", "prior", "decoder")
VIDEO_FPS = {
    # frame rates the diffusers documentation's examples pass to export_to_video
    "WanPipeline": 16,
    "WanImageToVideoPipeline": 16,
    "WanVideoToVideoPipeline": 16,
    "WanVACEPipeline": 16,
    "CogVideoXPipeline": 8,
    "CogVideoXImageToVideoPipeline": 8,
    "CogVideoXVideoToVideoPipeline": 8,
    "HunyuanVideoPipeline": 15,
    "LTXPipeline": 24,
    "LTXImageToVideoPipeline": 24,
    "MochiPipeline": 30,
}


def module_facts(module: Any) -> dict[str, Any]:
    """Class, parameter count, dtype(s), device(s) and offload hooks of one ``nn.Module``."""
    params = 0
    dtypes: dict[str, int] = {}
    devices: dict[str, int] = {}
    for p in module.parameters():
        n = p.numel()
        params += n
        dtypes[str(p.dtype).replace("torch.", "")] = dtypes.get(str(p.dtype).replace("torch.", ""), 0) + n
        devices[str(p.device)] = devices.get(str(p.device), 0) + n
    dtype = max(dtypes, key=lambda k: dtypes[k]) if dtypes else None
    device = max(devices, key=lambda k: devices[k]) if devices else None
    hooks = offload_hooks(module)
    return {
        "class": type(module).__name__,
        "parameters": params,
        "dtype": dtype,
        "dtypes": dtypes if len(dtypes) > 1 else None,
        "device": device,
        "devices": devices if len(devices) > 1 else None,
        "offload": hooks or None,
    }


def offload_hooks(module: Any) -> dict[str, int]:
    """Counts of accelerate / diffusers hook classes attached to ``module`` and its children."""
    out: dict[str, int] = {}
    for m in module.modules():
        hf = getattr(m, "_hf_hook", None)
        if hf is not None:
            for h in getattr(hf, "hooks", None) or [hf]:
                name = type(h).__name__
                out[name] = out.get(name, 0) + 1
        reg = getattr(m, "_diffusers_hook", None)
        if reg is not None:
            for h in getattr(reg, "hooks", {}).values():
                name = type(h).__name__
                out[name] = out.get(name, 0) + 1
    return out


def components_of(pipe: Any) -> dict[str, Any]:
    """``pipe.components`` (a dict passed in is returned as is)."""
    if isinstance(pipe, dict):
        return pipe
    return dict(getattr(pipe, "components", {}) or {})


def denoisers(pipe: Any) -> dict[str, Any]:
    """The pipeline's denoiser modules by component name (``transformer``, ``unet``, ...)."""
    comps = components_of(pipe)
    out = {}
    for name in DENOISER_NAMES:
        m = comps.get(name)
        if m is not None and hasattr(m, "register_forward_pre_hook"):
            out[name] = m
    return out


def text_encoders(pipe: Any) -> dict[str, Any]:
    comps = components_of(pipe)
    return {k: v for k, v in comps.items() if k.startswith("text_encoder") and hasattr(v, "register_forward_pre_hook")}


def detect_architecture(module: Any) -> dict[str, Any]:
    """Family of a denoiser read from its class and submodules.

    ``unet``: a UNet (down/up blocks); ``video_dit``: a 3-D (video) transformer;
    ``mmdit``: a joint-attention DiT in which text and image tokens have their own weights and
    attend together (SD3, Flux's dual-stream blocks); ``single_stream_dit``: a DiT whose
    blocks see one token stream (PixArt, Sana, DiT). ``joint_attention`` and
    ``single_stream_blocks`` say what was found; ``evidence`` says why.
    """
    cls = type(module).__name__
    sub_classes = {type(m).__name__ for m in module.modules()}
    joint = any("Joint" in c for c in sub_classes)
    for m in module.modules():
        if hasattr(m, "add_q_proj") and getattr(m, "add_q_proj", None) is not None:
            joint = True
            break
    single_blocks = hasattr(module, "single_transformer_blocks")
    evidence: list[str] = []
    if "UNet" in cls or (hasattr(module, "down_blocks") and hasattr(module, "up_blocks")):
        family = "unet"
        evidence.append(f"{cls} has down/up blocks")
    elif "3D" in cls or "Video" in cls:
        family = "video_dit"
        evidence.append(f"{cls} is a 3-D (video) transformer")
    elif joint:
        family = "mmdit"
        evidence.append("attention with separate context projections (add_q_proj) or joint blocks")
    elif "Transformer" in cls or "DiT" in cls:
        family = "single_stream_dit"
        evidence.append(f"{cls} is a transformer without joint-attention projections")
    else:
        family = "unknown"
        evidence.append(f"{cls} matches no known family")
    if joint and family != "mmdit":
        evidence.append("has joint (text+video) attention")
    if single_blocks:
        evidence.append("has single-stream blocks after the dual-stream ones")
    return {
        "family": family,
        "class": cls,
        "joint_attention": joint,
        "single_stream_blocks": single_blocks,
        "evidence": "; ".join(evidence),
    }


def attention_backend(module: Any) -> dict[str, Any]:
    """Attention processors of ``module`` and the dispatch backend diffusers uses for them."""
    processors: dict[str, int] = {}
    backends: dict[str, int] = {}
    for m in module.modules():
        proc = getattr(m, "processor", None)
        if proc is None or not hasattr(m, "set_processor"):
            continue
        name = type(proc).__name__
        processors[name] = processors.get(name, 0) + 1
        b = getattr(proc, "_attention_backend", None)
        if b is not None:
            key = str(getattr(b, "value", b))
            backends[key] = backends.get(key, 0) + 1
    default: str | None = None
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        default = str(getattr(_AttentionBackendRegistry._active_backend, "value", _AttentionBackendRegistry._active_backend))
    except (ImportError, AttributeError) as exc:
        log.debug("diffusers attention registry not readable: %s", exc)
    if backends:
        backend: str | None = ", ".join(sorted(backends))
        source = "set on the attention processors (set_attention_backend)"
    elif default is not None and any(
        p.endswith(("AttnProcessor", "AttnProcessor2_0")) or "Attn" in p for p in processors
    ):
        backend = default
        source = "diffusers' global attention dispatch default (DIFFUSERS_ATTN_BACKEND)"
    else:
        backend = None
        source = "no attention processor found"
    if processors and all(p in ("AttnProcessor2_0", "FusedAttnProcessor2_0") for p in processors):
        backend = "torch scaled_dot_product_attention"
        source = "AttnProcessor2_0 calls torch.nn.functional.scaled_dot_product_attention"
    return {"backend": backend, "source": source, "processors": processors}


def pipeline_facts(pipe: Any, components: dict[str, Any] | None = None) -> dict[str, Any]:
    """``run.metadata["pipeline"]``: class, components, architecture, attention backend."""
    comps: dict[str, Any] = {}
    all_comps = components if components is not None else components_of(pipe)
    for name, c in all_comps.items():
        if c is None:
            continue
        if hasattr(c, "parameters") and hasattr(c, "modules"):
            comps[name] = module_facts(c)
        else:
            comps[name] = {"class": type(c).__name__}
    dens = denoisers(all_comps)
    arch = detect_architecture(next(iter(dens.values()))) if dens else {"family": "unknown", "evidence": "no denoiser"}
    attn = attention_backend(next(iter(dens.values()))) if dens else {"backend": None, "source": "no denoiser"}
    exec_dev: str | None = None
    try:
        exec_dev = str(pipe._execution_device)
    except (AttributeError, RuntimeError) as exc:
        log.debug("execution device unknown: %s", exc)
    return {
        "class": type(pipe).__name__,
        "components": comps,
        "denoisers": list(dens),
        "text_encoders": list(text_encoders(all_comps)),
        "architecture": arch,
        "attention": attn,
        "execution_device": exec_dev,
        "total_parameters": sum(int(v.get("parameters") or 0) for v in comps.values()),
    }


def tensor_spec(x: Any) -> Any:
    """A hashable description of a forward's inputs (tensors as shape and dtype)."""
    import torch

    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), str(x.dtype).replace("torch.", ""))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(tensor_spec(v) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple(sorted((str(k), tensor_spec(v)) for k, v in x.items())))
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return ("obj", type(x).__name__)


_Tensor: Any = None
_SCALARS = (bool, int, float, str)


def _tensor_type() -> Any:
    global _Tensor
    if _Tensor is None:
        import torch

        _Tensor = torch.Tensor
    return _Tensor


def fast_spec(x: Any) -> Any:
    """What :func:`tensor_spec` describes, built cheaply enough to run on every denoiser forward.

    Tensors become ``("T", torch.Size, torch.dtype)``; containers keep their order (no sorting,
    no string conversion). Equal inputs give equal, hashable results;
    :func:`normalize_spec` turns one into the :func:`tensor_spec` form (once per distinct spec).
    """
    tensor = _Tensor if _Tensor is not None else _tensor_type()
    if isinstance(x, tensor):
        return ("T", x.shape, x.dtype)
    if x is None or isinstance(x, _SCALARS):
        return x
    if isinstance(x, dict):
        items: list[tuple[Any, Any]] = []
        for k, v in x.items():  # leaves inline: this runs on every forward
            if isinstance(v, tensor):
                items.append((k, ("T", v.shape, v.dtype)))
            elif v is None or isinstance(v, _SCALARS):
                items.append((k, v))
            else:
                items.append((k, fast_spec(v)))
        return ("dict", tuple(items))
    if isinstance(x, (list, tuple)):
        vals: list[Any] = []
        for v in x:
            if isinstance(v, tensor):
                vals.append(("T", v.shape, v.dtype))
            elif v is None or isinstance(v, _SCALARS):
                vals.append(v)
            else:
                vals.append(fast_spec(v))
        return (type(x).__name__, tuple(vals))
    return ("obj", type(x).__name__)


def normalize_spec(spec: Any) -> Any:
    """The :func:`tensor_spec` form of a :func:`fast_spec` result (shapes as tuples, dtype names, dict keys sorted)."""
    if isinstance(spec, tuple) and spec:
        tag = spec[0]
        if tag == "T":
            return ("T", tuple(spec[1]), str(spec[2]).replace("torch.", ""))
        if tag == "dict":
            return ("dict", tuple(sorted((str(k), normalize_spec(v)) for k, v in spec[1])))
        if tag in ("list", "tuple") or (isinstance(tag, str) and len(spec) == 2 and isinstance(spec[1], tuple)
                                        and tag != "obj"):
            return (tag, tuple(normalize_spec(v) for v in spec[1]))
    return spec


def spec_batch(args_spec: Any, kwargs_spec: Any, names: tuple[str, ...] = ("hidden_states", "sample", "x")) -> int | None:
    """Batch size (first dimension) of the denoiser input in normalized or fast specs.

    The first of ``names`` passed as a keyword tensor, else the first positional tensor.
    """
    if isinstance(kwargs_spec, tuple) and kwargs_spec and kwargs_spec[0] == "dict":
        by_name = dict(kwargs_spec[1])
        for n in names:
            v = by_name.get(n)
            if isinstance(v, tuple) and v and v[0] == "T":
                return int(v[1][0]) if len(v[1]) else None
    if isinstance(args_spec, tuple) and len(args_spec) == 2 and isinstance(args_spec[1], tuple):
        for v in args_spec[1]:
            if isinstance(v, tuple) and v and v[0] == "T":
                return int(v[1][0]) if len(v[1]) else None
    return None


def first_tensor_shape(args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, ...]) -> list[int] | None:
    import torch

    for n in names:
        v = kwargs.get(n)
        if isinstance(v, torch.Tensor):
            return list(v.shape)
    for v in args:
        if isinstance(v, torch.Tensor):
            return list(v.shape)
    return None


def output_tensor(out: Any) -> Any:
    """The tensor in a VAE output (``DecoderOutput.sample``, a tuple, ``latent_dist``)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for attr in ("sample", "latent_dist", "latents"):
        v = getattr(out, attr, None)
        if v is not None:
            if isinstance(v, torch.Tensor):
                return v
            m = getattr(v, "mean", None)  # DiagonalGaussianDistribution
            if isinstance(m, torch.Tensor):
                return m
    if isinstance(out, (tuple, list)) and out:
        return output_tensor(out[0])
    return None
