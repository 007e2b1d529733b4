"""Time `genprof aggregate` on 64 synthetic rank files (load + aggregate + write).

Each rank file holds a load phase, GENERATIONS generations of encode / denoise (STEPS steps) /
decode with memory and energy, and NVML-like series of SAMPLES points, so files are the
size a real 64-GPU job writes. Usage:

    python bench/bench_aggregate.py --out bench_aggregate.json [--ranks 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from genprof.analysis.aggregate import aggregate, load_rank_files, write_aggregate
from genprof.model import DistributedInfo, GpuInfo, HostInfo, Run, Series, Span

GiB = 1024**3


def make_rank(rank: int, world: int, steps: int, generations: int, samples: int, seed: int) -> Run:
    rnd = random.Random(seed * 1000 + rank)
    spans: list[Span] = []
    sid = 0
    t = 0.0

    def add(name: str, kind: str, parent: int | None, dur: float, index: int | None = None) -> Span:
        nonlocal sid
        sid += 1
        s = Span(id=sid, name=name, kind=kind, start_s=t, parent_id=parent, duration_s=dur, index=index,
                 device_index=0, peak_allocated_bytes=int(20 * GiB * rnd.uniform(0.9, 1.1)),
                 peak_reserved_bytes=int(22 * GiB * rnd.uniform(0.9, 1.1)))
        spans.append(s)
        return s

    add("load", "phase", None, 5.0 + rnd.random()).energy_j = 1000.0
    t += 6.0
    slow = 1.0 + (0.2 if rank == world - 1 else 0.0)
    for g in range(generations):
        gen = add("generation", "generation", None, 0.0, g)
        g0 = t
        add("text_encode", "phase", gen.id, 0.05, None)
        t += 0.05
        den = add("denoise", "phase", gen.id, 0.0)
        d0 = t
        for i in range(steps):
            d = 0.1 * slow * rnd.uniform(0.97, 1.03)
            add("step", "step", den.id, d, i).gpu_time_s = d * 0.99
            t += d
        den.duration_s = t - d0
        den.energy_j = 500.0 * den.duration_s
        add("decode", "phase", gen.id, 0.4)
        t += 0.4
        gen.duration_s = t - g0
        gen.energy_j = 500.0 * gen.duration_s
    ts = [t * i / samples for i in range(samples)]
    series = [
        Series("power_w", "gpu0", ts, [rnd.uniform(300, 700) for _ in ts], source="nvml average"),
        Series("utilization_pct", "gpu0", ts, [rnd.uniform(90, 100) for _ in ts], source="nvml"),
        Series("memory_used_bytes", "gpu0", ts, [float(int(rnd.uniform(20, 24) * GiB)) for _ in ts], source="nvml"),
    ]
    run = Run(name="bench", run_id=f"bench-{rank}", started_at="2024-01-01T00:00:00+00:00",
              started_unix_s=1.7e9 + rank * 0.01, duration_s=t, spans=spans, series=series,
              host=HostInfo(hostname=f"node{rank // 8}"),
              gpus=[GpuInfo(index=rank % 8, name="NVIDIA H100 80GB HBM3", uuid=f"GPU-{rank:04d}",
                            total_memory_bytes=80 * GiB, bf16_supported=True)],
              distributed=DistributedInfo(rank=rank, world_size=world, local_rank=rank % 8, backend="nccl"),
              metadata={"distributed": {"rank": rank, "world_size": world, "job_id": "bench-job",
                                        "job_id_source": "GENPROF_JOB_ID"},
                        "energy": {"total_j": 500.0 * t}})
    run.end.status = "ok"
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="write the figures as JSON here")
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ranks"
        folder.mkdir()
        for r in range(args.ranks):
            make_rank(r, args.ranks, args.steps, args.generations, args.samples, seed=1).save(folder / f"rank{r}.json")
        size = sum(p.stat().st_size for p in folder.glob("*.json"))
        loads, aggs, totals = [], [], []
        result = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ranks = load_rank_files([folder])
            t1 = time.perf_counter()
            result = aggregate(ranks)
            t2 = time.perf_counter()
            write_aggregate(result, Path(tmp) / "merged.out")
            t3 = time.perf_counter()
            loads.append(t1 - t0)
            aggs.append(t2 - t1)
            totals.append(t3 - t0)
    assert result is not None and result["ranks"] == list(range(args.ranks))
    figures = {
        "ranks": args.ranks,
        "steps_per_generation": args.steps,
        "generations": args.generations,
        "samples_per_series": args.samples,
        "total_file_bytes": size,
        "load_s_median": statistics.median(loads),
        "aggregate_s_median": statistics.median(aggs),
        "total_s_median": statistics.median(totals),
        "total_s_max": max(totals),
        "repeat": args.repeat,
        "slowest_rank_found": result["steps"]["slowest_rank"],
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
    }
    Path(args.out).write_text(json.dumps(figures, indent=1, sort_keys=True))
    print(f"{'ranks':>8} {'MiB':>8} {'load s':>8} {'aggr s':>8} {'total s':>8}")
    print(f"{args.ranks:>8} {size / 2**20:>8.1f} {figures['load_s_median']:>8.3f} {figures['aggregate_s_median']:>8.3f} "
          f"{figures['total_s_median']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
