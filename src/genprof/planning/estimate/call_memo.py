"""Memoised module calls of a meta trace: a decoder called again with the same inputs is not run again.

A video VAE decodes one latent frame per ``decoder`` call, and with tiling once per tile and
frame (Wan 2.1 at 480x832x33 tiled: 135 calls of about 560 operators each). The calls differ
only in a few input shapes (the edge tiles, the first frame of a chunk) and in the metadata of
the causal-convolution cache they are handed, so most calls see exactly the inputs an earlier
call saw. Their effect on the trace is then the same: the same allocator requests in the same
order, the same live-bytes rise, the same outputs and the same cache written back.

:class:`CallMemo` wraps a module's ``forward`` for the length of a trace. On the first call with a
given input description it runs the module and keeps a template: the allocation events the call
added (ids local to the call, storages from before the call named by where they sat in the
arguments), the live-bytes rise and net change, the attention statistics, and where each tensor
of the output and of the argument containers the call mutated came from. A later call with the
same description replays that template instead of running: fresh ids for the call's own
storages, the same frees of the arguments' storages, new meta tensors for whatever outlives the
call. The allocation sequence is event for event the one a run would record (the tests compare
both on small Wan and CogVideoX VAEs, ``bench/bench_trace_memo.py`` on every catalogue VAE).

A call whose effect the template cannot describe is run every time: a storage of the call that
stays alive without being reachable from the output or the arguments (state kept on a module),
a free of a storage the arguments did not hold, an argument that is neither a meta tensor, a
container of them, nor a plain value. ``GENPROF_TRACE_MEMO=0`` turns this off with the operator
memo of :mod:`.trace`.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from genprof.planning.alloc_trace import Action, AllocEvent

log = logging.getLogger(__name__)

_PLAIN = (int, float, bool, str, type(None))
_NO = object()  # a call description the memo cannot replay: run it


class _Unmemoisable(Exception):
    """The call's inputs or effect fall outside what a template can describe."""


@dataclass(frozen=True)
class _Template:
    # the recorder's events: (0, action, j, size) for the call's storage j, (1, "free", path, size)
    # for an argument's storage, (2, "empty_cache", None, 0); the j-th storage gets the j-th new id
    events: tuple[tuple[int, Action, Any, int], ...]
    rec_sizes: dict[int, int]  # local storage j -> requested bytes (recorder)
    rec_delta: int  # the recorder's live bytes after the call over before
    rec_rise: int  # and at their highest during it
    counter_rise: int  # live-bytes peak inside the call over the count at its start
    counter_freed: tuple[Any, ...]  # paths of argument storages the counter stopped counting
    counter_new: dict[int, int]  # local storage j -> counted bytes, for storages that outlive the call
    ops: int
    attn: tuple[int, int, float]  # calls, max tokens, flops
    result: Any  # description of the return value
    mutated: tuple[tuple[Any, Any], ...]  # (path of an argument container, description of its contents after)


def _storage_key(t: Any) -> int:
    return int(t.untyped_storage()._cdata)


# The walks below are methods of short-lived objects, not nested functions: a recursive closure
# is a reference cycle, and one that holds the arguments keeps a cache entry the call replaces
# alive until the next collection, which moves its free in the allocation sequence.
class _Describe:
    """A hashable description of a call's arguments, and their tensors by path."""

    def __init__(self, memo: CallMemo) -> None:
        self.torch, self.rec, self.counter = memo.torch, memo.recorder, memo.counter
        self.tensors: dict[Any, Any] = {}
        self.groups: dict[int, int] = {}

    def walk(self, x: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(x, self.torch.Tensor):
            if not x.is_meta or x.layout is not self.torch.strided or x.is_nested:
                raise _Unmemoisable("an argument is not a strided meta tensor")
            k = _storage_key(x)
            g = self.groups.setdefault(k, len(self.groups))
            self.tensors[path] = x
            return ("t", tuple(x.shape), x.stride(), x.dtype, x.storage_offset(), int(x.untyped_storage().nbytes()),
                    g, self.rec is not None and self.rec.tracks(k), k in self.counter.live)
        if isinstance(x, _PLAIN):
            return (type(x), x)
        if isinstance(x, (list, tuple)):
            return (type(x), tuple([self.walk(v, (*path, i)) for i, v in enumerate(x)]))
        if isinstance(x, dict):
            return (dict, tuple([(k, self.walk(v, (*path, k))) for k, v in x.items()]))
        raise _Unmemoisable(f"an argument of type {type(x).__name__}")


class _Outcome:
    """Where each tensor the call leaves behind came from: a storage of the call, or an argument's."""

    def __init__(self, memo: CallMemo, by_key: dict[int, tuple[Any, Any]], born: dict[int, int],
                 local: dict[int, int], first_id: int) -> None:
        self.torch, self.rec = memo.torch, memo.recorder
        self.by_key, self.born, self.local, self.first_id = by_key, born, local, first_id
        self.same = {id(w()): p for p, w in by_key.values() if w() is not None}
        self.new_j: dict[int, int] = {}  # storage key -> local index, for the call's storages still alive
        self.refs: dict[int, int] = {}
        self.mutated: list[tuple[Any, Any]] = []

    def source(self, t: Any) -> Any:
        k = _storage_key(t)
        if k in self.born:
            rec = self.rec
            if rec is not None:
                sid = rec.storage_id(k) if rec.tracks(k) else -1
                if sid < self.first_id:
                    raise _Unmemoisable("a storage the counter saw born is not the recorder's")
                j = self.local[sid]
            else:
                j = self.new_j.get(k, len(self.new_j))
            self.new_j[k] = j
            self.refs[k] = self.refs.get(k, 0) + 1
            return ("n", j)
        held = self.by_key.get(k)
        if held is not None and held[1]() is not None:  # the argument is alive: the key is its storage
            return ("p", held[0])
        raise _Unmemoisable("a tensor left behind has a storage from outside the call")

    def result(self, x: Any) -> Any:
        if isinstance(x, self.torch.Tensor):
            if not x.is_meta or x.layout is not self.torch.strided:
                raise _Unmemoisable("a tensor left behind is not a strided meta tensor")
            if id(x) in self.same:  # the very tensor an argument was: handed back as it is
                return ("same", self.same[id(x)])
            return ("t", self.source(x), tuple(x.shape), x.stride(), x.dtype, x.storage_offset())
        if isinstance(x, _PLAIN):
            return ("v", x)
        if isinstance(x, (list, tuple)):
            return (type(x), tuple([self.result(v) for v in x]))
        if isinstance(x, dict):
            return (dict, tuple([(k, self.result(v)) for k, v in x.items()]))
        raise _Unmemoisable(f"a result of type {type(x).__name__}")

    def containers(self, x: Any, path: tuple[Any, ...]) -> None:
        """A list or dict of leaves is written back in place after a replay (the module's cache is
        that very list); one of containers is walked, a mix of both is not described."""
        if not isinstance(x, (list, tuple, dict)):
            return
        items = list(enumerate(x)) if isinstance(x, (list, tuple)) else list(x.items())
        nested = [isinstance(v, (list, tuple, dict)) for _, v in items]
        if isinstance(x, tuple) or (items and all(nested)):
            for i, v in items:
                self.containers(v, (*path, i))
        elif any(nested):
            raise _Unmemoisable("an argument container mixes containers and leaves")
        else:
            self.mutated.append((path, self.result(x)))


class _Build:
    """The tensors a replayed call leaves behind, new meta tensors on the storages they name."""

    def __init__(self, torch: Any, tpl: _Template, tensors: dict[Any, Any]) -> None:
        self.torch, self.tpl, self.tensors = torch, tpl, tensors
        self.storages: dict[int, Any] = {}
        self.made: list[tuple[Any, Any]] = []  # (tensor, ("n", j) or ("p", path))

    def build(self, d: Any) -> Any:
        kind = d[0]
        if kind == "same":
            return self.tensors[d[1]]
        if kind == "t":
            torch = self.torch
            _, src, shape, stride, dtype, offset = d
            if src[0] == "p":
                st = self.tensors[src[1]].untyped_storage()
            else:
                st = self.storages.get(src[1])
                if st is None:
                    nbytes = self.tpl.rec_sizes.get(src[1], self.tpl.counter_new.get(src[1], 0))
                    if offset == 0:  # the usual case, a tensor on a storage of its own size: one call
                        t = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
                        if t.untyped_storage().nbytes() == nbytes:
                            self.storages[src[1]] = t.untyped_storage()
                            self.made.append((t, src))
                            return t
                    st = torch.empty(nbytes, dtype=torch.uint8, device="meta").untyped_storage()
                    self.storages[src[1]] = st
            t = torch.empty(0, dtype=dtype, device="meta").set_(st, offset, shape, stride)
            self.made.append((t, src))
            return t
        if kind == "v":
            return d[1]
        if kind is dict:
            return {k: self.build(v) for k, v in d[1]}
        items = [self.build(v) for v in d[1]]
        return items if kind is list else kind(items)


class CallMemo:
    """Replays repeated ``forward`` calls of wrapped modules inside one :func:`.trace.trace_live_bytes` block.

    ``counter`` and ``attn`` are what the block yields (``attn.track`` is its dispatch mode),
    ``recorder`` its :class:`~genprof.planning.alloc_trace.AllocRecorder` or None. ``hits`` and
    ``misses`` count the calls replayed and the calls run.
    """

    def __init__(self, torch: Any, counter: Any, attn: Any, recorder: Any) -> None:
        self.torch = torch
        self.counter = counter
        self.attn = attn
        self.track = attn.track
        self.recorder = recorder
        self.hits = 0
        self.misses = 0
        self._templates: dict[Any, Any] = {}

    def _quiet(self) -> Any:
        return self.torch._C.DisableTorchFunction()

    @contextlib.contextmanager
    def wrapping(self, module: Any) -> Iterator[None]:
        """Route ``module``'s ``forward`` through the memo inside the block (its hooks still run)."""
        module.forward = self._wrapper(module, module.forward)
        try:
            yield
        finally:
            del module.forward
            log.debug("%s calls: %d replayed, %d run", type(module).__name__, self.hits, self.misses)

    def _wrapper(self, module: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.counter.events is not None:  # the counter's own event list is not templated
                return original(*args, **kwargs)
            walker = _Describe(self)
            try:
                # the memo's own tensor queries and tensors bypass the trace's function mode (the
                # attention and convolution hook), which would otherwise see each of them
                with self._quiet():
                    key = (id(module), walker.walk((args, kwargs), ()))
            except _Unmemoisable:
                del walker  # its tensors would outlive the call's own frees
                return original(*args, **kwargs)
            tensors = walker.tensors
            del walker
            tpl = self._templates.get(key)
            if tpl is not None and tpl is not _NO:
                self.hits += 1
                with self._quiet():
                    return self._replay(tpl, args, kwargs, tensors)
            if tpl is _NO:
                tensors.clear()  # held here, an argument could not die inside the call
                return original(*args, **kwargs)
            self.misses += 1
            out, made = self._record(original, args, kwargs, tensors)
            self._templates[key] = made if made is not None else _NO
            return out

        return forward

    # ---------------------------------------------------------------- first call: run and keep a template
    def _record(self, original: Callable[..., Any], args: Any, kwargs: Any,
                tensors: dict[Any, Any]) -> tuple[Any, _Template | None]:
        counter, rec, attn = self.counter, self.recorder, self.attn
        # the arguments by storage, held weakly: a cache entry the call replaces must be free to die
        by_key: dict[int, tuple[Any, Any]] = {}
        for path in list(tensors):  # no loop variable may keep an argument alive through the call
            by_key.setdefault(_storage_key(tensors[path]), (path, weakref.ref(tensors[path])))
        rec_ids = {rec.storage_id(k): p for k, (p, _) in by_key.items() if rec.tracks(k)} if rec is not None else {}
        counted = {k: p for k, (p, _) in by_key.items() if k in counter.live}
        tensors.clear()
        n0 = len(rec.events) if rec is not None else 0
        first_id = rec.next_id if rec is not None else 0
        cur0, peak0, ops0 = counter.current, counter.peak, counter.ops
        attn0 = (attn.calls, attn.max_tokens, attn.flops)
        counter.peak = cur0
        counter.events = []  # the counter's own sequence, to tell a reused storage key from a kept one
        try:
            out = original(*args, **kwargs)
        finally:
            counted_events, counter.events = counter.events, None
            rise = counter.peak - cur0
            counter.peak = max(peak0, counter.peak)
        try:
            with self._quiet():
                tpl = self._template(out, args, kwargs, by_key, rec_ids, counted, counted_events, n0, first_id)
        except _Unmemoisable as exc:
            log.debug("a decoder call is run each time: %s", exc)
            return out, None
        return out, _Template(events=tpl[0], rec_sizes=tpl[1], rec_delta=tpl[6], rec_rise=tpl[7],
                              counter_rise=rise, counter_freed=tpl[2],
                              counter_new=tpl[3], ops=counter.ops - ops0,
                              attn=(attn.calls - attn0[0], attn.max_tokens, attn.flops - attn0[2]),
                              result=tpl[4], mutated=tpl[5])

    def _template(self, out: Any, args: Any, kwargs: Any, by_key: dict[int, tuple[Any, Any]],
                  rec_ids: dict[int, Any], counted: dict[int, Any], counted_events: list[tuple[str, int, int]],
                  n0: int, first_id: int) -> tuple[Any, ...]:
        counter, rec = self.counter, self.recorder
        local: dict[int, int] = {}  # recorder id of a storage of the call -> local index
        events: list[tuple[int, Action, Any, int]] = []
        rec_sizes: dict[int, int] = {}
        cur = rise = 0
        for ev in (rec.events[n0:] if rec is not None else ()):
            if ev.action == "empty_cache":
                events.append((2, "empty_cache", None, 0))
                continue
            if ev.id >= first_id:
                j = local.setdefault(ev.id, len(local))
                rec_sizes[j] = ev.size
                events.append((0, ev.action, j, ev.size))
            elif ev.action == "free" and ev.id in rec_ids:
                events.append((1, "free", rec_ids[ev.id], ev.size))
            else:
                raise _Unmemoisable("the call freed a storage its arguments did not hold")
            cur += ev.size if ev.action == "alloc" else -ev.size
            rise = max(rise, cur)
        # the counter's view, in order (a freed storage's key can come back for a new one)
        counter_freed: list[Any] = []
        pending = dict(counted)  # argument storages still counted
        born: dict[int, int] = {}  # storage key -> counted bytes, for storages of the call alive now
        for action, k, nbytes in counted_events:
            if action == "alloc":
                born[k] = nbytes
            elif action == "free":
                if k in born:
                    del born[k]
                elif k in pending:
                    counter_freed.append(pending.pop(k))
                else:
                    raise _Unmemoisable("the call freed a storage its arguments did not hold")
        found = _Outcome(self, by_key, born, local, first_id)
        res = found.result(out)
        for i, a in enumerate(args):
            found.containers(a, (0, i))
        for k, v in kwargs.items():
            found.containers(v, (1, k))
        # nothing of the call may stay alive out of sight (state on a module), nor be held by more
        # tensors than the ones found: a replay would free it too early
        new_j, refs = found.new_j, found.refs
        if set(born) != set(new_j) or any(counter.live[k][1] != refs[k] for k in born):
            raise _Unmemoisable("a storage of the call outlives it out of sight")
        if rec is not None:
            alive = {k for k in rec.live_keys() if rec.storage_id(k) >= first_id}
            if alive != set(new_j) or any(rec.refs(k) != refs[k] for k in alive):
                raise _Unmemoisable("a storage of the call outlives it out of sight")
        return (tuple(events), rec_sizes, tuple(counter_freed), {new_j[k]: b for k, b in born.items()}, res,
                tuple(found.mutated), cur, rise)

    # ---------------------------------------------------------------- later calls: replay the template
    def _replay(self, tpl: _Template, args: Any, kwargs: Any, tensors: dict[Any, Any]) -> Any:
        torch, counter, rec, attn = self.torch, self.counter, self.recorder, self.attn
        base = 0
        if rec is not None:
            base = rec.next_id
            held = {ref: rec.drop(_storage_key(tensors[ref])) for kind, _, ref, _ in tpl.events if kind == 1}
            stream, new, ev = rec.stream, tuple.__new__, AllocEvent  # unchecked_event, without a call per event
            rec.extend([new(ev, (action, base + ref if kind == 0 else held[ref] if kind == 1 else 0, size, stream))
                        for kind, action, ref, size in tpl.events], len(tpl.rec_sizes), tpl.rec_delta, tpl.rec_rise)
        counter.peak = max(counter.peak, counter.current + tpl.counter_rise)
        for path in tpl.counter_freed:
            counter.forget(_storage_key(tensors[path]))
        counter.ops += tpl.ops
        attn.calls += tpl.attn[0]
        attn.max_tokens = max(attn.max_tokens, tpl.attn[1])
        attn.flops += tpl.attn[2]

        from torch.utils._python_dispatch import _disable_current_modes

        builder = _Build(torch, tpl, tensors)
        with _disable_current_modes():
            out = builder.build(tpl.result)
            after = [(path, builder.build(d)) for path, d in tpl.mutated]
        for t, src in builder.made:
            key = _storage_key(t)
            if src[0] == "n":
                if rec is not None:
                    rec.adopt(key, base + src[1], tpl.rec_sizes[src[1]])
                counter.adopt(key, tpl.counter_new[src[1]])
                self.track.watch(t, key, rec is not None)
            else:  # a new view of an argument's storage: one more tensor holds it
                recorded = rec is not None and rec.tracks(key)
                if recorded:
                    rec.adopt(key, rec.storage_id(key), 0)
                counter.adopt(key, 0)
                self.track.watch(t, key, recorded)
        del builder
        root = (args, kwargs)
        for path, new in after:
            box: Any = root
            for p in path:
                box = box[p]
            if isinstance(box, list):
                box[:] = new
            else:
                box.clear()
                box.update(new)
        return out


def events_equal(a: list[AllocEvent], b: list[AllocEvent]) -> bool:
    """Whether two allocation sequences are the same requests in the same order, ids paired consistently."""
    if len(a) != len(b):
        return False
    pair: dict[int, int] = {}
    for x, y in zip(a, b, strict=True):
        if (x.action, x.size, x.stream) != (y.action, y.size, y.stream):
            return False
        if x.action != "empty_cache" and pair.setdefault(x.id, y.id) != y.id:
            return False
    return True
