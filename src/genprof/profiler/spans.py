"""The span hot path's objects: an open span (its own ``with`` manager), a thread's root, the no-op manager.

The methods that open and close spans (``Profiler.span``, ``next_span``...) live on the
profiler (:mod:`genprof.profiler.core`) and inline what they need from here: no extra call
frame on the hot path.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

from genprof.model import Span

if TYPE_CHECKING:  # pragma: no cover
    from genprof.profiler.core import Profiler

log = logging.getLogger("genprof")

class _OpenSpan:
    """A span while it is open, and its ``with`` context manager (one object: less allocation and GC work).

    The Span it fills stays plain data; the CUDA events, energy reading and running peaks live here.
    Opening is inlined in ``__enter__`` and closing in ``__exit__`` (the hot path: no further
    Python call when the span is host-only); allocator, RSS, energy and NVTX work sits behind one
    flag, ``extra``, and happens in :meth:`Profiler._open_extra` / :meth:`Profiler._close_extra`.

    Hot-path tricks (CPython 3.11 specialises attribute access by type): ``Span`` defines
    ``__getattr__`` (defaults for unset fields), so every *read* of a Span field goes through a
    slow generic lookup; the hot path only writes Span fields and reads its own copies here
    (``kind``, ``id``, ``start``), which are slot reads. Each thread's stack is an exact
    ``list`` (subscripts of a list subclass are not specialised) whose first item is a root
    (:func:`_root`): ``stack[-1].id`` is the parent's id, None at top level, with no emptiness
    test, and ``stack[0].thread`` is the thread's name.
    When the profiler has no GPU timer and no extras (``Profiler._plain``), ``gpu_start`` and
    ``extra`` are neither set nor read.
    """

    __slots__ = ("_p", "span", "kind", "id", "start", "stack", "thread", "gpu_start", "extra",
                 "energy_start_j", "peak_alloc", "peak_res", "nvtx", "mem")
    _p: Profiler
    span: Span
    kind: str  # span.kind
    id: int | None  # span.id; None on a thread's root
    start: float  # span.start_s
    stack: list[_OpenSpan]  # the opening thread's stack (root first)
    thread: str  # set on a thread's root only: the thread's name
    gpu_start: Any  # these two only when the profiler is not _plain
    extra: bool
    energy_start_j: float | None  # set by the energy reader's thread
    peak_alloc: int | None  # running peaks, set by Profiler._mem_start
    peak_res: int | None
    nvtx: bool  # set by Profiler._open_extra
    mem: bool

    def __enter__(self) -> Span:
        p = self._p
        try:
            stack: list[_OpenSpan] = p._tls.stack
        except AttributeError:
            stack = p._stack()
        self.stack = stack
        span = self.span
        span.id = self.id = next(p._ids)
        span.parent_id = stack[-1].id  # the innermost open span's, or the root's None
        span.thread = stack[0].thread
        if p._plain:
            span.start_s = self.start = p._clock() - p._t0
        else:
            self.extra = p._extras and p._open_extra(self, span, self.kind)
            span.start_s = self.start = p._clock() - p._t0
            self.gpu_start = None if p._timer is None else p._timer.start()
        stack.append(self)
        if self.kind == "phase":
            p._progress["phase"] = span.name
        if p._start_listeners:
            for cb in p._start_listeners:
                p._notify_one(cb, "span_start", span)
        return span

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None,
                 status: str | None = None) -> None:
        # also the body of Profiler.close_span, which passes ``status``; returns None so that a
        # ``with`` block never swallows an exception
        span = self.span
        p = self._p
        if p._plain:
            span.duration_s = p._clock() - p._t0 - self.start
        else:
            if self.gpu_start is not None:
                p._timer.stop(span, self.gpu_start)  # type: ignore[union-attr]
            span.duration_s = p._clock() - p._t0 - self.start
            if self.extra:
                p._close_extra(self, span, self.kind)
        if et is not None:
            if et is GeneratorExit:
                # a generator holding this span was closed early (a step loop left by break or an error)
                span.status = "aborted"
            else:
                p._span_failed(span, et, ev)
        elif status is not None:
            span.status = status
        # the stack it was opened on (a hook may close it from another thread); never empty: the root
        stack = self.stack
        if stack[-1] is self:
            stack.pop()
        elif self in stack:
            stack.remove(self)
        p._spans.append(span)
        kind = self.kind
        if kind == "phase" or kind == "generation":  # _LOGGED_KINDS, spelled out: two cheap compares
            p._end_logged(span, kind, stack)
        elif p._listeners:
            for cb in p._listeners:
                p._notify_one(cb, "span_end", span)


_new = object.__new__

# _LAZY_ATTRIBUTES: a span opened without attributes leaves Span.attributes unset; the first
# read creates and stores an empty dict (Span.__getattr__), so what is recorded is the same.
# The ``**attributes`` dict of the call is then freed at once, back to CPython's dict free list,
# instead of being kept with every span: half the garbage collector's allocation count per
# span (the collector runs when that count grows) and less memory.


def _root(thread: str) -> _OpenSpan:
    """The first item of a thread's stack: no span, id None (its children's parent_id), the thread's name."""
    r = _OpenSpan()
    r.id = None
    r.thread = thread
    return r


def _make_open(p: Profiler, name: str, kind: str, index: int | None, attrs: dict[str, Any]) -> _OpenSpan:
    """A new, not yet entered span (no ``__init__`` frames: the hot path sets the fields itself).

    The Span gets its id, parent, thread and start time when it is entered.
    """
    span = _new(Span)
    span.name = name
    span.kind = kind
    span.index = index
    if attrs:  # else left unset: it reads as a new {} (see _LAZY_ATTRIBUTES)
        span.attributes = attrs
    # _OpenSpan() rather than object.__new__(_OpenSpan): a plain type call, cheaper (it has no __init__)
    o = _OpenSpan()
    o._p = p
    o.span = span
    o.kind = kind
    return o


class _NullCM:
    """The shared no-op context manager returned when profiling is off.

    ``__enter__`` and ``__exit__`` are C functions, not Python methods: a ``with`` statement
    looks them up on the type, and built-in methods do not bind to the instance, so entering
    calls ``{}.clear()`` (returns None: ``with ... as x`` gives None) and leaving calls
    ``"".format(exc_type, exc, tb)`` (returns "", false: an exception propagates). Neither
    runs a Python frame, which halves the cost of a disabled span.
    """

    __slots__ = ()
    __enter__ = {}.clear
    __exit__ = "".format


_NULL: Any = _NullCM()


_LOGGED_KINDS = frozenset(("phase", "generation"))


def _log_span(span: Span) -> None:
    """Seed 000's log line: a stage's time and the memory after it."""
    from genprof.units import format_bytes, format_seconds

    parts = [f"{span.kind} {span.name!r} ended ({span.status}) after {format_seconds(span.duration_s)}"]
    if span.allocated_end_bytes is not None:
        parts.append(f"allocated {format_bytes(span.allocated_end_bytes)}, reserved "
                     f"{format_bytes(span.reserved_end_bytes)}, peak {format_bytes(span.peak_allocated_bytes)}")
    if span.rss_end_bytes is not None:
        parts.append(f"RSS {format_bytes(span.rss_end_bytes)}")
    log.info("; ".join(parts))



def _stack_paths(stack: list[_OpenSpan]) -> list[str]:
    """["generation", "generation/denoise", "generation/denoise/step[3]"] for a thread's stack (root first)."""
    out: list[str] = []
    cur = ""
    for o in stack[1:]:
        label = o.span.name if o.span.index is None else f"{o.span.name}[{o.span.index}]"
        cur = f"{cur}/{label}" if cur else label
        out.append(cur)
    return out

