"""The state of one instrumented pipeline call, and the step boundaries that drive it.

One :class:`_CallState` lives in a thread-local for the duration of a call (``_tls.state``);
the denoiser and text-encoder hooks, the wrapped methods and ``callback_on_step_end`` report to
it. It opens and closes the ``text_encode``, ``denoise`` and ``step`` spans and keeps what the
recording after the call needs (forward inputs per step, VAE shapes, offload time).

Step listeners (:class:`StepListener`) are the seam for per-step work beyond spans (a
kernel-trace window over a few steps, for instance): ``on_step_start(index)`` right after the
step span opens, ``on_step_end(index, span)`` right after it closes. With none attached the
step path pays one truth test of an empty tuple at each boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from genprof.integrations.diffusers import facts
from genprof.profiler import Profiler

_tls = threading.local()  # .state: the _CallState of the instrumented call running in this thread


def _state() -> _CallState | None:
    return getattr(_tls, "state", None)


class StepListener(Protocol):
    """Called at each denoising step boundary of an instrumented call (in the pipeline's thread).

    ``on_step_start(index)`` runs right after step ``index``'s span opened (at the step's first
    denoiser forward, or at the previous step's end when steps share their boundary);
    ``on_step_end(index, span)`` right after it closed, with its :class:`genprof.Span` (None
    when profiling is disabled). At a shared boundary ``on_step_end(i, ...)`` comes first, then
    ``on_step_start(i + 1)``; the listener's own time falls into step ``i + 1``. A step without
    a step span (``profile_inference_steps: false``) is not reported. A listener that raises is
    not caught: it runs in the user's denoising loop, like their own callback.
    """

    def on_step_start(self, index: int) -> None: ...

    def on_step_end(self, index: int, span: Any) -> None: ...


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
    listeners: Sequence[StepListener] = ()
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
                if self.listeners and self.step_o is not None:
                    for cb in self.listeners:
                        cb.on_step_start(len(self.steps))
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
        index = len(self.steps)
        if more:
            self.step_o = self.prof.next_span(o, index=index + 1)
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
        if self.listeners:
            self._notify_boundary(index, span)

    def _notify_boundary(self, index: int, span: Any) -> None:
        for cb in self.listeners:
            cb.on_step_end(index, span)
        if self.step_o is not None:
            for cb in self.listeners:
                cb.on_step_start(index + 1)

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


# ---------------------------------------------------------------------- step callbacks
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
