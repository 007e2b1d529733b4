"""The meta trace: live storage bytes of real forwards on meta tensors, and a caching-allocator model.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import weakref
from collections.abc import Iterator
from typing import Any

from genprof.errors import MissingDependencyError
from genprof.planning.alloc_trace import input_storage_keys
from genprof.planning.allocator import CachingAllocator, allocation_size

log = logging.getLogger(__name__)

MiB = 1024**2
GiB = 1024**3


# ------------------------------------------------------------------ tracing
def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "memory estimates", "torch") from exc
    return torch


def _round_alloc(n: int) -> int:
    """The caching allocator rounds every request up to a multiple of 512 bytes."""
    return ((n + 511) // 512) * 512


def _round_reserved(n: int) -> int:
    """Bytes a tensor holds in reserved memory: small ones share 2 MiB segments, large ones round to 2 MiB."""
    if n <= MiB:
        return _round_alloc(n)
    return ((n + 2 * MiB - 1) // (2 * MiB)) * (2 * MiB)


class CachingAllocatorModel(CachingAllocator):
    """The estimate's name for :class:`genprof.planning.allocator.CachingAllocator` with torch's default
    settings (native backend, no expandable segments), kept as a name of :mod:`genprof.planning.estimate`.

    Requests round up to 512 bytes; up to 1 MiB they come from 2 MiB segments (small pool),
    up to 10 MiB from 20 MiB segments, larger ones get a segment rounded up to 2 MiB. A request
    takes the smallest free block that fits (best fit) and splits it when the rest is at least
    512 bytes (small pool) or more than 1 MiB (large pool); frees merge with free neighbours;
    :meth:`empty_cache` returns only segments with no live block. Used to explain reserved
    over allocated (see ``docs/planning.md``): e.g. replaying the parameter allocations of a
    model built in fp32 on the GPU then cast to bf16 leaves segments pinned by a few blocks,
    while ``.to("cuda")`` of loaded weights packs them (reserved/allocated about 1.01).
    ``malloc`` returns a handle for ``free``; no per-step trace is kept.
    """

    def __init__(self) -> None:
        super().__init__(keep_trace=False)

    @staticmethod
    def segment_size(n: int) -> int:
        """Bytes of the segment a request rounded to ``n`` bytes gets."""
        return allocation_size(n)


class LiveBytes:
    """Counts live bytes of storages created by operators (meta or real), and their peak.

    A storage is counted once, however many views use it, from the operator that created it
    until the last tensor viewing it is freed. ``spike(extra)`` records a transient peak that
    is not a tensor (an attention backend's workspace).

    With ``record=True`` it also keeps ``events``, the allocation sequence in order:
    ``("alloc", storage_key, bytes)``, ``("free", storage_key, bytes)`` and
    ``("spike", 0, bytes)`` (a transient workspace on top of what is live). That sequence is
    what an allocator replay consumes instead of the fitted reserved factor (see
    :func:`genprof.planning.estimate.trace_phase_allocations`).
    """

    def __init__(self, record: bool = False) -> None:
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0
        self.ops = 0
        self.events: list[tuple[str, int, int]] | None = [] if record else None

    def _release(self, key: int) -> None:
        ent = self.live.get(key)
        if ent is None:
            return
        ent[1] -= 1
        if ent[1] <= 0:
            self.current -= ent[0]
            del self.live[key]
            if self.events is not None:
                self.events.append(("free", key, ent[0]))

    def add(self, t: Any) -> None:
        st = t.untyped_storage()
        key = int(st._cdata)
        self.count(st, key)
        weakref.finalize(t, self._release, key)

    def count(self, st: Any, key: int) -> None:
        """:meth:`add` without the finalizer: the caller releases ``key`` when the tensor dies."""
        ent = self.live.get(key)
        if ent is None:
            ent = [_round_alloc(int(st.nbytes())), 0]
            self.live[key] = ent
            self.current += ent[0]
            if self.events is not None:
                self.events.append(("alloc", key, ent[0]))
        ent[1] += 1
        if self.current > self.peak:
            self.peak = self.current

    def forget(self, key: int) -> None:
        """Stop counting a storage now, whatever tensors still name it (a replayed call freed it)."""
        ent = self.live.pop(key)
        self.current -= ent[0]

    def adopt(self, key: int, nbytes: int) -> None:
        """One more tensor holds storage ``key``, counted at ``nbytes`` if it is new (a replayed call made it)."""
        ent = self.live.get(key)
        if ent is None:
            ent = self.live[key] = [nbytes, 0]
            self.current += nbytes
        ent[1] += 1

    def spike(self, extra: int) -> None:
        if self.events is not None and extra > 0:
            self.events.append(("spike", 0, extra))
        self.peak = max(self.peak, self.current + extra)


# ------------------------------------------------------------------ memoised meta operators
# A meta operator only computes its outputs' shapes, strides and dtypes, and for an operator whose
# outputs alias none of its inputs (no alias annotation in its schema, no argument written) those
# depend only on the inputs' metadata and the other arguments. A tiled video decode calls the same
# few hundred operators with the same shapes tens of thousands of times, and evaluating their meta
# kernels (Python decompositions, mostly) was most of its trace time: the first evaluation's output
# metadata is kept and later calls get fresh meta tensors of the same metadata (new storages, so the
# live-bytes count and the allocation sequence are the same). ``GENPROF_TRACE_MEMO=0`` turns it off.
_MEMO: dict[Any, Any] = {}
_MEMO_ON = [os.environ.get("GENPROF_TRACE_MEMO", "1").strip() not in ("0", "")]
_NO_MEMO = object()


def memo_enabled() -> bool:
    """Whether the trace memoises (operators here, repeated decoder calls in :mod:`.call_memo`)."""
    return _MEMO_ON[0]


_PLAIN = (int, float, bool, str, type(None))


def _meta_of(x: Any) -> Any:
    if isinstance(x, _TENSOR):
        # only meta tensors: a real tensor's values can decide an output's shape (nonzero);
        # a sparse or nested one has no strides (stride() raises) and is never memoised
        if not x.is_meta or x.layout is not _STRIDED or x.is_nested:
            raise TypeError
        return (x.shape, x.stride(), x.dtype, x.storage_offset())
    if isinstance(x, _PLAIN):
        return (type(x), x)
    if isinstance(x, (list, tuple)):
        return (type(x), tuple([_meta_of(v) for v in x]))
    if isinstance(x, _TORCH_PLAIN):
        return x
    raise TypeError


# set when the modes are built (torch is imported lazily); _meta_of runs only inside them
_TENSOR: Any = ()
_STRIDED: Any = None
_TORCH_PLAIN: Any = ()


def _pure(func: Any) -> bool:
    cached = _PURE.get(func)
    if cached is None:
        schema = getattr(func, "_schema", None)
        cached = schema is not None and not any(r.alias_info is not None for r in schema.returns) and not any(
            a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
        # ``_unsafe_view`` is a view its schema does not declare (reshape and matmul end in it)
        cached = cached and schema is not None and schema.name != "aten::_unsafe_view"
        _PURE[func] = cached
    return cached


_PURE: dict[Any, bool] = {}


def _memo_key(func: Any, args: Any, kwargs: Any) -> Any:
    """The memo's key for a pure operator (:func:`_pure`), or None when an argument cannot be described."""
    try:
        return (func, tuple([_meta_of(a) for a in args]),
                tuple([(k, _meta_of(v)) for k, v in kwargs.items()]) if kwargs else ())
    except TypeError:  # an argument we cannot describe (a symbolic size, a generator, ...): run it
        return None


def _memo_store(torch: Any, key: Any, out: Any, args: Any, kwargs: Any) -> None:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    entry = []
    # an output on an input's storage is a view whatever the schema says (``aten._unsafe_view``
    # declares no alias): fresh tensors would turn it into a copy, an allocation the run never makes
    seen: set[int] = input_storage_keys(torch.Tensor, args, kwargs)
    for t in outs:
        if not isinstance(t, torch.Tensor) or t.device.type != "meta" or t.storage_offset() != 0:
            _MEMO[key] = _NO_MEMO
            return
        st = t.untyped_storage()
        need = t.element_size() * (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))) if t.numel() else 0
        if int(st._cdata) in seen or int(st.nbytes()) != need:  # outputs sharing a storage, or a larger one
            _MEMO[key] = _NO_MEMO
            return
        seen.add(int(st._cdata))
        entry.append((tuple(t.shape), t.stride(), t.dtype))
    if len(_MEMO) > 200_000:
        _MEMO.clear()
    _MEMO[key] = (isinstance(out, (tuple, list)), type(out), tuple(entry))


def _from_memo(torch: Any, hit: Any) -> Any:
    if hit is _NO_MEMO:
        raise LookupError
    many, kind, entry = hit
    outs = [torch.empty_strided(shape, stride, dtype=dt, device="meta") for shape, stride, dt in entry]
    if not many:
        return outs[0]
    return tuple(outs) if kind is tuple else list(outs)


@functools.lru_cache(maxsize=1)
def _modes() -> tuple[type, type]:
    torch = _torch()
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    global _TENSOR, _STRIDED, _TORCH_PLAIN
    _TENSOR, _STRIDED = torch.Tensor, torch.strided
    _TORCH_PLAIN = (torch.dtype, torch.device, torch.memory_format, torch.layout)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    convs = (torch.nn.functional.conv2d, torch.nn.functional.conv3d)
    tensor = torch.Tensor
    ref = weakref.ref

    class _Track(TorchDispatchMode):
        def __init__(self, counter: LiveBytes, recorder: Any = None) -> None:
            super().__init__()
            self.counter = counter
            self.recorder = recorder
            # one weak reference per output tensor, for the counter and the recorder together
            # (weakref.finalize per counter was a fifth of a tiled video decode's trace time)
            self._watched: dict[int, tuple[Any, int, bool]] = {}

        def watch(self, t: Any, key: int, recorded: bool) -> None:
            """Release ``t``'s storage in the counter (and the recorder) when ``t`` dies."""
            r = ref(t, self._dead)
            self._watched[id(r)] = (r, key, recorded)

        def _dead(self, r: Any) -> None:
            _, key, recorded = self._watched.pop(id(r))
            self.counter._release(key)
            if recorded:
                self.recorder.release(key)

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            pure = _pure(func)
            key = _memo_key(func, args, kwargs) if pure and _MEMO_ON[0] else None
            hit = _MEMO.get(key) if key is not None else None
            if hit is not None and hit is not _NO_MEMO:
                out = _from_memo(torch, hit)
            else:
                out = func(*args, **kwargs)
                if key is not None and hit is None:
                    _memo_store(torch, key, out, args, kwargs)
            counter = self.counter
            counter.ops += 1
            outs = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, tensor)]
            if not outs:
                return out
            rec = self.recorder
            # the allocation recorder's rule (alloc_trace): a view of a tensor from before the
            # region (a weight's transpose) shares its storage and is no allocation. A pure
            # operator's outputs alias none of its inputs (its schema says so): no scan needed
            inputs = input_storage_keys(tensor, args, kwargs) if rec is not None and not pure else None
            watched, dead = self._watched, self._dead
            for t in outs:
                st = t.untyped_storage()
                skey = int(st._cdata)
                counter.count(st, skey)
                recorded = rec is not None and (inputs is None or skey not in inputs or rec.tracks(skey))
                if recorded:
                    rec.count(st, skey)
                r = ref(t, dead)
                watched[id(r)] = (r, skey, recorded)
            return out

    class _Attention(TorchFunctionMode):
        def __init__(self, counter: LiveBytes, backend: str) -> None:
            super().__init__()
            self.counter = counter
            self.backend = backend
            self.calls = 0
            self.max_tokens = 0
            self.flops = 0.0  # QK^T and PV matmuls of every attention call: 4 * B*H * Lq * Lk * D
            self.conv_recorder: Any = None  # the allocation recorder: convolutions request their workspace there

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func in convs:
                out = func(*args, **kwargs)
                rec = self.conv_recorder
                w = args[1] if len(args) > 1 else kwargs.get("weight")
                if rec is not None and w is not None and any(int(n) > 1 for n in w.shape[2:]):
                    # what cuDNN asks the caching allocator for inside the convolution, after the
                    # output: only the allocation recorder sees it (the factor path fits its own).
                    # A 1x1 convolution asks for nothing (bench/results/conv_workspace_h100.json)
                    rec.spike(conv_workspace_bytes(args[0] if args else kwargs["input"], out))
                return out
            if func is not sdpa:
                return func(*args, **kwargs)
            qkv = list(args[:3]) + [kwargs[n] for n in ("query", "key", "value") if n in kwargs]
            q, k, v = qkv[:3]
            self.calls += 1
            lq, lk = int(q.shape[-2]), int(k.shape[-2])
            self.max_tokens = max(self.max_tokens, lq, lk)
            bh = q.numel() // max(1, q.shape[-1] * lq)
            esize = q.element_size()
            self.flops += 4.0 * bh * lq * lk * int(q.shape[-1])
            if self.backend == "math":
                # scores and softmax(scores), both Lq x Lk per head, alive together
                extra = 2 * _round_alloc(bh * lq * lk * esize)
            else:
                extra = _round_alloc(bh * lq * 4)  # log-sum-exp, fp32
            self.counter.spike(extra)
            return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)

    return _Track, _Attention


def conv_workspace_bytes(x: Any, out: Any) -> int:
    """cuDNN's workspace for one convolution with a kernel larger than 1: a copy of its input and of its output.

    PyTorch hands cuDNN contiguous NCHW (NCDHW) tensors; cuDNN's fast kernels work in NHWC and
    take both layouts' copies from the workspace, which the caching allocator serves like any
    other request (and frees when the call returns). Measured per convolution on the H100
    (``bench/results/conv_workspace_h100.json``, cuDNN 9.19, 91 shapes): 3x3 2-D and 3x3x3 3-D
    convolutions of the VAE decoders' sizes ask for 1.00-1.07x input plus output from 32 MiB
    up (more, relative, on small tensors, where it does not decide a peak); 1x1 convolutions ask
    for nothing, so the trace requests this only for kernels larger than 1. Checked on whole
    decodes (``bench/bench_estimate_replay.py``): every measured call within 3.0%, where the
    rule without 3-D convolutions left the Wan decodes 6.0-6.2% low, and one applied to 1x1
    convolutions too put CogVideoX's 7.1% high (its spatial norms run two 1x1 convolutions on
    full-size tensors).
    """
    return _round_alloc(int(x.numel() * x.element_size())) + _round_alloc(int(out.numel() * out.element_size()))


class _Tee:
    """Forwards an attention workspace ``spike`` to the live-bytes counter and the allocation recorder."""

    def __init__(self, counter: LiveBytes, recorder: Any) -> None:
        self.counter = counter
        self.recorder = recorder

    def spike(self, extra: int) -> None:
        self.counter.spike(extra)
        self.recorder.spike(extra)


@contextlib.contextmanager
def trace_live_bytes(backend: str = "flash", record: bool = False,
                     recorder: Any = None) -> Iterator[tuple[LiveBytes, Any]]:
    """Count live bytes of everything created inside the block (see :class:`LiveBytes`).

    ``record=True`` keeps the allocation sequence in ``counter.events``. ``recorder`` (an
    :class:`genprof.planning.alloc_trace.AllocRecorder`) also records the sequence as allocator
    requests in the same pass, the cuDNN workspace of each convolution with a kernel larger
    than 1 included (:func:`conv_workspace_bytes`).
    """
    torch = _torch()
    track_cls, attn_cls = _modes()
    counter = LiveBytes(record=record)
    track = track_cls(counter, recorder)
    attn = attn_cls(counter if recorder is None else _Tee(counter, recorder), backend)
    attn.track = track
    if recorder is not None:
        attn.conv_recorder = recorder
    with torch.no_grad(), track, attn:
        yield counter, attn
    if recorder is not None:
        recorder.close()


