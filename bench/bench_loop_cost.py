"""Host cost per step of a step loop (``Profiler.steps``: ``next_span`` at each boundary) and per ``with prof.span``.

    PYTHONPATH=<tree>/src python bench/bench_loop_cost.py [N] [ROUNDS]

Prints one JSON line: medians over rounds, in us, and the reference (an empty Python ``with``),
so two source trees run one after the other can be compared, also in reference units.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from genprof.profiler import Profiler

MODES = {
    "host-only": {"gpu_timing": False, "memory_tracking": False, "track_rss": False, "energy_spans": "none"},
    "default": {},
}
N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
R = int(sys.argv[2]) if len(sys.argv) > 2 else 15



class _CM:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *e: object) -> None:
        return None


def ref(n: int) -> float:
    cm = _CM()
    t = time.perf_counter()
    for _ in range(n):
        with cm:
            pass
    return (time.perf_counter() - t) / n


out: dict[str, dict[str, list[float]]] = {m: {"steps": [], "span": []} for m in MODES}
refs = []
for _r in range(R):
    for m, kw in MODES.items():
        with Profiler("b", handle_sigterm=False, monitor_cpu_usage=False, **kw) as p:
            for _ in p.steps(range(200), phase=None):
                pass
            t = time.perf_counter()
            for _ in p.steps(range(N), phase=None):
                pass
            out[m]["steps"].append((time.perf_counter() - t) / N)
            t = time.perf_counter()
            for i in range(N):
                with p.span("step", "step", index=i):
                    pass
            out[m]["span"].append((time.perf_counter() - t) / N)
    refs.append(ref(N))
res: dict[str, Any] = {m: {k: round(statistics.median(v) * 1e6, 3) for k, v in d.items()} for m, d in out.items()}
res["ref_us"] = round(statistics.median(refs) * 1e6, 4)
print(json.dumps(res))
