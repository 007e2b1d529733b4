"""Why is the 128x128x9 Wan loop slow and noisy? Plain-loop timings under a few host settings.

    python bench/diag_launch_bound.py

Prints the per-step time of the plain loop (no genprof) with default torch threads, with one
intra-op thread, and with the garbage collector off, five rounds each, plus the top CPU ops of
one step from torch.profiler. Used to design the launch-bound overhead measurement.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_overhead import build, inputs, loop  # noqa: E402


def rounds(model: object, x: dict, steps: int, n: int = 5) -> list[float]:
    return [loop(model, x, steps, None) / steps * 1000 for _ in range(n)]


def main() -> None:
    model = build()
    x = inputs(9, 128, 128)
    loop(model, x, 3, None)
    print("threads", torch.get_num_threads())
    print("default   ms/step", [round(v, 2) for v in rounds(model, x, 20)])
    torch.set_num_threads(1)
    print("1 thread  ms/step", [round(v, 2) for v in rounds(model, x, 20)])
    gc.disable()
    print("gc off    ms/step", [round(v, 2) for v in rounds(model, x, 20)])
    gc.enable()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        loop(model, x, 2, None)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))
    t = time.perf_counter()
    torch.cuda.synchronize()
    print("sync", time.perf_counter() - t, statistics.mean([1.0]))


if __name__ == "__main__":
    main()
