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
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from genprof.analysis.latents import compression, describe_latent, encode_rate
from genprof.errors import MissingDependencyError, UsageError
from genprof.integrations import diffusers_facts as facts
from genprof.integrations import flops as flops_mod
from genprof.profiler import Profiler, current_profiler

log = logging.getLogger(__name__)

_ATTR = "_genprof_handle"
_HOOK_MARK = "_genprof_hook"
_subclasses: dict[tuple[type, tuple[tuple[str, str], ...]], type] = {}
_call_params: dict[type, bool] = {}
_tls = threading.local()  # .state: the _CallState of the instrumented call running in this thread


def _state() -> _CallState | None:
    return getattr(_tls, "state", None)


# ---------------------------------------------------------------------- per-call state
@dataclass
class _Step:
    span: Any
    specs: list[tuple[str, int]]  # one per denoiser forward: (denoiser name, index into _CallState.specs)
    offload_s: float

    @property
    def forwards(self) -> int:
        return len(self.specs)


@dataclass
class _CallState:
    prof: Profiler
    steps_enabled: bool
    step_mode: str = "callback_on_step_end"
    denoise_o: Any = None
    step_o: Any = None
    text_o: Any = None
    step_specs: list[tuple[str, int]] = field(default_factory=list)
    step_offload_s: float = 0.0
    steps: list[_Step] = field(default_factory=list)
    specs: list[tuple[Any, Any]] = field(default_factory=list)  # distinct forward inputs (fast_spec form)
    spec_index: dict[Any, int] = field(default_factory=dict)
    unscoped: list[tuple[str, int]] = field(default_factory=list)  # forwards outside step spans
    forwards_by_module: dict[str, int] = field(default_factory=dict)
    te_forwards: dict[str, int] = field(default_factory=dict)
    in_phase: dict[str, int] = field(default_factory=dict)
    decodes: list[dict[str, Any]] = field(default_factory=list)
    encodes: list[dict[str, Any]] = field(default_factory=list)
    offload_s: dict[str, float] = field(default_factory=dict)
    offload_calls: dict[str, int] = field(default_factory=dict)
    modules: dict[str, Any] = field(default_factory=dict)

    # -- spans opened by hooks
    def phase_open(self, name: str) -> Any:
        if not self.prof.phase_enabled(name):
            return None
        return self.prof.open_span(name, "phase")

    def close_text(self) -> None:
        if self.text_o is not None:
            self.prof.close_span(self.text_o)
            self.text_o = None

    def close_denoise(self, exc: BaseException | None = None) -> None:
        if self.step_o is not None:
            self.prof.close_span(self.step_o, exc, status=None if exc else "aborted")
            self.step_o = None
        if self.denoise_o is not None:
            self.prof.close_span(self.denoise_o, exc)
            self.denoise_o = None

    def close_all(self, exc: BaseException | None) -> None:
        self.close_denoise(exc)
        if self.text_o is not None:
            self.prof.close_span(self.text_o, exc)
            self.text_o = None

    def current_phase(self) -> str:
        if self.step_o is not None or self.denoise_o is not None:
            return "denoise"
        if self.text_o is not None:
            return "text_encode"
        for name, depth in self.in_phase.items():
            if depth:
                return name
        return "other"

    # -- events from hooks
    def on_denoiser(self, name: str, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Runs before every denoiser forward: keep it to span bookkeeping and one cheap input
        # signature; batch sizes, FLOPs and the step attributes derived from it are worked out
        # after the call (or when the run stops).
        if self.text_o is not None:
            self.close_text()
        if self.step_o is None:
            if self.denoise_o is None and not any(self.in_phase.values()):
                self.denoise_o = self.phase_open("denoise")
            if self.steps_enabled:
                self.step_o = self.prof.open_span("step", "step", index=len(self.steps))
                self.step_specs = []
                self.step_offload_s = 0.0
        if name not in self.modules:
            self.modules[name] = module
        spec = (facts.fast_spec(args), facts.fast_spec(kwargs))
        idx = self.spec_index.get(spec)
        if idx is None:
            idx = len(self.specs)
            self.specs.append(spec)
            self.spec_index[spec] = idx
        (self.step_specs if self.step_o is not None else self.unscoped).append((name, idx))

    def on_step_end(self, more: bool = False) -> None:
        """The step ended. ``more``: the pipeline says another step follows, so the next step
        span opens here, at the same boundary (measured once; see ``Profiler.next_span``)."""
        o = self.step_o
        if o is None:
            return
        if more:
            self.step_o = self.prof.next_span(o, index=len(self.steps) + 1)
            span: Any = o.span
        else:
            span = self.prof.close_span(o)
            self.step_o = None
        if span is not None:
            span.attributes["denoiser_forwards"] = len(self.step_specs)
            if self.step_offload_s:
                span.attributes["offload_s"] = self.step_offload_s
        self.steps.append(_Step(span, self.step_specs, self.step_offload_s))
        self.step_specs = []
        self.step_offload_s = 0.0

    def finish_specs(self) -> tuple[list[tuple[Any, Any]], list[int | None]]:
        """After the call: distinct inputs in ``tensor_spec`` form and the batch of each; fills
        each step span's ``forward_batch`` attribute."""
        norm = [(facts.normalize_spec(a), facts.normalize_spec(k)) for a, k in self.specs]
        batch = [facts.spec_batch(a, k) for a, k in norm]
        for s in self.steps:
            if s.span is not None:
                s.span.attributes["forward_batch"] = [batch[i] for _, i in s.specs]
        return norm, batch

    def on_offload(self, hook_name: str, dt: float) -> None:
        ph = self.current_phase()
        self.offload_s[ph] = self.offload_s.get(ph, 0.0) + dt
        self.offload_calls[hook_name] = self.offload_calls.get(hook_name, 0) + 1
        if self.step_o is not None:
            self.step_offload_s += dt


# ---------------------------------------------------------------------- the handle
class InstrumentHandle:
    """What :func:`instrument` returns: the hooks on one pipeline. ``remove()`` undoes them."""

    def __init__(self, pipe: Any, profiler: Profiler | None, *, fps: float | None, count_flops: bool) -> None:
        self._pipe_ref = weakref.ref(pipe)
        self.profiler = profiler
        self.fps = fps
        self.count_flops = count_flops
        self.original_class: type = type(pipe)
        self._hooks: list[Any] = []
        self._hooked: dict[int, Any] = {}  # id(module) -> module
        self._swapped: list[tuple[Any, type]] = []  # (object, its original class)
        self._subscribed: set[int] = set()
        self._facts_cache: tuple[Any, dict[str, Any]] | None = None
        self._pending_flops: dict[int, list[tuple[dict[str, Any], _FlopWork]]] = {}  # id(profiler) -> work
        self.calls = 0

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

    # -- state
    @staticmethod
    def _state() -> _CallState | None:
        return _state()

    def _profiler(self) -> Profiler | None:
        p = self.profiler if self.profiler is not None else current_profiler()
        if p is None or not p.running or not p.enabled:
            return None
        return p

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

    @staticmethod
    def _unpatch_all(patches: list[tuple[Any, str, bool, Any]]) -> None:
        for obj, attr, had, prior in reversed(patches):
            try:
                if had:
                    object.__setattr__(obj, attr, prior)
                else:
                    object.__delattr__(obj, attr)
            except AttributeError as exc:
                log.debug("could not restore %s.%s: %s", type(obj).__name__, attr, exc)
        patches.clear()

    @staticmethod
    def _phase_facts(st: _CallState, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                     dt: float, span: Any, component: str | None) -> None:
        import torch

        if name == "vae_decode":
            z = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("z")
            y = facts.output_tensor(out)
            if isinstance(z, torch.Tensor):
                st.decodes.append({"in": (list(z.shape), str(z.dtype), str(z.device)),
                                   "out": None if y is None else (list(y.shape), str(y.dtype)),
                                   "duration_s": dt, "span_id": None if span is None else span.id})
        elif name == "vae_encode":
            x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("x")
            y = facts.output_tensor(out)
            if isinstance(x, torch.Tensor):
                st.encodes.append({"in": (list(x.shape), str(x.dtype)),
                                   "out": None if y is None else (list(y.shape), str(y.dtype), str(y.device)),
                                   "duration_s": dt, "span_id": None if span is None else span.id})


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
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            st = getattr(_tls, "state", None)
            if st is not None:
                st.on_denoiser(name, module, args, kwargs)

        return hook

    def _text_hook(self, name: str) -> Callable[..., None]:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            st = getattr(_tls, "state", None)
            if st is None:
                return
            st.te_forwards[name] = st.te_forwards.get(name, 0) + 1
            if (st.text_o is None and not st.in_phase.get("text_encode") and st.step_o is None
                    and st.denoise_o is None):
                st.text_o = st.phase_open("text_encode")

        return hook

    # -- offload hooks (re-created by diffusers after each call, so wrapped per call)
    def _patch_offload(self, comps: dict[str, Any], st: _CallState) -> list[tuple[Any, str, bool, Any]]:
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

    # -- the call
    def call(self, orig_call: Callable[..., Any], pipe: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prof = self._profiler()
        if prof is None or self._state() is not None:
            return orig_call(pipe, *args, **kwargs)
        comps = facts.components_of(pipe)
        self._ensure(pipe, comps)
        self._subscribe(prof)
        # pipeline facts walk every module (tens of ms for a full-size pipeline): taken when
        # instrumenting, and here only if a component, its dtype, device or hooks changed
        # since, after the call has returned
        facts_key: tuple[Any, ...] | None = self._facts_key(comps)
        cached = self._facts_cache
        if cached is not None and cached[0] == facts_key:
            prof.set_metadata("pipeline", cached[1])
            facts_key = None
        st = _CallState(prof, steps_enabled=bool(getattr(prof.config, "profile_inference_steps", True)))
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
        per_call.extend(self._patch_offload(comps, st))
        _tls.state = st
        self.calls += 1
        gen_o = prof.open_span("generation", "generation", pipeline=type(pipe).__name__)
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
            self._unpatch_all(per_call)
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
        cls_name = self.original_class.__name__
        decode_facts: dict[str, Any] | None = None
        output_frames: int | None = None
        out_h = out_w = None
        is_video = False
        vae = getattr(pipe, "vae", None)
        vae_cfg = getattr(vae, "config", None)
        channels = None
        if vae_cfg is not None:
            channels = getattr(vae_cfg, "latent_channels", None) or getattr(vae_cfg, "z_dim", None)
        for d in st.decodes:
            shape, dtype, device = d["in"]
            lat = describe_latent(shape, dtype, device, channels=channels)
            entry = lat.to_dict()
            if d["out"] is not None:
                oshape = d["out"][0]
                olayout = "BCTHW" if len(oshape) == 5 else "BCHW"
                if len(oshape) in (4, 5):
                    comp = compression(lat, oshape, olayout)
                    entry["compression"] = comp.to_dict()
                    frames = oshape[0] * (oshape[2] if len(oshape) == 5 else 1)
                    output_frames = (output_frames or 0) + frames
                    out_h, out_w = oshape[-2], oshape[-1]
                    is_video = is_video or len(oshape) == 5
                entry["output_shape"] = oshape
            entry["duration_s"] = d["duration_s"]
            decode_facts = entry
        encode_facts = None
        if st.encodes:
            e = st.encodes[-1]
            layout = "BCTHW" if len(e["in"][0]) == 5 else "BCHW"
            encode_facts = encode_rate(e["in"][0], e["in"][1], e["duration_s"], input_layout=layout)
            if e["out"] is not None:
                encode_facts["latent"] = describe_latent(e["out"][0], e["out"][1], e["out"][2],
                                                         channels=channels).to_dict()
        num_frames = kwargs.get("num_frames")
        fps: float | None = self.fps
        fps_source = "instrument(fps=...)" if fps is not None else None
        if fps is None and (is_video or num_frames):
            fps = facts.VIDEO_FPS.get(cls_name)
            fps_source = f"default frame rate of {cls_name} in diffusers' examples" if fps else None
        norm_specs, spec_batches = st.finish_specs()
        per_step = [s.forwards for s in st.steps]
        batches = [spec_batches[i] for s in st.steps for _, i in s.specs]
        by_module: dict[str, int] = {}
        for s in st.steps:
            for name, _ in s.specs:
                by_module[name] = by_module.get(name, 0) + 1
        for name, _ in st.unscoped:
            by_module[name] = by_module.get(name, 0) + 1
        latent_b = decode_facts["dims"].get("B") if decode_facts and decode_facts.get("dims") else None
        cfg = _cfg_mode(per_step, batches, latent_b)
        gen: dict[str, Any] = {
            "span_id": None if gen_span is None else gen_span.id,
            "pipeline_class": cls_name,
            "status": "ok" if error is None else "error",
            "duration_s": None if gen_span is None else gen_span.duration_s,
            "num_inference_steps": kwargs.get("num_inference_steps"),
            "steps": len(st.steps),
            "step_mode": st.step_mode,
            "height": kwargs.get("height") or out_h,
            "width": kwargs.get("width") or out_w,
            "num_frames": num_frames,
            "output_frames": output_frames,
            "fps": fps,
            "fps_source": fps_source,
            "latents": {"decode": decode_facts, "encode": encode_facts},
            "denoiser_forwards": {
                "total": sum(by_module.values()),
                "per_step": per_step,
                "by_module": by_module,
                "batch_per_forward": batches,
                "cfg": cfg,
            },
            "text_encoder_forwards": dict(st.te_forwards),
            "offload": None if not st.offload_calls else {
                "transfer_s_by_phase": dict(st.offload_s),
                "hook_calls": dict(st.offload_calls),
                "method": "host time around the offload hooks' pre_forward (weights moved to the GPU)",
            },
        }
        if self.count_flops:
            gen["flops"] = {"status": "pending", "reason": "counted when the run stops (outside every pipeline call)"}
            self._pending_flops.setdefault(id(prof), []).append((gen, self._flop_work(st, norm_specs, prof)))
        else:
            gen["flops"] = {"counted": False, "reason": "count_flops=False"}
        st.modules.clear()  # no reference to the user's modules outlives the call
        gens = prof.run.metadata.setdefault("generations", [])
        gens.append(gen)

    @staticmethod
    def _flop_work(st: _CallState, norm_specs: list[tuple[Any, Any]], prof: Profiler) -> _FlopWork:
        """What counting this call's FLOPs needs, with no reference to the modules themselves."""
        recipes: dict[str, Any] = {}
        dtype = None
        for name, module in st.modules.items():
            try:
                recipes[name] = flops_mod.recipe_of(module)
            except TypeError as exc:
                recipes[name] = f"FLOPs not counted: {exc}"
            if dtype is None:
                p = next(module.parameters(), None)
                dtype = None if p is None else str(p.dtype).replace("torch.", "")
        return _FlopWork(
            steps=[(None if s.span is None else s.span.id, s.specs) for s in st.steps],
            specs=norm_specs,
            recipes=recipes,
            dtype=dtype,
            device_name=prof.run.gpus[0].name if prof.run.gpus else None,
        )

    def _count_pending(self, prof: Profiler) -> None:
        """When the run stops: count the FLOPs of every generation recorded into ``prof``."""
        for gen, work in self._pending_flops.pop(id(prof), []):
            try:
                gen["flops"] = _flops(work, prof)
            except Exception as exc:  # noqa: BLE001 - FLOP counting must never lose the run
                log.warning("genprof: FLOPs not counted: %s: %s", type(exc).__name__, exc)
                gen["flops"] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300]}


@dataclass
class _FlopWork:
    steps: list[tuple[int | None, list[tuple[str, int]]]]  # (step span id, (denoiser, spec index) per forward)
    specs: list[tuple[Any, Any]]  # distinct forward inputs, tensor_spec form
    recipes: dict[str, Any]  # denoiser name -> flops.ModuleRecipe, or why there is none
    dtype: str | None
    device_name: str | None


def _flops(work: _FlopWork, prof: Profiler) -> dict[str, Any]:
    per_spec: dict[tuple[str, int], tuple[int | None, str | None]] = {}
    for _, specs in work.steps:
        for key in specs:
            if key not in per_spec:
                name, idx = key
                recipe = work.recipes.get(name)
                if recipe is None:
                    per_spec[key] = (None, f"denoiser {name} not seen")
                elif isinstance(recipe, str):
                    per_spec[key] = (None, recipe)
                else:
                    a, k = work.specs[idx]
                    per_spec[key] = flops_mod.count_forward_flops(recipe, a, k)
    reasons = sorted({r for _, r in per_spec.values() if r})
    steps: list[dict[str, Any]] = []
    for span_id, specs in work.steps:
        vals = [per_spec[key][0] for key in specs]
        f = None if any(v is None for v in vals) else sum(v for v in vals if v is not None)
        steps.append({"span_id": span_id, "flops": f})
    out = {
        "status": "counted",
        "method": "torch.utils.flop_counter.FlopCounterMode on a meta-device copy built from the config",
        "per_forward": sorted({v for v, _ in per_spec.values() if v is not None}),
        "total_flops": None if any(x["flops"] is None for x in steps) else sum(x["flops"] for x in steps),
        "dtype": work.dtype,
        "device_name": work.device_name,
        "steps": steps,
        "reason": "; ".join(reasons) if reasons else None,
    }
    _fill_utilization(out, {s.id: s for s in prof.run.spans})
    return out


def _cfg_mode(per_step: list[int], batches: list[int | None], latent_b: int | None) -> str | None:
    if not per_step:
        return None
    n = max(set(per_step), key=per_step.count)
    if n >= 2:
        return f"{n} denoiser calls per step (guidance run as separate calls)"
    b = max((x for x in batches if x is not None), default=None)
    if b is not None and latent_b and b == 2 * latent_b:
        return "one call per step with the batch doubled (guidance batched)"
    return "one call per step (no classifier-free guidance, or guidance-distilled)"


def _fill_utilization(fl: dict[str, Any], spans: dict[int, Any]) -> None:
    for s in fl.get("steps", []):
        span = spans.get(s.get("span_id")) if s.get("span_id") is not None else None
        u = flops_mod.step_utilization(
            s.get("flops"),
            None if span is None else span.gpu_time_s,
            None if span is None else span.duration_s,
            fl.get("device_name"),
            fl.get("dtype"),
        )
        s.update({k: v for k, v in u.items() if k != "flops"})
    ach = [s["achieved_tflops"] for s in fl.get("steps", []) if s.get("achieved_tflops") is not None]
    mfus = [s["mfu"] for s in fl.get("steps", []) if s.get("mfu") is not None]
    fl["mean_achieved_tflops"] = sum(ach) / len(ach) if ach else None
    fl["mean_mfu"] = sum(mfus) / len(mfus) if mfus else None


def refresh_utilization(run: Any) -> None:
    """Recompute per-step TFLOP/s and MFU of every generation once GPU times are resolved (run end)."""
    spans = {s.id: s for s in run.spans}
    for g in run.metadata.get("generations", []) or []:
        fl = g.get("flops") if isinstance(g, dict) else None
        if isinstance(fl, dict) and fl.get("steps"):
            _fill_utilization(fl, spans)


# ---------------------------------------------------------------------- callbacks
def _more_steps(pipeline: Any, step_index: Any) -> bool:
    """Whether the denoising loop runs another step after ``step_index``.

    diffusers pipelines set ``_num_timesteps`` (``len(timesteps)``) before their loop and call
    ``callback_on_step_end`` once per iteration; a pipeline without it gives False (each step
    then opens at its first denoiser forward).
    """
    n = getattr(pipeline, "_num_timesteps", None)
    if getattr(pipeline, "_interrupt", False):
        return False
    return isinstance(n, int) and isinstance(step_index, int) and step_index + 1 < n


def _chain_callback(user: Any, st: _CallState) -> Any:
    """A ``callback_on_step_end`` that runs the user's callback, then ends the step span."""
    try:
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
    except ImportError:  # pragma: no cover - diffusers without callbacks module
        MultiPipelineCallbacks = PipelineCallback = ()  # type: ignore[assignment,misc]  # noqa: N806

    if user is not None and PipelineCallback and isinstance(user, (PipelineCallback, MultiPipelineCallbacks)):

        class _Chained(MultiPipelineCallbacks):
            """Keeps the user's tensor_inputs; the pipeline checks isinstance to read them."""

            def __init__(self) -> None:
                super().__init__([user])

            @property
            def tensor_inputs(self) -> list[str]:
                return list(user.tensor_inputs)

            def __call__(self, pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> Any:
                out = user(pipeline, step_index, timestep, callback_kwargs)
                st.on_step_end(_more_steps(pipeline, step_index))
                return out

        return _Chained()

    def chained(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> Any:
        out = callback_kwargs if user is None else user(pipeline, step_index, timestep, callback_kwargs)
        st.on_step_end(_more_steps(pipeline, step_index))
        return out

    chained.__genprof_user_callback__ = user  # type: ignore[attr-defined]
    return chained


# ---------------------------------------------------------------------- public API
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
        InstrumentHandle._phase_facts(st, phase, args, kwargs, out, time.perf_counter() - t0, span, None)
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


def instrument(pipe: Any, profiler: Profiler | None = None, *, fps: float | None = None,
               count_flops: bool = True) -> InstrumentHandle:
    """Make every call of ``pipe`` a profiled generation. Returns the handle (``.remove()`` undoes).

    ``profiler``: the :class:`genprof.Profiler` to record into; ``None`` uses whichever profiler
    is active when the pipeline is called (``genprof.current_profiler()``), so ``genprof run``
    and ``with Profiler():`` blocks work. Calls with no active profiler run unprofiled.
    ``fps``: frame rate of the output video for real-time figures (default: the pipeline's
    usual rate for known video pipelines). ``count_flops``: count denoiser FLOPs (meta device,
    after each call) for achieved TFLOP/s and MFU.

    Instrumenting again returns the same handle (with ``profiler``/``fps`` updated).
    """
    if pipe is None or not callable(pipe):
        raise UsageError("instrument() needs a diffusers pipeline object (got a non-callable)")
    if not hasattr(pipe, "components"):
        raise UsageError(
            f"instrument() expects a diffusers DiffusionPipeline; {type(pipe).__name__} has no .components"
        )
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("torch", "instrumenting a diffusers pipeline", "torch") from exc
    existing = pipe.__dict__.get(_ATTR)
    if existing is not None:
        if profiler is not None:
            existing.profiler = profiler
        if fps is not None:
            existing.fps = fps
        existing.count_flops = count_flops
        return existing
    handle = InstrumentHandle(pipe, profiler, fps=fps, count_flops=count_flops)
    pipe.__dict__[_ATTR] = handle
    methods = {"__call__": "generation"}
    if callable(getattr(type(pipe), "encode_prompt", None)):
        methods["encode_prompt"] = "text_encode"
    handle._swap(pipe, methods)
    comps = facts.components_of(pipe)
    handle._ensure(pipe, comps)
    try:  # now rather than inside the first call: it walks every module of every component
        handle._facts(pipe, comps)
    except (RuntimeError, AttributeError, TypeError) as exc:
        log.warning("genprof: could not read pipeline facts: %s", exc)
    return handle


def uninstrument(pipe: Any) -> bool:
    """Undo :func:`instrument`: hooks removed, wrapped methods and the class restored. False if it was not instrumented."""
    handle = pipe.__dict__.get(_ATTR)
    if handle is None:
        return False
    handle.remove()
    return True




@contextlib.contextmanager
def profile_pipeline(pipe: Any, name: str | None = None, *, fps: float | None = None, count_flops: bool = True,
                     **profiler_kwargs: Any) -> Iterator[Profiler]:
    """``with profile_pipeline(pipe) as prof: pipe(...)``: a new Profiler, the pipeline instrumented into it.

    ``profiler_kwargs`` go to :class:`genprof.Profiler` (``tags``, ``config``, ``preset``, config
    keys such as ``output_dir``). The pipeline is uninstrumented on exit (unless it was
    instrumented before, in which case its handle is pointed back at its former profiler).
    """
    prof = Profiler(name or type(pipe).__name__, **profiler_kwargs)
    before = pipe.__dict__.get(_ATTR)
    prior_prof = None if before is None else before.profiler
    handle = instrument(pipe, prof, fps=fps, count_flops=count_flops)
    try:
        with prof:
            yield prof
    finally:
        if before is None:
            uninstrument(pipe)
        else:
            handle.profiler = prior_prof


# ---------------------------------------------------------------------- loading
class LoadRecorder:
    """Records each component's load time and the memory after it is placed (seed 000).

    Use inside :func:`profile_load`::

        with genprof.profile_load(prof) as load:
            with load.component("text_encoder") as slot:
                slot.module = UMT5EncoderModel.from_pretrained(...).to("cuda")
            with load.component("transformer") as slot:
                slot.module = WanTransformer3DModel.from_pretrained(...).to("cuda")
            pipe = WanPipeline(...)
            load.pipeline(pipe)
    """

    def __init__(self, prof: Profiler | None) -> None:
        self.prof = prof
        self.entries: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def component(self, name: str) -> Iterator[_Slot]:
        slot = _Slot(name)
        t0 = time.perf_counter()
        ctx = self.prof.phase(name) if self.prof is not None else contextlib.nullcontext()
        with ctx:
            yield slot
        self._add(name, time.perf_counter() - t0, slot.module)

    def placed(self, name: str, module: Any, duration_s: float | None = None) -> None:
        """Record a component loaded without :meth:`component` (memory read now)."""
        self._add(name, duration_s, module)

    def pipeline(self, pipe: Any) -> None:
        """Record the assembled pipeline's facts (``run.metadata["pipeline"]``) and memory."""
        self._add("assembled_pipeline", None, None)
        if self.prof is not None:
            self.prof.set_metadata("pipeline", facts.pipeline_facts(pipe))

    def _add(self, name: str, duration_s: float | None, module: Any) -> None:
        entry: dict[str, Any] = {"component": name, "duration_s": duration_s}
        entry.update(_memory_now())
        if module is not None and hasattr(module, "parameters"):
            entry.update(facts.module_facts(module))
        self.entries.append(entry)
        log.info("loaded %s: %s", name, {k: entry.get(k) for k in ("duration_s", "allocated_bytes", "rss_bytes")})
        if self.prof is not None:
            self.prof.run.metadata.setdefault("load", []).append(entry)
            self.prof.event("component_loaded", component=name, **{k: entry.get(k) for k in
                                                                     ("allocated_bytes", "reserved_bytes", "rss_bytes")})


@dataclass
class _Slot:
    name: str
    module: Any = None


def _memory_now() -> dict[str, Any]:
    out: dict[str, Any] = {"allocated_bytes": None, "reserved_bytes": None, "rss_bytes": None}
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["allocated_bytes"] = int(torch.cuda.memory_allocated())
            out["reserved_bytes"] = int(torch.cuda.memory_reserved())
    except ImportError:
        pass
    try:
        import psutil

        out["rss_bytes"] = int(psutil.Process().memory_info().rss)
    except (ImportError, OSError) as exc:
        log.debug("rss unreadable: %s", exc)
    return out


@contextlib.contextmanager
def profile_load(profiler: Profiler | None = None, name: str = "load") -> Iterator[LoadRecorder]:
    """A ``load`` phase in which :class:`LoadRecorder` records each component (see its example).

    ``profiler`` defaults to the active one; with none active, entries are still collected on
    the recorder (``.entries``) and logged.
    """
    prof = profiler if profiler is not None else current_profiler()
    rec = LoadRecorder(prof if prof is not None and prof.running else None)
    ctx = rec.prof.phase(name) if rec.prof is not None else contextlib.nullcontext()
    with ctx:
        yield rec
