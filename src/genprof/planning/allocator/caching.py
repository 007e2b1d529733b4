"""The caching allocator of one device: best fit, splitting, merging, empty_cache, OOM retry, GC.

The expandable-segments mode (``expandable_segments:True``) lives in
:mod:`genprof.planning.allocator.expandable`, a mixin of :class:`CachingAllocator`.
"""

from __future__ import annotations

import bisect
from typing import Any

from genprof.planning.allocator.blocks import BlockView, SegmentView, TraceRecord, _Block, _Pool, _Segment
from genprof.planning.allocator.config import (
    MIN_BLOCK_SIZE,
    SMALL_BUFFER,
    SMALL_SIZE,
    AllocatorConfig,
    GiB,
    MiB,
    allocation_size,
    round_size,
)
from genprof.planning.allocator.expandable import ExpandableSegments


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


class CachingAllocator(ExpandableSegments):
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
        self._sizes: dict[int, tuple[int, bool, int]] = {}  # request -> (rounded, small pool, segment size)
        self._active: dict[int, _Block] = {}
        self._heads: dict[int, _Block] = {}  # non-expandable segment base -> first block (for snapshots)
        self._expandable: list[_Segment] = []
        self._es_heads: dict[int, _Block] = {}
        self._next_addr = 1 << 40  # expandable segments' address ranges, upwards
        # ordinary segments, downwards from far above: a best fit between free blocks of one size
        # takes the lowest address, and the driver places successive cudaMalloc segments at
        # falling addresses (as recorded on an H100), so the newest segment wins such ties. With
        # rising addresses the model split an older segment and reserved 7% more than the real
        # allocator on a recorded Wan VAE decode; with falling ones it matched event by event.
        self._seg_top = 1 << 46
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
        sizes = self._sizes.get(size)
        if sizes is None:  # the same few sizes come back all the time: round once per size
            rsize = round_size(size, self.config)
            sizes = self._sizes[size] = (rsize, rsize <= SMALL_SIZE, allocation_size(rsize, self.config))
        rsize, small, alloc_size = sizes
        pool = self._pools[small]
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
        self._seg_top -= ((alloc_size + SMALL_BUFFER - 1) // SMALL_BUFFER + 1) * SMALL_BUFFER
        base = self._seg_top
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
            rest.link_before(block)
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
