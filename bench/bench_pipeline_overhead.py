"""Overhead of genprof.instrument on real-size random-weight pipelines, and FLOP utilization.

For each pipeline (Wan 2.1 T2V 1.3B at 480x832, 33 frames; an SD 1.5-size UNet pipeline at
512x512), built from configs in code with random weights (nothing downloaded), the script
times full pipeline calls in interleaved rounds, in a shuffled order each round:

* ``plain``: no profiler running, pipeline not instrumented;
* ``profiler``: a genprof Profiler running (sampler thread on), pipeline not instrumented;
* ``instrumented``: a Profiler running and ``genprof.instrument(pipe, prof)``.

Host wall time of the call is measured with ``torch.cuda.synchronize()`` on both sides (the
pipelines return numpy arrays, so the call itself ends synchronised). One warm-up call of each
kind runs first. Overhead is reported two ways: ``median(instrumented) / median(plain) - 1``
(ratio of medians, spread min..max of each kind) and, robust to a noisy host whose speed
drifts between rounds, the **paired** ratio: per round ``instrumented / plain - 1`` (the calls
of one round run back to back), its median over rounds with a percentile-bootstrap 95% CI. The
SD case (35 ms steps on an H100, the most host-sensitive) runs 30 rounds by default. FLOPs are
counted when each instrumented run stops, outside the timed call.

FLOP utilization comes from the last instrumented call's generation record: per-step FLOPs
from FlopCounterMode (meta device), divided by each step's GPU time (CUDA events), against the
dense peak of the device from genprof.analysis.devices.

Usage (on the GPU machine)::

    python bench/bench_pipeline_overhead.py --out bench-pipeline.json
    python bench/bench_pipeline_overhead.py --pipelines sd --rounds 10 --out sd.json
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from genprof.analysis.summary import bootstrap_median_ci

SETTINGS = {
    "wan": {"steps": 10, "rounds": 5, "call": {"height": 480, "width": 832, "num_frames": 33}},
    "sd": {"steps": 25, "rounds": 30, "call": {"height": 512, "width": 512}},
}


_CPU: dict[str, list[float]] = {}  # calling-thread CPU seconds per call, by kind (see _time_call)


def _time_call(torch: Any, pipe: Any, kwargs: dict[str, Any], kind: str | None = None) -> float:
    """Wall time of one call, bracketed by synchronize; also records the calling thread's CPU time.

    On a host whose wall times swing by tens of percent (CPU steal on a VM), the CPU time the
    calling thread used is the steadier measure of what genprof adds to a host-bound call: the
    synchronize at the end spins for the same GPU time in every mode.
    """
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    pipe(**kwargs)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if kind is not None:
        _CPU.setdefault(kind, []).append(time.thread_time() - c0)
    return dt


def bench_one(kind: str, rounds: int, steps: int, seed: int, smoke: bool = False) -> dict[str, Any]:
    import torch

    import genprof
    from genprof.integrations.demo import build_pipeline
    from genprof.integrations.diffusers import instrument, uninstrument

    t_build = time.perf_counter()
    demo = build_pipeline(kind, "tiny", device="cpu") if smoke else build_pipeline(kind, "full", device="cuda")
    build_s = time.perf_counter() - t_build
    pipe = demo.pipe
    kwargs = dict(demo.call_kwargs)
    if not smoke:
        kwargs.update(SETTINGS[kind]["call"])
    kwargs["num_inference_steps"] = steps
    kwargs["output_type"] = "np"
    times: dict[str, list[float]] = {"plain": [], "profiler": [], "instrumented": []}
    last_run: Any = None

    def run_kind(k: str, record: bool) -> None:
        nonlocal last_run
        if k == "plain":
            dt = _time_call(torch, pipe, kwargs, k if record else None)
        else:
            prof = genprof.Profiler(f"bench-{kind}-{k}")
            with prof:
                if k == "instrumented":
                    instrument(pipe, prof, fps=demo.fps)
                try:
                    dt = _time_call(torch, pipe, kwargs, k if record else None)
                finally:
                    if k == "instrumented":
                        uninstrument(pipe)
            if k == "instrumented":
                last_run = prof.run
        if record:
            times[k].append(dt)

    for k in times:  # warm-up: cuDNN autotune, allocator, FLOP count cache
        run_kind(k, record=False)
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(times)
        rng.shuffle(order)
        for k in order:
            run_kind(k, record=True)

    def summ(xs: list[float]) -> dict[str, float]:
        return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs),
                "mean_s": statistics.fmean(xs), "stdev_s": statistics.stdev(xs) if len(xs) > 1 else 0.0}

    res: dict[str, Any] = {
        "pipeline": type(pipe).__name__,
        "description": demo.description,
        "call": {k: v for k, v in kwargs.items() if k != "prompt"},
        "dtype": str(next((getattr(pipe, "transformer", None) or pipe.unet).parameters()).dtype),
        "build_s": build_s,
        "rounds": rounds,
        "times": times,
        "summary": {k: summ(v) for k, v in times.items()},
    }
    med = {k: res["summary"][k]["median_s"] for k in times}
    res["overhead_instrumented_vs_plain_pct"] = 100.0 * (med["instrumented"] / med["plain"] - 1.0)
    res["overhead_instrumented_vs_profiler_pct"] = 100.0 * (med["instrumented"] / med["profiler"] - 1.0)
    res["overhead_profiler_vs_plain_pct"] = 100.0 * (med["profiler"] / med["plain"] - 1.0)
    for a, b in (("instrumented", "plain"), ("instrumented", "profiler"), ("profiler", "plain")):
        paired = [100.0 * (x / y - 1.0) for x, y in zip(times[a], times[b], strict=True)]
        lo, hi = bootstrap_median_ci(paired, seed=seed)
        res[f"paired_{a}_vs_{b}_pct"] = {"median": statistics.median(paired), "ci95": [lo, hi], "per_round": paired}
    cpu = {k: _CPU.pop(k, []) for k in times}
    if all(len(cpu[k]) == len(times[k]) for k in times):
        for a, b in (("instrumented", "plain"), ("profiler", "plain")):
            # extra calling-thread CPU time of mode a over plain, as a share of plain's wall time
            paired = [100.0 * (ca - cb) / wb for ca, cb, wb in zip(cpu[a], cpu[b], times[b], strict=True)]
            lo, hi = bootstrap_median_ci(paired, seed=seed)
            res[f"cpu_paired_{a}_vs_{b}_pct"] = {"median": statistics.median(paired), "ci95": [lo, hi]}
        res["cpu_s"] = cpu
    if last_run is not None:
        res["sampler_cpu_share"] = last_run.metadata.get("sampler_cpu_share")
    res["per_step_cost_instrumented_vs_plain_us"] = 1e6 * statistics.median(
        [x - y for x, y in zip(times["instrumented"], times["plain"], strict=True)]) / steps
    gen = last_run.metadata["generations"][-1]
    fl = gen["flops"]
    steps_fl = fl.get("steps", [])
    res["flops"] = {
        "method": fl.get("method"),
        "reason": fl.get("reason"),
        "per_forward": fl.get("per_forward"),
        "per_step": [s.get("flops") for s in steps_fl],
        "step_gpu_time_s": [s.get("time_s") for s in steps_fl],
        "time_source": sorted({str(s.get("time_source")) for s in steps_fl}),
        "achieved_tflops": [s.get("achieved_tflops") for s in steps_fl],
        "mfu": [s.get("mfu") for s in steps_fl],
        "mean_achieved_tflops": fl.get("mean_achieved_tflops"),
        "mean_mfu": fl.get("mean_mfu"),
        "peak_tflops": steps_fl[0].get("peak_tflops") if steps_fl else None,
        "dtype": fl.get("dtype"),
        "device_name": fl.get("device_name"),
    }
    res["denoiser_forwards_per_step"] = gen["denoiser_forwards"]["per_step"]
    res["cfg"] = gen["denoiser_forwards"]["cfg"]
    res["phases"] = {
        s.name: s.duration_s for s in last_run.spans if s.kind == "phase" and s.name != "denoise"
    } | {"denoise": sum(s.duration_s or 0 for s in last_run.spans if s.name == "denoise")}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--pipelines", default="wan,sd", help="comma-separated: wan, sd")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default: wan 5, sd 30)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: wan 10, sd 25)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true",
                    help="tiny pipelines on the CPU, to check the script itself (figures mean nothing)")
    args = ap.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    import diffusers

    import genprof

    out: dict[str, Any] = {
        "benchmark": "pipeline_overhead",
        "device": "cpu (smoke test)" if args.smoke else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "genprof": genprof.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "pipelines": {},
    }
    for kind in [k.strip() for k in args.pipelines.split(",") if k.strip()]:
        if kind not in SETTINGS:
            print(f"unknown pipeline {kind!r}; choose from {', '.join(SETTINGS)}", file=sys.stderr)
            return 2
        rounds = args.rounds or SETTINGS[kind]["rounds"]
        steps = args.steps or SETTINGS[kind]["steps"]
        print(f"[{kind}] building and running {rounds} rounds of {steps} steps ...", flush=True)
        out["pipelines"][kind] = bench_one(kind, rounds, steps, args.seed, smoke=args.smoke)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        Path(args.out).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    print(f"\ndevice: {out['device']}  torch {out['torch']}  diffusers {out['diffusers']}")
    print(f"{'pipeline':10} {'plain s (min..max)':>24} {'instr s (min..max)':>24} {'ovh %':>7} "
          f"{'paired % (95% CI)':>24} {'TFLOP/s':>8} {'MFU %':>6}")
    for kind, r in out["pipelines"].items():
        sp, si = r["summary"]["plain"], r["summary"]["instrumented"]
        f = r["flops"]
        pr = r["paired_instrumented_vs_plain_pct"]
        tf = "n/a" if f["mean_achieved_tflops"] is None else f"{f['mean_achieved_tflops']:.1f}"
        mfu = "n/a" if f["mean_mfu"] is None else f"{100 * f['mean_mfu']:.1f}"
        print(f"{kind:10} {sp['median_s']:8.3f} ({sp['min_s']:.3f}..{sp['max_s']:.3f}) "
              f"{si['median_s']:8.3f} ({si['min_s']:.3f}..{si['max_s']:.3f}) "
              f"{r['overhead_instrumented_vs_plain_pct']:7.2f} "
              f"{pr['median']:7.2f} ({pr['ci95'][0]:6.2f}..{pr['ci95'][1]:6.2f}) {tf:>8} {mfu:>6}")
        c = r.get("cpu_paired_instrumented_vs_plain_pct")
        if c is not None:
            print(f"{'':10} calling-thread CPU added by instrument: {c['median']:+.3f}% of the plain call "
                  f"(95% CI {c['ci95'][0]:+.3f}..{c['ci95'][1]:+.3f}); sampler thread CPU share "
                  f"{r.get('sampler_cpu_share')}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
