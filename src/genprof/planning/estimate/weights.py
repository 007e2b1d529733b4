"""Weights: bytes per component from meta-built modules, and what each offload mode keeps on the GPU.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

from genprof.catalog import ComponentSpec, ModelSpec
from genprof.planning.build import build_component
from genprof.planning.estimate import cache
from genprof.planning.estimate.results import ComponentWeights
from genprof.planning.estimate.settings import _TORCH_DTYPES
from genprof.planning.estimate.trace import MiB, _round_alloc, _round_reserved, _torch

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ weights
@functools.lru_cache(maxsize=64)
def _meta_module(model: str, comp_name: str, dtype_name: str) -> Any:
    spec = _SPEC_REGISTRY[model]
    comp = spec.component(comp_name)
    torch = _torch()
    dt = getattr(torch, _TORCH_DTYPES[dtype_name])
    return build_component(comp, device="meta", dtype=dt)


_SPEC_REGISTRY: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    old = _SPEC_REGISTRY.get(spec.name)
    if old is not None and old != spec:
        _meta_module.cache_clear()
    _SPEC_REGISTRY[spec.name] = spec


def _fp8_eligible(module: Any) -> set[str]:
    """Names of parameters that ``enable_layerwise_casting`` stores in fp8 (diffusers' own rules)."""
    import re

    torch = _torch()
    supported: tuple[type, ...]
    try:
        from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS as supported
    except ImportError:  # other diffusers versions: the layer types diffusers 0.42 casts
        nn = torch.nn
        supported = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
    try:
        from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
    except ImportError:
        DEFAULT_SKIP_MODULES_PATTERN = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$")
    patterns = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(getattr(module, "_skip_layerwise_casting_patterns", None) or ())
    names: set[str] = set()
    for name, sub in module.named_modules():
        if not isinstance(sub, supported):
            continue
        if any(re.search(p, name) for p in patterns):
            continue
        leaf: Any = sub
        for pname, _ in leaf.named_parameters(recurse=False):
            names.add(f"{name}.{pname}" if name else pname)
    return names


def component_weights(spec: ModelSpec, comp: ComponentSpec, dtype: str) -> ComponentWeights:
    """Bytes of ``comp``'s weights at ``dtype`` and what each offload mode keeps resident (disk-cached)."""
    _register(spec)
    key = cache.cache_key("weights", spec, comp, dtype)
    hit = cache.load(key)
    if hit is not None:
        return ComponentWeights(**hit)
    cw = _component_weights(spec, comp, dtype)
    cache.store(key, dataclasses.asdict(cw))
    return cw


def _component_weights(spec: ModelSpec, comp: ComponentSpec, dtype: str) -> ComponentWeights:
    torch = _torch()
    m = _meta_module(spec.name, comp.name, dtype)
    tensors = dict(m.named_parameters())
    tensors.update(dict(m.named_buffers()))
    nbytes = {k: t.numel() * t.element_size() for k, t in tensors.items()}
    params = sum(t.numel() for t in m.parameters())
    weight = sum(_round_alloc(b) for b in nbytes.values())
    reserved = sum(_round_reserved(b) for b in nbytes.values())
    # group offloading, block level: direct children that are ModuleList/Sequential are blocks
    blocks: list[int] = []
    outside = 0
    for name, child in m.named_children():
        sizes = {k: v for k, v in nbytes.items() if k.startswith(name + ".")}
        if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
            for i in range(len(child)):
                blocks.append(sum(v for k, v in sizes.items() if k.startswith(f"{name}.{i}.")))
        else:
            outside += sum(sizes.values())
    outside += sum(v for k, v in nbytes.items() if "." not in k)
    # leaf modules' own parameters; a tied parameter (UMT5's shared / embed_tokens) counts once
    seen: set[int] = set()
    leaves: list[int] = []
    for sub in m.modules():
        if list(sub.children()):
            continue
        own = [p for p in sub.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        leaves.append(sum(p.numel() * p.element_size() for p in own))
    leaves.sort(reverse=True)
    fp8_names = _fp8_eligible(m) if comp.role == "denoiser" else set()
    fp8 = sum((tensors[n].numel() if n in fp8_names else nbytes[n]) for n in nbytes)
    return ComponentWeights(
        name=comp.name,
        role=comp.role,
        class_name=comp.class_name,
        params=int(params),
        weight_bytes=int(weight),
        reserved_bytes=int(reserved),
        outside_blocks_bytes=int(outside),
        largest_block_bytes=int(max(blocks) if blocks else 0),
        largest_leaf_bytes=int(leaves[0] if leaves else 0),
        fp8_bytes=int(fp8),
        dtype=dtype,
        second_leaf_bytes=int(leaves[1] if len(leaves) > 1 else 0),
    )


def _resident(cw: ComponentWeights, offload: str, fp8: bool) -> tuple[int, int]:
    """(allocated, reserved) weight bytes of ``cw`` in the default stream's pool while it runs.

    With ``use_stream=True`` diffusers copies the prefetched groups inside ``with stream:``, so
    their blocks belong to the side stream's pool (see :func:`_side_pool`), which activations on
    the default stream never reuse; only the unmatched group (``stream=None`` in diffusers) of a
    block-level component stays in the default pool.
    """
    full = cw.fp8_bytes if (fp8 and cw.role == "denoiser") else cw.weight_bytes
    scale = full / cw.weight_bytes if cw.weight_bytes else 1.0
    res_full = int(cw.reserved_bytes * scale)
    if offload in ("none", "model"):
        return full, res_full
    if offload == "group_block":
        b = min(int((cw.outside_blocks_bytes + cw.largest_block_bytes) * scale), full)
        return b, min(_round_reserved(b) + 16 * MiB, res_full)
    if offload == "group_block_stream":
        b = min(int(cw.outside_blocks_bytes * scale), full)
        return b, min(_round_reserved(b) + 16 * MiB, res_full)
    if offload == "group_leaf_stream":
        return 0, 0
    # leaf-level group offloading without streams and sequential offload keep one leaf
    b = min(full, int(cw.largest_leaf_bytes * scale))
    return b, min(_round_reserved(b) + 16 * MiB, res_full)


def _side_pool(cw: ComponentWeights, offload: str, fp8: bool) -> int:
    """Reserved bytes of the side stream's pool for ``cw`` under streamed group offloading.

    The prefetch keeps the running group and the next one: two blocks (block level) or the two
    largest leaves (leaf level). The pool keeps its segments for the rest of the run.
    """
    full = cw.fp8_bytes if (fp8 and cw.role == "denoiser") else cw.weight_bytes
    scale = full / cw.weight_bytes if cw.weight_bytes else 1.0
    if offload == "group_block_stream":
        b = int(2 * cw.largest_block_bytes * scale)
    elif offload == "group_leaf_stream":
        b = int((cw.largest_leaf_bytes + cw.second_leaf_bytes) * scale)
    else:
        return 0
    return _round_reserved(b) + (16 * MiB if b else 0)


