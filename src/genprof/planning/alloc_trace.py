"""Record the allocation sequence of a traced region: every storage's size, stream and alloc/free order.

The region runs on ``meta`` (or fake) tensors under a
:class:`torch.utils._python_dispatch.TorchDispatchMode`, the mechanism the estimator already uses to
count live bytes (``genprof.planning.estimate.trace_live_bytes``): each storage an operator creates
is an ``alloc`` event, and the moment the last tensor viewing it dies is its ``free`` event. Views
and in-place operators create no storage and record nothing; tensors that existed before the region
(weights, inputs) are not recorded, and neither is their release. Calls to ``torch.cuda.empty_cache``
inside the region become ``empty_cache`` events.

:class:`AllocRecorder` has the interface of the estimator's ``LiveBytes`` counter (``add``,
``spike``, ``current``, ``peak``, ``ops``), so it can stand in for it in the estimator's dispatch
mode; :func:`record_allocations` is the standalone entry point. Unlike that counter, the recorder's
own mode does not count a view of a pre-existing tensor (``weight.t()`` inside ``F.linear``) as a new
storage. The events feed
:func:`genprof.planning.allocator.replay`, which turns them into reserved memory.

Needs torch (imported lazily); nothing here touches CUDA.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from genprof.errors import MissingDependencyError

Action = Literal["alloc", "free", "empty_cache"]


class _Fields(NamedTuple):
    action: Action
    id: int = 0
    size: int = 0
    stream: int = 0


class AllocEvent(_Fields):
    """One request to the caching allocator, in program order.

    ``id`` pairs an ``alloc`` with its ``free`` (unique among live storages; 0 for ``empty_cache``),
    ``size`` is the storage's byte size as requested (the allocator does the rounding), ``stream``
    an opaque stream number (0 is the default stream).

    A named tuple, not a dataclass: a tiled video decode records most of a million of them, and
    building a frozen dataclass took three times as long. The recorder's own events skip the
    checks below (:func:`unchecked_event`).
    """

    __slots__ = ()

    def __new__(cls, action: Action, id: int = 0, size: int = 0, stream: int = 0) -> AllocEvent:  # noqa: A002
        if action not in ("alloc", "free", "empty_cache"):
            raise ValueError(f"AllocEvent action must be 'alloc', 'free' or 'empty_cache', not {action!r}")
        if size < 0:
            raise ValueError(f"AllocEvent size must be >= 0, got {size}")
        return super().__new__(cls, action, id, size, stream)


def unchecked_event(action: Action, id: int, size: int, stream: int) -> AllocEvent:  # noqa: A002
    """An :class:`AllocEvent` without the checks (the recorder's own events are well formed)."""
    return tuple.__new__(AllocEvent, (action, id, size, stream))


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "allocation traces", "torch") from exc
    return torch


@dataclass
class AllocRecorder:
    """Collects :class:`AllocEvent` for every storage created while it is attached to a dispatch mode.

    Duck-compatible with the estimator's ``LiveBytes`` (``add(tensor)``, ``spike(extra)``,
    ``current``, ``peak``, ``ops``); ``current``/``peak`` here are unrounded live bytes.
    ``spike(extra)`` (a transient workspace that is no tensor, e.g. an attention backend's) records
    an ``alloc`` immediately followed by its ``free``.
    """

    stream: int = 0
    events: list[AllocEvent] = field(default_factory=list)
    current: int = 0
    peak: int = 0
    ops: int = 0
    _live: dict[int, list[int]] = field(default_factory=dict, repr=False)  # storage key -> [id, size, refs]
    _next_id: int = field(default=1, repr=False)
    _closed: bool = field(default=False, repr=False)

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def _release(self, key: int) -> None:
        ent = self._live.get(key)
        if ent is None or self._closed:
            return
        ent[2] -= 1
        if ent[2] <= 0:
            del self._live[key]
            self.current -= ent[1]
            self.events.append(unchecked_event("free", ent[0], ent[1], self.stream))

    def add(self, t: Any) -> None:
        """Count tensor ``t``: a new storage is an ``alloc``; its ``free`` comes when its last tensor dies."""
        st = t.untyped_storage()
        key = int(st._cdata)
        self.count(st, key)
        weakref.finalize(t, self._release, key)

    def count(self, st: Any, key: int) -> None:
        """:meth:`add` for a tensor whose storage ``st`` (key ``key``) the caller watches: the caller
        calls :meth:`release` with ``key`` when that tensor dies (one finalizer for several counters)."""
        ent = self._live.get(key)
        if ent is None:
            size = int(st.nbytes())
            ent = [self._new_id(), size, 0]
            self._live[key] = ent
            self.events.append(unchecked_event("alloc", ent[0], size, self.stream))
            self.current += size
            self.peak = max(self.peak, self.current)
        ent[2] += 1

    def release(self, key: int) -> None:
        """One tensor counted with :meth:`count` on storage ``key`` died."""
        self._release(key)

    def tracks(self, storage_key: int) -> bool:
        """Whether the storage with this ``_cdata`` key was allocated in the region and is alive."""
        return storage_key in self._live

    def spike(self, extra: int) -> None:
        """A transient buffer of ``extra`` bytes, allocated and freed at once."""
        if extra <= 0:
            return
        i = self._new_id()
        self.events.append(unchecked_event("alloc", i, int(extra), self.stream))
        self.events.append(unchecked_event("free", i, int(extra), self.stream))
        self.peak = max(self.peak, self.current + int(extra))

    def empty_cache(self) -> None:
        self.events.append(unchecked_event("empty_cache", 0, 0, self.stream))

    def close(self) -> None:
        """Stop recording: storages still alive are left without a ``free`` (they outlive the region)."""
        self._closed = True

    # the interface a replayed call uses (genprof.planning.estimate.call_memo): the same events
    # and the same live storages as the operators of the call would have left
    @property
    def next_id(self) -> int:
        """The id the next allocation will get (ids only grow)."""
        return self._next_id

    def storage_id(self, storage_key: int) -> int:
        """The event id of a live storage of the region."""
        return self._live[storage_key][0]

    def refs(self, storage_key: int) -> int:
        """How many tensors hold a live storage of the region."""
        return self._live[storage_key][2]

    def live_keys(self) -> list[int]:
        """Storage keys of the region's live storages."""
        return list(self._live)

    def extend(self, events: list[AllocEvent], ids: int, delta: int, rise: int) -> None:
        """Append a replayed call's ``events`` (their new ids are the next ``ids`` ids, in order),
        which change the live bytes by ``delta`` and raise them by at most ``rise`` on the way."""
        self.events.extend(events)
        self._next_id += ids
        self.peak = max(self.peak, self.current + rise)
        self.current += delta

    def drop(self, storage_key: int) -> int:
        """Stop tracking a live storage without recording anything; returns its event id (its free
        is in events given to :meth:`extend`)."""
        return self._live.pop(storage_key)[0]

    def adopt(self, storage_key: int, event_id: int, size: int) -> None:
        """One more tensor holds the storage of allocation ``event_id`` (released with :meth:`release`)."""
        ent = self._live.setdefault(storage_key, [event_id, size, 0])
        ent[2] += 1

    @property
    def live_ids(self) -> list[int]:
        """Ids of storages allocated in the region and still alive."""
        return sorted(e[0] for e in self._live.values())


def input_storage_keys(tensor_type: Any, args: Any, kwargs: Any) -> set[int]:
    """Storage keys (``_cdata``) of the tensors among an operator's arguments.

    ATen operators take tensors, lists or tuples of tensors (``Tensor[]``, ``Tensor?[]``) and
    scalars, so tensors and flat sequences are scanned here and anything deeper goes through
    pytree. This runs for every operator of a trace, where ``pytree.tree_leaves`` on all the
    arguments was a quarter of the time.
    """
    keys: set[int] = set()
    for a in (*args, *(kwargs.values() if kwargs else ())):
        if isinstance(a, tensor_type):
            keys.add(int(a.untyped_storage()._cdata))
        elif isinstance(a, (list, tuple, dict)):
            flat = a if isinstance(a, (list, tuple)) and not any(isinstance(b, (list, tuple, dict)) for b in a) else None
            if flat is None:
                from torch.utils import _pytree as pytree

                flat = pytree.tree_leaves(a)
            keys.update(int(t.untyped_storage()._cdata) for t in flat if isinstance(t, tensor_type))
    return keys


@functools.lru_cache(maxsize=1)
def _recording_mode() -> type:
    torch = _torch()
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Record(TorchDispatchMode):
        def __init__(self, rec: AllocRecorder) -> None:
            super().__init__()
            self.rec = rec

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            self.rec.ops += 1
            outs = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)]
            if not outs:
                return out
            # a view of a tensor from before the region (a weight's transpose) shares its storage:
            # that storage is not new, so it is not an allocation
            inputs = input_storage_keys(torch.Tensor, args, kwargs)
            for t in outs:
                key = int(t.untyped_storage()._cdata)
                if key in inputs and not self.rec.tracks(key):
                    continue
                self.rec.add(t)
            return out

    return _Record


@contextlib.contextmanager
def _patched_empty_cache(rec: AllocRecorder) -> Iterator[None]:
    torch = _torch()
    cuda = torch.cuda
    original = cuda.empty_cache

    def empty_cache() -> None:
        rec.empty_cache()

    cuda.empty_cache = empty_cache
    try:
        yield
    finally:
        cuda.empty_cache = original


@contextlib.contextmanager
def recording(stream: int = 0, *, catch_empty_cache: bool = True) -> Iterator[AllocRecorder]:
    """Record every storage created inside the block (no autograd; meta or fake tensors)."""
    torch = _torch()
    rec = AllocRecorder(stream=stream)
    mode = _recording_mode()(rec)
    patch = _patched_empty_cache(rec) if catch_empty_cache else contextlib.nullcontext()
    try:
        with torch.no_grad(), patch, mode:
            yield rec
    finally:
        rec.close()


def record_allocations(region: Callable[[], Any], *, stream: int = 0, keep_output: bool = False,
                       catch_empty_cache: bool = True) -> list[AllocEvent]:
    """Run ``region()`` and return its allocation sequence.

    The region's return value is dropped inside the recording (its storages get their ``free``
    events) unless ``keep_output`` is true, in which case they stay allocated, as a phase's output
    that the next phase consumes would.
    """
    with recording(stream, catch_empty_cache=catch_empty_cache) as rec:
        out = region()
        if not keep_output:
            del out
            import gc

            gc.collect()
    return list(rec.events)
