"""Replaying event sequences and recorded torch snapshots through the allocator model."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import pytest

from genprof.planning.alloc_trace import AllocEvent
from genprof.planning.allocator import (
    compare_with_recording,
    load_snapshot,
    recorded_steps,
    replay,
)

MB = 1024 * 1024


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


def test_a_recorded_h100_wan_vae_decode_replays_exactly() -> None:
    """A real trace: the Wan 2.1 VAE (random weights, bf16) decoding a 480x832x33 latent on an H100
    with torch 2.11 (bench/bench_allocator_replay.py --keep-traces), requests and segment events as
    [action, size, address, stream]. The model must reserve what the real allocator did after
    every one of its 9044 requests (it was 444 MiB over before segments fell in address)."""
    rows = json.loads(gzip.decompress((Path(__file__).parent / "data" / "wan_vae_decode_33_h100.trace.json.gz")
                                      .read_bytes()))
    snap = {"segments": [], "device_traces": [[{"action": a, "size": s, "addr": ad, "stream": st}
                                               for a, s, ad, st in rows]]}
    cmp = compare_with_recording(snap)
    assert cmp.events == 9044
    assert cmp.mismatched_events == 0 and cmp.max_abs_diff == 0
    assert cmp.peak_reserved_model == cmp.peak_reserved_real == 6692012032
