"""Cost of genprof's allocator reads inside a real pipeline call, against a tight loop (GPU).

    python bench/tools/mem_in_pipeline.py

Builds the real-size SD 1.5 demo pipeline (random weights), times ``torch._C._cuda_memoryStats``
in a tight loop before and after a call, then runs one instrumented call with the profiler's
allocator reader and its ``PeakTracker.start``/``end`` wrapped in timers, and counts the garbage
collections during that call.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from bench_pipeline_overhead import SETTINGS  # noqa: E402

import genprof  # noqa: E402
from genprof.integrations.demo import build_pipeline  # noqa: E402
from genprof.integrations.diffusers import instrument, uninstrument  # noqa: E402


def per_call_us(fn: Any, n: int = 2000) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    raw = torch._C._cuda_memoryStats
    torch.cuda.init()
    print(f"fresh: memoryStats {per_call_us(lambda: raw(0)):.1f} us")
    demo = build_pipeline("sd", "full", device="cuda")
    pipe = demo.pipe
    kw = dict(demo.call_kwargs)
    kw.update(SETTINGS["sd"]["call"], num_inference_steps=25, output_type="np")
    pipe(**kw)
    print(f"after load+call: memoryStats {per_call_us(lambda: raw(0)):.1f} us")
    times: dict[str, list[float]] = {"stats": [], "mem_start": [], "mem_end": []}
    prof = genprof.Profiler("mem-in-pipeline")
    gcs: list[tuple[str, float]] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        gcs.append((phase, time.perf_counter()))

    with prof:
        peaks = prof._peaks  # the PeakTracker (genprof.profiler.memory)
        assert peaks is not None
        sf = peaks._stats

        def stats(idx: int) -> Any:
            t = time.perf_counter()
            r = sf(idx)
            times["stats"].append(time.perf_counter() - t)
            return r

        peaks._stats = stats
        for name, key in (("start", "mem_start"), ("end", "mem_end")):
            orig = getattr(peaks, name)

            def timed(o: Any, _orig: Any = orig, _key: str = key) -> None:
                t = time.perf_counter()
                _orig(o)
                times[_key].append(time.perf_counter() - t)

            setattr(peaks, name, timed)
        instrument(pipe, prof)
        gc.callbacks.append(on_gc)
        pipe(**kw)
        gc.callbacks.remove(on_gc)
        uninstrument(pipe)
    for k, v in times.items():
        print(f"{k} n={len(v)} median {statistics.median(v) * 1e6:.1f} us max {max(v) * 1e6:.1f} us "
              f"mean {statistics.fmean(v) * 1e6:.1f}")
    starts = [t for ph, t in gcs if ph == "start"]
    stops = [t for ph, t in gcs if ph == "stop"]
    spent = sum(b - a for a, b in zip(starts, stops, strict=False))
    print(f"gc collections during call: {len(starts)}, total {spent * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
