"""The caching allocator model's placement, OOM retry and garbage collection against the rules of
c10/cuda/CUDACachingAllocator.cpp, and its invariants on random sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genprof.planning.allocator import (
    AllocatorOutOfMemory,
    CachingAllocator,
    compare_with_recording,
    parse_alloc_conf,
)

KB = 1024
MB = 1024 * 1024


# ------------------------------------------------------------------ placement
def test_small_requests_share_one_2mb_segment() -> None:
    a = CachingAllocator()
    hs = [a.malloc(100 * KB) for _ in range(20)]
    assert a.reserved == 2 * MB
    assert a.allocated == 20 * 100 * KB
    a.malloc(100 * KB)  # the 21st does not fit in the 48 KiB left
    assert a.reserved == 4 * MB
    assert len(hs) == 20


def test_mid_size_requests_share_a_20mb_segment() -> None:
    a = CachingAllocator()
    a.malloc(MB + 1)
    a.malloc(5 * MB)
    assert a.reserved == 20 * MB
    assert a.allocated == MB + 512 + 5 * MB


def test_unsplit_remainder_counts_as_allocated() -> None:
    a = CachingAllocator()
    h = a.malloc(20 * MB)
    a.free(h)
    a.malloc(19 * MB + 300 * KB)  # rest 724 KiB <= 1 MiB: the large pool does not split
    assert a.reserved == 20 * MB
    assert a.allocated == 20 * MB


def test_best_fit_takes_the_smallest_free_block() -> None:
    a = CachingAllocator()
    big = a.malloc(40 * MB)
    small = a.malloc(24 * MB)
    a.free(big)
    a.free(small)
    a.malloc(22 * MB)  # fits both; takes the 24 MiB one, so a 40 MiB request still finds its block
    a.malloc(40 * MB)
    assert a.reserved == 64 * MB


def test_between_equal_free_blocks_the_newest_segment_is_split() -> None:
    # best fit ties go to the lowest address, and the driver hands out successive segments at
    # falling addresses: a request that fits two equal free blocks splits the newer segment
    a = CachingAllocator()
    old = a.malloc(30 * MB)
    new = a.malloc(30 * MB)
    a.free(old)
    a.free(new)
    assert a.malloc(12 * MB) == new
    assert a.malloc(30 * MB) == old  # the older segment stayed whole


def test_freed_neighbours_coalesce_and_empty_cache_returns_the_segment() -> None:
    a = CachingAllocator()
    x, y, z = (a.malloc(3 * MB) for _ in range(3))
    a.free(x)
    a.free(z)
    a.empty_cache()
    assert a.reserved == 20 * MB  # y pins the segment
    a.free(y)
    (seg,) = a.segments()
    assert len(seg.blocks) == 1 and not seg.blocks[0].allocated
    a.empty_cache()
    assert a.reserved == 0


def test_streams_do_not_share_free_blocks() -> None:
    a = CachingAllocator()
    a.free(a.malloc(30 * MB, stream=1))
    a.malloc(30 * MB, stream=2)
    assert a.reserved == 60 * MB
    a.malloc(30 * MB, stream=1)
    assert a.reserved == 60 * MB


def test_max_split_size_keeps_oversize_blocks_from_small_requests() -> None:
    a = CachingAllocator(parse_alloc_conf("max_split_size_mb:40"))
    a.free(a.malloc(100 * MB))
    a.malloc(30 * MB)  # below max_split_size: may not take the 100 MiB oversize block
    assert a.reserved == 130 * MB


def test_max_split_size_oversize_reuse_within_rounding_limit() -> None:
    a = CachingAllocator(parse_alloc_conf("max_split_size_mb:40"))
    a.free(a.malloc(100 * MB))
    a.malloc(81 * MB)  # 100 < 81 + 20: reused whole, not split
    assert (a.reserved, a.allocated) == (100 * MB, 100 * MB)
    b = CachingAllocator(parse_alloc_conf("max_split_size_mb:40"))
    b.free(b.malloc(100 * MB))
    b.malloc(80 * MB)  # 100 >= 80 + 20: a new segment
    assert b.reserved == 180 * MB
    c = CachingAllocator(parse_alloc_conf("max_split_size_mb:40,max_non_split_rounding_mb:30"))
    c.free(c.malloc(100 * MB))
    c.malloc(80 * MB)
    assert c.reserved == 100 * MB


def test_without_max_split_size_a_large_block_splits() -> None:
    a = CachingAllocator()
    a.free(a.malloc(100 * MB))
    a.malloc(30 * MB)
    a.malloc(30 * MB)
    assert (a.reserved, a.allocated) == (100 * MB, 60 * MB)


# ------------------------------------------------------------------ OOM and retry
def test_oom_retry_frees_the_cache_and_succeeds() -> None:
    a = CachingAllocator(capacity=100 * MB)
    a.free(a.malloc(60 * MB))
    a.malloc(70 * MB)  # 60 cached + 70 > 100: release_cached_blocks, retry
    assert a.reserved == 70 * MB
    assert a.num_alloc_retries == 1


def test_oom_when_live_memory_exceeds_capacity() -> None:
    a = CachingAllocator(capacity=100 * MB)
    a.malloc(60 * MB)
    with pytest.raises(AllocatorOutOfMemory, match="tried to allocate 50.00 MiB"):
        a.malloc(50 * MB)
    assert a.num_ooms == 1
    assert a.trace[-1].action == "oom"


def test_oom_with_max_split_releases_only_enough_oversize_blocks() -> None:
    a = CachingAllocator(parse_alloc_conf("max_split_size_mb:40"), capacity=200 * MB)
    hs = [a.malloc(50 * MB) for _ in range(3)]
    for h in hs:
        a.free(h)
    a.malloc(60 * MB)  # no cached block may serve it; 150 + 60 > 200: release_available frees two 50s
    assert a.reserved == 110 * MB
    assert a.num_alloc_retries == 0


def test_memory_fraction_caps_reserved() -> None:
    a = CachingAllocator(parse_alloc_conf("per_process_memory_fraction:0.5"), device_total=200 * MB)
    a.malloc(90 * MB)
    with pytest.raises(AllocatorOutOfMemory):
        a.malloc(20 * MB)


def test_garbage_collection_frees_old_unsplit_blocks_before_growing() -> None:
    cfg = parse_alloc_conf("garbage_collection_threshold:0.5,per_process_memory_fraction:1.0")
    a = CachingAllocator(cfg, device_total=200 * MB)
    x, y = a.malloc(60 * MB), a.malloc(50 * MB)
    a.free(x)
    a.free(y)  # 110 MiB reserved > 0.5 * 200
    a.malloc(70 * MB)  # no free block fits: gc frees cached blocks of at least average age first
    assert a.reserved == 70 * MB
    b = CachingAllocator(parse_alloc_conf("per_process_memory_fraction:1.0"), device_total=200 * MB)
    x, y = b.malloc(60 * MB), b.malloc(50 * MB)
    b.free(x)
    b.free(y)
    b.malloc(70 * MB)
    assert b.reserved == 180 * MB


EXP = "expandable_segments:True"


# ------------------------------------------------------------------ properties
def _ops() -> st.SearchStrategy[list[tuple[str, int, int]]]:
    size = st.one_of(st.integers(0, 4 * KB), st.integers(4 * KB, 2 * MB), st.integers(MB, 24 * MB),
                     st.integers(20 * MB, 300 * MB))
    op = st.one_of(st.tuples(st.just("a"), size, st.integers(0, 1)),
                   st.tuples(st.just("f"), st.integers(0, 10_000), st.just(0)),
                   st.tuples(st.just("e"), st.just(0), st.just(0)))
    return st.lists(op, max_size=80)


CONFIGS = ["", EXP, "max_split_size_mb:64", "roundup_power2_divisions:[64:8,256:4,>:1],max_split_size_mb:128",
           f"{EXP},roundup_power2_divisions:4"]


def _run(conf: str, ops: list[tuple[str, int, int]]) -> CachingAllocator:
    a = CachingAllocator(parse_alloc_conf(conf))
    live: list[int] = []
    for kind, x, stream in ops:
        if kind == "a":
            live.append(a.malloc(x, stream))
        elif kind == "f" and live:
            a.free(live.pop(x % len(live)))
        elif kind == "e":
            a.empty_cache()
        segs = a.segments()
        assert sum(s.total_size for s in segs) == a.reserved
        assert sum(s.allocated_size for s in segs) == a.allocated
        for s in segs:
            assert sum(b.size for b in s.blocks) == s.total_size
            for b1, b2 in zip(s.blocks, s.blocks[1:], strict=False):
                assert b1.allocated or b2.allocated, "two free neighbours were not merged"
        assert a.reserved >= a.allocated >= a.requested
    for h in live:
        a.free(h)
    return a


@settings(max_examples=60, deadline=None)
@given(conf=st.sampled_from(CONFIGS), ops=_ops())
def test_reserved_covers_allocated_and_emptying_returns_everything(conf: str, ops: list[tuple[str, int, int]]) -> None:
    a = _run(conf, ops)
    assert a.allocated == 0
    assert a.peak_reserved >= a.peak_allocated
    a.empty_cache()
    assert a.reserved == 0
    assert a.segments() == []


@settings(max_examples=40, deadline=None)
@given(conf=st.sampled_from(CONFIGS), ops=_ops())
def test_trace_segment_events_sum_to_reserved(conf: str, ops: list[tuple[str, int, int]]) -> None:
    a = _run(conf, ops)
    up = sum(r.size for r in a.trace if r.action in ("segment_alloc", "segment_map"))
    down = sum(r.size for r in a.trace if r.action in ("segment_free", "segment_unmap"))
    assert up - down == a.reserved
    # the model's own trace, read back as a recording, replays to zero difference
    cmp = compare_with_recording(a.to_snapshot(), parse_alloc_conf(conf))
    assert cmp.max_abs_diff == 0
