"""Facts about a diffusers pipeline read from its modules; now :mod:`genprof.integrations.diffusers.facts`.

Kept so that ``from genprof.integrations import diffusers_facts`` and its names keep working.
"""

from __future__ import annotations

from genprof.integrations.diffusers.facts import (
    DENOISER_NAMES,
    VIDEO_FPS,
    attention_backend,
    components_of,
    denoisers,
    detect_architecture,
    fast_spec,
    first_tensor_shape,
    module_facts,
    normalize_spec,
    offload_hooks,
    output_tensor,
    pipeline_facts,
    spec_batch,
    tensor_spec,
    text_encoders,
)

__all__ = [
    "DENOISER_NAMES",
    "VIDEO_FPS",
    "attention_backend",
    "components_of",
    "denoisers",
    "detect_architecture",
    "fast_spec",
    "first_tensor_shape",
    "module_facts",
    "normalize_spec",
    "offload_hooks",
    "output_tensor",
    "pipeline_facts",
    "spec_batch",
    "tensor_spec",
    "text_encoders",
]
