"""One Perfetto trace: genprof's spans, counters and events with the diagnose window's kernels.

Starts from :func:`genprof.render.trace.trace_events` (host spans, GPU-time slices, events,
sampler counters) and adds, for a run with a diagnose window:

* a process "GPU i kernels (diagnose window)": first a "steps" track with the window's step
  spans (so each step sits on top of its kernels), then one track per CUDA stream with every
  kernel, memcpy and memset at its real device time;
* in the host process: a "torch ops (diagnose window)" track (top-level torch ops, with their
  module scope) and a "host syncs" track (blocking runtime calls with the line that issued them).

All records share the run's clock (microseconds since the run started), so no shifting is needed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from genprof.analysis.diagnose import classify_kernel, diagnosis_of
from genprof.model import Run, atomic_write_text
from genprof.render.reports import json_default
from genprof.render.trace import GPU_PID_BASE, trace_events

log = logging.getLogger(__name__)

KERNEL_PID_BASE = 2_000_000
"""Trace ``pid`` of the kernel rows of GPU i (apart from genprof's own GPU slices)."""
STEPS_TID = 1
OPS_TID = 900_001
SYNCS_TID = 900_002


def _m(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "ts": 0, "args": args}


def merged_trace(run: Run) -> dict[str, Any]:
    """The trace dict of :func:`trace_events` plus the diagnose window's rows (if the run has one)."""
    trace = trace_events(run)
    d = diagnosis_of(run)
    if d is None:
        return trace
    events: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    host_pid = run.host.pid if run.host.pid is not None else 1
    devices = sorted({k.device if k.device is not None else 0 for k in d.kernels}) or [0]
    streams: dict[int, set[int]] = {}
    for k in d.kernels:
        dev = k.device if k.device is not None else 0
        streams.setdefault(dev, set()).add(k.stream if k.stream is not None else 0)
        events.append({"name": k.name, "cat": f"diagnose.{classify_kernel(k.name, k.category)}", "ph": "X",
                       "ts": k.start_us, "dur": k.dur_us, "pid": KERNEL_PID_BASE + dev,
                       "tid": 10 + (k.stream if k.stream is not None else 0),
                       "args": {"scope": k.scope, "step": k.step, "correlation": k.correlation,
                                "category": k.category}})
    for dev in devices if d.kernels else []:
        pid = KERNEL_PID_BASE + dev
        meta.append(_m("process_name", pid, 0, {"name": f"GPU {dev} kernels (diagnose window {d.window})"}))
        meta.append(_m("process_sort_index", pid, 0, {"sort_index": 1 + dev}))
        meta.append(_m("thread_name", pid, STEPS_TID, {"name": "steps"}))
        meta.append(_m("thread_sort_index", pid, STEPS_TID, {"sort_index": 0}))
        for st in sorted(streams.get(dev, ())):
            meta.append(_m("thread_name", pid, 10 + st, {"name": f"stream {st}"}))
            meta.append(_m("thread_sort_index", pid, 10 + st, {"sort_index": 10 + st}))
        for s in d.step_windows:
            events.append({"name": f"step {s.index}", "cat": "diagnose.step", "ph": "X", "ts": s.start_us,
                           "dur": max(0.0, s.end_us - s.start_us), "pid": pid, "tid": STEPS_TID,
                           "args": {"span_id": s.span_id, "clock": "host time of the step span"}})
    for o in d.cpu_ops:
        events.append({"name": o.name, "cat": "diagnose.cpu_op", "ph": "X", "ts": o.start_us,
                       "dur": max(0.0, o.end_us - o.start_us), "pid": host_pid, "tid": OPS_TID,
                       "args": {"scope": o.scope, "step": o.step}})
    for r in d.runtime:
        events.append({"name": r.name, "cat": "diagnose.sync", "ph": "X", "ts": r.start_us, "dur": r.wait_us,
                       "pid": host_pid, "tid": SYNCS_TID,
                       "args": {"site": r.site, "op": r.op, "kind": r.kind, "step": r.step}})
    if d.cpu_ops:
        meta.append(_m("thread_name", host_pid, OPS_TID, {"name": "torch ops (diagnose window)"}))
        meta.append(_m("thread_sort_index", host_pid, OPS_TID, {"sort_index": 10**7}))
    if d.runtime:
        meta.append(_m("thread_name", host_pid, SYNCS_TID, {"name": "host syncs (diagnose window)"}))
        meta.append(_m("thread_sort_index", host_pid, SYNCS_TID, {"sort_index": 10**7 + 1}))
    # genprof's own GPU slices after the kernel rows
    for e in trace["traceEvents"]:
        if e.get("ph") == "M" and e.get("name") == "process_sort_index" and e.get("pid", 0) >= GPU_PID_BASE \
                and e.get("pid", 0) < KERNEL_PID_BASE:
            e["args"] = {"sort_index": 100 + e["pid"] - GPU_PID_BASE}
    events.sort(key=lambda e: (e["ts"], -e.get("dur", 0.0)))
    trace["traceEvents"] = meta + trace["traceEvents"] + events
    trace["otherData"]["diagnose_window"] = {"window": d.window, "steps": d.steps, "gpu_reason": d.gpu_reason,
                                             "kernels": len(d.kernels)}
    return trace


def write_merged_trace(run: Run, path: str | os.PathLike[str]) -> Path:
    """Write :func:`merged_trace` as JSON to ``path`` (atomically); returns the path."""
    p = Path(path)
    atomic_write_text(p, json.dumps(merged_trace(run), separators=(",", ":"), allow_nan=False, default=json_default))
    log.info("wrote merged trace %s", p)
    return p


__all__ = ["KERNEL_PID_BASE", "merged_trace", "write_merged_trace"]
