"""What one span's GPU bookkeeping costs, call by call, on this machine.

    python bench/bench_primitives.py [--out primitives.json]

Times (median of 7 x 20,000 calls, microseconds) the calls the profiler makes per span:
CUDA event record and query, the allocator statistics read and peak reset, the RSS read,
plus the Span object itself. Explains the span-cost figures in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from genprof.model import Span
from genprof.probes.host import RssReader


def per_call(fn: Callable[[], object], n: int = 20000, repeats: int = 7) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t) / n)
    return statistics.median(out) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    a = ap.parse_args()
    res: dict[str, float] = {}
    rss = RssReader()
    res["perf_counter"] = per_call(time.perf_counter)
    res["Span()"] = per_call(lambda: Span(1, "step", "step", 0.0, None, 1, thread="MainThread", attributes={}))
    res["rss read (/proc/self/statm)"] = per_call(rss.read_bytes)
    if torch.cuda.is_available():
        evs = [torch.cuda.Event(enable_timing=True) for _ in range(64)]
        for e in evs:
            e.record()
        torch.cuda.synchronize()
        i = [0]

        def rec() -> None:
            i[0] = (i[0] + 1) % 64
            evs[i[0]].record()

        res["cuda Event.record"] = per_call(rec)
        torch.cuda.synchronize()
        res["cuda Event.query (completed)"] = per_call(lambda: evs[3].query())
        res["torch.cuda.Event() create"] = per_call(lambda: torch.cuda.Event(enable_timing=True), n=2000)
        raw = torch._C._cuda_memoryStats
        res["torch._C._cuda_memoryStats"] = per_call(lambda: raw(0))
        res["torch.cuda.memory_allocated"] = per_call(lambda: torch.cuda.memory_allocated(0), n=5000)
        res["torch._C._cuda_resetPeakMemoryStats"] = per_call(lambda: torch._C._cuda_resetPeakMemoryStats(0))
        res["torch.cuda.current_stream"] = per_call(torch.cuda.current_stream)
    w = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:{w}s} {v:9.3f} us")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "us": res}, fh,
                      indent=2)


if __name__ == "__main__":
    main()
