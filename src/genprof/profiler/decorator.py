"""``genprof.phase``: a decorator and ``with`` block that uses the profiler active in the context."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from genprof.model import Span
from genprof.profiler.registry import current_profiler

F = TypeVar("F", bound=Callable[..., Any])


class phase:  # noqa: N801 - used as @genprof.phase("name") and with genprof.phase("name")
    """``@genprof.phase("vae_decode")`` on a function, or ``with genprof.phase("x"):``.

    Uses the profiler active in the current context; does nothing when none is active.
    """

    def __init__(self, name: str, kind: str = "phase", **attributes: Any) -> None:
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self._cms: list[contextlib.AbstractContextManager[Any]] = []

    def __call__(self, fn: F) -> F:
        name, kind, attrs = self.name, self.kind, self.attributes

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prof = current_profiler()
            if prof is None:
                return fn(*args, **kwargs)
            cm = prof.phase(name, **attrs) if kind == "phase" else prof.span(name, kind, **attrs)
            with cm:
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> Span | None:
        prof = current_profiler()
        cm: contextlib.AbstractContextManager[Any]
        if prof is None:
            cm = contextlib.nullcontext()
        elif self.kind == "phase":
            cm = prof.phase(self.name, **self.attributes)
        else:
            cm = prof.span(self.name, self.kind, **self.attributes)
        self._cms.append(cm)
        return cm.__enter__()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> bool | None:
        return self._cms.pop().__exit__(et, ev, tb)

