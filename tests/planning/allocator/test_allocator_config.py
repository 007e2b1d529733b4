"""The allocator model's settings: rounding, segment sizes and ``PYTORCH_CUDA_ALLOC_CONF`` parsing.

Expected figures come from torch's test_cuda.py ``test_allocator_settings`` (roundup_power2_divisions
figures) and from c10/test/core/AllocatorConfig_test.cpp (configuration parsing), reimplemented here
as cases, and from the installed torch's own parser."""

from __future__ import annotations

import importlib.util

import pytest

from genprof.planning.allocator import (
    AllocatorConfig,
    AllocatorConfigError,
    allocation_size,
    parse_alloc_conf,
    round_size,
)

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
