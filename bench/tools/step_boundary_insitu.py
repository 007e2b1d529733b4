"""Where a step boundary's time goes inside an instrumented SD 1.5-size call, on the GPU.

    python bench/tools/step_boundary_insitu.py [--out step_boundary_insitu.json]

Each part (the step callback, ``Profiler.next_span``, its allocator/RSS work, the shared CUDA
event, the allocator read and peak reset, the RSS read) is wrapped with ``perf_counter`` and
timed in three configurations: default, ``track_rss: false``, ``memory_tracking: false``. Three
calls each after a warm-up call; per part: count, median us, total ms per call. The wrappers'
own cost is included, so the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T: dict[str, list[float]] = {}


def _timed(obj: Any, name: str, key: str) -> None:
    f = getattr(obj, name)

    def w(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            T.setdefault(key, []).append(time.perf_counter() - t)

    setattr(obj, name, w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import bench_pipeline_overhead as bpo
    import torch

    import genprof
    from genprof import profiler as prof_mod
    from genprof import timing
    from genprof.integrations import diffusers as gd
    from genprof.integrations.demo import build_pipeline
    from genprof.probes import host

    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    _timed(gd._CallState, "on_step_end", "on_step_end")
    _timed(gd._CallState, "on_denoiser", "on_denoiser")
    _timed(prof_mod.Profiler, "next_span", "next_span")
    _timed(prof_mod.Profiler, "_boundary_extra", "_boundary_extra")
    _timed(timing.GpuTimer, "stop_shared", "stop_shared")
    _timed(host.RssReader, "read_bytes", "rss")
    _timed(prof_mod.Profiler, "_fold_peaks", "fold_peaks")
    raw, rs = torch._C._cuda_memoryStats, torch._C._cuda_resetPeakMemoryStats

    def stats(i: int) -> Any:
        t = time.perf_counter()
        try:
            return raw(i)
        finally:
            if threading.current_thread() is threading.main_thread():
                T.setdefault("memoryStats", []).append(time.perf_counter() - t)

    def reset(i: int) -> Any:
        t = time.perf_counter()
        try:
            return rs(i)
        finally:
            T.setdefault("reset", []).append(time.perf_counter() - t)

    torch._C._cuda_memoryStats = stats
    torch._C._cuda_resetPeakMemoryStats = reset
    demo = build_pipeline("sd", "full", device="cuda")
    pipe = demo.pipe
    kw = dict(demo.call_kwargs)
    kw.update(bpo.SETTINGS["sd"]["call"])
    kw["num_inference_steps"] = 25
    kw["output_type"] = "np"
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    configs: dict[str, dict[str, Any]] = {"default": {}, "no_rss": {"track_rss": False},
                                          "no_mem": {"memory_tracking": False}}
    for cfgname, cfg in configs.items():
        for i in range(4):
            T.clear()
            with genprof.Profiler("insitu", handle_sigterm=False, **cfg) as prof:
                gd.instrument(pipe, prof)
                torch.cuda.synchronize()
                t = time.perf_counter()
                pipe(**kw)
                torch.cuda.synchronize()
                wall = time.perf_counter() - t
                gd.uninstrument(pipe)
            if i == 0:
                continue
            row = {k: (len(v), round(statistics.median(v) * 1e6, 1), round(sum(v) * 1e3, 2)) for k, v in T.items()}
            print(cfgname, f"wall {wall:.3f}", row)  # noqa: T201 - a bench script's output
            out.setdefault(cfgname, []).append({"wall_s": wall, "parts": row})
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
