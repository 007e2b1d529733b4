"""Replaying an allocation event sequence through the caching-allocator model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from genprof.planning.alloc_trace import AllocEvent
from genprof.planning.allocator.blocks import TraceRecord
from genprof.planning.allocator.caching import AllocatorOutOfMemory, CachingAllocator
from genprof.planning.allocator.config import AllocatorConfig


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


def peak_reserved(events: Iterable[AllocEvent], config: AllocatorConfig | None = None) -> int:
    """Peak segment total of ``events`` replayed on an empty allocator (the estimator's seam)."""
    return replay(events, config).peak_reserved
