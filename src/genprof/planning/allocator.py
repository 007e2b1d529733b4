"""A model of PyTorch's CUDA caching allocator (native backend), replayable on any allocation sequence.

What it reproduces, rule by rule, from ``c10/cuda/CUDACachingAllocator.cpp`` (read at pytorch
commit 001074d25084fdb87a799823e395a50f5ec044d3) and the allocator configuration of the installed
torch 2.13.0 (git cf30153c4c131c8164ee7798e5022d810682e2cb: its shipped headers
``c10/core/AllocatorConfig.h`` and ``c10/cuda/CUDAAllocatorConfig.h``, the configuration tests in
``c10/test/core/AllocatorConfig_test.cpp``, and the installed parser's own accept/reject behaviour,
probed through ``torch._C._accelerator_setAllocatorSettings``):

* **Rounding.** A request rounds up to 512 bytes; with ``roundup_power2_divisions`` set for the
  request's size range (16 ranges, one per power of two from 1 MiB to 32 GiB and beyond; smaller
  requests use the first), a request larger than ``512 * divisions`` rounds up to the next of the
  ``divisions`` equal steps between two powers of two.
* **Pools.** Rounded requests up to 1 MiB use the small pool (2 MiB segments); larger ones the large
  pool: below 10 MiB a ``large_segment_size`` segment (20 MiB by default), from 10 MiB on a segment
  of the request rounded up to 2 MiB. Pools are per stream: a block freed on one stream is never
  handed to another.
* **Best fit.** Free blocks are ordered by (stream, size, address); a request takes the first one of
  its stream at least as large as it. ``max_split_size``: a request below it never takes a block at
  or above it, and a request at or above it takes a block only when the block is less than
  ``request + max_non_split_rounding_size`` (20 MiB by default).
* **Splitting.** A small-pool block splits when the rest is at least 512 bytes, a large-pool block
  when the request is below ``max_split_size`` and the rest is more than 1 MiB. ``allocated`` counts
  the whole block handed out, so an unsplit remainder counts as allocated.
* **Freeing.** A freed block merges with its free neighbours of the same segment.
* **empty_cache / OOM.** ``empty_cache`` (``release_cached_blocks``) frees every segment that is one
  free block; with expandable segments it unmaps every whole free page. When a new segment does not
  fit in ``capacity`` (the device memory left to the allocator) the allocator first frees cached
  oversize blocks (``release_available_cached_blocks``, only with ``max_split_size`` set), then
  everything cached, and retries; if that fails the request is an out-of-memory
  (:class:`AllocatorOutOfMemory`).
* **Garbage collection.** With ``garbage_collection_threshold`` and a memory fraction set, cached
  unsplit large blocks older than the average (counted in free-block searches) are freed before a
  new segment is allocated once reserved memory passes ``threshold * allowed``.
* **Expandable segments** (``expandable_segments:True``): one segment per stream and pool, grown by
  mapping pages (2 MiB small pool, ``large_segment_size`` large pool) at the lowest address where
  the request fits; blocks split whenever the rest is at least 512 bytes; best fit counts a free
  block followed by unmapped space as its size plus that space.

What it does not model: CUDA graph private pools, ``record_stream`` (blocks used on other streams
free when their event completes: replay the trace's ``free_completed`` order to get this right),
``backend:cudaMallocAsync`` (refused), IPC, the free-memory callbacks, and toggling the
configuration mid-run. Segment addresses are synthetic (a bump pointer), so ties between equal-size
free blocks in different segments may break differently from the real, driver-chosen addresses.

Configuration: :func:`parse_alloc_conf` reads ``PYTORCH_CUDA_ALLOC_CONF``, falling back to
``PYTORCH_ALLOC_CONF`` as torch 2.13 does, with torch's syntax (``key:value`` pairs separated by
commas, lists in brackets, whitespace ignored) and torch's validity rules; bad values raise
:class:`AllocatorConfigError` naming the key, the value and the fix.

Nothing here needs torch.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genprof.planning.alloc_trace import AllocEvent

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB

MIN_BLOCK_SIZE = 512
SMALL_SIZE = 1 * MiB
SMALL_BUFFER = 2 * MiB
MIN_LARGE_ALLOC = 10 * MiB
ROUND_LARGE = 2 * MiB
DEFAULT_LARGE_SEGMENT = 20 * MiB
_INTERVALS = 16  # roundup_power2_divisions ranges: 1 MiB .. 64 GiB, one per power of two
_UNLIMITED = (1 << 64) - 1

ENV_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")

# keys torch accepts but that do not change block placement (checked, then ignored here)
_BOOL_KEYS = ("release_lock_on_cudamalloc", "release_lock_on_hipmalloc", "pinned_use_cuda_host_register",
              "pinned_use_hip_host_register", "pinned_use_background_threads", "graph_capture_record_stream_reuse",
              "pinned_free_catch_all", "throw_on_cudamalloc_oom")
_INT_KEYS = ("pinned_num_register_threads", "pinned_reserve_segment_size_mb", "pinned_max_round_threshold",
             "pinned_max_cached_size")


class AllocatorConfigError(ValueError):
    """A ``PYTORCH_CUDA_ALLOC_CONF`` string torch would reject (or one this model cannot honour)."""


class AllocatorOutOfMemory(MemoryError):
    """The modelled allocator ran out of ``capacity`` even after freeing its cache."""

    def __init__(self, size: int, reserved: int, allocated: int, capacity: int | None) -> None:
        cap = "unlimited" if capacity is None else f"{capacity / MiB:.1f} MiB"
        super().__init__(f"modelled CUDA out of memory: tried to allocate {size / MiB:.2f} MiB with "
                         f"{reserved / MiB:.1f} MiB reserved, {allocated / MiB:.1f} MiB allocated, capacity {cap}")
        self.size = size
        self.reserved = reserved
        self.allocated = allocated
        self.capacity = capacity


# ------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class AllocatorConfig:
    """The allocator settings that change where blocks go (defaults are torch's)."""

    max_split_size: int = _UNLIMITED
    max_non_split_rounding_size: int = DEFAULT_LARGE_SEGMENT
    roundup_power2_divisions: tuple[int, ...] = (0,) * _INTERVALS
    garbage_collection_threshold: float = 0.0
    expandable_segments: bool = False
    large_segment_size: int = DEFAULT_LARGE_SEGMENT
    per_process_memory_fraction: float | None = None
    source: str = ""

    @property
    def max_split_set(self) -> bool:
        return self.max_split_size != _UNLIMITED

    def divisions_for(self, size: int) -> int:
        """``roundup_power2_divisions`` that applies to a request of ``size`` bytes."""
        log_size = max(size, 1).bit_length() - 1
        index = min(max(0, log_size - 20), _INTERVALS - 1)
        return self.roundup_power2_divisions[index]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AllocatorConfig:
        """The configuration torch would read from the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        for name in ENV_VARS:
            if name in env:
                return parse_alloc_conf(env[name], source=name)
        return cls()


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    buf: list[str] = []
    for ch in text:
        if ch in ",:[]":
            if buf:
                tokens.append("".join(buf))
                buf = []
            tokens.append(ch)
        elif not ch.isspace():
            buf.append(ch)
    if buf:
        tokens.append("".join(buf))
    return tokens


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _stoull(tok: str, key: str, where: str) -> int:
    """C++ ``std::stoull``: optional sign, leading digits; '-5' wraps around (torch then clamps it)."""
    s = tok.strip()
    sign = 1
    if s.startswith(("+", "-")):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    if not digits:
        raise AllocatorConfigError(f"{where}: {key} needs a whole number, got {tok!r}. Fix: e.g. {key}:512")
    v = int(digits)
    if v >= 1 << 64:
        raise AllocatorConfigError(f"{where}: {key} value {tok!r} is out of range. Fix: use a smaller number")
    return v if sign > 0 else (-v) % (1 << 64)


def _stod(tok: str, key: str, where: str) -> float:
    try:
        return float(tok)
    except ValueError:
        raise AllocatorConfigError(f"{where}: {key} needs a number, got {tok!r}. Fix: e.g. {key}:0.6") from None


def parse_alloc_conf(text: str, *, source: str = "PYTORCH_CUDA_ALLOC_CONF") -> AllocatorConfig:
    """Parse an allocator configuration string the way torch 2.13's CUDA build does.

    Raises :class:`AllocatorConfigError` for what torch rejects: an unknown key, a key without a
    value, ``max_split_size_mb`` or ``max_non_split_rounding_mb`` below 20 (or below
    ``large_segment_size_mb``), ``large_segment_size_mb`` not above 10, a
    ``garbage_collection_threshold`` outside (0, 1), divisions or intervals that are not powers of
    two, booleans other than ``True``/``False``; and for ``backend:cudaMallocAsync``, which this
    model does not cover.
    """
    where = f"{source}={text!r}"
    tok = _tokenize(text)
    n = len(tok)
    vals: dict[str, Any] = {}
    divisions = [0] * _INTERVALS

    def need(i: int, what: str) -> str:
        if i >= n:
            raise AllocatorConfigError(f"{where}: expected {what} at the end. Fix: write key:value pairs, e.g. "
                                       "expandable_segments:True,max_split_size_mb:128")
        return tok[i]

    def colon(i: int, key: str) -> None:
        if need(i, f"':' after {key}") != ":":
            raise AllocatorConfigError(f"{where}: expected ':' after {key}, got {tok[i]!r}. Fix: {key}:<value>")

    def boolean(i: int, key: str) -> bool:
        v = need(i, f"True or False for {key}")
        if v not in ("True", "False"):
            raise AllocatorConfigError(f"{where}: {key} takes True or False (capitalised), got {v!r}. "
                                       f"Fix: {key}:True")
        return v == "True"

    i = 0
    while i < n:
        key = tok[i]
        if key in ("max_split_size_mb", "max_non_split_rounding_mb", "large_segment_size_mb"):
            colon(i + 1, key)
            i += 2
            mb = min(_stoull(need(i, f"a value for {key}"), key, where), _UNLIMITED // MiB)
            vals[key] = mb
        elif key == "garbage_collection_threshold":
            colon(i + 1, key)
            i += 2
            v = _stod(need(i, f"a value for {key}"), key, where)
            if not 0.0 < v < 1.0:
                raise AllocatorConfigError(f"{where}: garbage_collection_threshold must be in (0.0, 1.0), got {v}. "
                                           "Fix: e.g. garbage_collection_threshold:0.6")
            vals[key] = v
        elif key == "roundup_power2_divisions":
            colon(i + 1, key)
            i += 2
            v0 = need(i, f"a value for {key}")
            if v0 == "[":
                first = True
                last = 0
                i += 1
                while need(i, "']' closing the roundup_power2_divisions list") != "]":
                    interval = tok[i]
                    colon(i + 1, f"{key} interval {interval}")
                    i += 2
                    d = _stoull(need(i, f"a division count in {key}"), key, where)
                    if not (d == 0 or _is_pow2(d)):
                        raise AllocatorConfigError(f"{where}: {key} divisions must be a power of 2 or 0, got {d}. "
                                                   f"Fix: e.g. {key}:[256:4,>:1]")
                    if interval == ">":
                        for j in range(last + 1, _INTERVALS):
                            divisions[j] = d
                    else:
                        mb = _stoull(interval, f"{key} interval", where)
                        if not _is_pow2(mb):
                            raise AllocatorConfigError(f"{where}: {key} intervals must be powers of 2 (in MB), got "
                                                       f"{interval!r}. Fix: e.g. {key}:[64:8,256:4,>:1]")
                        idx = min(mb.bit_length() - 1, _INTERVALS - 1)
                        if first:
                            for j in range(idx):
                                divisions[j] = d
                            first = False
                        divisions[idx] = d
                        last = idx
                    i += 1
                    if need(i, "']' closing the roundup_power2_divisions list") == ",":
                        i += 1
            else:
                d = _stoull(v0, key, where)
                if not _is_pow2(d):
                    raise AllocatorConfigError(f"{where}: {key} must be a power of 2, got {d}. Fix: e.g. {key}:4")
                divisions = [d] * _INTERVALS
            vals[key] = tuple(divisions)
        elif key == "expandable_segments":
            colon(i + 1, key)
            i += 2
            vals[key] = boolean(i, key)
        elif key == "backend":
            colon(i + 1, key)
            i += 2
            backend = need(i, "a value for backend")
            if backend not in ("native", "cudaMallocAsync"):
                raise AllocatorConfigError(f"{where}: unknown allocator backend {backend!r}; options are native "
                                           "and cudaMallocAsync. Fix: backend:native")
            if backend == "cudaMallocAsync":
                raise AllocatorConfigError(f"{where}: backend:cudaMallocAsync hands memory to the CUDA driver's "
                                           "pool, which this model does not cover. Fix: drop backend:cudaMallocAsync "
                                           "to model the native caching allocator")
        elif key == "per_process_memory_fraction":
            colon(i + 1, key)
            i += 2
            v = _stod(need(i, f"a value for {key}"), key, where)
            if not 0.0 <= v <= 1.0:
                raise AllocatorConfigError(f"{where}: per_process_memory_fraction must be in [0.0, 1.0], got {v}. "
                                           "Fix: e.g. per_process_memory_fraction:0.9")
            vals[key] = v
        elif key in _BOOL_KEYS:
            colon(i + 1, key)
            i += 2
            boolean(i, key)
        elif key in _INT_KEYS:
            colon(i + 1, key)
            i += 2
            _stoull(need(i, f"a value for {key}"), key, where)
        else:
            known = sorted(("max_split_size_mb", "max_non_split_rounding_mb", "large_segment_size_mb",
                            "garbage_collection_threshold", "roundup_power2_divisions", "expandable_segments",
                            "backend", "per_process_memory_fraction", *_BOOL_KEYS, *_INT_KEYS))
            raise AllocatorConfigError(f"{where}: unrecognized allocator option {key!r}. Fix: use one of "
                                       f"{', '.join(known)}")
        i += 1
        if i < n:
            if tok[i] != ",":
                raise AllocatorConfigError(f"{where}: expected ',' between options, got {tok[i]!r}. "
                                           "Fix: separate options with commas, e.g. a:1,b:2")
            i += 1

    large = vals.get("large_segment_size_mb")
    if large is not None and large <= 10:
        raise AllocatorConfigError(f"{where}: large_segment_size_mb must be > 10, got {large}. "
                                   "Fix: e.g. large_segment_size_mb:20")
    large_size = (large or DEFAULT_LARGE_SEGMENT // MiB) * MiB
    floor_mb = max(DEFAULT_LARGE_SEGMENT, large_size) // MiB
    for key in ("max_split_size_mb", "max_non_split_rounding_mb"):
        if key in vals and vals[key] < floor_mb:
            raise AllocatorConfigError(f"{where}: {key} too small, must be >= {floor_mb}, got {vals[key]}. "
                                       f"Fix: e.g. {key}:{max(128, floor_mb)}")
    return AllocatorConfig(
        max_split_size=vals["max_split_size_mb"] * MiB if "max_split_size_mb" in vals else _UNLIMITED,
        max_non_split_rounding_size=vals.get("max_non_split_rounding_mb", DEFAULT_LARGE_SEGMENT // MiB) * MiB,
        roundup_power2_divisions=vals.get("roundup_power2_divisions", (0,) * _INTERVALS),
        garbage_collection_threshold=vals.get("garbage_collection_threshold", 0.0),
        expandable_segments=vals.get("expandable_segments", False),
        large_segment_size=large_size,
        per_process_memory_fraction=vals.get("per_process_memory_fraction"),
        source=text,
    )


# ------------------------------------------------------------------ size rules
def _next_division(size: int, divisions: int) -> int:
    if _is_pow2(size):
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor >> (divisions.bit_length() - 1)
    if step == 0:
        return floor << 1
    low = size & ~(step - 1)
    return size if low == size else low + step


def round_size(size: int, config: AllocatorConfig | None = None) -> int:
    """The block size a request of ``size`` bytes asks for (``round_size`` in torch)."""
    if size < MIN_BLOCK_SIZE:
        return MIN_BLOCK_SIZE
    div = (config or _DEFAULT).divisions_for(size)
    if div > 1 and size > MIN_BLOCK_SIZE * div:
        return _next_division(size, div)
    return MIN_BLOCK_SIZE * ((size + MIN_BLOCK_SIZE - 1) // MIN_BLOCK_SIZE)


def allocation_size(rounded: int, config: AllocatorConfig | None = None) -> int:
    """Bytes of the new segment a rounded request would get (``get_allocation_size``)."""
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return (config or _DEFAULT).large_segment_size
    return ROUND_LARGE * ((rounded + ROUND_LARGE - 1) // ROUND_LARGE)


_DEFAULT = AllocatorConfig()


# ------------------------------------------------------------------ state
class _Segment:
    __slots__ = ("base", "size", "expandable", "page", "small", "stream")

    def __init__(self, base: int, size: int, expandable: bool, page: int, small: bool, stream: int) -> None:
        self.base = base
        self.size = size
        self.expandable = expandable
        self.page = page
        self.small = small
        self.stream = stream


class _Block:
    __slots__ = ("addr", "size", "stream", "small", "seg", "allocated", "mapped", "prev", "next", "requested",
                 "gc_base")

    def __init__(self, addr: int, size: int, stream: int, small: bool, seg: _Segment, mapped: bool = True) -> None:
        self.addr = addr
        self.size = size
        self.stream = stream
        self.small = small
        self.seg = seg
        self.allocated = False
        self.mapped = mapped
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.requested = 0
        self.gc_base = 0

    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None


class _Pool:
    """Free blocks ordered by (stream, size, address), unmapped ones by (stream, address)."""

    def __init__(self, small: bool) -> None:
        self.small = small
        self.keys: list[tuple[int, int, int]] = []
        self.blocks: dict[tuple[int, int, int], _Block] = {}
        self.ukeys: list[tuple[int, int]] = []
        self.unmapped: dict[tuple[int, int], _Block] = {}
        self.calls = 0

    def insert(self, b: _Block) -> None:
        k = (b.stream, b.size, b.addr)
        bisect.insort(self.keys, k)
        self.blocks[k] = b
        b.gc_base = self.calls

    def remove(self, b: _Block) -> None:
        k = (b.stream, b.size, b.addr)
        i = bisect.bisect_left(self.keys, k)
        if i >= len(self.keys) or self.keys[i] != k:
            raise AssertionError("allocator model: block not in its free pool")
        del self.keys[i]
        del self.blocks[k]

    def insert_unmapped(self, b: _Block) -> None:
        k = (b.stream, b.addr)
        bisect.insort(self.ukeys, k)
        self.unmapped[k] = b

    def remove_unmapped(self, b: _Block) -> None:
        k = (b.stream, b.addr)
        i = bisect.bisect_left(self.ukeys, k)
        if i >= len(self.ukeys) or self.ukeys[i] != k:
            raise AssertionError("allocator model: unmapped block not in its pool")
        del self.ukeys[i]
        del self.unmapped[k]


@dataclass(frozen=True)
class TraceRecord:
    """One step of the model: ``action`` is one of alloc, free, segment_alloc, segment_free,
    segment_map, segment_unmap, empty_cache, oom; reserved/allocated are the totals after it."""

    action: str
    addr: int
    size: int
    stream: int
    reserved: int
    allocated: int


@dataclass(frozen=True)
class BlockView:
    address: int
    size: int
    requested_size: int
    allocated: bool


@dataclass(frozen=True)
class SegmentView:
    """One mapped range of memory, as ``torch.cuda.memory_snapshot()`` lists segments."""

    address: int
    total_size: int
    allocated_size: int
    stream: int
    segment_type: str
    is_expandable: bool
    blocks: tuple[BlockView, ...]


class CachingAllocator:
    """The caching allocator of one device.

    ``capacity`` is the device memory the allocator may reserve (None: unlimited);
    ``device_total`` the device's memory, used for ``per_process_memory_fraction`` and the size of
    an expandable segment's address range (defaults to ``capacity``, else 141 GiB).
    ``keep_trace=False`` skips the per-step :attr:`trace` for long replays.
    """

    def __init__(self, config: AllocatorConfig | None = None, *, capacity: int | None = None,
                 device_total: int | None = None, keep_trace: bool = True) -> None:
        self.config = config or AllocatorConfig()
        self.capacity = capacity
        self.device_total = device_total or capacity or 141 * GiB
        self.keep_trace = keep_trace
        self._pools = {True: _Pool(True), False: _Pool(False)}
        self._active: dict[int, _Block] = {}
        self._heads: dict[int, _Block] = {}  # non-expandable segment base -> first block (for snapshots)
        self._expandable: list[_Segment] = []
        self._es_heads: dict[int, _Block] = {}
        self._next_addr = 1 << 40
        self.reserved = 0
        self.allocated = 0
        self.requested = 0
        self.peak_reserved = 0
        self.peak_allocated = 0
        self.num_alloc_retries = 0
        self.num_ooms = 0
        self.trace: list[TraceRecord] = []
        frac = self.config.per_process_memory_fraction
        self._allowed: int | None = int(frac * self.device_total) if frac is not None else None

    # -------------------------------------------------------------- public API
    def set_memory_fraction(self, fraction: float) -> None:
        """``torch.cuda.set_per_process_memory_fraction``: cap reserved memory at ``fraction * device_total``."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"memory fraction must be in [0, 1], got {fraction}")
        self._allowed = int(fraction * self.device_total)

    def reset_peak(self) -> None:
        self.peak_reserved = self.reserved
        self.peak_allocated = self.allocated

    def malloc(self, size: int, stream: int = 0) -> int:
        """Allocate ``size`` bytes on ``stream``; returns the block's address (the handle for :meth:`free`)."""
        if size < 0:
            raise ValueError(f"allocation size must be >= 0, got {size}")
        cfg = self.config
        rsize = round_size(size, cfg)
        small = rsize <= SMALL_SIZE
        pool = self._pools[small]
        alloc_size = allocation_size(rsize, cfg)
        block = self._get_free_block(pool, stream, rsize)
        if block is None:
            if self._gc_enabled():
                self._garbage_collect()
            block = self._alloc_block(pool, stream, rsize, alloc_size)
            if block is None and self._release_available_cached_blocks(pool, stream, rsize):
                block = self._alloc_block(pool, stream, rsize, alloc_size)
            if block is None:
                self._release_cached_blocks()
                self.num_alloc_retries += 1
                block = self._alloc_block(pool, stream, rsize, alloc_size)
            if block is None:
                self.num_ooms += 1
                self._record("oom", 0, size, stream)
                raise AllocatorOutOfMemory(alloc_size, self.reserved, self.allocated, self.capacity)
        return self._alloc_found_block(pool, block, rsize, size, stream)

    def free(self, handle: int) -> None:
        """Return a block from :meth:`malloc` to the cache."""
        block = self._active.pop(handle, None)
        if block is None:
            raise KeyError(f"allocator model: no live block at address {handle:#x} (freed twice or never allocated)")
        block.allocated = False
        self.allocated -= block.size
        self.requested -= block.requested
        self._record("free", block.addr, block.requested, block.stream)
        pool = self._pools[block.small]
        for cand in (block.prev, block.next):
            self._try_merge(block, cand, pool)
        pool.insert(block)

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()``: release every segment (or expandable page) with nothing live in it."""
        self._release_cached_blocks()
        self._record("empty_cache", 0, 0, 0)

    @property
    def live_handles(self) -> list[int]:
        return sorted(self._active)

    def segments(self) -> list[SegmentView]:
        """The segments now held, with their blocks, in address order (like ``torch.cuda.memory_snapshot``)."""
        out: list[SegmentView] = []
        heads = list(self._heads.values())
        for seg in self._expandable:
            b: _Block | None = self._es_heads[seg.base]
            while b is not None:
                if b.mapped and (b.prev is None or not b.prev.mapped):
                    heads.append(b)
                b = b.next
        for head in heads:
            blocks: list[BlockView] = []
            cur: _Block | None = head
            while cur is not None and cur.mapped:
                blocks.append(BlockView(cur.addr, cur.size, cur.requested if cur.allocated else 0, cur.allocated))
                cur = cur.next
            out.append(SegmentView(head.addr, sum(x.size for x in blocks),
                                   sum(x.size for x in blocks if x.allocated), head.stream,
                                   "small" if head.small else "large", head.seg.expandable, tuple(blocks)))
        return sorted(out, key=lambda s: s.address)

    def to_snapshot(self) -> dict[str, Any]:
        """This model's state and trace in the ``torch.cuda.memory._snapshot()`` format (device 0)."""
        segs = [{"address": s.address, "total_size": s.total_size, "allocated_size": s.allocated_size,
                 "stream": s.stream, "segment_type": s.segment_type, "is_expandable": s.is_expandable,
                 "blocks": [{"address": b.address, "size": b.size, "requested_size": b.requested_size,
                             "state": "active_allocated" if b.allocated else "inactive"} for b in s.blocks]}
                for s in self.segments()]
        names = {"free": "free_completed"}
        trace: list[dict[str, Any]] = []
        for r in self.trace:
            if r.action == "empty_cache":
                continue
            if r.action == "free":
                trace.append({"action": "free_requested", "addr": r.addr, "size": r.size, "stream": r.stream})
            ent: dict[str, Any] = {"action": names.get(r.action, r.action), "size": r.size, "stream": r.stream}
            ent["device_free" if r.action == "oom" else "addr"] = r.addr
            trace.append(ent)
        return {"segments": segs, "device_traces": [trace]}

    # -------------------------------------------------------------- internals
    def _record(self, action: str, addr: int, size: int, stream: int) -> None:
        if self.reserved > self.peak_reserved:
            self.peak_reserved = self.reserved
        if self.allocated > self.peak_allocated:
            self.peak_allocated = self.allocated
        if self.keep_trace:
            self.trace.append(TraceRecord(action, addr, size, stream, self.reserved, self.allocated))

    def _gc_enabled(self) -> bool:
        return self._allowed is not None and self.config.garbage_collection_threshold > 0.0

    def _get_free_block(self, pool: _Pool, stream: int, size: int) -> _Block | None:
        cfg = self.config
        if self._gc_enabled():
            pool.calls += 1
        keys = pool.keys
        i = bisect.bisect_left(keys, (stream, size, -1))
        if i >= len(keys) or keys[i][0] != stream:
            return None
        b = pool.blocks[keys[i]]
        if b.seg.expandable:
            def esz(x: _Block) -> int:
                return x.size + (x.next.size if x.next is not None and not x.next.mapped else 0)

            while i + 1 < len(keys) and keys[i + 1][0] == stream:
                nb = pool.blocks[keys[i + 1]]
                if not (pool.blocks[keys[i]].seg.expandable and esz(nb) < esz(pool.blocks[keys[i]])):
                    break
                i += 1
            b = pool.blocks[keys[i]]
        if size < cfg.max_split_size and b.size >= cfg.max_split_size:
            return None
        if size >= cfg.max_split_size and b.size >= size + cfg.max_non_split_rounding_size:
            return None
        pool.remove(b)
        return b

    def _fits(self, extra: int) -> bool:
        if self._allowed is not None and self.reserved + extra > self._allowed:
            return False
        return self.capacity is None or self.reserved + extra <= self.capacity

    def _alloc_block(self, pool: _Pool, stream: int, size: int, alloc_size: int) -> _Block | None:
        if self._allowed is not None and self.reserved + alloc_size > self._allowed:
            return None
        if self.config.expandable_segments:
            return self._alloc_expandable(pool, stream, size)
        if not self._fits(alloc_size):
            return None
        base = self._next_addr
        self._next_addr += ((alloc_size + SMALL_BUFFER - 1) // SMALL_BUFFER + 1) * SMALL_BUFFER
        seg = _Segment(base, alloc_size, False, alloc_size, pool.small, stream)
        block = _Block(base, alloc_size, stream, pool.small, seg)
        self._heads[base] = block
        self.reserved += alloc_size
        self._record("segment_alloc", base, alloc_size, stream)
        return block

    def _should_split(self, block: _Block, size: int) -> bool:
        rest = block.size - size
        if block.small or self.config.expandable_segments:
            return rest >= MIN_BLOCK_SIZE
        return size < self.config.max_split_size and rest > SMALL_SIZE

    def _alloc_found_block(self, pool: _Pool, block: _Block, size: int, orig: int, stream: int) -> int:
        if self._should_split(block, size):
            rest = block
            block = _Block(rest.addr, size, stream, rest.small, rest.seg)
            block.prev = rest.prev
            if block.prev is not None:
                block.prev.next = block
            block.next = rest
            rest.prev = block
            rest.addr += size
            rest.size -= size
            pool.insert(rest)
            if block.prev is None and not block.seg.expandable:
                self._heads[block.addr] = block
            if block.prev is None and block.seg.expandable and block.addr == block.seg.base:
                self._es_heads[block.seg.base] = block
        block.allocated = True
        block.requested = orig
        self._active[block.addr] = block
        self.allocated += block.size
        self.requested += orig
        self._record("alloc", block.addr, orig, stream)
        return block.addr

    def _try_merge(self, dst: _Block, src: _Block | None, pool: _Pool) -> int:
        if src is None or src.allocated or src.mapped != dst.mapped:
            return 0
        if src.mapped:
            pool.remove(src)
        else:
            pool.remove_unmapped(src)
        if dst.prev is src:
            dst.addr = src.addr
            dst.prev = src.prev
            if dst.prev is not None:
                dst.prev.next = dst
            if dst.prev is None:
                if dst.seg.expandable:
                    self._es_heads[dst.seg.base] = dst
                else:
                    self._heads[dst.addr] = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size
        return src.size

    def _release_block(self, block: _Block) -> None:
        pool = self._pools[block.small]
        pool.remove(block)
        del self._heads[block.addr]
        self.reserved -= block.size
        self._record("segment_free", block.addr, block.size, block.stream)

    def _release_available_cached_blocks(self, pool: _Pool, stream: int, size: int) -> bool:
        cfg = self.config
        if not cfg.max_split_set or cfg.expandable_segments:
            return False
        key = max(size, cfg.max_split_size)
        keys = pool.keys
        i = bisect.bisect_left(keys, (stream, key, -1))
        if i >= len(keys) or keys[i][0] != stream:
            if i == 0:
                return False
            released = 0
            i -= 1
            while released < key and i >= 0:
                b = pool.blocks[keys[i]]
                if b.size < cfg.max_split_size or b.stream != stream:
                    break
                released += b.size
                self._release_block(b)
                i -= 1
            return released >= key
        self._release_block(pool.blocks[keys[i]])
        return True

    def _release_cached_blocks(self) -> None:
        for small in (False, True):
            pool = self._pools[small]
            to_unmap: list[_Block] = []
            for k in list(pool.keys):
                b = pool.blocks.get(k)
                if b is None:
                    continue
                if b.seg.expandable:
                    to_unmap.append(b)
                elif not b.is_split():
                    self._release_block(b)
            for b in to_unmap:
                self._unmap_block(b)
                if b.prev is None and b.next is None and not b.mapped:
                    pool.remove_unmapped(b)
                    self._expandable.remove(b.seg)
                    del self._es_heads[b.seg.base]

    def _garbage_collect(self) -> None:
        assert self._allowed is not None
        threshold = int(self.config.garbage_collection_threshold * self._allowed)
        if self.reserved <= threshold:
            return
        target = self.reserved - threshold
        pool = self._pools[False]
        cands = [pool.blocks[k] for k in pool.keys if not pool.blocks[k].is_split()]
        if not cands:
            return
        total_age = sum(pool.calls - b.gc_base for b in cands)
        count = len(cands)
        reclaimed = 0
        freed = True
        while reclaimed < target and freed and count > 0:
            age_threshold = total_age / count
            freed = False
            for k in list(pool.keys):
                b = pool.blocks.get(k)
                if b is None or b.is_split():
                    continue
                age = pool.calls - b.gc_base
                if age >= age_threshold:
                    freed = True
                    reclaimed += b.size
                    total_age -= age
                    count -= 1
                    self._release_block(b)

    # -------------------------------------------------------------- expandable segments
    def _page(self, small: bool) -> int:
        return SMALL_BUFFER if small else self.config.large_segment_size

    def _alloc_expandable(self, pool: _Pool, stream: int, size: int) -> _Block | None:
        cand = self._find_expandable_block(pool, stream, size)
        if not cand.mapped and not self._map_block(cand, min(cand.size, size), pool):
            return None
        while cand.size < size:
            nxt = cand.next
            assert nxt is not None and not nxt.mapped
            if not self._map_block(nxt, min(size - cand.size, nxt.size), pool):
                return None
            cand = nxt
        pool.remove(cand)
        return cand

    def _find_expandable_block(self, pool: _Pool, stream: int, size: int) -> _Block:
        def free(b: _Block | None) -> bool:
            return b is not None and not b.allocated

        def room(b: _Block | None) -> bool:
            got = 0
            while got < size and b is not None and free(b):
                got += b.size
                b = b.next
            return got >= size

        i = bisect.bisect_left(pool.ukeys, (stream, -1))
        while i < len(pool.ukeys) and pool.ukeys[i][0] == stream:
            c = pool.unmapped[pool.ukeys[i]]
            if free(c.prev):
                assert c.prev is not None
                c = c.prev
            if room(c):
                return c
            i += 1
        page = self._page(pool.small)
        space = self.device_total + self.device_total // 8
        seg_size = ((space + page - 1) // page) * page
        base = self._next_addr
        self._next_addr += seg_size + page
        seg = _Segment(base, seg_size, True, page, pool.small, stream)
        self._expandable.append(seg)
        cand = _Block(base, seg_size, stream, pool.small, seg, mapped=False)
        self._es_heads[base] = cand
        pool.insert_unmapped(cand)
        return cand

    def _map_block(self, b: _Block, size: int, pool: _Pool) -> bool:
        seg = b.seg
        page = seg.page
        begin = (b.addr - seg.base) // page
        end = -(-(b.addr + size - seg.base) // page)
        mapped = (end - begin) * page
        if not self._fits(mapped):
            return False
        pool.remove_unmapped(b)
        b.mapped = True
        if mapped < b.size:
            rest = _Block(b.addr + mapped, b.size - mapped, b.stream, b.small, seg, mapped=False)
            rest.prev = b
            rest.next = b.next
            if b.next is not None:
                b.next.prev = rest
            b.next = rest
            pool.insert_unmapped(rest)
            b.size = mapped
        self._try_merge(b, b.prev, pool)
        self._try_merge(b, b.next, pool)
        pool.insert(b)
        self.reserved += mapped
        self._record("segment_map", seg.base + begin * page, mapped, b.stream)
        return True

    def _unmap_block(self, b: _Block) -> None:
        seg = b.seg
        page = seg.page
        begin = -(-(b.addr - seg.base) // page)
        end = (b.addr + b.size - seg.base) // page
        if begin >= end:
            return
        pool = self._pools[b.small]
        pool.remove(b)
        start = seg.base + begin * page
        length = (end - begin) * page
        before = start - b.addr
        if before > 0:
            bf = _Block(b.addr, before, b.stream, b.small, seg)
            bf.prev = b.prev
            bf.next = b
            if b.prev is not None:
                b.prev.next = bf
            else:
                self._es_heads[seg.base] = bf
            b.prev = bf
            pool.insert(bf)
        after = b.size - before - length
        if after > 0:
            af = _Block(start + length, after, b.stream, b.small, seg)
            af.prev = b
            af.next = b.next
            if b.next is not None:
                b.next.prev = af
            b.next = af
            pool.insert(af)
        b.addr = start
        b.size = length
        b.mapped = False
        self._try_merge(b, b.prev, pool)
        self._try_merge(b, b.next, pool)
        pool.insert_unmapped(b)
        self.reserved -= length
        self._record("segment_unmap", start, length, b.stream)


# ------------------------------------------------------------------ replay
@dataclass
class ReplayResult:
    """Reserved and allocated over a replayed sequence; ``reserved_after[i]`` follows event ``i``."""

    peak_reserved: int
    peak_allocated: int
    final_reserved: int
    final_allocated: int
    reserved_after: list[int] = field(repr=False)
    allocated_after: list[int] = field(repr=False)
    oom_at: int | None = None
    unmatched_frees: int = 0
    trace: list[TraceRecord] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"peak_reserved_bytes": self.peak_reserved, "peak_allocated_bytes": self.peak_allocated,
                "final_reserved_bytes": self.final_reserved, "final_allocated_bytes": self.final_allocated,
                "events": len(self.reserved_after), "oom_at": self.oom_at, "unmatched_frees": self.unmatched_frees}


def replay(events: Iterable[AllocEvent], config: AllocatorConfig | None = None, *,
           allocator: CachingAllocator | None = None, capacity: int | None = None,
           keep_trace: bool = False, stop_on_oom: bool = True) -> ReplayResult:
    """Feed ``events`` through the allocator model (a fresh one unless ``allocator`` is given).

    A ``free`` of an id never allocated in the sequence (a storage from before it) is counted in
    ``unmatched_frees`` and otherwise ignored. An out-of-memory stops the replay (``oom_at`` is the
    event's index) unless ``stop_on_oom`` is false, in which case the request is skipped.
    """
    a = allocator or CachingAllocator(config, capacity=capacity, keep_trace=keep_trace)
    live: dict[int, int] = {}
    res_after: list[int] = []
    alloc_after: list[int] = []
    oom_at: int | None = None
    unmatched = 0
    for i, ev in enumerate(events):
        if ev.action == "alloc":
            if ev.id in live:
                raise ValueError(f"event {i}: id {ev.id} allocated twice without a free in between")
            try:
                live[ev.id] = a.malloc(ev.size, ev.stream)
            except AllocatorOutOfMemory:
                if oom_at is None:
                    oom_at = i
                if stop_on_oom:
                    res_after.append(a.reserved)
                    alloc_after.append(a.allocated)
                    break
        elif ev.action == "free":
            h = live.pop(ev.id, None)
            if h is None:
                unmatched += 1
            else:
                a.free(h)
        else:
            a.empty_cache()
        res_after.append(a.reserved)
        alloc_after.append(a.allocated)
    return ReplayResult(a.peak_reserved, a.peak_allocated, a.reserved, a.allocated, res_after, alloc_after,
                        oom_at, unmatched, list(a.trace))


# ------------------------------------------------------------------ recorded real traces
_SEGMENT_UP = ("segment_alloc", "segment_map")
_SEGMENT_DOWN = ("segment_free", "segment_unmap")
KNOWN_ACTIONS = ("alloc", "free_requested", "free_completed", "segment_alloc", "segment_free", "segment_map",
                 "segment_unmap", "oom", "snapshot", "user_defined")


@dataclass(frozen=True)
class RecordedStep:
    """One allocator request of a recorded trace with the real reserved and requested bytes just after it."""

    index: int  # position in the device trace
    event: AllocEvent
    real_reserved: int
    real_requested: int


def load_snapshot(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A ``torch.cuda.memory._snapshot()`` dict, from the dict itself or a pickle written by
    ``torch.cuda.memory._dump_snapshot``. Raises ValueError when it is not in that format."""
    if isinstance(source, Mapping):
        snap = dict(source)
    else:
        import pickle

        with open(source, "rb") as fh:
            snap = pickle.load(fh)  # noqa: S301 - a file the user recorded; pickle is torch's format
        if not isinstance(snap, dict):
            raise ValueError(f"{source}: not a memory snapshot (expected a dict with 'device_traces', got "
                             f"{type(snap).__name__}). Fix: write it with torch.cuda.memory._dump_snapshot(path)")
    if "device_traces" not in snap:
        raise ValueError("memory snapshot has no 'device_traces': it was taken without "
                         "torch.cuda.memory._record_memory_history(). Fix: start recording before the region")
    for dev, trace in enumerate(snap["device_traces"]):
        for j, ent in enumerate(trace):
            act = ent.get("action")
            if act not in KNOWN_ACTIONS:
                raise ValueError(f"device {dev} trace entry {j}: unknown action {act!r}; expected one of "
                                 f"{', '.join(KNOWN_ACTIONS)}")
    return snap


def _initial_reserved(snap: Mapping[str, Any], trace: list[Mapping[str, Any]], device: int) -> int:
    segs = [s for s in snap.get("segments", []) if int(s.get("device", device)) == device]
    if not segs:
        return 0
    final = sum(int(s["total_size"]) for s in segs)
    net = sum(int(e["size"]) * (1 if e["action"] in _SEGMENT_UP else -1)
              for e in trace if e["action"] in _SEGMENT_UP + _SEGMENT_DOWN)
    return max(0, final - net)


def recorded_steps(snapshot: str | os.PathLike[str] | Mapping[str, Any], device: int = 0) -> list[RecordedStep]:
    """The allocator requests of a recorded trace, with the real totals after each.

    ``alloc`` entries become ``alloc`` events (the requested size, the stream), ``free_completed``
    entries ``free`` events (the moment the block returned to the cache), and each run of
    ``segment_free`` / ``segment_unmap`` entries one ``empty_cache`` event. The trace cannot tell an
    ``empty_cache`` from the cache release of an out-of-memory retry or of garbage collection, so
    compare traces recorded without those (or replay with the real ``capacity`` and expect the
    retries to show as differences). Real reserved is the running sum of segment entries plus what
    was reserved before the recording began (from the snapshot's segment list); real requested the
    running sum of requested bytes. Frees of blocks allocated before the recording are skipped.
    """
    snap = load_snapshot(snapshot)
    traces = snap["device_traces"]
    if device >= len(traces):
        raise ValueError(f"snapshot has traces for {len(traces)} device(s); device {device} is not among them")
    trace = traces[device]
    reserved = _initial_reserved(snap, trace, device)
    requested = 0
    ids: dict[int, int] = {}
    sizes: dict[int, int] = {}
    next_id = 1
    steps: list[RecordedStep] = []
    in_release = False
    for j, ent in enumerate(trace):
        act = ent["action"]
        if act in _SEGMENT_UP:
            reserved += int(ent["size"])
            in_release = False
        elif act in _SEGMENT_DOWN:
            reserved -= int(ent["size"])
            if not in_release:
                steps.append(RecordedStep(j, AllocEvent("empty_cache"), reserved, requested))
                in_release = True
            else:
                steps[-1] = RecordedStep(steps[-1].index, steps[-1].event, reserved, requested)
        elif act == "alloc":
            in_release = False
            addr = int(ent["addr"])
            ids[addr] = next_id
            size = int(ent["size"])
            sizes[addr] = size
            requested += size
            steps.append(RecordedStep(j, AllocEvent("alloc", next_id, size, int(ent.get("stream", 0))),
                                      reserved, requested))
            next_id += 1
        elif act == "free_completed":
            in_release = False
            addr = int(ent["addr"])
            i = ids.pop(addr, None)
            if i is None:
                continue  # allocated before the recording began
            requested -= sizes.pop(addr)
            steps.append(RecordedStep(j, AllocEvent("free", i, int(ent["size"]), int(ent.get("stream", 0))),
                                      reserved, requested))
    return steps


@dataclass
class ReplayComparison:
    """Model against a recorded trace, event by event (bytes)."""

    events: int
    max_abs_diff: int
    mean_abs_diff: float
    mismatched_events: int
    first_mismatch: int | None
    peak_reserved_real: int
    peak_reserved_model: int
    final_reserved_real: int
    final_reserved_model: int
    oom_at: int | None
    diffs: list[int] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "diffs"}
        peak = self.peak_reserved_real
        d["peak_reserved_rel_err"] = (self.peak_reserved_model - peak) / peak if peak else None
        return d


def compare_with_recording(snapshot: str | os.PathLike[str] | Mapping[str, Any],
                           config: AllocatorConfig | None = None, *, device: int = 0,
                           capacity: int | None = None) -> ReplayComparison:
    """Replay a recorded trace's requests through the model and compare segment totals after each."""
    steps = recorded_steps(snapshot, device)
    alloc = CachingAllocator(config, capacity=capacity, keep_trace=False)
    res = replay([s.event for s in steps], allocator=alloc)
    n = len(res.reserved_after)
    diffs = [res.reserved_after[i] - steps[i].real_reserved for i in range(n)]
    bad = [i for i, d in enumerate(diffs) if d != 0]
    peak_real = max((s.real_reserved for s in steps), default=0)
    return ReplayComparison(
        events=n,
        max_abs_diff=max((abs(d) for d in diffs), default=0),
        mean_abs_diff=(sum(abs(d) for d in diffs) / n) if n else 0.0,
        mismatched_events=len(bad),
        first_mismatch=bad[0] if bad else None,
        peak_reserved_real=peak_real,
        peak_reserved_model=res.peak_reserved,
        final_reserved_real=steps[-1].real_reserved if steps else 0,
        final_reserved_model=res.final_reserved,
        oom_at=res.oom_at,
        diffs=diffs,
    )


def peak_reserved(events: Iterable[AllocEvent], config: AllocatorConfig | None = None) -> int:
    """Peak segment total of ``events`` replayed on an empty allocator (the estimator's seam)."""
    return replay(events, config).peak_reserved


__all__ = [
    "AllocEvent", "AllocatorConfig", "AllocatorConfigError", "AllocatorOutOfMemory", "BlockView",
    "CachingAllocator", "ENV_VARS", "RecordedStep", "ReplayComparison", "ReplayResult", "SegmentView",
    "TraceRecord", "allocation_size", "compare_with_recording", "load_snapshot", "parse_alloc_conf",
    "peak_reserved", "recorded_steps", "replay", "round_size",
]
