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

Modules, one seam each: :mod:`.settings` (what a call asks for, traced inputs),
:mod:`.trace` (the meta trace and the caching-allocator model), :mod:`.call_memo` (repeated
decoder calls replayed instead of run), :mod:`.weights` (bytes per
component, what offloading keeps resident), :mod:`.phases` (one traced phase each),
:mod:`.calibration` (the allocator constants and their fit), :mod:`.results`,
:mod:`.specs` (model names, folders and pipelines to specs) and :mod:`.whole` (the call).

Nothing here touches CUDA. Needs torch and diffusers (and transformers for text encoders).
"""

from __future__ import annotations

# The private names re-exported (``x as x``) are the ones plan.py, the tests and the benches import.
from genprof.planning.estimate.calibration import (
    CALIBRATION,
    fit_calibration,
    load_calibration,
    reserved_model,
)
from genprof.planning.estimate.phases import PhaseTrace, trace_phase_allocations
from genprof.planning.estimate.results import ComponentWeights, Estimate, PhaseEstimate
from genprof.planning.estimate.settings import (
    ATTENTION_BACKENDS,
    DTYPE_BYTES,
    OFFLOAD_MODES,
    GenerationSettings,
)
from genprof.planning.estimate.settings import (
    _denoiser_inputs as _denoiser_inputs,
)
from genprof.planning.estimate.specs import _resolve as _resolve
from genprof.planning.estimate.specs import spec_from_folder, spec_from_pipeline
from genprof.planning.estimate.trace import CachingAllocatorModel, GiB, LiveBytes, MiB, trace_live_bytes
from genprof.planning.estimate.weights import _meta_module as _meta_module
from genprof.planning.estimate.weights import _register as _register
from genprof.planning.estimate.weights import component_weights
from genprof.planning.estimate.whole import PHASES, estimate

__all__ = [
    "ATTENTION_BACKENDS",
    "CALIBRATION",
    "DTYPE_BYTES",
    "GiB",
    "MiB",
    "OFFLOAD_MODES",
    "PHASES",
    "CachingAllocatorModel",
    "ComponentWeights",
    "Estimate",
    "GenerationSettings",
    "LiveBytes",
    "PhaseEstimate",
    "PhaseTrace",
    "component_weights",
    "estimate",
    "fit_calibration",
    "load_calibration",
    "reserved_model",
    "spec_from_folder",
    "spec_from_pipeline",
    "trace_live_bytes",
    "trace_phase_allocations",
]
