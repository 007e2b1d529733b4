"""Build the torch modules of a catalogue component (meta device for the estimator, real random
weights for the demo). Needs torch and diffusers (transformers for text encoders), imported lazily.
"""

from __future__ import annotations

from typing import Any

from genprof.catalog import ComponentSpec


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
