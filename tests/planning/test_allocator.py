"""The CUDA caching allocator model against torch's documented rules and its own allocator tests.

Expected figures come from the rules in c10/cuda/CUDACachingAllocator.cpp, from torch's
test_cuda.py ``test_allocator_settings`` (roundup_power2_divisions figures) and from
c10/test/core/AllocatorConfig_test.cpp (configuration parsing), reimplemented here as cases.
"""

from __future__ import annotations

import importlib.util
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genprof.planning.alloc_trace import AllocEvent
from genprof.planning.allocator import (
    AllocatorConfig,
    AllocatorConfigError,
    AllocatorOutOfMemory,
    CachingAllocator,
    allocation_size,
    compare_with_recording,
    load_snapshot,
    parse_alloc_conf,
    recorded_steps,
    replay,
    round_size,
)

KB = 1024
MB = 1024 * 1024


def power2_div(size: int, div_factor: int) -> int:
    """torch test_cuda.py's reference for roundup_power2_divisions (reimplemented)."""
    pow2 = 1
    while pow2 < size:
        pow2 *= 2
    if pow2 == size:
        return pow2
    step = pow2 // 2 // div_factor
    ret = pow2 // 2
    while ret < size:
        ret += step
    return ret


# ------------------------------------------------------------------ rounding and segment sizes
@pytest.mark.parametrize(("size", "rounded"), [(0, 512), (1, 512), (512, 512), (513, 1024), (MB, MB),
                                               (MB + 1, MB + 512)])
def test_round_size_is_512_byte_multiples_by_default(size: int, rounded: int) -> None:
    assert round_size(size) == rounded


def test_roundup_power2_single_value_matches_torch_test() -> None:
    nbytes = 4 * 21 * MB  # test_allocator_settings: torch.rand(21 Mi floats)
    cfg = parse_alloc_conf("roundup_power2_divisions:4")
    assert round_size(nbytes, cfg) == power2_div(nbytes, 4) == 96 * MB


def test_roundup_power2_list_form_matches_torch_test() -> None:
    cfg = parse_alloc_conf("roundup_power2_divisions:[64:8,256:2,1024:4,>:1]")
    assert round_size(4 * 21 * MB, cfg) == power2_div(4 * 21 * MB, 8) == 88 * MB
    assert round_size(4 * 100 * MB, cfg) == power2_div(4 * 100 * MB, 2) == 512 * MB


def test_roundup_power2_list_intervals_as_in_allocator_config_test() -> None:
    cfg = parse_alloc_conf("roundup_power2_divisions:[64:8,128:2,256:4,512:2,1024:4,>:1]")
    got = [cfg.divisions_for(m * MB) for m in (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)]
    assert got == [8, 8, 2, 4, 2, 4, 1, 1, 1]
    cfg = parse_alloc_conf("roundup_power2_divisions:[128:8,256:16,512:1,2048:8,>:2]")
    got = [cfg.divisions_for(m * MB) for m in (64, 128, 256, 512, 1024, 2048, 4096)]
    assert got == [8, 8, 16, 1, 0, 8, 2]  # 1024 is a gap: no rounding there


def test_power_of_two_and_small_sizes_are_not_rounded_up() -> None:
    cfg = parse_alloc_conf("roundup_power2_divisions:8")
    assert round_size(64 * MB, cfg) == 64 * MB
    assert round_size(4000, cfg) == 4096  # 4000 > 512*8: rounds to 4096's eighths, here the power itself
    assert round_size(3000, cfg) == 3072  # 2048 + 2 * 256 .. next step of 256 above 2048


@pytest.mark.parametrize(("rounded", "segment"), [(512, 2 * MB), (MB, 2 * MB), (MB + 512, 20 * MB),
                                                  (10 * MB - 512, 20 * MB), (10 * MB, 10 * MB),
                                                  (11 * MB, 12 * MB), (101 * MB, 102 * MB)])
def test_segment_size_by_request_size(rounded: int, segment: int) -> None:
    assert allocation_size(rounded) == segment


def test_large_segment_size_setting_changes_the_1_to_10_mb_segment() -> None:
    assert allocation_size(5 * MB, parse_alloc_conf("large_segment_size_mb:64")) == 64 * MB


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


# ------------------------------------------------------------------ configuration parsing
def test_parse_full_config_as_allocator_config_test() -> None:
    cfg = parse_alloc_conf("max_split_size_mb:40,max_non_split_rounding_mb:30,garbage_collection_threshold:0.5,"
                           "roundup_power2_divisions:[64:8,128:2,256:4,512:2,1024:4,>:1],expandable_segments:True,"
                           "pinned_use_background_threads:True")
    assert cfg.max_split_size == 40 * MB
    assert cfg.max_non_split_rounding_size == 30 * MB
    assert cfg.garbage_collection_threshold == 0.5
    assert cfg.expandable_segments is True
    assert cfg.large_segment_size == 20 * MB
    cfg = parse_alloc_conf("large_segment_size_mb:15,max_split_size_mb:20,max_non_split_rounding_mb:40")
    assert (cfg.large_segment_size, cfg.max_split_size, cfg.max_non_split_rounding_size) == (15 * MB, 20 * MB,
                                                                                            40 * MB)


def test_parse_ignores_whitespace_and_allows_trailing_comma() -> None:
    cfg = parse_alloc_conf(" expandable_segments : True , max_split_size_mb : 128 ,")
    assert cfg.expandable_segments and cfg.max_split_size == 128 * MB


def test_defaults() -> None:
    cfg = parse_alloc_conf("")
    assert cfg == AllocatorConfig(source="")
    assert not cfg.max_split_set and not cfg.expandable_segments


@pytest.mark.parametrize(("text", "message"), [
    ("foo:123,bar:456", "unrecognized allocator option 'foo'"),
    ("max_split_size_mb:2", "max_split_size_mb too small, must be >= 20"),
    ("max_split_size_mb:20,large_segment_size_mb:25", "must be >= 25"),
    ("max_non_split_rounding_mb:19", "max_non_split_rounding_mb too small"),
    ("large_segment_size_mb:10", "large_segment_size_mb must be > 10"),
    ("garbage_collection_threshold:1.2", "garbage_collection_threshold must be in"),
    ("garbage_collection_threshold:0", "garbage_collection_threshold must be in"),
    ("expandable_segments:true", "True or False"),
    ("release_lock_on_cudamalloc:none", "True or False"),
    ("roundup_power2_divisions:3", "must be a power of 2"),
    ("roundup_power2_divisions:[64:3]", "power of 2 or 0"),
    ("roundup_power2_divisions:[3:8]", "intervals must be powers of 2"),
    ("roundup_power2_divisions:[64:8", "']' closing"),
    ("max_split_size_mb", "expected ':' after max_split_size_mb at the end"),
    ("max_split_size_mb:", "a value for max_split_size_mb"),
    ("max_split_size_mb:abc", "needs a whole number"),
    ("max_split_size_mb:40;expandable_segments:True", "expected ',' between options"),
    ("backend:foo", "unknown allocator backend"),
    ("backend:cudaMallocAsync", "does not cover"),
])
def test_bad_configs_raise_with_the_key_and_a_fix(text: str, message: str) -> None:
    with pytest.raises(AllocatorConfigError, match=message) as err:
        parse_alloc_conf(text)
    assert "Fix:" in str(err.value)


def test_from_env_prefers_the_cuda_variable() -> None:
    env = {"PYTORCH_ALLOC_CONF": "max_split_size_mb:64", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    cfg = AllocatorConfig.from_env(env)
    assert cfg.expandable_segments and not cfg.max_split_set
    assert AllocatorConfig.from_env({"PYTORCH_ALLOC_CONF": "max_split_size_mb:64"}).max_split_size == 64 * MB
    assert AllocatorConfig.from_env({}) == AllocatorConfig()
    with pytest.raises(AllocatorConfigError, match="PYTORCH_ALLOC_CONF="):
        AllocatorConfig.from_env({"PYTORCH_ALLOC_CONF": "max_split_size_mb:1"})


_TORCH_PARSER = None
if importlib.util.find_spec("torch") is not None:
    import torch

    _TORCH_PARSER = getattr(torch._C, "_accelerator_setAllocatorSettings", None)


@pytest.mark.skipif(_TORCH_PARSER is None, reason="installed torch has no accelerator allocator settings parser")
@pytest.mark.parametrize("text", [
    "max_split_size_mb:20", "max_split_size_mb:19", "max_split_size_mb:abc", "max_split_size_mb:-5",
    "max_non_split_rounding_mb:19", "max_non_split_rounding_mb:20", "large_segment_size_mb:10",
    "large_segment_size_mb:64", "roundup_power2_divisions:[64:8,256:4,1024:4,>:1]", "roundup_power2_divisions:[3:8]",
    "roundup_power2_divisions:[64:3]", "roundup_power2_divisions:[>:0]", "roundup_power2_divisions:0",
    "roundup_power2_divisions:1", "garbage_collection_threshold:0", "garbage_collection_threshold:0.5",
    "expandable_segments:True", "expandable_segments:1", "expandable_segments:False,", "",
    "max_split_size_mb:40,max_non_split_rounding_mb:30", "max_split_size_mb:20,large_segment_size_mb:25",
])
def test_accepts_and_rejects_what_the_installed_torch_parser_does(text: str) -> None:
    """Device-generic keys only: the CPU build of torch has no CUDA key parser (it lets unknown keys pass)."""
    assert _TORCH_PARSER is not None
    _TORCH_PARSER("large_segment_size_mb:20")  # torch keeps this one across calls; start from the default
    try:
        try:
            _TORCH_PARSER(text)
            torch_ok = True
        except (ValueError, RuntimeError, IndexError):
            torch_ok = False
        try:
            parse_alloc_conf(text)
            ours_ok = True
        except AllocatorConfigError:
            ours_ok = False
        assert ours_ok == torch_ok
    finally:
        _TORCH_PARSER("large_segment_size_mb:20")


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


# ------------------------------------------------------------------ recorded snapshots
def _hand_snapshot() -> dict:
    """A recording in the torch.cuda.memory._snapshot() format, written by hand from the rules."""
    s0 = 0x7F0000000000
    s1 = 0x7F0001400000
    trace = [
        {"action": "segment_alloc", "addr": s0, "size": 20 * MB, "stream": 0},
        {"action": "alloc", "addr": s0, "size": 3 * MB, "stream": 0},
        {"action": "alloc", "addr": s0 + 3 * MB, "size": 3 * MB, "stream": 0},
        {"action": "free_requested", "addr": s0, "size": 3 * MB, "stream": 0},
        {"action": "free_completed", "addr": s0, "size": 3 * MB, "stream": 0},
        {"action": "segment_alloc", "addr": s1, "size": 30 * MB, "stream": 0},
        {"action": "alloc", "addr": s1, "size": 30 * MB - 100, "stream": 0},
        {"action": "free_requested", "addr": s1, "size": 30 * MB - 100, "stream": 0},
        {"action": "free_completed", "addr": s1, "size": 30 * MB - 100, "stream": 0},
        {"action": "snapshot", "addr": 0, "size": 3 * MB, "stream": 0},
        {"action": "segment_free", "addr": s1, "size": 30 * MB, "stream": 0},
        {"action": "alloc", "addr": s0, "size": 2 * MB, "stream": 0},
    ]
    segs = [{"device": 0, "address": s0, "total_size": 20 * MB, "allocated_size": 5 * MB, "stream": 0,
             "segment_type": "large", "blocks": []}]
    return {"segments": segs, "device_traces": [trace]}


def test_hand_made_snapshot_replays_event_by_event() -> None:
    steps = recorded_steps(_hand_snapshot())
    assert [s.event.action for s in steps] == ["alloc", "alloc", "free", "alloc", "free", "empty_cache", "alloc"]
    assert [s.real_reserved // MB for s in steps] == [20, 20, 20, 50, 50, 20, 20]
    cmp = compare_with_recording(_hand_snapshot())
    assert cmp.max_abs_diff == 0 and cmp.mismatched_events == 0
    assert cmp.peak_reserved_real == cmp.peak_reserved_model == 50 * MB


def test_comparison_reports_a_model_that_disagrees() -> None:
    snap = _hand_snapshot()
    snap["device_traces"][0][5]["size"] = 32 * MB  # pretend the real allocator took 32 MiB
    snap["device_traces"][0][10]["size"] = 32 * MB
    cmp = compare_with_recording(snap)
    assert cmp.max_abs_diff == 2 * MB
    assert cmp.first_mismatch == 3
    assert cmp.peak_reserved_real == 52 * MB and cmp.peak_reserved_model == 50 * MB


def test_snapshot_loader_reads_pickles_and_rejects_other_formats(tmp_path) -> None:
    p = tmp_path / "snap.pickle"
    p.write_bytes(pickle.dumps(_hand_snapshot()))
    assert len(load_snapshot(p)["device_traces"][0]) == 12
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="not a memory snapshot"):
        load_snapshot(p)
    with pytest.raises(ValueError, match="_record_memory_history"):
        load_snapshot({"segments": []})
    with pytest.raises(ValueError, match="unknown action 'malloc'"):
        load_snapshot({"device_traces": [[{"action": "malloc", "addr": 0, "size": 1}]]})


def test_preexisting_segments_count_in_real_reserved_and_their_frees_are_skipped() -> None:
    trace = [{"action": "free_completed", "addr": 5, "size": 100, "stream": 0},  # allocated before recording
             {"action": "segment_alloc", "addr": 9 << 30, "size": 2 * MB, "stream": 0},
             {"action": "alloc", "addr": 9 << 30, "size": 100, "stream": 0}]
    # at snapshot time: the segment from before the recording plus the new one
    snap = {"segments": [{"device": 0, "total_size": 2 * MB}, {"device": 0, "total_size": 2 * MB}],
            "device_traces": [trace]}
    steps = recorded_steps(snap)
    assert [s.event.action for s in steps] == ["alloc"]
    assert steps[0].real_reserved == 4 * MB


def test_replay_stops_at_oom_and_reports_where() -> None:
    events = [AllocEvent("alloc", 1, 60 * MB), AllocEvent("alloc", 2, 60 * MB), AllocEvent("free", 1)]
    res = replay(events, capacity=100 * MB)
    assert res.oom_at == 1
    assert res.peak_reserved == 60 * MB


def test_replay_rejects_an_id_allocated_twice() -> None:
    with pytest.raises(ValueError, match="allocated twice"):
        replay([AllocEvent("alloc", 1, 10), AllocEvent("alloc", 1, 10)])
