"""How often NVML's total-energy counter changes, and what one read of it costs, under GPU load.

A run's energy is the difference of two readings of ``nvmlDeviceGetTotalEnergyConsumption``,
and on an H100 one read takes about 2.4 ms, the largest part of a profiled run's fixed cost
(docs/BENCHMARKS.md, "A run's fixed cost"). Whether the run's end needs a fresh read at exit,
or could use a reading the energy thread took a few milliseconds earlier, depends on how often
the counter itself moves: if it changes every N ms, a reading is only as fresh as its last
update, whenever it is taken. This script reads the counter back to back for ``--seconds``
while a matmul loop keeps the GPU busy, and reports the read time and the intervals between
distinct values (median, 10th and 90th percentile), plus the power the counter implies.

    python bench/bench_energy_counter.py --out energy_counter.json

Needs CUDA, torch and nvidia-ml-py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import Any


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import pynvml
    import torch

    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(args.device)
    dev = torch.device("cuda", args.device)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for _ in range(8):
                a @ a
            torch.cuda.synchronize(dev)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(0.5)  # the clocks and the power settle
    reads: list[tuple[float, float, int]] = []  # (start s, read s, value mJ)
    t_end = time.perf_counter() + args.seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        v = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        reads.append((t0, time.perf_counter() - t0, int(v)))
    stop.set()
    worker.join()
    changes = [(t, v) for (t, _, v), (_, _, prev) in zip(reads[1:], reads[:-1], strict=True) if v != prev]
    gaps = [(t1 - t0) * 1e3 for (t0, _), (t1, _) in zip(changes[:-1], changes[1:], strict=True)]
    read_ms = [r * 1e3 for _, r, _ in reads]
    span_s = reads[-1][0] - reads[0][0]
    out: dict[str, Any] = {
        "gpu": pynvml.nvmlDeviceGetName(h), "driver": pynvml.nvmlSystemGetDriverVersion(), "torch": torch.__version__,
        "reads": len(reads), "read_ms_median": statistics.median(read_ms), "read_ms_p90": _pct(read_ms, 0.9),
        "distinct_values": len(changes) + 1,
        "update_interval_ms_median": statistics.median(gaps) if gaps else None,
        "update_interval_ms_p10": _pct(gaps, 0.1) if gaps else None,
        "update_interval_ms_p90": _pct(gaps, 0.9) if gaps else None,
        "average_power_w": (reads[-1][2] - reads[0][2]) / 1e3 / span_s if span_s > 0 else None,
    }
    for k, v in out.items():
        sys.stdout.write(f"{k:<28} {v:.3f}\n" if isinstance(v, float) else f"{k:<28} {v}\n")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
