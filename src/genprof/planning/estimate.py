"""Predict the peak GPU memory of a generation before any weight is loaded, without a GPU.

How (see ``docs/planning.md``):

1. **Weights.** Every component is built from its config on the ``meta`` device (no memory);
   its parameters and buffers give the bytes it takes at the chosen dtype, and its module tree
   gives what group or sequential offloading keeps on the GPU (the largest block or leaf, plus
   the parameters outside the block lists) and what layerwise fp8 storage saves.
2. **Activations.** Each component runs its real ``forward`` (the denoiser, the text encoders,
   ``vae.decode`` with tiling or slicing switched on when asked) on meta tensors of the real
   shapes, under a :class:`torch.utils._python_dispatch.TorchDispatchMode` that counts the bytes
   of every storage an operator creates and frees them when the last tensor using them dies:
   the peak of live bytes is the activation peak, as the caching allocator's ``allocated``
   would see it (sizes rounded up to 512 bytes like the allocator does). Attention calls
   (``F.scaled_dot_product_attention``) are replaced by an output of the right shape plus the
   workspace of the chosen backend: the math backend materialises the ``Lq x Lk`` score matrix
   (quadratic in tokens), flash / memory-efficient / cuDNN keep only a log-sum-exp (linear).
   Meta operators only compute shapes, so the full depth of a 14B model traces in about a
   second on one CPU core; no layer count is reduced.
3. **The allocator.** ``reserved`` is larger than ``allocated``: blocks are cached and
   fragmented. The model is ``reserved = weights_reserved + persistent + activations *
   factor[phase] + workspace``, with the factors and workspaces in :data:`CALIBRATION`, named,
   documented and meant to be refitted from ``bench/bench_estimate.py`` output with
   :func:`fit_calibration`.

Nothing here touches CUDA. Needs torch and diffusers (and transformers for text encoders).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from genprof.catalog import ComponentSpec, ModelSpec, get_config
from genprof.errors import MissingDependencyError, UsageError
from genprof.planning.build import build_component

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

DTYPES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4}

MiB = 1024**2
GiB = 1024**3

#: Allocator and workspace constants, used by :func:`reserved_model`:
#: ``reserved = max(weights_reserved_factor * Wr, Wr + kept + reserved_factor[phase] * activations + workspace)``.
#: Fitted with ``python bench/fit_estimate.py --data bench/results/estimate_h100_uncalibrated.json``
#: (NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, diffusers 0.42.1, 10 cases, 2026-11-22). CAUTION: that
#: bench built every component with random fp32 weights ON the GPU and then cast them, which leaves
#: the weights' segments partly empty (measured reserved/allocated 1.04-1.46 during text encoding there); weights loaded with
#: ``from_pretrained`` + ``.to("cuda")`` are packed (about 1.01 by the allocator model,
#: :class:`CachingAllocatorModel`). So these values over-predict (safe side) for loaded weights
#: until the fixed bench (weights built on the CPU, then ``.to("cuda")``) is re-run and refitted.
CALIBRATION: dict[str, float] = {
    # Fitted on bench/results/estimate_h100_realistic.json: 10 cases measured on the lent NVIDIA
    # H100 80GB HBM3 (torch 2.11.0+cu130, diffusers 0.42.1, 2026-11-22) with weights placed tensor by
    # tensor like from_pretrained + .to("cuda"); every case within 10% in-sample and leave-one-out
    # (bench/fit_estimate.py). An earlier fit (1.1825 / 1.0 / 2.78 / 1.77) was on a bench artefact:
    # weights initialised in fp32 on the GPU and cast, which leaves their segments half empty.
    # reserved / allocated of the weights' segments while resident (free space inside them is
    # reused by activations first); the allocator model predicts ~1.01 for loaded weights.
    "weights_reserved_factor": 1.0125,
    # reserved bytes per traced activation byte once activations outgrow the weights' free space:
    # every new large size needs a new segment (video VAE convolutions: 1.3-1.5 by the allocator model).
    "reserved_factor_text_encode": 1.68,
    "reserved_factor_denoise": 1.34,
    "reserved_factor_vae_decode": 1.65,
    # Video VAEs (Wan, CogVideoX, HunyuanVideo) decode latent frame by latent frame (tile by tile
    # with tiling) with a feature cache, so the same tensor sizes come back every frame and the
    # caching allocator reuses their blocks: replaying the meta trace through
    # CachingAllocatorModel gives 1.41 reserved per traced byte for the Wan 2.1 VAE at 480x832x81
    # against 1.79 for the SDXL VAE at 1024x1024. Fitted (fit_calibration) on the six video cases
    # of bench/results/estimate_h100_realistic.json: 1.59, leave-one-out 1.55-1.62 (docs/planning.md).
    # reserved_factor_vae_decode (1.65, all ten cases) stays for image VAEs.
    "reserved_factor_vae_decode_video": 1.59,
    # multiplies the traced activation peak (allocated) to cover what meta tracing cannot see:
    # kernels' temporary buffers, autocast copies. 1.0 = trust the trace (allocated errors <= 3%
    # except SD VAE decode, -11%, on the H100 data).
    "activation_factor_text_encode": 1.0,  # measured: allocated within 3%
    "activation_factor_denoise": 1.0,  # measured: allocated within 3%
    "activation_factor_vae_decode": 1.0,  # measured: within 3% for video VAEs
    # image VAEs (AutoencoderKL, 2-D convolutions): allocated above the baseline during decode is
    # 1.567 x the traced activation peak (+41 MiB), the same at 512, 768, 1024 and 1280 px for the SDXL
    # and Flux VAEs (bench/results/vae_decode_alloc_h100.json, H100, bf16, cuDNN on; 2.4-3.9x with cuDNN
    # off): the convolutions' cuDNN workspaces grow with the image, so they are in this factor and the
    # fixed conv workspace is not added to allocated. Reserved keeps its own fit (reserved_factor_vae_decode).
    "activation_factor_vae_decode_image": 1.567,
    # cuBLAS / cuBLASLt workspaces the caching allocator holds once GEMMs ran (bytes).
    "workspace_bytes": 64 * MiB,  # assumption (PyTorch's default cuBLAS workspace on sm90 is 32 MiB/stream)
    # cuDNN convolution workspace while the VAE decodes (bytes).
    "vae_conv_workspace_bytes": 256 * MiB,  # assumption
    # Block-level group offloading runs a component without top-level block lists (UMT5, CLIP: the
    # whole encoder is diffusers' "unmatched group") as one group, and never calls empty_cache
    # (accelerate's model offload does, after each offload). The freed weights' segments (one per
    # tensor: 32/80 MiB for UMT5-XXL) stay reserved, and later phases reuse only the part whose
    # free blocks are large enough for their tensors. Fraction of those freed bytes that later
    # phases do NOT reuse: fitted on bench/results/plan_wan_h100.json (group_block and
    # group_block_stream without VAE tiling: 13.87 / 14.18 GiB measured), 2026-11-22, H100.
    "group_freed_unreused_fraction": 0.6,
    # Group offloading of a UNet (skip connections kept across the whole forward) left about
    # 1.3-1.9 GiB more reserved than the same allocations under accelerate's sequential offload in
    # every group mode (bench/results/plan_sdxl_h100.json: group_leaf 4.37 GiB vs sequential 2.54 GiB
    # with the same 2.42 GiB allocated peak). Mechanism not identified (allocator fragmentation from
    # weight churn interleaved with long-lived skip tensors is the suspect); fitted as a fraction of
    # the UNet's weight bytes on the four SDXL group modes of that file (one UNet model: a fit, not a law).
    "group_unet_extra_fraction": 0.33,
    # Without offloading, a pipeline call never empties the cache between phases, so the segments
    # denoising left cached stay reserved while the VAE decodes. An image VAE's large 2-D
    # convolution tensors reuse only part of them: the decode's peak reserved in a whole call
    # exceeded the same decode from an emptied cache by this fraction of the denoise phase's
    # predicted cache (its peak reserved less its resident weights): 0.53 / 0.58 / 0.70 / 0.95 for
    # SD 1.5 / SDXL / SDXL tiled / Flux, mean 0.69 (bench/results/estimate_h100_seq.json, H100,
    # bench_estimate.py --sequence, session 4). Video VAEs decode frame by frame in small blocks and
    # reuse the cache: -0.06..+0.05 for CogVideoX, Wan 2.1 81 frames and Wan 2.2 (not applied).
    "carry_unreused_fraction_vae_decode_image": 0.69,
}

_CAL_ENV = "GENPROF_CALIBRATION"


def load_calibration(path: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """The constants to use: :data:`CALIBRATION`, updated from a JSON file when given.

    ``path`` defaults to the environment variable ``GENPROF_CALIBRATION``. Unknown keys are
    errors (a typo would silently keep a default).
    """
    cal = dict(CALIBRATION)
    p = path if path is not None else os.environ.get(_CAL_ENV)
    if not p:
        return cal
    try:
        data = json.loads(Path(p).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read calibration file {p}: {exc}") from exc
    data = data.get("calibration", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise UsageError(f"calibration file {p}: expected a JSON object of constant -> number")
    for k, v in data.items():
        if k not in cal:
            raise UsageError(f"calibration file {p}: unknown constant {k!r}; known: {', '.join(cal)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise UsageError(f"calibration file {p}: {k} must be a number >= 0, got {v!r}")
        cal[k] = float(v)
    return cal


# ------------------------------------------------------------------ results
@dataclass
class ComponentWeights:
    """Weight bytes of one component at the run dtype, and what offloading keeps resident."""

    name: str
    role: str
    class_name: str
    params: int
    weight_bytes: int
    reserved_bytes: int  # as the allocator holds them (per-tensor rounding)
    outside_blocks_bytes: int  # parameters not inside a top-level ModuleList (group block offload)
    largest_block_bytes: int
    largest_leaf_bytes: int
    fp8_bytes: int  # weight bytes with layerwise fp8 storage (only where applied)
    dtype: str
    second_leaf_bytes: int = 0  # the next largest leaf (tied parameters counted once): stream prefetch

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PhaseEstimate:
    """Peak of one phase. ``allocated`` and ``reserved`` are the caching allocator's figures."""

    name: str
    component: str
    resident_weights_bytes: int
    persistent_bytes: int
    activation_peak_bytes: int
    workspace_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    traced: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Estimate:
    """A memory estimate. ``peak_*`` are the maxima over :attr:`phases`."""

    model: str
    settings: dict[str, Any]
    components: list[ComponentWeights]
    phases: list[PhaseEstimate]
    calibration: dict[str, float]
    notes: list[str] = field(default_factory=list)
    trace_time_s: float | None = None

    @property
    def peak_allocated_bytes(self) -> int:
        return max(p.peak_allocated_bytes for p in self.phases)

    @property
    def peak_reserved_bytes(self) -> int:
        return max(p.peak_reserved_bytes for p in self.phases)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda p: p.peak_reserved_bytes).name

    def phase(self, name: str) -> PhaseEstimate:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def total_weight_bytes(self) -> int:
        return sum(c.weight_bytes for c in self.components)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": dict(self.settings),
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "peak_phase": self.peak_phase,
            "total_weight_bytes": self.total_weight_bytes,
            "components": [c.to_dict() for c in self.components],
            "phases": [p.to_dict() for p in self.phases],
            "calibration": dict(self.calibration),
            "notes": list(self.notes),
            "trace_time_s": self.trace_time_s,
            "method": "meta-device trace of live storage bytes + allocator factors (genprof.planning.estimate)",
        }


# ------------------------------------------------------------------ tracing
def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "memory estimates", "torch") from exc
    return torch


def _round_alloc(n: int) -> int:
    """The caching allocator rounds every request up to a multiple of 512 bytes."""
    return ((n + 511) // 512) * 512


def _round_reserved(n: int) -> int:
    """Bytes a tensor holds in reserved memory: small ones share 2 MiB segments, large ones round to 2 MiB."""
    if n <= MiB:
        return _round_alloc(n)
    return ((n + 2 * MiB - 1) // (2 * MiB)) * (2 * MiB)


class CachingAllocatorModel:
    """A model of PyTorch's CUDA caching allocator (native backend, one stream, no expandable segments).

    Requests round up to 512 bytes; up to 1 MiB they come from 2 MiB segments (small pool),
    up to 10 MiB from 20 MiB segments, larger ones get a segment rounded up to 2 MiB. A request
    takes the smallest free block that fits (best fit) and splits it when the rest is at least
    512 bytes (small pool) or more than 1 MiB (large pool); frees merge with free neighbours;
    :meth:`empty_cache` returns only segments with no live block. Used to explain reserved
    over allocated (see ``docs/planning.md``): e.g. replaying the parameter allocations of a
    model built in fp32 on the GPU then cast to bf16 leaves segments pinned by a few blocks,
    while ``.to("cuda")`` of loaded weights packs them (reserved/allocated about 1.01).
    """

    def __init__(self) -> None:
        import bisect

        self._bisect = bisect
        self._free: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}  # (size, segment, offset)
        self._segments: dict[int, tuple[int, bool, dict[int, list[Any]]]] = {}  # id -> (size, small, blocks)
        self._live: dict[int, tuple[int, int]] = {}
        self._next_segment = 0
        self._next_handle = 0
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0

    @staticmethod
    def segment_size(n: int) -> int:
        if n <= MiB:
            return 2 * MiB
        if n < 10 * MiB:
            return 20 * MiB
        return ((n + 2 * MiB - 1) // (2 * MiB)) * (2 * MiB)

    def malloc(self, nbytes: int) -> int:
        """Allocate; returns a handle for :meth:`free`."""
        n = max(512, _round_alloc(nbytes))
        small = n <= MiB
        pool = self._free[small]
        i = self._bisect.bisect_left(pool, (n, -1, -1))
        if i < len(pool):
            size, sid, off = pool.pop(i)
        else:
            size, sid, off = self.segment_size(n), self._next_segment, 0
            self._next_segment += 1
            self._segments[sid] = (size, small, {0: [size, False]})
            self.reserved += size
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        blocks = self._segments[sid][2]
        rest = size - n
        if (small and rest >= 512) or (not small and rest > MiB):
            blocks[off] = [n, True]
            blocks[off + n] = [rest, False]
            self._bisect.insort(pool, (rest, sid, off + n))
        else:
            blocks[off] = [size, True]
            n = size
        self.allocated += n
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        h = self._next_handle
        self._next_handle += 1
        self._live[h] = (sid, off)
        return h

    def free(self, handle: int) -> None:
        sid, off = self._live.pop(handle)
        _, small, blocks = self._segments[sid]
        pool = self._free[small]
        size = blocks.pop(off)[0]
        self.allocated -= size
        nxt = off + size
        if nxt in blocks and not blocks[nxt][1]:
            pool.remove((blocks[nxt][0], sid, nxt))
            size += blocks.pop(nxt)[0]
        prev = next((o for o, b in blocks.items() if o + b[0] == off), None)
        if prev is not None and not blocks[prev][1]:
            pool.remove((blocks[prev][0], sid, prev))
            size += blocks.pop(prev)[0]
            off = prev
        blocks[off] = [size, False]
        self._bisect.insort(pool, (size, sid, off))

    def empty_cache(self) -> None:
        for sid in list(self._segments):
            size, small, blocks = self._segments[sid]
            if len(blocks) == 1 and not blocks[0][1]:
                self._free[small].remove((size, sid, 0))
                self.reserved -= size
                del self._segments[sid]


class LiveBytes:
    """Counts live bytes of storages created by operators (meta or real), and their peak.

    A storage is counted once, however many views use it, from the operator that created it
    until the last tensor viewing it is freed. ``spike(extra)`` records a transient peak that
    is not a tensor (an attention backend's workspace).
    """

    def __init__(self) -> None:
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0
        self.ops = 0

    def _release(self, key: int) -> None:
        ent = self.live.get(key)
        if ent is None:
            return
        ent[1] -= 1
        if ent[1] <= 0:
            self.current -= ent[0]
            del self.live[key]

    def add(self, t: Any) -> None:
        st = t.untyped_storage()
        key = int(st._cdata)
        ent = self.live.get(key)
        if ent is None:
            ent = [_round_alloc(int(st.nbytes())), 0]
            self.live[key] = ent
            self.current += ent[0]
        ent[1] += 1
        weakref.finalize(t, self._release, key)
        if self.current > self.peak:
            self.peak = self.current

    def spike(self, extra: int) -> None:
        self.peak = max(self.peak, self.current + extra)


@functools.lru_cache(maxsize=1)
def _modes() -> tuple[type, type]:
    torch = _torch()
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    sdpa = torch.nn.functional.scaled_dot_product_attention

    class _Track(TorchDispatchMode):
        def __init__(self, counter: LiveBytes) -> None:
            super().__init__()
            self.counter = counter

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            self.counter.ops += 1
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.counter.add(t)
            return out

    class _Attention(TorchFunctionMode):
        def __init__(self, counter: LiveBytes, backend: str) -> None:
            super().__init__()
            self.counter = counter
            self.backend = backend
            self.calls = 0
            self.max_tokens = 0
            self.flops = 0.0  # QK^T and PV matmuls of every attention call: 4 * B*H * Lq * Lk * D

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is not sdpa:
                return func(*args, **kwargs)
            qkv = list(args[:3]) + [kwargs[n] for n in ("query", "key", "value") if n in kwargs]
            q, k, v = qkv[:3]
            self.calls += 1
            lq, lk = int(q.shape[-2]), int(k.shape[-2])
            self.max_tokens = max(self.max_tokens, lq, lk)
            bh = q.numel() // max(1, q.shape[-1] * lq)
            esize = q.element_size()
            self.flops += 4.0 * bh * lq * lk * int(q.shape[-1])
            if self.backend == "math":
                # scores and softmax(scores), both Lq x Lk per head, alive together
                extra = 2 * _round_alloc(bh * lq * lk * esize)
            else:
                extra = _round_alloc(bh * lq * 4)  # log-sum-exp, fp32
            self.counter.spike(extra)
            return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)

    return _Track, _Attention


@contextlib.contextmanager
def trace_live_bytes(backend: str = "flash") -> Iterator[tuple[LiveBytes, Any]]:
    """Count live bytes of everything created inside the block (see :class:`LiveBytes`)."""
    torch = _torch()
    track_cls, attn_cls = _modes()
    counter = LiveBytes()
    attn = attn_cls(counter, backend)
    with torch.no_grad(), track_cls(counter), attn:
        yield counter, attn


# ------------------------------------------------------------------ weights
@functools.lru_cache(maxsize=64)
def _meta_module(model: str, comp_name: str, dtype_name: str) -> Any:
    spec = _SPEC_REGISTRY[model]
    comp = spec.component(comp_name)
    torch = _torch()
    dt = getattr(torch, _TORCH_DTYPES[dtype_name])
    return build_component(comp, device="meta", dtype=dt)


_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
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
    """Bytes of ``comp``'s weights at ``dtype`` and what each offload mode keeps resident."""
    torch = _torch()
    _register(spec)
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


# ------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class Generation:
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


def _denoiser_inputs(spec: ModelSpec, gen: Generation, batch: int) -> dict[str, Any]:
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
    raise UsageError(
        f"no input recipe for denoiser class {cls}; supported: WanTransformer3DModel, UNet2DConditionModel, "
        "FluxTransformer2DModel, QwenImageTransformer2DModel, HunyuanVideoTransformer3DModel, "
        "CogVideoXTransformer3DModel"
    )


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


# ------------------------------------------------------------------ phases
@functools.lru_cache(maxsize=256)
def _trace_denoiser(model: str, gen: Generation, batch: int) -> tuple[int, int, int, str | None]:
    spec = _SPEC_REGISTRY[model]
    m = _meta_module(model, spec.denoiser.name, gen.dtype)
    inputs = _denoiser_inputs(spec, gen, batch)
    try:
        with trace_live_bytes(gen.attention_backend) as (counter, attn):
            out = m(**inputs)
            del out
        _ATTN_FLOPS[(model, gen, batch)] = attn.flops
        return counter.peak, attn.max_tokens, counter.ops, None
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError) as exc:
        log.warning("tracing %s on the meta device failed: %s", spec.denoiser.class_name, exc)
        return 0, 0, 0, f"{type(exc).__name__}: {exc}"


_ATTN_FLOPS: dict[tuple[str, Generation, int], float] = {}
"""Attention FLOPs of one denoiser call, by the :func:`_trace_denoiser` key (filled by the trace)."""


@functools.lru_cache(maxsize=256)
def _trace_text_encoder(model: str, comp_name: str, dtype: str, batch: int, backend: str) -> tuple[int, str | None]:
    spec = _SPEC_REGISTRY[model]
    comp = spec.component(comp_name)
    m = _meta_module(model, comp_name, dtype)
    torch = _torch()
    ids = torch.zeros(batch, comp.seq_len or 77, dtype=torch.long, device="meta")
    try:
        with trace_live_bytes(backend) as (counter, _):
            out = m(input_ids=ids, output_hidden_states=comp.output_hidden_states)
            del out
        return counter.peak, None
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError, AttributeError) as exc:
        log.info("tracing %s on the meta device failed (%s); using the analytic estimate", comp.class_name, exc)
        return 0, f"{type(exc).__name__}: {exc}"


def _text_analytic(comp: ComponentSpec, batch: int, esize: int) -> int:
    """Fallback for a text encoder that cannot run on meta: hidden states kept plus one MLP."""
    cfg = comp.config.get("text_config", comp.config)
    hidden = int(cfg.get("hidden_size") or cfg.get("d_model") or 1024)
    inter = int(cfg.get("intermediate_size") or cfg.get("d_ff") or 4 * hidden)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("num_layers") or 1)
    seq = comp.seq_len or 77
    kept = (layers + 1) if comp.output_hidden_states else 2
    vocab = int(cfg.get("vocab_size") or 0) if comp.class_name.endswith("ForConditionalGeneration") else 0
    return batch * seq * (hidden * kept + 3 * inter + vocab) * esize


_VAE_5D = ("AutoencoderKLWan", "AutoencoderKLQwenImage")


@functools.lru_cache(maxsize=256)
def _trace_vae_decode(model: str, gen: Generation, batch: int) -> tuple[int, int, str | None]:
    """(activation peak, output bytes, error) of ``vae.decode``; also fills :data:`_VAE_CALLS`."""
    spec = _SPEC_REGISTRY[model]
    m = _meta_module(model, spec.vae.name, gen.vae_dtype)
    torch = _torch()
    lf, lh, lw = gen.latent_shape(spec)
    dt = getattr(torch, _TORCH_DTYPES[gen.vae_dtype])
    if spec.kind == "video" or spec.vae.class_name in _VAE_5D:
        z = torch.empty(batch, spec.latent_channels, lf, lh, lw, device="meta", dtype=dt)
    else:
        z = torch.empty(batch, spec.latent_channels, lh, lw, device="meta", dtype=dt)
    decoder = getattr(m, "decoder", None)
    calls = [0]
    hook = decoder.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) if decoder is not None else None
    with _vae_modes(m, gen.vae_tiling, gen.vae_slicing):
        try:
            with trace_live_bytes(gen.attention_backend) as (counter, _):
                out = m.decode(z, return_dict=False)[0]
                out_bytes = _round_alloc(out.numel() * out.element_size())
                del out
            _VAE_CALLS[(model, gen, batch)] = (calls[0], *_decode_weights(m))
            return counter.peak, out_bytes, None
        except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError) as exc:
            log.warning("tracing %s.decode on the meta device failed: %s", spec.vae.class_name, exc)
            return 0, 0, f"{type(exc).__name__}: {exc}"
        finally:
            if hook is not None:
                hook.remove()


_VAE_CALLS: dict[tuple[str, Generation, int], tuple[int, int, int]] = {}
"""Per :func:`_trace_vae_decode` key: (decoder forward calls, decode weight bytes, decode leaves with weights).

A video VAE calls its decoder once per latent frame, and with tiling once per tile and latent frame
(Wan 2.1 at 480x832x81: 21 calls untiled, 315 tiled); an offloading hook moves the decoder's weights
at every call, so the plan's time model needs the count.
"""


def _decode_weights(vae: Any) -> tuple[int, int]:
    """(weight bytes, leaf modules with weights) of what ``decode`` runs: ``decoder`` and ``post_quant_conv``."""
    nbytes = leaves = 0
    for name in ("decoder", "post_quant_conv"):
        sub = getattr(vae, name, None)
        if sub is None:
            continue
        for mod in sub.modules():
            own = list(mod.parameters(recurse=False))
            if own and not list(mod.children()):
                leaves += 1
            nbytes += sum(_round_alloc(p.numel() * p.element_size()) for p in own)
    return nbytes, leaves


@contextlib.contextmanager
def _vae_modes(vae: Any, tiling: bool, slicing: bool) -> Iterator[None]:
    old_tiling = getattr(vae, "use_tiling", False)
    old_slicing = getattr(vae, "use_slicing", False)
    try:
        if tiling:
            if not hasattr(vae, "enable_tiling"):
                raise UsageError(f"{type(vae).__name__} has no tiled decoding (enable_tiling)")
            vae.enable_tiling()
        elif hasattr(vae, "use_tiling"):
            vae.use_tiling = False
        if hasattr(vae, "use_slicing"):
            vae.use_slicing = bool(slicing)
        yield
    finally:
        if hasattr(vae, "use_tiling"):
            vae.use_tiling = old_tiling
        if hasattr(vae, "use_slicing"):
            vae.use_slicing = old_slicing


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


def estimate(
    pipe_or_config: Any,
    *,
    height: int | None = None,
    width: int | None = None,
    num_frames: int | None = None,
    batch_size: int = 1,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    dtype: str = "bf16",
    offload: str = "none",
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    attention_backend: str = "flash",
    layerwise_fp8: bool = False,
    vae_dtype: str | None = None,
    calibration: Mapping[str, float] | None = None,
) -> Estimate:
    """Predict peak GPU memory (allocated and reserved) of one generation, by component and phase.

    ``pipe_or_config`` is a model name or alias from :mod:`genprof.catalog`,
    a diffusers model folder (``model_index.json`` + component ``config.json`` files), a
    :class:`ModelSpec`, or a loaded diffusers pipeline (only its configs are read). Sizes default
    to the model's defaults. ``offload`` is one of :data:`OFFLOAD_MODES`; ``attention_backend``
    one of :data:`ATTENTION_BACKENDS`. No GPU and no weights are needed.
    """
    spec = _resolve(pipe_or_config)
    _register(spec)
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)
    if offload not in OFFLOAD_MODES:
        raise UsageError(f"offload {offload!r} is not one of {', '.join(OFFLOAD_MODES)}")
    if attention_backend not in ATTENTION_BACKENDS:
        raise UsageError(f"attention_backend {attention_backend!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
    h = int(height or spec.default_height)
    w = int(width or spec.default_width)
    f = int(num_frames or spec.default_num_frames) if spec.kind == "video" else 1
    s = spec.vae_scale_factor_spatial * (2 if spec.patch_size[1] == 2 else 1)
    if h <= 0 or w <= 0 or h % s or w % s:
        raise UsageError(f"{spec.name}: height and width must be positive multiples of {s}, got {h}x{w}")
    if spec.kind == "video" and (f < 1 or (f - 1) % spec.vae_scale_factor_temporal):
        k = spec.vae_scale_factor_temporal
        raise UsageError(f"{spec.name}: num_frames must be {k}*n+1 (e.g. {k * ((f - 1) // k) + 1}), got {f}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    vdt = vae_dtype or ("fp32" if (spec.vae_upcast_fp16 and dtype == "fp16") else dtype)
    vdt = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(vdt, vdt)
    gen = Generation(
        height=h,
        width=w,
        num_frames=f,
        batch_size=int(batch_size),
        num_inference_steps=int(num_inference_steps or spec.default_steps),
        guidance_scale=float(spec.default_guidance_scale if guidance_scale is None else guidance_scale),
        dtype=dtype,
        offload=offload,
        vae_tiling=bool(vae_tiling),
        vae_slicing=bool(vae_slicing),
        attention_backend=attention_backend,
        layerwise_fp8=bool(layerwise_fp8),
        vae_dtype=vdt,
    )
    cal = dict(load_calibration())
    if calibration:
        for key, val in calibration.items():
            if key not in cal:
                raise UsageError(f"unknown calibration constant {key!r}; known: {', '.join(cal)}")
            cal[key] = float(val)
    t0 = time.perf_counter()
    result = _estimate(spec, gen, cal)
    result.trace_time_s = time.perf_counter() - t0
    return result


def _estimate(spec: ModelSpec, gen: Generation, cal: dict[str, float]) -> Estimate:
    esize = DTYPES[gen.dtype]
    notes: list[str] = []
    weights = [
        component_weights(spec, c, gen.vae_dtype if c.role == "vae" else gen.dtype) for c in spec.components
    ]
    by_name = {c.name: c for c in weights}
    cfgp = gen.cfg_passes(spec)
    b = gen.batch_size
    lf, lh, lw = gen.latent_shape(spec)
    latent_fp32 = _nbytes(b, spec.latent_channels, lf, lh, lw, esize=4)
    te_specs = spec.text_encoders
    embeds = 0
    for c in te_specs:
        cfg = c.config.get("text_config", c.config)
        hid = int(cfg.get("hidden_size") or cfg.get("d_model") or 768)
        embeds += _nbytes(b * cfgp, c.seq_len or 77, hid, esize=esize)

    def weights_on_gpu(active: list[str]) -> tuple[int, int]:
        alloc = res = 0
        for cw in weights:
            fp8 = gen.layerwise_fp8
            if gen.offload == "none":
                a, r = _resident(cw, "none", fp8)
            elif cw.name in active:
                a, r = _resident(cw, gen.offload, fp8)
            else:
                continue
            alloc += a
            res += r
        return alloc, res

    leaf_level = gen.offload in ("sequential", "group_leaf")

    def leaf_weights(active: list[str]) -> tuple[tuple[int, int], tuple[int, int] | None]:
        # leaf-level and sequential offload: one leaf on the GPU at a time, components run one after
        # another, so the largest leaf of the phase (not a sum over its components); the activations
        # live beside a smaller leaf (the second largest bounds it)
        if not leaf_level:
            return weights_on_gpu(active), None
        big = small = (0, 0)
        for n in active:
            cw = by_name[n]
            b = _resident(cw, gen.offload, gen.layerwise_fp8)
            sm = _resident(replace(cw, largest_leaf_bytes=cw.second_leaf_bytes), gen.offload, gen.layerwise_fp8)
            big, small = max(big, b), max(small, sm)
        return big, small

    def model_offload_max(active: list[str]) -> tuple[int, int]:
        # enable_model_cpu_offload: one component of the phase at a time
        best = (0, 0)
        for n in active:
            a, r = _resident(by_name[n], "model", gen.layerwise_fp8)
            if a > best[0]:
                best = (a, r)
        return best

    phases: list[PhaseEstimate] = []
    ws = int(cal["workspace_bytes"])

    # text encoding: each encoder in turn; the negative prompt is a second call of the same size
    te_peak = 0
    te_detail: dict[str, Any] = {}
    traced_all = True
    for c in te_specs:
        peak, err = _trace_text_encoder(spec.name, c.name, gen.dtype, b, gen.attention_backend)
        if err is not None:
            traced_all = False
            peak = _text_analytic(c, b, esize)
            notes.append(f"{c.name} ({c.class_name}) could not run on the meta device; analytic estimate used ({err[:120]})")
        te_detail[c.name] = {"activation_peak_bytes": peak, "traced": err is None}
        te_peak = max(te_peak, peak)
    names = [c.name for c in te_specs]
    (wa, wr), with_act = ((model_offload_max(names), None) if gen.offload == "model" else leaf_weights(names))
    act = int(te_peak * cal["activation_factor_text_encode"])
    persistent = embeds
    phases.append(_phase("text_encode", ",".join(names), wa, wr, persistent, act, ws, cal["reserved_factor_text_encode"], traced_all, te_detail,
                         cal["weights_reserved_factor"], with_act))

    # denoising: one call with batch*cfg (batched CFG) or cfg calls of batch (separate)
    den = spec.denoiser
    call_batch = b * cfgp if spec.cfg_mode == "batched" else b
    den_key = replace(gen, offload="none", vae_tiling=False, vae_slicing=False, layerwise_fp8=False,
                      num_inference_steps=0, guidance_scale=0.0, vae_dtype=gen.dtype)
    peak, tokens, ops, err = _trace_denoiser(spec.name, den_key, call_batch)
    if err is not None:
        raise UsageError(f"cannot estimate {den.class_name} activations on the meta device: {err}")
    inputs = _input_bytes(_denoiser_inputs(spec, gen, call_batch))
    noise_keep = _nbytes(b, spec.latent_channels, lf, lh, lw, esize=esize) if (cfgp == 2 and spec.cfg_mode == "separate") else 0
    # latents (fp32) + scheduler step temporaries (about two more latent-sized fp32 tensors)
    persistent = embeds + 3 * latent_fp32 + inputs + noise_keep
    act = int(peak * cal["activation_factor_denoise"])
    (wa, wr), with_act = leaf_weights([den.name])
    if gen.offload == "model":
        wa, wr = model_offload_max([den.name])
    phases.append(
        _phase(
            "denoise",
            den.name,
            wa,
            wr,
            persistent,
            act,
            ws,
            cal["reserved_factor_denoise"],
            True,
            {
                "call_batch": call_batch,
                "calls_per_step": 1 if spec.cfg_mode == "batched" or cfgp == 1 else cfgp,
                "tokens": tokens,
                "traced_ops": ops,
                "input_bytes": inputs,
                "attention_flops_per_call": _ATTN_FLOPS.get((spec.name, den_key, call_batch), 0.0),
                "latent_frames": lf,
            },
            cal["weights_reserved_factor"],
            with_act,
        )
    )

    # VAE decode
    vae_key = replace(gen, offload="none", layerwise_fp8=False, num_inference_steps=0, guidance_scale=0.0, dtype=gen.vae_dtype)
    vpeak, out_bytes, verr = _trace_vae_decode(spec.name, vae_key, b)
    dec_calls, dec_bytes, dec_leaves = _VAE_CALLS.get((spec.name, vae_key, b), (1, 0, 0))
    if verr is not None:
        raise UsageError(f"cannot estimate {spec.vae.class_name}.decode on the meta device: {verr}")
    vae_in = _nbytes(b, spec.latent_channels, lf, lh, lw, esize=DTYPES[gen.vae_dtype])
    persistent = latent_fp32 + vae_in
    act = int(vpeak * cal["activation_factor_vae_decode"])
    video_vae = spec.kind == "video"
    # image VAEs: allocated from the measured factor, which includes the convolution workspaces
    alloc_act_ws = None if video_vae else (int(vpeak * cal["activation_factor_vae_decode_image"]), ws)
    (wa, wr), with_act = leaf_weights([spec.vae.name])
    if gen.offload == "model":
        wa, wr = model_offload_max([spec.vae.name])
    phases.append(
        _phase(
            "vae_decode",
            spec.vae.name,
            wa,
            wr,
            persistent,
            act,
            ws + int(cal["vae_conv_workspace_bytes"]),
            cal["reserved_factor_vae_decode_video" if video_vae else "reserved_factor_vae_decode"],
            True,
            {"output_bytes": out_bytes, "tiling": gen.vae_tiling, "slicing": gen.vae_slicing,
             "decoder_calls": dec_calls, "decoder_weight_bytes": dec_bytes, "decoder_leaves": dec_leaves},
            cal["weights_reserved_factor"],
            with_act,
            alloc_act_ws,
        )
    )
    _offload_cache(phases, weights, spec, gen, cal)
    if gen.attention_backend == "math":
        notes.append("math attention: the Lq x Lk score matrix is materialised (quadratic in tokens)")
    if gen.offload != "none":
        notes.append(f"offload {gen.offload}: weights not on the GPU live in host RAM (pinned for streamed group offloading)")
    settings = {
        "height": gen.height,
        "width": gen.width,
        "num_frames": gen.num_frames,
        "batch_size": gen.batch_size,
        "num_inference_steps": gen.num_inference_steps,
        "guidance_scale": gen.guidance_scale,
        "cfg_mode": spec.cfg_mode,
        "cfg_passes": cfgp,
        "dtype": gen.dtype,
        "vae_dtype": gen.vae_dtype,
        "offload": gen.offload,
        "vae_tiling": gen.vae_tiling,
        "vae_slicing": gen.vae_slicing,
        "attention_backend": gen.attention_backend,
        "layerwise_fp8": gen.layerwise_fp8,
        "latent_shape": [b, spec.latent_channels, lf, lh, lw] if spec.kind == "video" else [b, spec.latent_channels, lh, lw],
    }
    return Estimate(model=spec.name, settings=settings, components=weights, phases=phases, calibration=cal, notes=notes)


def _offload_cache(phases: list[PhaseEstimate], weights: list[ComponentWeights], spec: ModelSpec, gen: Generation,
                   cal: Mapping[str, float]) -> None:
    """Carry the allocator's cache from phase to phase (in place) where nothing empties it.

    Reserved memory only grows during a generation unless someone calls ``empty_cache``; accelerate's
    model offload does after each offload (``offload="model"``: phases stay independent). Without
    offloading, only an image VAE's decode is raised, by the part of the denoise cache it cannot
    reuse (:func:`_image_decode_carry`). Diffusers' group offloading and accelerate's sequential
    offload never empty it either; for them, in this order:

    * each phase's peak is at least the previous one's (segments stay reserved);
    * block-level group offloading frees whole components (the unmatched group) after they ran;
      a fraction ``group_freed_unreused_fraction`` of their segments is not reusable by later phases;
    * streamed groups live in the side stream's pool (:func:`_side_pool`), added to every phase;
    * for a UNet denoiser under group offloading, ``group_unet_extra_fraction`` of its weight bytes
      from the denoising phase on (fitted; see :data:`CALIBRATION`).
    """
    mode = gen.offload
    if mode == "none":
        _image_decode_carry(phases, spec, cal)
        return
    if mode == "model":
        return
    fp8 = gen.layerwise_fp8
    side = max((_side_pool(cw, mode, fp8) for cw in weights), default=0)
    den = spec.denoiser
    unet_extra = 0
    if mode.startswith("group_") and "UNet" in den.class_name:
        dw = next(cw for cw in weights if cw.name == den.name)
        unet_extra = int(cal["group_unet_extra_fraction"] * dw.weight_bytes)
    freed = 0
    prev = 0
    for i, ph in enumerate(phases):
        carried = int(cal["group_freed_unreused_fraction"] * freed) if mode.startswith("group_block") else 0
        extra = unet_extra if i > 0 else 0
        own = ph.peak_reserved_bytes + carried + extra
        res = max(prev, own)
        prev = res
        ph.detail = {**ph.detail, "carried_cache_bytes": carried, "side_stream_pool_bytes": side, "group_unet_extra_bytes": extra}
        ph.peak_reserved_bytes = int(res + side)
        ph.peak_allocated_bytes = int(ph.peak_allocated_bytes + side)
        freed += int(ph.detail.get("resident_weights_reserved_bytes", 0))


def _image_decode_carry(phases: list[PhaseEstimate], spec: ModelSpec, cal: Mapping[str, float]) -> None:
    """Without offloading: the part of the denoise phase's cache an image VAE's decode cannot reuse (in place).

    See ``carry_unreused_fraction_vae_decode_image`` in :data:`CALIBRATION`. Video VAEs reuse it, and
    so, by the same frame-by-frame design, is assumed of Qwen-Image's 5-D VAE (not measured).
    """
    if spec.kind == "video" or spec.vae.class_name in _VAE_5D:
        return
    by = {ph.name: ph for ph in phases}
    den, dec = by.get("denoise"), by.get("vae_decode")
    if den is None or dec is None:
        return
    cache = max(0, den.peak_reserved_bytes - int(den.detail.get("resident_weights_reserved_bytes", 0)))
    carried = int(cal["carry_unreused_fraction_vae_decode_image"] * cache)
    dec.detail = {**dec.detail, "carried_cache_bytes": carried}
    dec.peak_reserved_bytes += carried


def _phase(
    name: str,
    comp: str,
    wa: int,
    wr: int,
    persistent: int,
    act: int,
    ws: int,
    factor: float,
    traced: bool,
    detail: dict[str, Any],
    weights_factor: float = 1.0,
    with_activations: tuple[int, int] | None = None,
    alloc_act_ws: tuple[int, int] | None = None,
) -> PhaseEstimate:
    """One phase's peak. Workspaces count in ``allocated`` too: cuBLAS and cuDNN take them from the caching allocator.

    ``with_activations`` = (allocated, reserved) weight bytes resident while the activations live, when
    that is less than ``wa`` / ``wr`` (leaf-level and sequential offload: the largest leaf, UMT5's
    2 GiB shared embedding, is on the GPU only during its own forward, before the encoder's
    activations exist, and its freed segment is then reused by them). The phase's peak is then the
    larger of the two moments, not their sum.

    ``alloc_act_ws`` = (activations, workspace) for the allocated figure when they differ from the
    reserved model's (image VAE decode: a measured factor that includes the convolution workspaces).
    """
    a_act, a_ws = alloc_act_ws if alloc_act_ws is not None else (act, ws)
    alloc = wa + persistent + a_act + a_ws
    reserved = _reserved(wr, persistent, act, ws, factor, weights_factor)
    if with_activations is not None:
        wa_act, wr_act = with_activations
        alloc = max(wa + persistent + a_ws, wa_act + persistent + a_act + a_ws)
        reserved = max(_reserved(wr, persistent, 0, ws, factor, weights_factor),
                       _reserved(wr_act, persistent, act, ws, factor, weights_factor))
    detail = {**detail, "resident_weights_reserved_bytes": int(wr)}
    if with_activations is not None:
        detail["resident_with_activations_reserved_bytes"] = int(with_activations[1])
    return PhaseEstimate(
        name=name,
        component=comp,
        resident_weights_bytes=wa,
        persistent_bytes=persistent,
        activation_peak_bytes=act,
        workspace_bytes=ws,
        peak_allocated_bytes=int(alloc),
        peak_reserved_bytes=int(max(reserved, alloc)),
        traced=traced,
        detail=detail,
    )


def _reserved(wr: int, persistent: int, act: int, ws: int, factor: float, weights_factor: float) -> int:
    """The reserved model: the weights' segments, or weights + kept + activations once they outgrow them."""
    return int(max(wr * weights_factor, wr + _round_reserved(persistent) + act * factor + ws))


def _factor_key(case: Mapping[str, Any], phase: str) -> str:
    """The calibration constant for ``phase`` of a bench case: video VAEs have their own decode factor."""
    shape = ((case.get("predicted") or {}).get("settings") or {}).get("latent_shape") or ()
    if phase == "vae_decode" and len(shape) == 5:
        return "reserved_factor_vae_decode_video"
    return f"reserved_factor_{phase}"


def reserved_model(case: Mapping[str, Any], phase: str, cal: Mapping[str, float]) -> int:
    """Peak reserved bytes of ``phase`` of a bench case (``bench_estimate.py`` JSON) under constants ``cal``.

    Uses the predicted parts stored in the case (weights, kept tensors, traced activations,
    workspace), so refitting needs neither a GPU nor re-tracing.
    """
    ph = case["phases"][phase]["predicted"]
    wr = (ph.get("detail") or {}).get("resident_weights_reserved_bytes")
    if wr is None:  # files written before the field existed: the bench keeps every component resident
        wr = sum(int(c["reserved_bytes"]) for c in case["predicted"]["components"])
    return _reserved(int(wr), int(ph["persistent_bytes"]), int(ph["activation_peak_bytes"]), int(ph["workspace_bytes"]),
                     float(cal[_factor_key(case, phase)]), float(cal["weights_reserved_factor"]))


# ------------------------------------------------------------------ specs from folders and pipelines
_DENOISER_NAMES = ("transformer", "unet", "transformer_2")
_PIPELINE_CFG = {
    "WanPipeline": "separate",
    "WanImageToVideoPipeline": "separate",
    "QwenImagePipeline": "separate",
    "StableDiffusionPipeline": "batched",
    "StableDiffusionXLPipeline": "batched",
    "CogVideoXPipeline": "batched",
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


# ------------------------------------------------------------------ calibration
def fit_calibration(cases: list[Mapping[str, Any]], base: Mapping[str, float] | None = None) -> dict[str, float]:
    """Refit ``weights_reserved_factor`` and ``reserved_factor_<phase>`` on measured cases.

    The VAE decode of video cases (5-D latents) gets its own factor, ``reserved_factor_vae_decode_video``.

    ``cases`` is the ``cases`` list of ``bench_estimate.py``: each holds ``phases``:
    ``{name: {"predicted": PhaseEstimate.to_dict(), "measured_reserved_bytes": n, ...}}``.
    Least squares on the log of predicted / measured peak reserved of every phase of every case,
    under :func:`reserved_model`, by grid search (weights factor 1.0-2.0 in steps of 0.0025;
    phase factors 1.0-4.0 in steps of 0.01; for a given weights factor each phase factor is
    fitted on its own phase). Other constants are kept from ``base``. Returns a full
    calibration dict to save as JSON and pass with ``GENPROF_CALIBRATION=file.json``.
    """
    cal = dict(base or CALIBRATION)
    phases = ("text_encode", "denoise", "vae_decode")
    keys = ("text_encode", "denoise", "vae_decode", "vae_decode_video")
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in keys}
    for case in cases:
        for phase in phases:
            ph = case.get("phases", {}).get(phase)
            if not ph or not ph.get("measured_reserved_bytes"):
                continue
            key = _factor_key(case, phase)
            zero = dict(cal, weights_reserved_factor=0.0, **{key: 0.0})
            fixed = float(reserved_model(case, phase, zero))  # Wr + kept + workspace
            pred = ph["predicted"]
            wr = fixed - _round_reserved(int(pred["persistent_bytes"])) - int(pred["workspace_bytes"])
            rows[key.removeprefix("reserved_factor_")].append((wr, fixed, float(pred["activation_peak_bytes"]), float(ph["measured_reserved_bytes"])))
    if not any(rows.values()):
        raise UsageError("fit_calibration: no case has a measured phase; nothing to fit")
    fgrid = [1.0 + 0.01 * i for i in range(301)]

    def phase_fit(data: list[tuple[float, float, float, float]], kw: float) -> tuple[float, float]:
        best = (math.inf, 1.0)
        for f in fgrid:
            err = sum(math.log(max(wr * kw, fx + f * act) / m) ** 2 for wr, fx, act, m in data)
            if err < best[0]:
                best = (err, f)
        return best

    best_total, best = math.inf, (1.0, {k: 1.0 for k in keys})
    for i in range(401):
        kw = 1.0 + 0.0025 * i
        total, fs = 0.0, {}
        for k in keys:
            err, f = phase_fit(rows[k], kw) if rows[k] else (0.0, cal[f"reserved_factor_{k}"])
            total += err
            fs[k] = f
        if total < best_total:
            best_total, best = total, (kw, fs)
    cal["weights_reserved_factor"] = round(best[0], 4)
    for k in keys:
        cal[f"reserved_factor_{k}"] = round(best[1][k], 4)
    return cal
