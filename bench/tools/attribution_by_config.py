"""genprof's exclusive time on the calling thread of an instrumented pipeline call, by config (GPU).

    python bench/tools/attribution_by_config.py sd|wan

For the default config and with the sampler, energy, memory tracking or GPU timing turned off,
three instrumented calls (after a warm-up) of the real-size demo pipeline, with genprof's time
split by entry point (pipeline call, denoiser pre-hook, text-encoder pre-hook, step callback,
phase methods). Uses bench_pipeline_overhead.SelfTime. (bench/results/attribution_by_config_h100.log
also holds a cProfile listing that an earlier version of this script printed.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from bench_pipeline_overhead import SETTINGS, SelfTime, _patch_for_self_time  # noqa: E402

import genprof  # noqa: E402
from genprof.integrations.demo import build_pipeline  # noqa: E402
from genprof.integrations.diffusers import instrument, uninstrument  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-sampler": {"monitor_gpu_memory": False, "monitor_gpu_utilization": False, "monitor_gpu_temperature": False,
                   "monitor_gpu_power": False, "monitor_cpu_usage": False, "monitor_system_memory": False},
    "no-energy": {"energy_spans": "none"},
    "no-mem": {"memory_tracking": False, "track_rss": False},
    "no-gputime": {"gpu_timing": False},
}


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "sd"
    demo = build_pipeline(kind, "full", device="cuda")
    pipe = demo.pipe
    kw = dict(demo.call_kwargs)
    kw.update(SETTINGS[kind]["call"], num_inference_steps=SETTINGS[kind]["steps"], output_type="np")
    for cname, ckw in CONFIGS.items():
        res = []
        for i in range(4):
            st = SelfTime()
            undo = _patch_for_self_time(st)
            try:
                prof = genprof.Profiler("attribution", **ckw)
                with prof:
                    instrument(pipe, prof)
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    pipe(**kw)
                    torch.cuda.synchronize()
                    wall = time.perf_counter() - t
                    uninstrument(pipe)
            finally:
                undo()
            if i:
                res.append((wall, st.genprof_s, dict(st.by_entry)))
        print(cname, "genprof ms per call:", [round(r[1] * 1e3, 2) for r in res], "walls", [round(r[0], 3) for r in res])
        print("   by entry (last call, ms):", {k: round(v * 1e3, 3) for k, v in res[-1][2].items()})


if __name__ == "__main__":
    main()
