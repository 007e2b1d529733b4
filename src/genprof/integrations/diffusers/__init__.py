"""Profile a diffusers pipeline without editing it: ``genprof.instrument(pipe)``.

Every call of an instrumented pipeline becomes one ``generation`` span with the phases
``text_encode``, ``denoise`` (one ``step`` span per denoising step), ``vae_encode`` (image- or
video-to-X pipelines), ``vae_decode`` and ``postprocess``; facts about the pipeline go to
``run.metadata["pipeline"]`` and one dict per call to ``run.metadata["generations"]`` (layout
in ``docs/diffusers.md``).

How it hooks in, and why it survives offloading:

* the pipeline's class is swapped for a same-named subclass whose ``__call__`` wraps the
  original (Python looks ``__call__`` up on the type, so an instance attribute would not work);
  :func:`uninstrument` swaps it back;
* denoisers and text encoders get ``register_forward_pre_hook`` hooks. accelerate
  (``enable_model_cpu_offload``, ``enable_sequential_cpu_offload``) and diffusers' group
  offloading replace ``module.forward``, and diffusers removes and re-adds its accelerate hooks
  after every call; neither touches torch's hook dictionaries, so these hooks fire whichever
  order offloading and instrumenting happen in, and around the offload hooks (weight
  transfers are inside the step they belong to);
* ``encode_prompt``, ``vae.decode``/``vae.encode`` and the image/video processor's
  ``postprocess`` methods are wrapped as instance attributes (offloading never replaces them);
  components swapped after :func:`instrument` are picked up at the next call;
* step boundaries come from ``callback_on_step_end``, chained after a callback the user passes
  (plain function, ``PipelineCallback`` or ``MultiPipelineCallbacks``; its ``tensor_inputs``
  are kept); pipelines without that argument get their scheduler's ``step`` wrapped for the
  duration of the call instead. A step span opens at the step's first denoiser forward, so
  the number of denoiser forwards in each step (CFG as two calls or one batched call) is
  recorded;
* offload hooks (accelerate ``_hf_hook``, diffusers' group-offloading hooks) found at call
  start have their ``pre_forward`` timed for the call: host time spent moving weights, per
  phase and per step.

Modules: :mod:`.api` (the public functions), :mod:`.handle` (the handle and one profiled call),
:mod:`.hooks` (swapped classes, forward pre-hooks, offload timing), :mod:`.state` (the call state,
step boundaries, step listeners), :mod:`.recording` (the generation dict, FLOPs), :mod:`.load`
(load recording), :mod:`.facts` (facts read from the pipeline's modules).
"""

from __future__ import annotations

from genprof.integrations.diffusers import facts
from genprof.integrations.diffusers.api import instrument, profile_pipeline, uninstrument, write_html_report
from genprof.integrations.diffusers.handle import InstrumentHandle, _call_params
from genprof.integrations.diffusers.hooks import _ATTR, _HOOK_MARK, _run_phase, _subclass_for
from genprof.integrations.diffusers.load import LoadRecorder, profile_load
from genprof.integrations.diffusers.recording import refresh_utilization
from genprof.integrations.diffusers.state import (
    StepListener,
    _CallState,
    _chain_callback,
    _more_steps,
    _state,
)

__all__ = [
    "InstrumentHandle",
    "LoadRecorder",
    "StepListener",
    "facts",
    "instrument",
    "profile_load",
    "profile_pipeline",
    "refresh_utilization",
    "uninstrument",
    "write_html_report",
    # private, kept importable from here for benches and tests
    "_ATTR",
    "_HOOK_MARK",
    "_CallState",
    "_call_params",
    "_chain_callback",
    "_more_steps",
    "_run_phase",
    "_state",
    "_subclass_for",
]
