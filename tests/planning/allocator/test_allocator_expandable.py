"""The allocator model's expandable-segments mode (``expandable_segments:True``)."""

from __future__ import annotations

from genprof.planning.alloc_trace import AllocEvent
from genprof.planning.allocator import (
    CachingAllocator,
    parse_alloc_conf,
    replay,
)

MB = 1024 * 1024


# ------------------------------------------------------------------ expandable segments
EXP = "expandable_segments:True"


def test_expandable_maps_pages_as_the_segment_grows() -> None:
    a = CachingAllocator(parse_alloc_conf(EXP))
    a.malloc(30 * MB)
    assert a.reserved == 40 * MB  # two 20 MiB pages
    a.malloc(30 * MB)
    assert a.reserved == 60 * MB  # the 10 MiB tail plus one more page
    (seg,) = a.segments()
    assert seg.total_size == 60 * MB and seg.is_expandable


def test_expandable_small_pool_uses_2mb_pages() -> None:
    a = CachingAllocator(parse_alloc_conf(EXP))
    a.malloc(512)
    assert a.reserved == 2 * MB


def test_expandable_empty_cache_unmaps_only_whole_free_pages() -> None:
    a = CachingAllocator(parse_alloc_conf(EXP))
    x = a.malloc(30 * MB)
    y = a.malloc(30 * MB)
    a.free(x)
    a.empty_cache()
    assert a.reserved == 40 * MB  # [0, 30) free: only page [0, 20) is wholly free
    a.free(y)
    a.empty_cache()
    assert a.reserved == 0
    assert a.segments() == []


def test_expandable_reuses_one_segment_where_fixed_segments_fragment() -> None:
    seq = [("a", 1, 100 * MB), ("a", 2, 100 * MB), ("f", 2, 0), ("a", 3, 102 * MB)]
    events = [AllocEvent("alloc", i, s) if k == "a" else AllocEvent("free", i) for k, i, s in seq]
    fixed = replay(events)
    grow = replay(events, parse_alloc_conf(EXP))
    assert fixed.peak_reserved == 302 * MB
    assert grow.peak_reserved == 220 * MB  # 102 MiB spans the freed last 100 MiB and one more page


def test_expandable_free_block_not_at_the_end_does_not_grow() -> None:
    # the freed first 100 MiB is not followed by unmapped space: a 102 MiB request maps 6 new pages
    seq = [AllocEvent("alloc", 1, 100 * MB), AllocEvent("alloc", 2, 100 * MB), AllocEvent("free", 1),
           AllocEvent("alloc", 3, 102 * MB)]
    assert replay(seq, parse_alloc_conf(EXP)).peak_reserved == 320 * MB


def test_expandable_can_reserve_more_than_fixed_segments() -> None:
    # a 12 MiB request gets a 12 MiB segment, but a whole 20 MiB page when segments expand
    events = [AllocEvent("alloc", 1, 12 * MB)]
    assert replay(events).peak_reserved == 12 * MB
    assert replay(events, parse_alloc_conf(EXP)).peak_reserved == 20 * MB
