"""Recorded allocator traces (``torch.cuda.memory._snapshot()``) and the model compared with them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genprof.planning.alloc_trace import AllocEvent
from genprof.planning.allocator.caching import CachingAllocator
from genprof.planning.allocator.config import AllocatorConfig
from genprof.planning.allocator.replaying import replay

_SEGMENT_UP = ("segment_alloc", "segment_map")
_SEGMENT_DOWN = ("segment_free", "segment_unmap")
KNOWN_ACTIONS = ("alloc", "free_requested", "free_completed", "segment_alloc", "segment_free", "segment_map",
                 "segment_unmap", "oom", "snapshot", "user_defined")


@dataclass(frozen=True)
class RecordedStep:
    """One allocator request of a recorded trace with the real reserved and requested bytes just after it."""

    index: int  # position in the device trace
    event: AllocEvent
    real_reserved: int
    real_requested: int


def load_snapshot(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A ``torch.cuda.memory._snapshot()`` dict, from the dict itself or a pickle written by
    ``torch.cuda.memory._dump_snapshot``. Raises ValueError when it is not in that format."""
    if isinstance(source, Mapping):
        snap = dict(source)
    else:
        import pickle

        with open(source, "rb") as fh:
            snap = pickle.load(fh)  # noqa: S301 - a file the user recorded; pickle is torch's format
        if not isinstance(snap, dict):
            raise ValueError(f"{source}: not a memory snapshot (expected a dict with 'device_traces', got "
                             f"{type(snap).__name__}). Fix: write it with torch.cuda.memory._dump_snapshot(path)")
    if "device_traces" not in snap:
        raise ValueError("memory snapshot has no 'device_traces': it was taken without "
                         "torch.cuda.memory._record_memory_history(). Fix: start recording before the region")
    for dev, trace in enumerate(snap["device_traces"]):
        for j, ent in enumerate(trace):
            act = ent.get("action")
            if act not in KNOWN_ACTIONS:
                raise ValueError(f"device {dev} trace entry {j}: unknown action {act!r}; expected one of "
                                 f"{', '.join(KNOWN_ACTIONS)}")
    return snap


def _initial_reserved(snap: Mapping[str, Any], trace: list[Mapping[str, Any]], device: int) -> int:
    segs = [s for s in snap.get("segments", []) if int(s.get("device", device)) == device]
    if not segs:
        return 0
    final = sum(int(s["total_size"]) for s in segs)
    net = sum(int(e["size"]) * (1 if e["action"] in _SEGMENT_UP else -1)
              for e in trace if e["action"] in _SEGMENT_UP + _SEGMENT_DOWN)
    return max(0, final - net)


def recorded_steps(snapshot: str | os.PathLike[str] | Mapping[str, Any], device: int = 0) -> list[RecordedStep]:
    """The allocator requests of a recorded trace, with the real totals after each.

    ``alloc`` entries become ``alloc`` events (the requested size, the stream), ``free_completed``
    entries ``free`` events (the moment the block returned to the cache), and each run of
    ``segment_free`` / ``segment_unmap`` entries one ``empty_cache`` event. The trace cannot tell an
    ``empty_cache`` from the cache release of an out-of-memory retry or of garbage collection, so
    compare traces recorded without those (or replay with the real ``capacity`` and expect the
    retries to show as differences). Real reserved is the running sum of segment entries plus what
    was reserved before the recording began (from the snapshot's segment list); real requested the
    running sum of requested bytes. Frees of blocks allocated before the recording are skipped.
    """
    snap = load_snapshot(snapshot)
    traces = snap["device_traces"]
    if device >= len(traces):
        raise ValueError(f"snapshot has traces for {len(traces)} device(s); device {device} is not among them")
    trace = traces[device]
    reserved = _initial_reserved(snap, trace, device)
    requested = 0
    ids: dict[int, int] = {}
    sizes: dict[int, int] = {}
    next_id = 1
    steps: list[RecordedStep] = []
    in_release = False
    for j, ent in enumerate(trace):
        act = ent["action"]
        if act in _SEGMENT_UP:
            reserved += int(ent["size"])
            in_release = False
        elif act in _SEGMENT_DOWN:
            reserved -= int(ent["size"])
            if not in_release:
                steps.append(RecordedStep(j, AllocEvent("empty_cache"), reserved, requested))
                in_release = True
            else:
                steps[-1] = RecordedStep(steps[-1].index, steps[-1].event, reserved, requested)
        elif act == "alloc":
            in_release = False
            addr = int(ent["addr"])
            ids[addr] = next_id
            size = int(ent["size"])
            sizes[addr] = size
            requested += size
            steps.append(RecordedStep(j, AllocEvent("alloc", next_id, size, int(ent.get("stream", 0))),
                                      reserved, requested))
            next_id += 1
        elif act == "free_completed":
            in_release = False
            addr = int(ent["addr"])
            i = ids.pop(addr, None)
            if i is None:
                continue  # allocated before the recording began
            requested -= sizes.pop(addr)
            steps.append(RecordedStep(j, AllocEvent("free", i, int(ent["size"]), int(ent.get("stream", 0))),
                                      reserved, requested))
    return steps


@dataclass
class ReplayComparison:
    """Model against a recorded trace, event by event (bytes)."""

    events: int
    max_abs_diff: int
    mean_abs_diff: float
    mismatched_events: int
    first_mismatch: int | None
    peak_reserved_real: int
    peak_reserved_model: int
    final_reserved_real: int
    final_reserved_model: int
    oom_at: int | None
    diffs: list[int] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "diffs"}
        peak = self.peak_reserved_real
        d["peak_reserved_rel_err"] = (self.peak_reserved_model - peak) / peak if peak else None
        return d


def compare_with_recording(snapshot: str | os.PathLike[str] | Mapping[str, Any],
                           config: AllocatorConfig | None = None, *, device: int = 0,
                           capacity: int | None = None) -> ReplayComparison:
    """Replay a recorded trace's requests through the model and compare segment totals after each."""
    steps = recorded_steps(snapshot, device)
    alloc = CachingAllocator(config, capacity=capacity, keep_trace=False)
    res = replay([s.event for s in steps], allocator=alloc)
    n = len(res.reserved_after)
    diffs = [res.reserved_after[i] - steps[i].real_reserved for i in range(n)]
    bad = [i for i, d in enumerate(diffs) if d != 0]
    peak_real = max((s.real_reserved for s in steps), default=0)
    return ReplayComparison(
        events=n,
        max_abs_diff=max((abs(d) for d in diffs), default=0),
        mean_abs_diff=(sum(abs(d) for d in diffs) / n) if n else 0.0,
        mismatched_events=len(bad),
        first_mismatch=bad[0] if bad else None,
        peak_reserved_real=peak_real,
        peak_reserved_model=res.peak_reserved,
        final_reserved_real=steps[-1].real_reserved if steps else 0,
        final_reserved_model=res.final_reserved,
        oom_at=res.oom_at,
        diffs=diffs,
    )
