"""Per-step host cost of ``genprof.instrument`` on a tiny diffusers pipeline (CPU or GPU).

The cost of instrumenting a pipeline is host work in hooks and callbacks (span bookkeeping,
recording the denoiser's inputs) plus per-call work before and after the pipeline runs. A tiny
random-weight pipeline (``genprof.integrations.demo``, nothing downloaded) with many steps makes
that work a measurable part of each call. Each round runs, in a shuffled order:

* ``plain``: no profiler running, pipeline not instrumented;
* ``profiler``: a fresh genprof Profiler running (its sampler thread on), pipeline not instrumented;
* ``instrumented``: a fresh Profiler running and ``genprof.instrument(pipe, prof)`` applied
  before the timed call (a fresh handle each round, so per-call work done once per handle is
  in every round, as in a script that makes one call).

Only the pipeline call is timed: host wall time (``perf_counter``; on a GPU with
``torch.cuda.synchronize()`` before and after) and the calling thread's CPU time
(``time.thread_time``, which leaves out the profiler's sampler thread). Per round the paired
differences ``instrumented - plain`` and ``instrumented - profiler`` are divided by the number
of steps; the figures are the median over rounds with a percentile-bootstrap 95% CI of that
median. ``instrumented - profiler`` is the cost of instrumenting alone; ``instrumented - plain``
includes the span cost of the profiler's own step spans, which only exist when instrumented.

One warm-up call of each kind runs first (import caches, the allocator, and the first FLOP
count, which is done when the run ends, outside any timed call).

Usage::

    python bench/bench_instrument_host.py --out instrument_host.json             # CPU: sd and wan, 50 steps
    python bench/bench_instrument_host.py --device cuda --out instrument_host_gpu.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from genprof.analysis.summary import bootstrap_median_ci

KINDS = ("plain", "profiler", "instrumented")


def _timed_call(torch: Any, pipe: Any, kwargs: dict[str, Any], cuda: bool) -> tuple[float, float]:
    if cuda:
        torch.cuda.synchronize()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    pipe(**kwargs)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.thread_time() - c0


def bench_one(kind: str, *, device: str, size: str, steps: int, rounds: int, seed: int, n_boot: int) -> dict[str, Any]:
    import torch

    import genprof
    from genprof.integrations.demo import build_pipeline
    from genprof.integrations.diffusers import instrument, uninstrument

    demo = build_pipeline(kind, size, device=device)
    pipe = demo.pipe
    kwargs = dict(demo.call_kwargs)
    kwargs["num_inference_steps"] = steps
    kwargs["output_type"] = "np"
    cuda = device.startswith("cuda")
    wall: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    last: dict[str, Any] = {}

    def run_kind(k: str) -> tuple[float, float]:
        if k == "plain":
            return _timed_call(torch, pipe, kwargs, cuda)
        prof = genprof.Profiler(f"bench-instrument-{kind}-{k}")
        with prof:
            if k == "instrumented":
                instrument(pipe, prof, fps=demo.fps)
            try:
                out = _timed_call(torch, pipe, kwargs, cuda)
            finally:
                if k == "instrumented":
                    uninstrument(pipe)
        if k == "instrumented":
            last["run"] = prof.run
        return out

    for k in KINDS:
        run_kind(k)
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(KINDS)
        rng.shuffle(order)
        for k in order:
            w, c = run_kind(k)
            wall[k].append(w)
            cpu[k].append(c)

    def per_step_us(a: list[float], b: list[float]) -> dict[str, Any]:
        d = [(x - y) / steps * 1e6 for x, y in zip(a, b, strict=True)]
        lo, hi = bootstrap_median_ci(d, n_boot, seed)
        return {"median_us": statistics.median(d), "ci95_us": [lo, hi], "paired_us": d}

    def ratio_pct(a: list[float], b: list[float]) -> dict[str, Any]:
        r = [100.0 * (x / y - 1.0) for x, y in zip(a, b, strict=True)]
        lo, hi = bootstrap_median_ci(r, n_boot, seed)
        return {"median_pct": statistics.median(r), "ci95_pct": [lo, hi]}

    run = last["run"]
    gen = run.metadata["generations"][-1]
    res: dict[str, Any] = {
        "pipeline": type(pipe).__name__,
        "description": demo.description,
        "size": size,
        "steps": steps,
        "steps_recorded": gen["steps"],
        "rounds": rounds,
        "median_call_s": {k: statistics.median(v) for k, v in wall.items()},
        "median_step_ms_plain": statistics.median(wall["plain"]) / steps * 1e3,
        "wall": {k: v for k, v in wall.items()},
        "thread_cpu": {k: v for k, v in cpu.items()},
        "instrumented_minus_plain": {"wall": per_step_us(wall["instrumented"], wall["plain"]),
                                     "thread_cpu": per_step_us(cpu["instrumented"], cpu["plain"])},
        "instrumented_minus_profiler": {"wall": per_step_us(wall["instrumented"], wall["profiler"]),
                                        "thread_cpu": per_step_us(cpu["instrumented"], cpu["profiler"])},
        "ratio_instrumented_vs_plain": ratio_pct(wall["instrumented"], wall["plain"]),
    }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--pipelines", default="sd,wan", help="comma-separated demo kinds (sd, wan, sdxl, flux, ...)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--size", default="tiny", choices=("tiny", "full"))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (fewer threads, less noise)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'before' / 'after')")
    args = ap.parse_args(argv)
    import logging

    import torch

    logging.getLogger("transformers").setLevel(logging.ERROR)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    import diffusers

    import genprof

    out: dict[str, Any] = {
        "benchmark": "instrument_host",
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu ({args.threads} torch threads)",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "genprof": genprof.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "note": args.note,
        "pipelines": {},
    }
    kinds = [k.strip() for k in args.pipelines.split(",") if k.strip()]
    for kind in kinds:
        print(f"[{kind}] {args.rounds} rounds of {args.steps} steps on {device} ...", flush=True)
        out["pipelines"][kind] = bench_one(kind, device=device, size=args.size, steps=args.steps,
                                           rounds=args.rounds, seed=args.seed, n_boot=args.boot)
        Path(args.out).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    print(f"\ndevice: {out['device']}  torch {out['torch']}  diffusers {out['diffusers']}  {args.note}")
    print(f"{'pipeline':9} {'step ms':>8} {'instr-plain us/step (95% CI)':>30} {'instr-prof us/step (95% CI)':>30} "
          f"{'CPU instr-prof':>15}")
    for kind, r in out["pipelines"].items():
        a, b = r["instrumented_minus_plain"]["wall"], r["instrumented_minus_profiler"]["wall"]
        c = r["instrumented_minus_profiler"]["thread_cpu"]
        print(f"{kind:9} {r['median_step_ms_plain']:8.2f} "
              f"{a['median_us']:9.1f} ({a['ci95_us'][0]:7.1f}..{a['ci95_us'][1]:7.1f})      "
              f"{b['median_us']:9.1f} ({b['ci95_us'][0]:7.1f}..{b['ci95_us'][1]:7.1f})      "
              f"{c['median_us']:9.1f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
