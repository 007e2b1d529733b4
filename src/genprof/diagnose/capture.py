"""torch.profiler's trace (Kineto's Chrome-trace JSON) -> plain diagnosis records.

Kineto's JSON is the format that Perfetto, TensorBoard and Holistic Trace Analysis read; its
categories are stable across torch releases: ``kernel``, ``gpu_memcpy`` and ``gpu_memset``
(device activity, with ``args.stream``, ``args.correlation``, ``args.device``),
``cuda_runtime`` / ``cuda_driver`` (host API calls, ``args.correlation`` links a launch to its
kernel), ``cpu_op`` (torch ops), ``user_annotation`` (``record_function`` scopes, including
``ProfilerStep#N`` and genprof's module scopes) and ``python_function`` (the Python stack,
recorded with ``with_stack=True``, on the same thread ids as the ops).

Everything here is pure: it takes the parsed JSON and returns dataclasses, so it is tested on
synthetic traces (no GPU) as well as on real ones.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genprof.diagnose.sites import SyncSite
from genprof.diagnosis import CpuOp, HostFrame, KernelInterval, RuntimeCall, StepWindow

SCOPE_PREFIX = "genprof.module:"
"""``record_function`` name prefix of genprof's module scopes (``genprof.module:blocks.3.attn1``)."""

STEP_MARK = re.compile(r"^ProfilerStep#(\d+)$")
_FRAME = re.compile(r"^(?P<file>.+?)\((?P<line>\d+)\): (?P<func>.*)$")

# Host API calls that make the host wait for the device (each a documented blocking call of the
# CUDA runtime or driver API).
SYNC_CALLS = frozenset({
    "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaStreamQuery",
    "cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize",
})
MEMCPY_SYNC_CALLS = frozenset({"cudaMemcpy", "cudaMemcpy2D", "cuMemcpyDtoH_v2", "cuMemcpyDtoH"})
MEMCPY_ASYNC_CALLS = frozenset({"cudaMemcpyAsync", "cudaMemcpy2DAsync", "cuMemcpyDtoHAsync_v2"})

# Path pieces of frames that are not the user's code: torch's own and genprof's frames.
_NOT_USER = ("torch/", "genprof/", "<built-in", "<frozen", "threading.py", "contextlib.py", "runpy.py")

MAX_HOST_FRAMES = 20_000
HOST_FRAME_MIN_US = 20.0


def user_frame(name: str) -> tuple[str, int, str] | None:
    """``(file, line, function)`` of a ``python_function`` event outside torch and genprof, else None."""
    m = _FRAME.match(name)
    if m is None:
        return None
    f = m.group("file")
    if f.startswith(_NOT_USER) or any(p in f for p in ("/torch/", "/genprof/", "site-packages/torch")):
        return None
    return f, int(m.group("line")), m.group("func")


def short_site(file: str, line: int) -> str:
    """``pipeline_wan.py:512``: the file's base name and the line."""
    return f"{file.rsplit('/', 1)[-1]}:{line}"


@dataclass
class _Iv:
    start: float
    end: float
    name: str
    tid: Any


class _Nested:
    """Properly nested intervals of one thread; :meth:`innermost` finds the deepest containing ``t``."""

    def __init__(self, ivs: Iterable[_Iv]) -> None:
        self.ivs = sorted(ivs, key=lambda i: (i.start, -i.end))
        self.starts = [i.start for i in self.ivs]

    def innermost(self, t: float, max_scan: int = 20_000) -> _Iv | None:
        k = bisect.bisect_right(self.starts, t) - 1
        n = 0
        while k >= 0 and n < max_scan:
            iv = self.ivs[k]
            if iv.end >= t:
                return iv  # the latest-started interval that still contains t: the innermost
            k -= 1
            n += 1
        return None

    def outermost(self, t: float) -> _Iv | None:
        """The earliest-started interval containing ``t`` (linear in the intervals started before t)."""
        k = bisect.bisect_right(self.starts, t)
        for iv in self.ivs[:k]:
            if iv.end >= t:
                return iv
        return None


def _by_tid(ivs: Iterable[_Iv]) -> dict[Any, _Nested]:
    groups: dict[Any, list[_Iv]] = {}
    for iv in ivs:
        groups.setdefault(iv.tid, []).append(iv)
    return {k: _Nested(v) for k, v in groups.items()}


def _outermost_only(ivs: Sequence[_Iv]) -> list[_Iv]:
    out: list[_Iv] = []
    end_by_tid: dict[Any, float] = {}
    for iv in sorted(ivs, key=lambda i: (i.start, -i.end)):
        if iv.start < end_by_tid.get(iv.tid, -1e300):
            continue
        out.append(iv)
        end_by_tid[iv.tid] = iv.end
    return out


def step_marks(trace: Mapping[str, Any]) -> dict[int, float]:
    """Start (trace clock, us) of each ``ProfilerStep#N`` annotation, by N."""
    out: dict[int, float] = {}
    for e in trace.get("traceEvents", []):
        if e.get("ph") == "X" and e.get("cat") == "user_annotation":
            m = STEP_MARK.match(str(e.get("name", "")))
            if m:
                out[int(m.group(1))] = float(e["ts"])
    return out


@dataclass
class Captured:
    kernels: list[KernelInterval]
    runtime: list[RuntimeCall]
    cpu_ops: list[CpuOp]
    host_frames: list[HostFrame]
    scopes_seen: int


def parse_trace(trace: Mapping[str, Any], *, offset_us: float, steps: Sequence[StepWindow],
                sync_sites: Sequence[SyncSite] = ()) -> Captured:
    """Convert a Kineto trace (dict) into records on genprof's clock (``t = ts - offset_us``).

    ``steps`` (genprof clock) give each launch, op and sync its step index. ``sync_sites``
    (from :class:`~genprof.diagnose.sites.SyncSites`) give a blocking call the exact line of
    the op that issued it; without one, the site is the innermost user function of the
    profiler's Python stack.
    """
    ev = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "ts" in e]

    def t(e: Mapping[str, Any]) -> tuple[float, float]:
        s = float(e["ts"]) - offset_us
        return s, s + float(e.get("dur", 0.0))

    step_starts = [s.start_us for s in steps]

    def step_of(x: float) -> int | None:
        k = bisect.bisect_right(step_starts, x) - 1
        if k >= 0 and x <= steps[k].end_us:
            return steps[k].index
        return None

    gpu, runtime_ev, ops, scopes, frames = [], [], [], [], []
    for e in ev:
        cat = e.get("cat")
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            gpu.append(e)
        elif cat in ("cuda_runtime", "cuda_driver"):
            runtime_ev.append(e)
        elif cat == "cpu_op":
            ops.append(e)
        elif cat == "user_annotation" and str(e.get("name", "")).startswith(SCOPE_PREFIX):
            scopes.append(e)
        elif cat == "python_function":
            frames.append(e)

    # ---- host-side indexes (genprof clock)
    scope_idx = _by_tid(_Iv(*t(e), str(e["name"])[len(SCOPE_PREFIX):], e.get("tid")) for e in scopes)
    user: list[_Iv] = []
    for e in frames:
        uf = user_frame(str(e.get("name", "")))
        if uf is not None:
            s, en = t(e)
            user.append(_Iv(s, en, f"{short_site(uf[0], uf[1])} {uf[2]}", e.get("tid")))
    frame_idx = _by_tid(user)
    op_ivs = [_Iv(*t(e), str(e.get("name", "")), e.get("tid")) for e in ops]
    top_ops = _outermost_only(op_ivs)
    top_idx = _by_tid(top_ops)

    launches: dict[int, tuple[float, Any]] = {}
    for e in runtime_ev:
        c = (e.get("args") or {}).get("correlation")
        if c is not None:
            launches[int(c)] = (t(e)[0], e.get("tid"))

    def scope_at(x: float, tid: Any) -> str | None:
        idx = scope_idx.get(tid)
        iv = idx.innermost(x) if idx else None
        return iv.name if iv else None

    # ---- device activity
    kernels: list[KernelInterval] = []
    memcpy_kind: dict[int, str] = {}
    for e in gpu:
        a = e.get("args") or {}
        s, en = t(e)
        corr = a.get("correlation")
        cat = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}[e["cat"]]
        launch = launches.get(int(corr)) if corr is not None else None
        if cat == "memcpy" and corr is not None:
            memcpy_kind[int(corr)] = str(e.get("name", ""))
        kernels.append(KernelInterval(
            name=str(e.get("name", "")), start_us=s, end_us=en, stream=_int(a.get("stream")),
            device=_int(a.get("device")), correlation=_int(corr), category=cat,
            scope=scope_at(launch[0], launch[1]) if launch else None,
            step=step_of(launch[0]) if launch else None,
        ))
    kernels.sort(key=lambda k: k.start_us)

    # ---- blocking runtime calls, grouped by the torch op that issued them
    blocking: list[tuple[_Iv, str, int | None]] = []
    for e in runtime_ev:
        name = str(e.get("name", ""))
        a = e.get("args") or {}
        corr = _int(a.get("correlation"))
        kind: str | None = None
        if name in SYNC_CALLS:
            kind = "event_sync" if "Event" in name else "sync"
        elif name in MEMCPY_SYNC_CALLS:
            kind = "memcpy_sync"
        elif name in MEMCPY_ASYNC_CALLS and corr is not None:
            what = memcpy_kind.get(corr, "")
            if "DtoH" in what or "Device -> Pageable" in what or "Device -> Pinned" in what:
                kind = "memcpy_d2h"
        if kind is not None:
            blocking.append((_Iv(*t(e), name, e.get("tid")), kind, corr))
    groups: dict[Any, list[tuple[_Iv, str, int | None]]] = {}
    for iv, kind, corr in blocking:
        idx = top_idx.get(iv.tid)
        op = idx.outermost(iv.start) if idx else None
        key = ("op", id(op)) if op is not None else ("call", id(iv))
        groups.setdefault(key, []).append((iv, kind, corr))
    site_of = _SiteMatcher(sync_sites)
    runtime: list[RuntimeCall] = []
    for members in sorted(groups.values(), key=lambda ms: min(m[0].start for m in ms)):
        kinds = {k for _, k, _ in members}
        # an async D2H copy alone does not block (pinned, non_blocking); with a sync, or pageable, it does
        if kinds == {"memcpy_d2h"} and not any("Pageable" in memcpy_kind.get(c or -1, "") for _, _, c in members):
            continue
        first = min(members, key=lambda m: m[0].start)[0]
        last_end = max(m[0].end for m in members)
        idx = top_idx.get(first.tid)
        op = idx.outermost(first.start) if idx else None
        reported = site_of.take(op.start if op else first.start, (op.end if op else last_end), first.tid)
        stack: list[str] = []
        site: str | None
        func: str | None
        source: str | None
        if reported is not None and reported.stack:
            f0, l0, fn0 = reported.stack[0]
            site, func, source = short_site(f0, l0), fn0, "sync_debug_mode"
            stack = [f"{short_site(f, ln)} {fn}".rstrip() for f, ln, fn in reported.stack]
        else:
            fidx = frame_idx.get(first.tid)
            fr = fidx.innermost(first.start) if fidx else None
            site, func = (fr.name.split(" ", 1) + [""])[:2] if fr else (None, None)
            source = "profiler_stack" if fr else None
        kind = "sync" if "sync" in kinds else ("memcpy_sync" if "memcpy_sync" in kinds else sorted(kinds)[0])
        runtime.append(RuntimeCall(
            name="+".join(dict.fromkeys(m[0].name for m in sorted(members, key=lambda m: m[0].start))),
            start_us=first.start, end_us=last_end, kind=kind, tid=_int(first.tid),
            correlation=members[0][2], op=op.name if op else None, site=site, function=func or None,
            step=step_of(first.start), stack=stack, site_source=source,
        ))
    runtime.sort(key=lambda r: r.start_us)

    cpu_ops = [CpuOp(name=o.name, start_us=o.start, end_us=o.end, tid=_int(o.tid), scope=scope_at(o.start, o.tid),
                     step=step_of(o.start)) for o in top_ops]
    long_frames = sorted((f for f in user if f.end - f.start >= HOST_FRAME_MIN_US), key=lambda f: f.start - f.end)
    host_frames = sorted((HostFrame(name=f.name, start_us=f.start, end_us=f.end, tid=_int(f.tid))
                          for f in long_frames[:MAX_HOST_FRAMES]), key=lambda f: f.start_us)
    return Captured(kernels=kernels, runtime=runtime, cpu_ops=cpu_ops, host_frames=host_frames,
                    scopes_seen=len(scopes))


class _SiteMatcher:
    """Gives each blocking op the sync torch reported for it: the first unused one at or after the
    op's start (the warning is raised as the op returns), no later than ``SITE_SLACK_US`` after
    its end, on the op's thread where the thread ids agree."""

    def __init__(self, sites: Sequence[SyncSite]) -> None:
        self.sites = sorted(sites, key=lambda s: s.t_s)
        self.t_us = [s.t_s * 1e6 for s in self.sites]
        self.used = [False] * len(self.sites)

    def take(self, start_us: float, end_us: float, tid: Any) -> SyncSite | None:
        k = bisect.bisect_left(self.t_us, start_us - CLOCK_SLACK_US)
        fallback: int | None = None
        while k < len(self.sites) and self.t_us[k] <= end_us + SITE_SLACK_US:
            if not self.used[k]:
                if tid is None or self.sites[k].tid == _int(tid):
                    self.used[k] = True
                    return self.sites[k]
                if fallback is None:
                    fallback = k
            k += 1
        if fallback is not None:  # Kineto's thread ids are not the OS ids on this platform: by time alone
            self.used[fallback] = True
            return self.sites[fallback]
        return None


CLOCK_SLACK_US = 50.0
"""How far genprof's and the trace's clocks may disagree after alignment (see ``_offset_us``)."""
SITE_SLACK_US = 2_000.0
"""How long after an op returns its sync warning may be recorded (the warning hook's own time)."""


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


__all__ = ["SCOPE_PREFIX", "Captured", "parse_trace", "short_site", "step_marks", "user_frame"]
