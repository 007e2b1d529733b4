"""Chrome Trace Event / Perfetto JSON: format validation."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from runs import make_run

from genprof.model import Span
from genprof.render.trace import GPU_PID_BASE, trace_events, write_trace

REQUIRED = {"X": {"name", "ph", "ts", "dur", "pid", "tid"}, "i": {"name", "ph", "ts", "pid", "tid", "s"},
            "C": {"name", "ph", "ts", "pid", "args"}, "M": {"name", "ph", "pid", "args"}}


def validate(trace: dict) -> None:
    """Checks a Perfetto-loadable trace: fields, integer us, proper nesting and order per track."""
    assert isinstance(trace["traceEvents"], list)
    per_track: dict[tuple[int, int], list[dict]] = defaultdict(list)
    last_ts: dict[tuple, int] = {}
    for e in trace["traceEvents"]:
        ph = e["ph"]
        assert ph in REQUIRED, ph
        missing = REQUIRED[ph] - set(e)
        assert not missing, (e, missing)
        if ph == "M":
            continue
        assert isinstance(e["ts"], int) and e["ts"] >= 0
        key = (e["pid"], e.get("tid", -1), ph if ph != "X" else "X")
        assert e["ts"] >= last_ts.get(key, 0), f"ts goes back on track {key}"
        last_ts[key] = e["ts"]
        if ph == "X":
            assert isinstance(e["dur"], int) and e["dur"] >= 0
            per_track[(e["pid"], e["tid"])].append(e)
        if ph == "C":
            assert all(isinstance(v, (int, float)) for v in e["args"].values())
    # slices on one track nest properly (what B/E matching means for complete events)
    for track, slices in per_track.items():
        stack: list[int] = []
        for e in slices:
            while stack and stack[-1] <= e["ts"]:
                stack.pop()
            end = e["ts"] + e["dur"]
            assert not stack or end <= stack[-1], f"slice {e['name']} overlaps its parent on {track}"
            stack.append(end)


def test_trace_is_valid_and_complete(tmp_path):
    run = make_run(generations=2, steps=6)
    p = write_trace(run, tmp_path / "t.trace.json")
    trace = json.loads(p.read_text())
    validate(trace)
    host = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == run.host.pid]
    gpu = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == GPU_PID_BASE]
    assert len(host) == len(run.spans)
    assert len(gpu) == sum(1 for s in run.spans if s.gpu_time_s is not None)
    # GPU slices sit at the host start with the GPU duration
    step = next(s for s in run.spans if s.kind == "step")
    g = next(e for e in gpu if e["args"]["span_id"] == step.id)
    assert g["ts"] == round(step.start_s * 1e6) and g["dur"] == round((step.start_s + step.gpu_time_s) * 1e6) - g["ts"]
    instants = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert [e["name"] for e in instants] == ["checkpoint_loaded", "vae_tiling_enabled"]
    counters = {e["name"] for e in trace["traceEvents"] if e["ph"] == "C"}
    assert counters == {s.key for s in run.series}
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert any(n.startswith("GPU 0") for n in names) and any(n.startswith("host") for n in names)
    assert trace["otherData"]["run_id"] == run.run_id


def test_overlapping_slices_go_to_extra_lanes():
    # GIVEN GPU time longer than the gap to the next step (the GPU runs behind the host)
    run = make_run(generations=1, steps=4)
    for s in run.spans:
        if s.kind == "step":
            s.gpu_time_s = (s.duration_s or 0) * 1.5
    # and a callback span on the same thread that overlaps without nesting
    first = next(s for s in run.spans if s.kind == "step")
    run.spans.append(Span(id=999, name="callback", kind="call", start_s=first.start_s + 0.01,
                          duration_s=(first.duration_s or 0) * 2, thread="MainThread"))
    trace = trace_events(run)
    validate(trace)
    lanes = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "GPU time (lane 2)" in lanes and "MainThread (lane 2)" in lanes


def test_threads_get_their_own_tracks():
    run = make_run(generations=1, steps=2)
    run.spans.append(Span(id=500, name="prefetch", kind="call", start_s=6.2, duration_s=0.5, thread="loader"))
    trace = trace_events(run)
    validate(trace)
    threads = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"MainThread", "loader"} <= threads


def test_open_spans_of_a_crashed_run_are_drawn_to_its_end():
    run = make_run(end_status="oom")
    gen = next(s for s in run.spans if s.kind == "generation")
    gen.duration_s = None
    trace = trace_events(run)
    validate(trace)
    e = next(e for e in trace["traceEvents"] if e["ph"] == "X" and e["args"].get("id") == gen.id)
    assert "open" in e["args"]
    assert e["ts"] + e["dur"] == round(run.duration_s * 1e6)


def test_cpu_only_run_has_no_gpu_track():
    trace = trace_events(make_run(with_gpu=False))
    validate(trace)
    assert not [e for e in trace["traceEvents"] if e.get("pid", 0) >= GPU_PID_BASE]


@pytest.mark.parametrize("attr", [{"path": object()}, {"t": (1, 2)}, {"s": {3}}])
def test_odd_attribute_values_still_serialise(tmp_path, attr):
    run = make_run(generations=1, steps=1)
    run.spans[0].attributes.update(attr)
    json.loads(write_trace(run, tmp_path / "x.json").read_text())
