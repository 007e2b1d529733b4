"""The allocator model's state: segments, blocks, the per-pool free lists, and read-only views of them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass


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

    def link_after(self, new: _Block) -> None:
        """Put ``new`` right after this block in its segment's block list."""
        new.prev = self
        new.next = self.next
        if self.next is not None:
            self.next.prev = new
        self.next = new

    def link_before(self, new: _Block) -> None:
        """Put ``new`` right before this block in its segment's block list."""
        new.prev = self.prev
        new.next = self
        if self.prev is not None:
            self.prev.next = new
        self.prev = new


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
