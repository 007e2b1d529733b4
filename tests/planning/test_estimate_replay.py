"""The allocator-replay path of the estimate, and the memoised meta operators of the trace."""

from __future__ import annotations

import random

import torch

from genprof.planning.alloc_trace import AllocEvent, AllocRecorder
from genprof.planning.estimate import trace as trace_mod
from genprof.planning.estimate.replay import PhaseRecording, call_sequence, replay_phases, weight_sizes
from genprof.planning.estimate.trace import trace_live_bytes

MiB = 1024**2
CAL = {"workspace_bytes": 0.0}


def test_weight_sizes_follow_module_to_order() -> None:
    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.own = torch.nn.Parameter(torch.empty(3, device="meta"))
            self.child = torch.nn.Linear(4, 5, device="meta")
            self.tied = self.own

    # children first (Linear's weight 20 floats, bias 5), then the module's own parameter, once
    assert weight_sizes(M()) == [80, 20, 12]


def _rec(*sizes: int, out: int = 0) -> PhaseRecording:
    ev = [AllocEvent("alloc", i + 1, s) for i, s in enumerate(sizes)]
    ev += [AllocEvent("free", i + 1, s) for i, s in enumerate(sizes) if i + 1 != out]
    mark = len(ev)
    if out:
        ev.append(AllocEvent("free", out, sizes[out - 1]))
    return PhaseRecording(events=tuple(ev), mark=mark)


def test_text_outputs_stay_allocated_through_the_call() -> None:
    te = _rec(30 * MiB, 12 * MiB, out=2)  # the 12 MiB output is the prompt embedding
    seq = call_sequence([40 * MiB], {"text_encode": [te], "vae_decode": _rec(30 * MiB)}, {}, CAL, denoise_calls=1)
    out = replay_phases(seq)
    # the embedding's 12 MiB segment stays; the decode reuses the text encoder's cached 30 MiB segment
    assert out["vae_decode"]["reserved_at_start_bytes"] == (40 + 30 + 12) * MiB
    assert out["vae_decode"]["peak_reserved_bytes"] == (40 + 30 + 12) * MiB
    assert out["text_encode"]["peak_allocated_bytes"] == (40 + 30 + 12) * MiB


def test_denoise_steps_reuse_the_cache() -> None:
    den = _rec(100 * MiB, 50 * MiB)
    one = replay_phases(call_sequence([], {"denoise": den}, {}, CAL, denoise_calls=1, steps=1))
    two = replay_phases(call_sequence([], {"denoise": den}, {}, CAL, denoise_calls=2, steps=2))
    assert one["denoise"]["peak_reserved_bytes"] == two["denoise"]["peak_reserved_bytes"] == 150 * MiB


def _trace(memo: bool) -> tuple[int, list[tuple[str, int]]]:
    trace_mod._MEMO.clear()
    trace_mod._MEMO_ON[0] = memo
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 8, 3)).to("meta")
    x = torch.empty(2, 3, 16, 16, device="meta")
    rec = AllocRecorder()
    try:
        with trace_live_bytes("flash", recorder=rec) as (counter, _):
            for _ in range(3):  # the same shapes again: memo hits from the second pass
                y = net(x)
                del y
    finally:
        trace_mod._MEMO_ON[0] = True
    return counter.peak, [(e.action, e.size) for e in rec.events]


def test_memoised_operators_give_the_same_trace() -> None:
    assert _trace(memo=True) == _trace(memo=False)


def test_memo_is_used_for_repeated_shapes() -> None:
    _trace(memo=True)
    assert any(v is not trace_mod._NO_MEMO for v in trace_mod._MEMO.values())


def test_a_convolution_requests_its_cudnn_workspace_in_the_recording_only() -> None:
    x = torch.empty(1, 8, 32, 32, device="meta", dtype=torch.bfloat16)
    w = torch.empty(16, 8, 3, 3, device="meta", dtype=torch.bfloat16)
    in_b, out_b = 8 * 32 * 32 * 2, 16 * 32 * 32 * 2
    rec = AllocRecorder()
    with trace_live_bytes("flash", recorder=rec) as (counter, _):
        y = torch.nn.functional.conv2d(x, w, padding=1)
        del y
    acts = [(e.action, e.size) for e in rec.events]
    # the output, then the workspace (a copy of input and output) allocated and freed in the call
    assert acts[:3] == [("alloc", out_b), ("alloc", in_b + out_b), ("free", in_b + out_b)]
    assert rec.peak == out_b + in_b + out_b
    assert counter.peak == out_b  # the live-bytes counter of the factor path does not see it
    # without the recorder nothing is requested beyond the output
    with trace_live_bytes("flash") as (plain, _):
        y = torch.nn.functional.conv2d(x, w, padding=1)
        del y
    assert plain.peak == out_b


def test_3d_convolutions_request_the_workspace_and_1x1_convolutions_none() -> None:
    # per convolution on the H100 (bench/results/conv_workspace_h100.json): 3x3x3 asks for a copy of
    # input and output like 3x3; 1x1 (CogVideoX's spatial norms, shortcuts) asks for nothing
    x = torch.empty(1, 8, 3, 16, 16, device="meta", dtype=torch.bfloat16)
    in_b = 8 * 3 * 16 * 16 * 2
    out_b = 16 * 3 * 16 * 16 * 2
    w3, w1 = (torch.empty(16, 8, k, k, k, device="meta", dtype=torch.bfloat16) for k in (3, 1))
    x2 = torch.empty(1, 8, 16, 16, device="meta", dtype=torch.bfloat16)
    w2 = torch.empty(16, 8, 1, 1, device="meta", dtype=torch.bfloat16)
    rec = AllocRecorder()
    with trace_live_bytes("flash", recorder=rec):
        y = torch.nn.functional.conv3d(x, w3, padding=1)
        del y
        z = torch.nn.functional.conv3d(x, w1)
        del z
        u = torch.nn.functional.conv2d(x2, w2)
        del u
    acts = [(e.action, e.size) for e in rec.events]
    assert acts == [("alloc", out_b), ("alloc", in_b + out_b), ("free", in_b + out_b), ("free", out_b),
                    ("alloc", out_b), ("free", out_b), ("alloc", out_b // 3), ("free", out_b // 3)]


def test_candidates_that_trace_alike_share_one_recording(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from genprof.planning.estimate import estimate, whole

    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path))  # no replay result from an earlier test

    calls: list[str] = []
    real = whole.record_phase

    def counting(spec, phase, gen, batch, component=None):  # type: ignore[no-untyped-def]
        calls.append(phase)
        return real(spec, phase, gen, batch, component)

    monkeypatch.setattr(whole, "record_phase", counting)
    monkeypatch.setattr(whole, "_RECORDED", type(whole._RECORDED)())
    a = estimate("sd1.5", height=256, width=256, phases=("vae_decode",), layerwise_fp8=False)
    b = estimate("sd1.5", height=256, width=256, phases=("vae_decode",), layerwise_fp8=True)
    assert calls == ["vae_decode"]  # the decode does not depend on the denoiser's fp8 storage
    assert a.phases[-1].peak_reserved_bytes == b.phases[-1].peak_reserved_bytes
    estimate("sd1.5", height=256, width=256, phases=("vae_decode",), vae_tiling=True)
    assert calls == ["vae_decode", "vae_decode"]  # tiling traces anew


def _matmul_trace(memo: bool) -> tuple[int, list[tuple[str, int]]]:
    trace_mod._MEMO.clear()
    trace_mod._MEMO_ON[0] = memo
    q = torch.empty(2, 4, 64, 32, device="meta")
    k = torch.empty(2, 4, 64, 32, device="meta")
    rec = AllocRecorder()
    try:
        with trace_live_bytes("flash", recorder=rec) as (counter, _):
            for _ in range(3):  # batched matmul ends in aten._unsafe_view of the bmm's output
                s = torch.matmul(q, k.transpose(-1, -2))
                del s
    finally:
        trace_mod._MEMO_ON[0] = True
    return counter.peak, [(e.action, e.size) for e in rec.events]


def test_an_undeclared_view_is_not_memoised_into_a_copy() -> None:
    with_memo, without = _matmul_trace(True), _matmul_trace(False)
    assert with_memo == without
    # one 64 KiB score tensor per matmul: the view of the bmm's output allocates nothing
    assert without[1] == [("alloc", 2 * 4 * 64 * 64 * 4), ("free", 2 * 4 * 64 * 64 * 4)] * 3


def _random_recording(rng: random.Random, n: int) -> PhaseRecording:
    events: list[AllocEvent] = []
    live: list[int] = []
    nid = 1
    for _ in range(n):
        r = rng.random()
        if r < 0.5 or not live:
            events.append(AllocEvent("alloc", nid, rng.choice([512, 4096, 700_000, 3 * MiB, 25 * MiB])))
            live.append(nid)
            nid += 1
        elif r < 0.97:
            i = live.pop(rng.randrange(len(live)))
            events.append(AllocEvent("free", i, 0))
        else:
            events.append(AllocEvent("empty_cache"))
    mark = len(events)
    events += [AllocEvent("free", i, 0) for i in live]
    events.append(AllocEvent("free", 10_000, 0))  # a storage from before the recording
    return PhaseRecording(events=tuple(events), mark=mark)


def test_the_replay_of_a_call_matches_the_allocator_over_its_events() -> None:
    from genprof.planning.allocator import replay

    rng = random.Random(3)
    recs = {"text_encode": [_random_recording(rng, 200)], "denoise": _random_recording(rng, 400),
            "vae_decode": _random_recording(rng, 300)}
    seq = call_sequence([40 * MiB, 3 * MiB], recs, {"step": [MiB, MiB], "vae_decode": [2 * MiB]}, {"workspace_bytes": MiB},
                        denoise_calls=2, steps=2)
    parts = seq.events()
    flat = [ev for part in parts for ev in part]
    res = replay(flat)
    got = replay_phases(seq)
    starts = [sum(len(p) for p in parts[:i]) for i in range(len(parts) + 1)]
    for phase, (lo, hi) in seq.phase_at.items():
        a, b = starts[lo], starts[hi]
        before = res.reserved_after[a - 1] if a else 0
        assert got[phase]["reserved_at_start_bytes"] == before
        assert got[phase]["peak_reserved_bytes"] == max([before, *res.reserved_after[a:b]])
        assert got[phase]["peak_allocated_bytes"] == max(res.allocated_after[a:b])
    assert got["_call"]["peak_reserved_bytes"] == res.peak_reserved
    assert got["_call"]["events"] == len(flat)
