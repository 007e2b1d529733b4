"""The span hot path: an open span (its own ``with`` manager), a thread's root, the no-op manager,
and the profiler's methods that open and close spans (:class:`SpanMethods`), kept together
because they inline each other's work: no extra call frame on the hot path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from genprof.model import Span

if TYPE_CHECKING:  # pragma: no cover
    from genprof.config import ProfilerConfig
    from genprof.probes.host import RssReader
    from genprof.profiler.device import Device
    from genprof.profiler.energy import _EnergyReader
    from genprof.profiler.memory import PeakTracker
    from genprof.timing import GpuTimer, Nvtx

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
    _p: SpanMethods  # the Profiler
    span: Span
    kind: str  # span.kind
    id: int | None  # span.id; None on a thread's root
    start: float  # span.start_s
    stack: list[_OpenSpan]  # the opening thread's stack (root first)
    thread: str  # set on a thread's root only: the thread's name
    gpu_start: Any  # these two only when the profiler is not _plain
    extra: bool
    energy_start_j: float | None  # set by the energy reader's thread
    peak_alloc: int | None  # running peaks, set by PeakTracker.start
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


def _make_open(p: SpanMethods, name: str, kind: str, index: int | None, attrs: dict[str, Any]) -> _OpenSpan:
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
    """The per-stage log line: a stage's time and the memory after it."""
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


class SpanMethods:
    """The profiler's span methods (mixed into :class:`~genprof.profiler.core.Profiler`): the hot path.

    ``span``, ``phase``, ``open_span``, ``next_span`` and ``close_span``, with the opening and
    closing work beyond host timing. They live here, next to :class:`_OpenSpan`, because they
    inline its construction; a method found on a base class costs the same lookup as one on
    the class itself (CPython caches it by type version).
    """

    # the Profiler's attributes these methods read (set in Profiler.__init__ and start)
    _on: bool
    _plain: bool
    _clock: Callable[[], float]
    _t0: float
    _ids: Iterator[int]
    _tls: threading.local
    _lock: threading.RLock
    _all_stacks: list[list[_OpenSpan]]
    _spans: list[Span]
    _listeners: list[Callable[[str, Any], None]]
    _start_listeners: list[Callable[[str, Any], None]]
    _progress: dict[str, Any]
    _timer: GpuTimer | None
    _nvtx: Nvtx | None
    _on_gpu: bool
    _device_index: int | None
    _device: Device
    _peaks: PeakTracker | None
    _rss: RssReader | None
    _mem_kinds: frozenset[str]
    _rss_kinds: frozenset[str]
    _energy_kinds: frozenset[str]
    _energy: _EnergyReader | None
    _extras: bool
    _failure_paths: list[str]
    _oom_state: dict[str, Any] | None
    config: ProfilerConfig

    _abort_path_if_last: Callable[[], list[str]]

    def now(self) -> float:
        """Seconds since the run started (monotonic)."""
        return self._clock() - self._t0

    @staticmethod
    def _notify_one(cb: Callable[[str, Any], None], kind: str, payload: Any) -> None:
        try:
            cb(kind, payload)
        except Exception as exc:  # noqa: BLE001 - a listener must not break the profiled code
            log.warning("genprof listener %r failed on %s: %s: %s", cb, kind, type(exc).__name__, exc)

    def _stack(self) -> list[_OpenSpan]:
        """This thread's stack of open spans: its root first (see :func:`_root`), innermost last."""
        try:
            stack: list[_OpenSpan] = self._tls.stack
            return stack
        except AttributeError:
            st = [_root(threading.current_thread().name)]
            self._tls.stack = st
            with self._lock:
                self._all_stacks.append(st)
            return st

    def open_span(self, name: str, kind: str = "call", *, index: int | None = None, **attributes: Any) -> _OpenSpan | None:
        """Open a span without a ``with`` block (for hooks and callbacks); close it with :meth:`close_span`.

        Returns None when profiling is disabled or the profiler is not running.
        """
        if not self._on:
            return None
        o = _make_open(self, name, kind, index, attributes)
        o.__enter__()
        return o

    def next_span(self, o: _OpenSpan | None, *, index: int | None = None, **attributes: Any) -> _OpenSpan | None:
        """Close ``o`` and open the next span of the same name and kind at the same instant.

        For step and block loops: the two spans share their boundary, so it is measured once
        (one clock read, one CUDA event, one allocator read and peak reset, one RSS read), and
        the next span's start values are exactly the previous span's end values. Falls back to
        :meth:`close_span` plus :meth:`open_span` when ``o`` is not the innermost open span of
        the calling thread. Returns the new open span (None when profiling is off).
        """
        if o is None:
            return None
        stack = o.stack
        try:
            mine = self._tls.stack is stack
        except AttributeError:
            mine = False
        if not self._on or not mine or stack[-1] is not o:
            span = o.span
            self.close_span(o)
            return self.open_span(span.name, span.kind, index=index, **attributes)
        span = o.span
        kind = o.kind
        # _make_open inlined (a loop's boundary is a hot path); Span fields are written, and read
        # only where no copy exists on the _OpenSpan (name, parent_id)
        ns = _new(Span)
        ns.name = span.name
        ns.kind = kind
        ns.index = index
        if attributes:  # see _LAZY_ATTRIBUTES
            ns.attributes = attributes
        n = _OpenSpan()
        n._p = self
        n.span = ns
        n.kind = kind
        ns.id = n.id = next(self._ids)
        ns.parent_id = span.parent_id
        ns.thread = stack[0].thread  # o is on this thread's stack
        n.stack = stack
        if self._plain:
            t = self._clock() - self._t0
            span.duration_s = t - o.start
            ns.start_s = n.start = t
        else:
            n.gpu_start = None
            if o.gpu_start is not None:
                n.gpu_start = self._timer.stop_shared(span, o.gpu_start)  # type: ignore[union-attr]
            t = self._clock() - self._t0
            span.duration_s = t - o.start
            ns.start_s = n.start = t
            n.extra = o.extra
            if o.extra:
                self._boundary_extra(o, n, span, ns, kind)
        stack[-1] = n
        self._spans.append(span)
        if self._listeners:
            for cb in self._listeners:
                self._notify_one(cb, "span_end", span)
        if self._start_listeners:
            for cb in self._start_listeners:
                self._notify_one(cb, "span_start", ns)
        if kind in _LOGGED_KINDS and log.isEnabledFor(logging.INFO):
            _log_span(span)
        return n

    def _boundary_extra(self, o: _OpenSpan, n: _OpenSpan, span: Span, ns: Span, kind: str) -> None:
        """:meth:`next_span`'s allocator, RSS, energy and NVTX work: each read once for both spans."""
        n.nvtx = n.mem = False
        ns.device_index = span.device_index
        if o.mem:
            self._peaks.boundary(o, n, span, ns)  # type: ignore[union-attr]
        if span.rss_start_bytes is not None and self._rss is not None:
            span.rss_end_bytes = ns.rss_start_bytes = self._rss.read_bytes()
        if kind in self._energy_kinds:
            self._energy.request_end(o)  # type: ignore[union-attr]
            self._energy.request_start(n)  # type: ignore[union-attr]
        if o.nvtx and self._nvtx is not None:
            self._nvtx.pop()
            self._nvtx.push(ns.name if ns.index is None else f"{ns.name} {ns.index}")
            n.nvtx = True

    def _open_extra(self, o: _OpenSpan, span: Span, kind: str) -> bool:
        """Opening work beyond host timing: device, NVTX range, allocator state, RSS, energy.

        Returns whether the span needs :meth:`_close_extra`.
        """
        o.nvtx = o.mem = False
        if self._on_gpu:
            span.device_index = self._device_index
            if self._nvtx is not None:
                self._nvtx.push(span.name if span.index is None else f"{span.name} {span.index}")
                o.nvtx = True
            if kind in self._mem_kinds:
                self._peaks.start(o)  # type: ignore[union-attr]
        if kind in self._rss_kinds:
            span.rss_start_bytes = self._rss.read_bytes()  # type: ignore[union-attr]
        if kind in self._energy_kinds:
            self._energy.request_start(o)  # type: ignore[union-attr]
        return True

    def _close_extra(self, o: _OpenSpan, span: Span, kind: str) -> None:
        if o.mem:
            self._peaks.end(o)  # type: ignore[union-attr]
        if span.rss_start_bytes is not None and self._rss is not None:
            span.rss_end_bytes = self._rss.read_bytes()
        if kind in self._energy_kinds:
            self._energy.request_end(o)  # type: ignore[union-attr]
        if o.nvtx and self._nvtx is not None:
            self._nvtx.pop()

    def close_span(self, o: _OpenSpan | None, exc: BaseException | None = None, *, status: str | None = None) -> Span | None:
        """Close a span opened with :meth:`open_span`. ``exc`` marks it failed; ``status`` sets its status."""
        if o is None:
            return None
        if exc is None:
            o.__exit__(None, None, None, status)
        else:
            o.__exit__(type(exc), exc, exc.__traceback__)
        return o.span

    def _end_logged(self, span: Span, kind: str, stack: list[_OpenSpan]) -> None:
        """The end of a phase or generation span (off the hot path): progress, listeners, log line."""
        if kind == "phase" and self._progress["phase"] == span.name:
            outer = [x.span.name for x in stack[1:] if x.kind == "phase"]
            self._progress["phase"] = outer[-1] if outer else None
        if self._listeners:
            for cb in self._listeners:
                self._notify_one(cb, "span_end", span)
        if log.isEnabledFor(logging.INFO):
            _log_span(span)

    def _span_failed(self, span: Span, et: type[BaseException], exc: BaseException | None) -> None:
        span.status = "error"
        span.attributes.setdefault("error", f"{et.__name__}: {'' if exc is None else exc}"[:500])
        if not self._failure_paths:
            paths = _stack_paths(self._stack()) or [span.name]
            # a step loop aborted inside an outer span: its open step is deeper than the stack
            ab = self._abort_path_if_last()
            if len(ab) > len(paths) and ab[: len(paths)] == paths:
                paths = ab
            self._failure_paths = paths
            if self._oom_state is None and exc is not None and self._device.is_oom(exc):
                self._oom_state = self._device.oom_state()  # now, before the memory is freed

    def span(self, name: str, kind: str = "call", *, index: int | None = None,
             **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
        """A span of any kind around a ``with`` block; yields the open Span (None when disabled)."""
        if not self._on:
            return _NULL
        # _make_open inlined: this is the hot path of hand-written loops
        span = _new(Span)
        span.name = name
        span.kind = kind
        span.index = index
        if attributes:  # see _LAZY_ATTRIBUTES
            span.attributes = attributes
        o = _OpenSpan()
        o._p = self
        o.span = span
        o.kind = kind
        return o

    def phase(self, name: str, **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
        """A phase (``load``, ``text_encode``, ``denoise``, ``vae_decode``...). Phases nest."""
        if not self._on or not self.phase_enabled(name):
            return _NULL
        return _make_open(self, name, "phase", None, attributes)

    def generation(self, name: str = "generation", **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
        """One generation (one image or video): the unit of usage statistics and throughput."""
        return self.span(name, "generation", **attributes)

    def phase_enabled(self, name: str) -> bool:
        """Whether :meth:`phase` records a phase of this name (``profile_vae_decode`` / ``profile_text_encoding``)."""
        return self._phase_enabled(name)

    def _phase_enabled(self, name: str) -> bool:
        c = self.config
        if not c.profile_vae_decode and name in ("vae_decode", "vae_encode"):
            return False
        return c.profile_text_encoding or name != "text_encode"
