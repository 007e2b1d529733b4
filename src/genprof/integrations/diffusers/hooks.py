"""The hooks genprof puts into a pipeline: swapped classes, forward pre-hooks, timed offload hooks.

* :func:`_subclass_for`: a same-named subclass whose ``__call__`` sends calls through the
  pipeline's handle, and whose other wrapped methods (``encode_prompt``, ``vae.decode``,
  ``postprocess``) run as phases (:func:`_run_phase`);
* :func:`denoiser_hook` / :func:`text_hook`: ``register_forward_pre_hook`` functions that report
  to the call state of this thread; the denoiser hook runs before every denoiser forward (the
  hot path: one thread-local read and :meth:`_CallState.on_denoiser`);
* :func:`patch_offload`: offload hooks' ``pre_forward`` timed for one call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from genprof.errors import UsageError
from genprof.integrations.diffusers.recording import phase_facts
from genprof.integrations.diffusers.state import _CallState, _state, _tls

log = logging.getLogger(__name__)

_ATTR = "_genprof_handle"
_HOOK_MARK = "_genprof_hook"
_subclasses: dict[tuple[type, tuple[tuple[str, str], ...]], type] = {}


def denoiser_hook(name: str) -> Callable[..., None]:
    """The forward pre-hook of denoiser ``name``."""

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        st = getattr(_tls, "state", None)
        if st is not None:
            st.on_denoiser(name, module, args, kwargs)

    return hook


def text_hook(name: str) -> Callable[..., None]:
    """The forward pre-hook of text encoder ``name``: counts forwards, opens ``text_encode``."""

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        st = getattr(_tls, "state", None)
        if st is None:
            return
        st.te_forwards[name] = st.te_forwards.get(name, 0) + 1
        if (st.text_o is None and not st.in_phase.get("text_encode") and st.step_o is None
                and st.denoise_o is None):
            st.text_o = st.phase_open("text_encode")

    return hook


def patch_offload(comps: dict[str, Any], st: _CallState) -> list[tuple[Any, str, bool, Any]]:
    """Time the offload hooks' ``pre_forward`` found on ``comps`` (re-created by diffusers after
    each call, so wrapped per call); returns the patches for :func:`unpatch_all`."""
    patches: list[tuple[Any, str, bool, Any]] = []

    def timed(orig: Callable[..., Any], hook_name: str) -> Callable[..., Any]:
        def w(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                st.on_offload(hook_name, time.perf_counter() - t0)

        return w

    for comp in comps.values():
        # offloading puts a hook on the component itself (model and sequential offload,
        # group offloading's top group); components without one are not walked
        if not hasattr(comp, "modules") or not (hasattr(comp, "_hf_hook") or hasattr(comp, "_diffusers_hook")):
            continue
        for m in comp.modules():
            hf = getattr(m, "_hf_hook", None)
            if hf is not None and "pre_forward" not in hf.__dict__:
                patches.append((hf, "pre_forward", False, None))
                object.__setattr__(hf, "pre_forward", timed(hf.pre_forward, type(hf).__name__))
            reg = getattr(m, "_diffusers_hook", None)
            if reg is not None:
                for h in getattr(reg, "hooks", {}).values():
                    ref = getattr(h, "fn_ref", None)
                    if "offload" in type(h).__name__.lower() and ref is not None and ref.pre_forward is not None:
                        patches.append((ref, "pre_forward", True, ref.pre_forward))
                        ref.pre_forward = timed(ref.pre_forward, type(h).__name__)
    return patches


def unpatch_all(patches: list[tuple[Any, str, bool, Any]]) -> None:
    """Undo per-call patches (``(object, attribute, had it, prior value)``), last first."""
    for obj, attr, had, prior in reversed(patches):
        try:
            if had:
                object.__setattr__(obj, attr, prior)
            else:
                object.__delattr__(obj, attr)
        except AttributeError as exc:
            log.debug("could not restore %s.%s: %s", type(obj).__name__, attr, exc)
    patches.clear()


def _run_phase(phase: str, func: Callable[..., Any], obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``func(obj, ...)`` as phase ``phase`` of the instrumented call in this thread, if any."""
    st = _state()
    if st is None or st.in_phase.get(phase):
        return func(obj, *args, **kwargs)
    if st.step_o is None:
        st.close_denoise()
    st.close_text()
    o = st.phase_open(phase)
    st.in_phase[phase] = st.in_phase.get(phase, 0) + 1
    t0 = time.perf_counter()
    try:
        out = func(obj, *args, **kwargs)
    except BaseException as exc:
        st.in_phase[phase] -= 1
        st.prof.close_span(o, exc)
        raise
    st.in_phase[phase] -= 1
    span = st.prof.close_span(o)
    try:
        phase_facts(st, phase, args, kwargs, out, time.perf_counter() - t0, span)
    except (TypeError, ValueError, AttributeError, UsageError) as exc:
        log.debug("genprof: no facts for %s: %s", phase, exc)
    return out


def _subclass_for(cls: type, methods: dict[str, str]) -> type:
    """A subclass of ``cls`` with the same name whose ``methods`` run as genprof phases.

    ``"__call__"`` mapped to ``"generation"`` sends calls through the pipeline's handle.
    """
    key = (cls, tuple(sorted(methods.items())))
    sub = _subclasses.get(key)
    if sub is not None:
        return sub
    ns: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                          "_genprof_original_class": cls}
    for meth, phase in methods.items():
        func = getattr(cls, meth)
        if phase == "generation":

            def call(self: Any, *args: Any, _f: Callable[..., Any] = func, **kwargs: Any) -> Any:
                handle = self.__dict__.get(_ATTR)
                if handle is None:
                    return _f(self, *args, **kwargs)
                return handle.call(_f, self, args, kwargs)

            ns[meth] = call
        else:

            def method(self: Any, *args: Any, _f: Callable[..., Any] = func, _p: str = phase, **kwargs: Any) -> Any:
                return _run_phase(_p, _f, self, args, kwargs)

            ns[meth] = method
    sub = type(cls.__name__, (cls,), ns)
    _subclasses[key] = sub
    return sub
