"""The allocator package keeps every name the single module had importable from ``genprof.planning.allocator``."""

from __future__ import annotations

import importlib

import pytest

FORMER_NAMES = [
    "AllocEvent", "AllocatorConfig", "AllocatorConfigError", "AllocatorOutOfMemory", "BlockView",
    "CachingAllocator", "ENV_VARS", "RecordedStep", "ReplayComparison", "ReplayResult", "SegmentView",
    "TraceRecord", "allocation_size", "compare_with_recording", "load_snapshot", "parse_alloc_conf",
    "peak_reserved", "recorded_steps", "replay", "round_size",
    "DEFAULT_LARGE_SEGMENT", "GiB", "KNOWN_ACTIONS", "KiB", "MIN_BLOCK_SIZE", "MIN_LARGE_ALLOC", "MiB",
    "ROUND_LARGE", "SMALL_BUFFER", "SMALL_SIZE",
]


@pytest.mark.parametrize("name", FORMER_NAMES)
def test_former_module_names_import_from_the_package(name: str) -> None:
    pkg = importlib.import_module("genprof.planning.allocator")
    assert name in pkg.__all__
    assert getattr(pkg, name) is not None


def test_names_are_the_same_objects_as_in_their_modules() -> None:
    from genprof.planning.allocator import CachingAllocator, parse_alloc_conf, replay
    from genprof.planning.allocator.caching import CachingAllocator as caching_cls
    from genprof.planning.allocator.config import parse_alloc_conf as config_parse
    from genprof.planning.allocator.replaying import replay as replay_fn

    assert (CachingAllocator, parse_alloc_conf, replay) == (caching_cls, config_parse, replay_fn)
