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

The package, one seam a module: :mod:`.config` (the settings, ``PYTORCH_CUDA_ALLOC_CONF`` parsing,
the size rules), :mod:`.blocks` (blocks, segments, free pools and the read-only views),
:mod:`.caching` (:class:`CachingAllocator`), :mod:`.expandable` (its expandable-segments mode),
:mod:`.replaying` (replaying an event sequence) and :mod:`.recorded` (recorded torch snapshots and
the comparison with them).
"""

from __future__ import annotations

from genprof.planning.alloc_trace import AllocEvent
from genprof.planning.allocator.blocks import BlockView, SegmentView, TraceRecord
from genprof.planning.allocator.caching import AllocatorOutOfMemory, CachingAllocator
from genprof.planning.allocator.config import (
    DEFAULT_LARGE_SEGMENT,
    ENV_VARS,
    MIN_BLOCK_SIZE,
    MIN_LARGE_ALLOC,
    ROUND_LARGE,
    SMALL_BUFFER,
    SMALL_SIZE,
    AllocatorConfig,
    AllocatorConfigError,
    GiB,
    KiB,
    MiB,
    allocation_size,
    parse_alloc_conf,
    round_size,
)
from genprof.planning.allocator.recorded import (
    KNOWN_ACTIONS,
    RecordedStep,
    ReplayComparison,
    compare_with_recording,
    load_snapshot,
    recorded_steps,
)
from genprof.planning.allocator.replaying import ReplayResult, peak_reserved, replay

__all__ = [
    "AllocEvent", "AllocatorConfig", "AllocatorConfigError", "AllocatorOutOfMemory", "BlockView",
    "CachingAllocator", "ENV_VARS", "RecordedStep", "ReplayComparison", "ReplayResult", "SegmentView",
    "TraceRecord", "allocation_size", "compare_with_recording", "load_snapshot", "parse_alloc_conf",
    "peak_reserved", "recorded_steps", "replay", "round_size",
    # the size constants and trace actions, importable from here as before the split
    "DEFAULT_LARGE_SEGMENT", "GiB", "KNOWN_ACTIONS", "KiB", "MIN_BLOCK_SIZE", "MIN_LARGE_ALLOC", "MiB", "ROUND_LARGE",
    "SMALL_BUFFER", "SMALL_SIZE",
]
