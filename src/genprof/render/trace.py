"""Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing).

All ``ts`` and ``dur`` values are whole microseconds since the run started.

Layout of the trace:

* process "host (pid N)": one thread track per Python thread that opened spans. Spans are
  complete events (``"ph": "X"``) with host time, in microseconds since the run started.
* process "GPU i": GPU time of each span as a complete event. CUDA events give a duration,
  not a start on the host clock, so each GPU slice is **placed at its span's host start** with
  ``dur`` = the GPU time. GPU work runs behind the host, so real GPU slices start later.
* spans whose slices would overlap without nesting on one track (GPU time longer than the
  gap to the next span, or spans from callbacks) are moved to an extra track ("lane 2", ...),
  so every track holds properly nested slices.
* events are instant events (``"ph": "i"``, thread scope) on the track of their span.
* sampled series are counter tracks (``"ph": "C"``), GPU series under their GPU process.
* process and thread names are metadata events (``"ph": "M"``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genprof.model import Run, Span, atomic_write_text
from genprof.render.reports import json_default

log = logging.getLogger(__name__)

GPU_PID_BASE = 1_000_000
"""Trace ``pid`` of GPU i is ``GPU_PID_BASE + i`` (kept apart from real process ids)."""

_GPU_DEVICE = re.compile(r"^gpu(\d+)$")


def _us(seconds: float) -> int:
    """Whole microseconds: integer times nest exactly (a child never ends a rounding error after its parent)."""
    return int(round(seconds * 1e6))


def _span_args(span: Span, path: str) -> dict[str, Any]:
    d = span.to_dict()
    for k in ("name", "start_s", "duration_s", "thread"):
        d.pop(k, None)
    d["path"] = path
    return d


class _Lanes:
    """Assigns slices to tracks so that each track holds properly nested slices only.

    Times are microseconds. A slice that ends at most ``tolerance_us`` after the slice that
    encloses it (rounding of separately measured edges) is clipped to nest inside it.
    """

    def __init__(self, tolerance_us: int = 1) -> None:
        self.stacks: list[list[int]] = []
        self.tol = tolerance_us

    def place(self, start: int, end: int) -> tuple[int, int, int]:
        """Track index for a slice and its (possibly nudged) start and end. Call in start order."""
        for i, stack in enumerate(self.stacks):
            s = start
            while stack and stack[-1] <= start + self.tol:
                s = max(s, stack.pop())
            if not stack or end <= stack[-1] + self.tol:
                e = max(s, end if not stack else min(end, stack[-1]))
                stack.append(e)
                return i, s, e
        self.stacks.append([end])
        return len(self.stacks) - 1, start, end


def trace_events(run: Run) -> dict[str, Any]:
    """The trace as a dict: ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``."""
    from genprof.analysis.summary import span_paths

    paths = span_paths(run)
    host_pid = run.host.pid if run.host.pid is not None else 1
    events: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []

    threads: dict[str, int] = {}

    def thread_id(name: str | None) -> int:
        key = name or "MainThread"
        if key not in threads:
            threads[key] = len(threads) + 1
        return threads[key]

    # ------------------------------------------------------------ host spans
    # spans still open when the run file was written are drawn to the run's end
    run_end = run.duration_s if run.duration_s is not None else max((s.start_s for s in run.spans), default=0.0)
    host_spans = sorted(
        ((s, s.duration_s if s.duration_s is not None else max(0.0, run_end - s.start_s)) for s in run.spans),
        key=lambda sd: (sd[0].start_s, -sd[1], sd[0].id),
    )
    done = [s for s, _ in host_spans if s.duration_s is not None]
    host_lanes: dict[int, _Lanes] = {}
    host_tracks: dict[tuple[int, int], int] = {}  # (thread id, lane) -> tid
    span_tid: dict[int, int] = {}

    for s, dur in host_spans:
        base = thread_id(s.thread)
        lanes = host_lanes.setdefault(base, _Lanes())
        lane, ts, end = lanes.place(_us(s.start_s), _us(s.start_s + dur))
        if (base, lane) not in host_tracks:
            host_tracks[(base, lane)] = base if lane == 0 else 10_000 + base * 100 + lane
        tid = host_tracks[(base, lane)]
        span_tid[s.id] = tid
        args = _span_args(s, paths[s.id])
        if s.duration_s is None:
            args["open"] = "span was still open when the run ended; drawn to the run's end"
        events.append(
            {
                "name": s.name,
                "cat": s.kind,
                "ph": "X",
                "ts": ts,
                "dur": end - ts,
                "pid": host_pid,
                "tid": tid,
                "args": args,
            }
        )

    # ------------------------------------------------------------- GPU spans
    gpu_tracks: dict[tuple[int, int], int] = {}
    gpu_lanes: dict[int, _Lanes] = {}
    gpu_devices: set[int] = set()
    for s in sorted(
        (s for s in done if s.gpu_time_s is not None),
        key=lambda s: (s.start_s, -(s.gpu_time_s or 0.0), s.id),
    ):
        dev = s.device_index if s.device_index is not None else 0
        gpu_devices.add(dev)
        lanes = gpu_lanes.setdefault(dev, _Lanes())
        g = s.gpu_time_s or 0.0
        lane, ts, end = lanes.place(_us(s.start_s), _us(s.start_s + g))
        tid = 1 + lane
        if lane:
            gpu_tracks[(dev, lane)] = tid
        events.append(
            {
                "name": s.name,
                "cat": f"gpu.{s.kind}",
                "ph": "X",
                "ts": ts,
                "dur": end - ts,
                "pid": GPU_PID_BASE + dev,
                "tid": tid,
                "args": {"span_id": s.id, "path": paths[s.id], "host_duration_s": s.duration_s,
                         "gpu_time_s": s.gpu_time_s, "placement": "at host start (CUDA events give durations only)"},
            }
        )

    # ---------------------------------------------------------------- events
    main_tid = thread_id("MainThread") if not threads else min(threads.values())
    for e in run.events:
        tid = span_tid.get(e.span_id, main_tid) if e.span_id is not None else main_tid
        args = dict(e.attributes)
        if e.span_id is not None:
            args["span_id"] = e.span_id
        events.append({"name": e.name, "cat": "event", "ph": "i", "s": "t", "ts": _us(e.t_s),
                       "pid": host_pid, "tid": tid, "args": args})

    # --------------------------------------------------------------- counters
    for ser in run.series:
        m = _GPU_DEVICE.match(ser.device)
        pid = host_pid
        if m:
            pid = GPU_PID_BASE + int(m.group(1))
            gpu_devices.add(int(m.group(1)))
        label = f"{ser.device}.{ser.name}"
        for t, v in zip(ser.t_s, ser.values, strict=True):
            events.append({"name": label, "ph": "C", "ts": _us(t), "pid": pid, "args": {ser.name: v}})

    # --------------------------------------------------------------- metadata
    meta.append(_m("process_name", host_pid, 0, {"name": f"host: {run.name} (pid {host_pid})"}))
    meta.append(_m("process_sort_index", host_pid, 0, {"sort_index": 0}))
    for name, base in sorted(threads.items(), key=lambda kv: kv[1]):
        meta.append(_m("thread_name", host_pid, base, {"name": name}))
        meta.append(_m("thread_sort_index", host_pid, base, {"sort_index": base * 100}))
    for (base, lane), tid in sorted(host_tracks.items()):
        if lane:
            tname = next((n for n, b in threads.items() if b == base), "thread")
            meta.append(_m("thread_name", host_pid, tid, {"name": f"{tname} (lane {lane + 1})"}))
            meta.append(_m("thread_sort_index", host_pid, tid, {"sort_index": base * 100 + lane}))
    gpu_names = {g.index: g.name for g in run.gpus}
    for dev in sorted(gpu_devices):
        pid = GPU_PID_BASE + dev
        label = f"GPU {dev}" + (f": {gpu_names[dev]}" if gpu_names.get(dev) else "")
        meta.append(_m("process_name", pid, 0, {"name": label}))
        meta.append(_m("process_sort_index", pid, 0, {"sort_index": 1 + dev}))
        meta.append(_m("thread_name", pid, 1, {"name": "GPU time (placed at host start)"}))
    for (dev, lane), tid in sorted(gpu_tracks.items()):
        meta.append(_m("thread_name", GPU_PID_BASE + dev, tid, {"name": f"GPU time (lane {lane + 1})"}))

    events.sort(key=lambda e: (e["ts"], -e.get("dur", 0.0)))
    return {
        "traceEvents": meta + events,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "genprof",
            "run_name": run.name,
            "run_id": run.run_id,
            "started_at": run.started_at,
            "started_unix_s": run.started_unix_s,
            "time_origin": "ts is microseconds since the run started (host monotonic clock)",
            "gpu_slices": "GPU slices are placed at their span's host start; only their duration is measured",
            "end_status": run.end.status,
        },
    }


def _m(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "ts": 0, "args": args}


def render_trace(run: Run) -> str:
    """:func:`trace_events` as compact JSON text."""
    return json.dumps(trace_events(run), separators=(",", ":"), allow_nan=False, default=json_default)


def write_trace(run: Run, path: str | os.PathLike[str]) -> Path:
    """Write the Chrome Trace Event JSON of ``run`` to ``path`` (atomically); returns the path."""
    p = Path(path)
    atomic_write_text(p, render_trace(run))
    log.info("wrote trace %s", p)
    return p


def iter_slices(trace: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The complete ("X") events of a trace dict, for checks and tests."""
    return (e for e in trace["traceEvents"] if e.get("ph") == "X")
