"""The handle :func:`genprof.instrument` returns: hooks on one pipeline, and one profiled call.

:meth:`InstrumentHandle.call` is what the swapped ``__call__`` runs: it puts a call state into
the thread-local (:mod:`.state`), chains ``callback_on_step_end`` (or wraps ``scheduler.step``),
times offload hooks for the call, opens the ``generation`` span, and after the call records the
generation (:mod:`.recording`); FLOPs are counted when the run stops.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any

from genprof.integrations.diffusers import facts
from genprof.integrations.diffusers.hooks import (
    _ATTR,
    _HOOK_MARK,
    _subclass_for,
    denoiser_hook,
    patch_offload,
    text_hook,
    unpatch_all,
)
from genprof.integrations.diffusers.recording import (
    FlopWork,
    count_generation_flops,
    flop_work,
    record_generation,
    refresh_utilization,
    step_flops_by_class,
)
from genprof.integrations.diffusers.state import StepListener, _CallState, _chain_callback, _state, _tls
from genprof.integrations.flops import CLASS_METHOD
from genprof.profiler import Profiler, current_profiler

log = logging.getLogger(__name__)

_call_params: dict[type, bool] = {}


class InstrumentHandle:
    """What :func:`instrument` returns: the hooks on one pipeline. ``remove()`` undoes them."""

    def __init__(self, pipe: Any, profiler: Profiler | None, *, fps: float | None, count_flops: bool,
                 diagnose: Any = False) -> None:
        self._pipe_ref = weakref.ref(pipe)
        self.diagnose = diagnose  # a window spec ("steps:1-2", True) or False
        self._diagnosed: set[int] = set()  # id(profiler) of the runs given a window
        self.profiler = profiler
        self.fps = fps
        self.count_flops = count_flops
        self.original_class: type = type(pipe)
        self._hooks: list[Any] = []
        self._hooked: dict[int, Any] = {}  # id(module) -> module
        self._swapped: list[tuple[Any, type]] = []  # (object, its original class)
        self._subscribed: set[int] = set()
        self._facts_cache: tuple[Any, dict[str, Any]] | None = None
        self._pending_flops: dict[int, list[tuple[dict[str, Any], FlopWork]]] = {}  # id(profiler) -> work
        self.step_listeners: list[StepListener] = []  # see add_step_listener
        self.calls = 0

    def add_step_listener(self, listener: StepListener) -> Callable[[], None]:
        """Call ``listener.on_step_start(i)`` / ``on_step_end(i, span)`` at each step boundary of
        the calls that start from now on (see :class:`StepListener`); returns a remover."""
        self.step_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self.step_listeners.remove(listener)

        return remove

    def remove(self) -> None:
        """Remove the hooks and give the pipeline and its components their original classes back."""
        pipe = self._pipe_ref()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        modules = list(self._hooked.values())
        if pipe is not None:
            modules += [m for m in (getattr(pipe, "components", {}) or {}).values() if hasattr(m, "_forward_pre_hooks")]
        for m in modules:  # hooks carried over by copy.deepcopy of an instrumented module
            for key, fn in list(m._forward_pre_hooks.items()):
                if getattr(fn, _HOOK_MARK, False):
                    m._forward_pre_hooks.pop(key, None)
                    m._forward_pre_hooks_with_kwargs.pop(key, None)
        self._hooked.clear()
        for obj, cls in reversed(self._swapped):
            if getattr(type(obj), "_genprof_original_class", None) is cls:
                obj.__class__ = cls
        self._swapped.clear()
        if pipe is not None:
            pipe.__dict__.pop(_ATTR, None)

    def _profiler(self) -> Profiler | None:
        p = self.profiler if self.profiler is not None else current_profiler()
        if p is None or not p.running or not p.enabled:
            return None
        return p

    def _attach_window(self, prof: Profiler, comps: dict[str, Any]) -> None:
        """The run's diagnose window over this pipeline's steps, its denoiser and VAE scoped."""
        from genprof.diagnose import DiagnoseWindow

        self._diagnosed.add(id(prof))
        mods = dict(facts.denoisers(comps))
        vae = comps.get("vae")
        if vae is not None and hasattr(vae, "named_modules"):
            mods["vae"] = vae
        win = prof.diagnose_window
        if win is None:  # window from instrument(diagnose=...); one from the run's config wins
            prof.diagnose_window = DiagnoseWindow(self.diagnose, modules=mods).attach(prof)
        elif not win.set_modules(mods):
            log.info("genprof: the run's diagnose window already has its modules; instrument() leaves them")

    def _swap(self, obj: Any, methods: dict[str, str]) -> None:
        """Give ``obj`` a same-named subclass whose ``methods`` run as genprof phases."""
        if obj is None or getattr(type(obj), "_genprof_original_class", None) is not None:
            return
        present = {m: ph for m, ph in methods.items() if callable(getattr(type(obj), m, None))}
        if not present:
            return
        cls = type(obj)
        obj.__class__ = _subclass_for(cls, present)
        self._swapped.append((obj, cls))

    def _ensure(self, pipe: Any, comps: dict[str, Any] | None = None) -> None:
        """Hook components not hooked yet (new ones after a swap); swap method-owning classes once."""
        comps = facts.components_of(pipe) if comps is None else comps
        for name, module in facts.denoisers(comps).items():
            self._hook(module, self._denoiser_hook(name))
        for name, module in facts.text_encoders(comps).items():
            self._hook(module, self._text_hook(name))
        self._swap(getattr(pipe, "vae", None), {"decode": "vae_decode", "encode": "vae_encode"})
        for proc_name in ("image_processor", "video_processor"):
            self._swap(getattr(pipe, proc_name, None), {"postprocess": "postprocess", "postprocess_video": "postprocess"})

    def _hook(self, module: Any, fn: Callable[..., None]) -> None:
        if id(module) in self._hooked:
            return
        self._hooked[id(module)] = module
        if any(getattr(h, _HOOK_MARK, False) for h in module._forward_pre_hooks.values()):
            return  # carried over from a deep copy of an instrumented module; it already reports
        setattr(fn, _HOOK_MARK, True)
        self._hooks.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def _denoiser_hook(self, name: str) -> Callable[..., None]:
        return denoiser_hook(name)

    def _text_hook(self, name: str) -> Callable[..., None]:
        return text_hook(name)

    # -- the call
    def call(self, orig_call: Callable[..., Any], pipe: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prof = self._profiler()
        if prof is None or _state() is not None:
            return orig_call(pipe, *args, **kwargs)
        comps = facts.components_of(pipe)
        self._ensure(pipe, comps)
        self._subscribe(prof)
        if self.diagnose and id(prof) not in self._diagnosed:
            self._attach_window(prof, comps)
        # pipeline facts walk every module (tens of ms for a full-size pipeline): taken when
        # instrumenting, and here only if a component, its dtype, device or hooks changed
        # since, after the call has returned
        facts_key: tuple[Any, ...] | None = self._facts_key(comps)
        cached = self._facts_cache
        if cached is not None and cached[0] == facts_key:
            prof.set_metadata("pipeline", cached[1])
            facts_key = None
        st = _CallState(prof, steps_enabled=bool(getattr(prof.config, "profile_inference_steps", True)),
                        listeners=tuple(self.step_listeners))
        kwargs = dict(kwargs)
        per_call: list[tuple[Any, str, bool, Any]] = []
        if self._supports_callback(pipe):
            kwargs["callback_on_step_end"] = _chain_callback(kwargs.get("callback_on_step_end"), st)
        else:
            st.step_mode = "scheduler.step"
            sched = getattr(pipe, "scheduler", None)
            if sched is not None and hasattr(sched, "step"):
                orig_step = sched.step

                def step(*a: Any, **k: Any) -> Any:
                    out = orig_step(*a, **k)
                    st.on_step_end()
                    return out

                per_call.append((sched, "step", "step" in sched.__dict__, sched.__dict__.get("step")))
                object.__setattr__(sched, "step", step)
            else:
                st.step_mode = "none (no callback_on_step_end and no scheduler.step)"
        per_call.extend(patch_offload(comps, st))
        _tls.state = st
        self.calls += 1
        # "pipeline": the pipeline class, on every generation span, so that a run of several
        # pipelines can be grouped by pipeline
        gen_o = prof.open_span("generation", "generation", pipeline=self.original_class.__name__)
        error: BaseException | None = None
        out: Any = None
        try:
            out = orig_call(pipe, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _tls.state = None
            st.close_all(error)
            gen_span = prof.close_span(gen_o, error)
            unpatch_all(per_call)
            if facts_key is not None:
                try:
                    prof.set_metadata("pipeline", self._facts(pipe, comps, facts_key))
                except (RuntimeError, AttributeError, TypeError) as exc:
                    log.warning("genprof: could not read pipeline facts: %s", exc)
            try:
                self._record(pipe, st, gen_span, kwargs, error)
            except Exception as exc:  # noqa: BLE001 - recording facts must never break the user's call
                log.warning("genprof: could not record generation facts: %s: %s", type(exc).__name__, exc)
        return out

    @staticmethod
    def _facts_key(comps: dict[str, Any]) -> tuple[Any, ...]:
        """What the pipeline facts depend on, cheap to read: each component, its first parameter's
        dtype and device, and whether it carries offload hooks."""
        key = []
        for name, c in comps.items():
            p = next(c.parameters(), None) if hasattr(c, "parameters") else None
            key.append((name, id(c), None if p is None else (p.dtype, p.device),
                        hasattr(c, "_hf_hook"), hasattr(c, "_diffusers_hook")))
        return tuple(key)

    def _facts(self, pipe: Any, comps: dict[str, Any], key: tuple[Any, ...] | None = None) -> dict[str, Any]:
        """Pipeline facts, recomputed only when a component, its dtype, device or hooks changed."""
        k = self._facts_key(comps) if key is None else key
        if self._facts_cache is None or self._facts_cache[0] != k:
            self._facts_cache = (k, facts.pipeline_facts(pipe, comps))
        return self._facts_cache[1]

    def _supports_callback(self, pipe: Any) -> bool:
        cls = self.original_class
        if cls not in _call_params:
            try:
                _call_params[cls] = "callback_on_step_end" in inspect.signature(cls.__call__).parameters
            except (TypeError, ValueError):
                _call_params[cls] = False
        return _call_params[cls]

    def _subscribe(self, prof: Profiler) -> None:
        if id(prof) in self._subscribed:
            return
        self._subscribed.add(id(prof))

        def on_event(kind: str, payload: Any) -> None:
            if kind == "run_end":
                self._count_pending(prof)
                refresh_utilization(payload)

        prof.subscribe(on_event, kinds=("run_end",))

    # -- after the call: the generation dict
    def _record(self, pipe: Any, st: _CallState, gen_span: Any, kwargs: dict[str, Any],
                error: BaseException | None) -> None:
        prof = st.prof
        gen, norm_specs = record_generation(pipe, st, gen_span, kwargs, error,
                                            cls_name=self.original_class.__name__, fps=self.fps)
        if self.count_flops:
            gen["flops"] = {"status": "pending", "reason": "counted when the run stops (outside every pipeline call)"}
            self._pending_flops.setdefault(id(prof), []).append((gen, flop_work(st, norm_specs, prof)))
        else:
            gen["flops"] = {"counted": False, "reason": "count_flops=False"}
        st.modules.clear()  # no reference to the user's modules outlives the call
        prof.run.metadata.setdefault("generations", []).append(gen)

    def _count_pending(self, prof: Profiler) -> None:
        """When the run stops: count the FLOPs of every generation recorded into ``prof``."""
        for gen, work in self._pending_flops.pop(id(prof), []):
            try:
                gen["flops"] = count_generation_flops(work, prof)
            except Exception as exc:  # noqa: BLE001 - FLOP counting must never lose the run
                log.warning("genprof: FLOPs not counted: %s: %s", type(exc).__name__, exc)
                gen["flops"] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300]}
        win = prof.diagnose_window
        if win is not None:
            per_step = step_flops_by_class(prof.run, win.step_span_ids())
            if per_step is not None:
                win.set_step_flops(per_step, "genprof.instrument: " + CLASS_METHOD)
