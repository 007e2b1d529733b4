"""The expandable-segments mode of the caching allocator (``expandable_segments:True``).

One segment per stream and pool, grown by mapping pages (2 MiB small pool, ``large_segment_size``
large pool) at the lowest address where the request fits; :meth:`ExpandableSegments._unmap_block`
is what ``empty_cache`` does to a free block of such a segment (unmap its whole pages).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from genprof.planning.allocator.blocks import _Block, _Pool, _Segment
from genprof.planning.allocator.config import SMALL_BUFFER, AllocatorConfig


class ExpandableSegments:
    """Mixin of :class:`~genprof.planning.allocator.caching.CachingAllocator`: its expandable-segment methods."""

    config: AllocatorConfig
    device_total: int
    reserved: int
    _pools: dict[bool, _Pool]
    _expandable: list[_Segment]
    _es_heads: dict[int, _Block]
    _next_addr: int

    if TYPE_CHECKING:  # provided by CachingAllocator
        def _fits(self, extra: int) -> bool: ...

        def _try_merge(self, dst: _Block, src: _Block | None, pool: _Pool) -> int: ...

        def _record(self, action: str, addr: int, size: int, stream: int) -> None: ...

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
            b.link_after(rest)
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
            b.link_before(bf)
            if bf.prev is None:
                self._es_heads[seg.base] = bf
            pool.insert(bf)
        after = b.size - before - length
        if after > 0:
            af = _Block(start + length, after, b.stream, b.small, seg)
            b.link_after(af)
            pool.insert(af)
        b.addr = start
        b.size = length
        b.mapped = False
        self._try_merge(b, b.prev, pool)
        self._try_merge(b, b.next, pool)
        pool.insert_unmapped(b)
        self.reserved -= length
        self._record("segment_unmap", start, length, b.stream)
