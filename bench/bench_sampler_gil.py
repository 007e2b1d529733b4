"""What the background sampler costs a host-bound thread, and what each NVML read costs.

    python bench/bench_sampler_gil.py [--rounds 20] [--out sampler.json]

1. NVML call latency on this machine (median of 50 calls each, on this process's GPU).
2. GIL contention: the main thread runs a pure-Python loop for 0.3 s windows, alternately with a
   genprof Profiler running (default config: 10 Hz GPU and 1 Hz host sampling, energy reader)
   and without; the loss of loop iterations is what sampling takes from a host-bound
   (launch-bound) denoise loop. Paired windows, median and bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from genprof.analysis.summary import bootstrap_median_ci
from genprof.profiler import Profiler


def spin(seconds: float) -> int:
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(200):
            n += 1
    return n


def nvml_latency() -> dict[str, float]:
    import pynvml

    from genprof.probes.nvml import NVML_FI_DEV_POWER_INSTANT

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    calls: dict[str, Any] = {
        "GetMemoryInfo": lambda: pynvml.nvmlDeviceGetMemoryInfo(h),
        "GetUtilizationRates": lambda: pynvml.nvmlDeviceGetUtilizationRates(h),
        "GetTemperature": lambda: pynvml.nvmlDeviceGetTemperature(h, 0),
        "GetPowerUsage": lambda: pynvml.nvmlDeviceGetPowerUsage(h),
        "GetFieldValues(POWER_INSTANT)": lambda: pynvml.nvmlDeviceGetFieldValues(h, [NVML_FI_DEV_POWER_INSTANT]),
        "GetClockInfo(SM)": lambda: pynvml.nvmlDeviceGetClockInfo(h, 1),
        "GetCurrentClocksEventReasons": lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
        "GetTotalEnergyConsumption": lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
    }
    out = {}
    for name, fn in calls.items():
        ts = []
        for _ in range(50):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[name] = statistics.median(ts) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--window", type=float, default=0.3)
    ap.add_argument("--out")
    a = ap.parse_args()
    res: dict[str, Any] = {}
    try:
        res["nvml_ms"] = nvml_latency()
        for k, v in res["nvml_ms"].items():
            print(f"NVML {k:32s} {v:8.3f} ms")
    except Exception as exc:  # noqa: BLE001 - no NVML here: say so and go on
        res["nvml_ms"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
        print("NVML unavailable:", exc)
    spin(0.2)
    losses = []
    prof = Profiler("gil", handle_sigterm=False)
    for r in range(a.rounds):
        pair = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        got: dict[str, int] = {}
        for mode in pair:
            if mode == "on":
                prof = Profiler("gil", handle_sigterm=False)
                prof.start()
                got[mode] = spin(a.window)
                prof.stop()
            else:
                got[mode] = spin(a.window)
        losses.append((got["off"] - got["on"]) / got["off"] * 100.0)
    res["gil_loss_pct_median"] = statistics.median(losses)
    res["gil_loss_pct_ci95"] = list(bootstrap_median_ci(losses) or (None, None))
    long = Profiler("gil-steady", handle_sigterm=False)
    long.start()
    spin(3.0)
    long.stop()
    res["sampler_cpu_s_per_s"] = long._sampler.cpu_share() if long._sampler else None
    print(f"host-bound thread slowed by the sampler: median {res['gil_loss_pct_median']:+.3f}% "
          f"(95% CI {res['gil_loss_pct_ci95'][0]:+.3f}..{res['gil_loss_pct_ci95'][1]:+.3f}%), "
          f"sampler thread CPU {res['sampler_cpu_s_per_s']} s/s")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
