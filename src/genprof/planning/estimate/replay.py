"""Reserved memory from the allocator replay: the traced allocation sequence of a whole call, fed
through :mod:`genprof.planning.allocator`, instead of fitted reserved factors.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method and
``docs/allocator.md`` for the model. The sequence of one call (offload ``"none"``):

1. every component's parameters and buffers, tensor by tensor in the order ``module.to("cuda")``
   moves them (children first, then the module's own parameters, then its buffers), as
   ``from_pretrained`` + ``pipe.to("cuda")`` places loaded weights;
2. the cuBLAS workspace (``workspace_bytes``, allocated by the first GEMM and kept by its handle);
3. text encoding: each encoder's traced forward; its outputs (the prompt embeddings) stay
   allocated to the end of the call;
4. the latents (fp32) and the denoiser's call inputs, then two denoising steps (each: the
   scheduler's two latent-sized fp32 temporaries and one traced denoiser forward per CFG call;
   the second step is the steady state, reusing what the first one cached);
5. the VAE's input latents, then the traced ``vae.decode``.

Every traced 2-D convolution (UNets, image VAEs) also requests its cuDNN workspace, a copy of its
input and of its output (:func:`genprof.planning.estimate.trace.conv_workspace_bytes`), freed
when the convolution returns: the trace records it where the call happens.

Nothing is emptied between phases, as in a pipeline call. Each phase's predicted peak reserved is
the replay's segment total at its highest during that phase. What the trace cannot see stays a
named constant of :data:`genprof.planning.estimate.CALIBRATION` (the cuBLAS workspace); the
reserved factors and the cache-carry fraction are not used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from genprof.catalog import ModelSpec
from genprof.planning.alloc_trace import AllocEvent
from genprof.planning.estimate import cache
from genprof.planning.estimate.settings import _TORCH_DTYPES, GenerationSettings, _denoiser_inputs, _nbytes
from genprof.planning.estimate.trace import _torch

log = logging.getLogger(__name__)

REPLAY_TERMS = ("workspace_bytes",)
"""The calibration constants the replay still uses: what a meta trace cannot see."""


@dataclass(frozen=True)
class PhaseRecording:
    """A phase's traced allocation sequence: ``events`` (ids unique within it), and ``mark``, the
    index where the forward returned (events after it free the outputs)."""

    events: tuple[AllocEvent, ...]
    mark: int


def weight_sizes(module: Any) -> list[int]:
    """Byte sizes of ``module``'s parameters and buffers in the order ``module.to(device)`` moves them.

    ``Module._apply`` recurses into children first, then converts the module's own parameters,
    then its buffers; a tied parameter is moved once.
    """
    seen: set[int] = set()
    out: list[int] = []

    def visit(m: Any) -> None:
        for child in m.children():
            visit(child)
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            out.append(int(t.numel() * t.element_size()))

    visit(module)
    return out


class _Sequence:
    """Builds one replay sequence, with fresh ids for every block.

    A recording is not copied event by event with new ids: it is kept as a part with an id
    offset (its ids are unique within it), and :func:`replay_phases` adds the offset as it feeds
    the allocator. A tiled video decode is most of a million events, and copying them (a new
    event object each) cost as long as replaying them.
    """

    def __init__(self) -> None:
        # ("own", events) built here, or ("rec", events, end, offset): a recording's first ``end``
        # events with ``offset`` added to every id
        self.parts: list[tuple[Any, ...]] = []
        self._own: list[AllocEvent] | None = None
        self._next = 1
        self.phase_at: dict[str, tuple[int, int]] = {}  # phase -> [first part, last part + 1)
        self._max_ids: dict[int, int] = {}

    def _own_part(self) -> list[AllocEvent]:
        if self._own is None:
            self._own = []
            self.parts.append(("own", self._own))
        return self._own

    def alloc(self, size: int) -> int:
        i = self._next
        self._next += 1
        self._own_part().append(AllocEvent("alloc", i, int(size)))
        return i

    def free(self, i: int, size: int = 0) -> None:
        self._own_part().append(AllocEvent("free", i, int(size)))

    def add(self, rec: PhaseRecording, *, keep_outputs: bool = False) -> None:
        """Append ``rec`` with its ids moved past every id used so far."""
        top = self._max_ids.get(id(rec))
        if top is None:
            top = self._max_ids[id(rec)] = max((ev.id for ev in rec.events), default=0)
        self._own = None
        self.parts.append(("rec", rec.events, rec.mark if keep_outputs else len(rec.events), self._next))
        self._next += top + 1

    def begin(self, phase: str) -> None:
        self._own = None
        self.phase_at[phase] = (len(self.parts), len(self.parts))

    def end(self, phase: str) -> None:
        self._own = None
        self.phase_at[phase] = (self.phase_at[phase][0], len(self.parts))

    def events(self) -> list[list[AllocEvent]]:
        """The sequence part by part, as events with their final ids (for inspection and checks;
        the replay does not build it). A recording's frees of ids it did not allocate are left out."""
        out: list[list[AllocEvent]] = []
        for part in self.parts:
            if part[0] == "own":
                out.append(list(part[1]))
                continue
            _, evs, end, off = part
            born: set[int] = set()
            mine: list[AllocEvent] = []
            for ev in evs[:end]:
                if ev.action == "alloc":
                    born.add(ev.id)
                    mine.append(AllocEvent("alloc", ev.id + off, ev.size))
                elif ev.action == "free":
                    if ev.id in born:
                        born.discard(ev.id)
                        mine.append(AllocEvent("free", ev.id + off, ev.size))
                else:
                    mine.append(ev)
            out.append(mine)
        return out


def call_sequence(weights: Iterable[int], recordings: Mapping[str, Any], kept: Mapping[str, list[int]],
                  cal: Mapping[str, float], *, denoise_calls: int, steps: int = 2) -> _Sequence:
    """The allocation sequence of one pipeline call (see the module docstring).

    ``recordings``: ``"text_encode"`` (a list, one per encoder), ``"denoise"``, ``"vae_decode"``
    (each a :class:`PhaseRecording`, or absent). ``kept``: byte sizes allocated before the phase and
    kept through it: ``"denoise"`` (latents, the denoiser's inputs), ``"step"`` (the scheduler's
    temporaries of one step), ``"vae_decode"`` (the VAE's input).
    """
    seq = _Sequence()
    for n in weights:
        seq.alloc(n)
    ws = int(cal["workspace_bytes"])
    if ws:
        seq.alloc(ws)
    if recordings.get("text_encode"):
        seq.begin("text_encode")
        for rec in recordings["text_encode"]:
            seq.add(rec, keep_outputs=True)
        seq.end("text_encode")
    if recordings.get("denoise") is not None:
        seq.begin("denoise")
        for n in kept.get("denoise", ()):
            seq.alloc(n)
        for _ in range(steps):
            tmp = [(seq.alloc(n), n) for n in kept.get("step", ())]
            for _ in range(denoise_calls):
                seq.add(recordings["denoise"])
            for i, n in tmp:
                seq.free(i, n)
        seq.end("denoise")
    if recordings.get("vae_decode") is not None:
        seq.begin("vae_decode")
        for n in kept.get("vae_decode", ()):
            seq.alloc(n)
        seq.add(recordings["vae_decode"])
        seq.end("vae_decode")
    return seq


def replay_phases(seq: _Sequence, config: Any = None) -> dict[str, dict[str, int]]:
    """Replay ``seq`` through the allocator model: per phase, its peak reserved and allocated bytes."""
    from genprof.planning.allocator import AllocatorOutOfMemory, CachingAllocator

    a = CachingAllocator(config, keep_trace=False)
    malloc, free, empty_cache = a.malloc, a.free, a.empty_cache
    live: dict[int, int] = {}
    phase_of = {i: name for name, (lo, hi) in seq.phase_at.items() for i in range(lo, hi)}
    starting: dict[int, list[str]] = {}
    for name, (lo, _) in seq.phase_at.items():
        starting.setdefault(lo, []).append(name)
    # per phase: reserved and allocated when it starts, its peak reserved and allocated so far
    stats: dict[str, list[int]] = {}
    count = 0
    oom_at = -1
    for pi, part in enumerate(seq.parts):
        for starts in starting.get(pi, ()):
            stats[starts] = [a.reserved, a.allocated, a.reserved, -1]
        phase = phase_of.get(pi)
        st = stats[phase] if phase is not None else None
        own = part[0] == "own"
        evs, end, off = (part[1], len(part[1]), 0) if own else part[1:]
        pr, pa = (st[2], st[3]) if st is not None else (0, 0)
        try:
            for k in range(end):
                act, i, size, _ = evs[k]
                if act == "alloc":
                    live[i + off] = malloc(size)
                elif act == "free":
                    h = live.pop(i + off, None)
                    if h is None:  # a free of an id from before the part
                        count += own  # a recording's are not in the sequence at all
                        continue
                    free(h)
                else:
                    empty_cache()
                count += 1
                if st is not None:
                    if a.reserved > pr:
                        pr = a.reserved
                    if a.allocated > pa:
                        pa = a.allocated
        except AllocatorOutOfMemory:
            oom_at = count
        if st is not None:
            st[2], st[3] = pr, pa
        if oom_at >= 0:
            break
    out: dict[str, dict[str, int]] = {}
    for name in seq.phase_at:
        before, alloc0, pr, pa = stats.get(name, [a.reserved, a.allocated, a.reserved, -1])
        out[name] = {"peak_reserved_bytes": pr, "peak_allocated_bytes": alloc0 if pa < 0 else pa,
                     "reserved_at_start_bytes": before}
    out["_call"] = {"peak_reserved_bytes": a.peak_reserved, "peak_allocated_bytes": a.peak_allocated,
                    "events": count, "oom_at": oom_at}
    return out


# ------------------------------------------------------------------ the estimate's entry point
def replay_call(spec: ModelSpec, gen: GenerationSettings, cal: Mapping[str, float], *, call_batch: int,
                calls_per_step: int, want: frozenset[str], record: Callable[[str, str | None], Any],
                config: Any = None) -> dict[str, dict[str, int]]:
    """Peak reserved per phase of one call by allocator replay (disk-cached; see the module docstring).

    ``record(phase, component)`` returns the phase's :class:`PhaseRecording` (the estimator's traced
    forward with the allocation recorder on).
    """
    from genprof.planning.allocator import AllocatorConfig
    from genprof.planning.estimate.weights import _meta_module

    conf = config or AllocatorConfig.from_env()
    terms = {k: float(cal[k]) for k in REPLAY_TERMS}
    key = cache.cache_key("replay_call", spec, gen, call_batch, calls_per_step, sorted(want), terms, repr(conf))
    hit = cache.load(key)
    if hit is not None:
        return {k: {kk: int(vv) for kk, vv in v.items()} for k, v in hit.items()}
    weights: list[int] = []
    for c in spec.components:
        weights += weight_sizes(_meta_module(spec.name, c.name, gen.vae_dtype if c.role == "vae" else gen.dtype))
    recs: dict[str, Any] = {}
    if "text_encode" in want:
        recs["text_encode"] = [record("text_encode", c.name) for c in spec.text_encoders]
    if "denoise" in want:
        recs["denoise"] = record("denoise", None)
    if "vae_decode" in want:
        recs["vae_decode"] = record("vae_decode", None)
    b = gen.batch_size
    lf, lh, lw = gen.latent_shape(spec)
    latent_fp32 = _nbytes(b, spec.latent_channels, lf, lh, lw, esize=4)
    kept: dict[str, list[int]] = {
        "denoise": [latent_fp32, *_input_sizes(_denoiser_inputs(spec, gen, call_batch))],
        "step": [latent_fp32, latent_fp32],
        "vae_decode": [_nbytes(b, spec.latent_channels, lf, lh, lw, esize=_esize(gen.vae_dtype))],
    }
    seq = call_sequence(weights, recs, kept, cal, denoise_calls=calls_per_step)
    out = replay_phases(seq, conf)
    cache.store(key, out)
    return out


def _esize(dtype: str) -> int:
    return 4 if _TORCH_DTYPES[dtype] == "float32" else 2


def _input_sizes(obj: Any) -> list[int]:
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        return [int(obj.numel() * obj.element_size())]
    if isinstance(obj, Mapping):
        return [n for v in obj.values() for n in _input_sizes(v)]
    if isinstance(obj, (list, tuple)):
        return [n for v in obj for n in _input_sizes(v)]
    return []
