"""Decorators that use the profiler active in the current context, and ``monitor_generation``.

Each decorator does nothing (calls the function straight through) when no profiler is
active, so decorated code can ship in production unchanged.

The six Inferix-compatible decorators keep Inferix's names and signatures: ``profile_method``,
``profile_session``, ``add_profiling_event``, ``profile_diffusion_step``,
``profile_model_parameters``, ``profile_block_computation``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from genprof.errors import UsageError
from genprof.model import Run, Span
from genprof.profiler import Profiler, _OpenSpan, current_profiler

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
MetaFn = Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]


def _meta(fn: MetaFn | None, args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    if fn is None:
        return {}
    try:
        out = fn(args, kwargs)
    except Exception as exc:  # noqa: BLE001 - a metadata lambda must not break the profiled call
        log.warning("%s metadata function failed: %s: %s", what, type(exc).__name__, exc)
        return {"metadata_error": f"{type(exc).__name__}: {exc}"}
    return dict(out) if isinstance(out, dict) else {"value": out}


def _strip_self(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Inferix-style lambdas index ``args`` without ``self``: drop a leading bound instance."""
    if args and not isinstance(args[0], (int, float, str, bytes, list, tuple, dict)) and hasattr(args[0], "__dict__"):
        return args[1:]
    return args


def profile_method(stage_name: str) -> Callable[[F], F]:
    """Time each call of the function as a phase named ``stage_name``."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prof = current_profiler()
            if prof is None:
                return fn(*args, **kwargs)
            with prof.phase(stage_name, function=fn.__qualname__):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def profile_session(session_name: str, tags: dict[str, Any] | None = None) -> Callable[[F], F]:
    """Mark each call as one generation (a "session" around an entry point, as Inferix names it)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prof = current_profiler()
            if prof is None:
                return fn(*args, **kwargs)
            if tags:
                prof.add_tags(**tags)
            with prof.generation(session_name, function=fn.__qualname__):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def add_profiling_event(event_name: str, data_fn: Callable[..., dict[str, Any]] | None = None) -> Callable[[F], F]:
    """Record event ``event_name`` after the call returns, with ``data_fn(result, *args, **kwargs)``."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            prof = current_profiler()
            if prof is not None:
                data: dict[str, Any] = {}
                if data_fn is not None:
                    try:
                        data = dict(data_fn(result, *_strip_self(args), **kwargs) or {})
                    except Exception as exc:  # noqa: BLE001 - the event is optional, the result is not
                        log.warning("event %r data function failed: %s: %s", event_name, type(exc).__name__, exc)
                        data = {"data_error": f"{type(exc).__name__}: {exc}"}
                prof.event(event_name, **data)
            return result

        return wrapper  # type: ignore[return-value]

    return deco


def profile_diffusion_step(meta_fn: MetaFn | None = None) -> Callable[[F], F]:
    """Time each call as a ``step`` span; ``meta_fn(args, kwargs)`` gives attributes (``step`` is the index)."""
    return _span_decorator("step", "step", meta_fn, index_key="step")


def profile_block_computation(meta_fn: MetaFn | None = None) -> Callable[[F], F]:
    """Time each call as a ``block`` span; ``meta_fn`` attributes (``block_index`` is the index).

    Figures the caller passes in (Inferix's ``computation_time_ms``, ``memory_usage_mb``) are
    kept as attributes, but genprof's own measurements of the span are what reports use.
    """
    return _span_decorator("block", "block", meta_fn, index_key="block_index")


def _span_decorator(name: str, kind: str, meta_fn: MetaFn | None, index_key: str) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prof = current_profiler()
            if prof is None:
                return fn(*args, **kwargs)
            attrs = _meta(meta_fn, _strip_self(args), kwargs, fn.__qualname__)
            idx = attrs.pop(index_key, None)
            if idx is not None:
                attrs[index_key] = idx
            with prof.span(name, kind, index=idx if isinstance(idx, int) else None, **attrs):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def profile_model_parameters(meta_fn: MetaFn | None = None) -> Callable[[F], F]:
    """Record the model facts ``meta_fn(args, kwargs)`` returns in ``run.metadata["models"]`` and as an event."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            prof = current_profiler()
            if prof is not None:
                facts = _meta(meta_fn, _strip_self(args), kwargs, fn.__qualname__)
                prof.run.metadata.setdefault("models", []).append(facts)
                prof.event("model_parameters", **facts)
            return result

        return wrapper  # type: ignore[return-value]

    return deco


# --------------------------------------------------------------------- monitor_generation
@dataclass
class GenerationMonitor:
    """What ``monitor_generation`` yields: step timing by hand, and the result after the block."""

    profiler: Profiler
    model_name: str | None
    num_steps: int | None
    target_time_s: float | None
    _open: _OpenSpan | None = None
    _step: int = 0
    span: Span | None = None
    step_spans: list[Span] = field(default_factory=list)

    def start_step_timing(self) -> None:
        if self._open is not None:
            raise UsageError("start_step_timing() called twice without end_step_timing()")
        self._open = self.profiler.open_span("step", "step", index=self._step)

    def end_step_timing(self) -> float | None:
        """End the current step; returns its host duration in seconds."""
        if self._open is None:
            raise UsageError("end_step_timing() called without start_step_timing()")
        sp = self.profiler.close_span(self._open)
        self._open = None
        self._step += 1
        if sp is None:
            return None
        self.step_spans.append(sp)
        return sp.duration_s

    @property
    def generation_time_s(self) -> float | None:
        return None if self.span is None else self.span.duration_s

    @property
    def target_met(self) -> bool | None:
        if self.target_time_s is None or self.generation_time_s is None:
            return None
        return self.generation_time_s <= self.target_time_s

    @property
    def run(self) -> Run:
        return self.profiler.run


@contextlib.contextmanager
def monitor_generation(
    model_name: str | None = None,
    num_steps: int | None = None,
    resolution: tuple[int, int] | str | None = None,
    *,
    target_time: float | None = None,
    architecture_type: str | None = None,
    profiler: Profiler | None = None,
    **profiler_kwargs: Any,
) -> Iterator[GenerationMonitor]:
    """A context manager for one generation, with optional hand-timed steps.

    Uses the active profiler (or ``profiler``); when none is active it runs its own
    :class:`Profiler` for the block (``profiler_kwargs`` go to it), so it also works alone.
    ``target_time`` (seconds) is recorded as the target ``generation_time_s<=target_time``
    in ``run.metadata["targets"]``, which ``genprof check`` and the score read.
    """
    prof = profiler or current_profiler()
    own = prof is None
    if prof is None:
        prof = Profiler(model_name or "generation", **profiler_kwargs)
    attrs: dict[str, Any] = {}
    if model_name is not None:
        attrs["model_name"] = model_name
    if num_steps is not None:
        attrs["num_steps"] = num_steps
    if resolution is not None:
        attrs["resolution"] = list(resolution) if isinstance(resolution, tuple) else resolution
    if architecture_type is not None:
        attrs["architecture_type"] = architecture_type
    mon = GenerationMonitor(prof, model_name, num_steps, target_time)
    cm: contextlib.AbstractContextManager[Any] = prof if own else contextlib.nullcontext(prof)
    with cm:
        if target_time is not None:
            targets = prof.run.metadata.setdefault("targets", [])
            t = f"generation_time_s<={target_time}"
            if t not in targets:
                targets.append(t)
        with prof.generation(**attrs) as span:
            mon.span = span
            try:
                yield mon
            finally:
                if mon._open is not None:
                    prof.close_span(mon._open, status="open_at_end")
                    mon._open = None
