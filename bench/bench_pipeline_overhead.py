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
import threading
import time
from pathlib import Path
from typing import Any

from genprof.analysis.summary import bootstrap_median_ci

SETTINGS = {
    "wan": {"steps": 10, "rounds": 5, "attribution_calls": 3, "call": {"height": 480, "width": 832, "num_frames": 33}},
    "sd": {"steps": 25, "rounds": 30, "attribution_calls": 10, "call": {"height": 512, "width": 512}},
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


class SelfTime:
    """Exclusive time spent in genprof code on the calling thread, by region transitions.

    genprof code is entered from the pipeline at a few places (the pipeline call, the forward
    pre-hooks, the step callback, the phase methods) and calls back into the user's code at
    two (the original ``__call__`` and the original phase method). Each of those is wrapped;
    a stack of region kinds (genprof or not) charges the time between two transitions to the
    region on top. The wrappers' own cost lands partly in genprof's share, so the figure is an
    upper bound.
    """

    def __init__(self) -> None:
        self.stack: list[tuple[bool, str]] = []  # (genprof region?, entry point it was charged to)
        self.last = 0.0
        self.genprof_s = 0.0
        self.by_entry: dict[str, float] = {}
        self.entries = 0

    def _charge(self, t: float) -> None:
        genprof_region, name = self.stack[-1]
        if genprof_region:
            self.genprof_s += t - self.last
            self.by_entry[name] = self.by_entry.get(name, 0.0) + t - self.last

    def push(self, genprof_region: bool, name: str = "") -> None:
        t = time.perf_counter()
        if self.stack:
            self._charge(t)
        self.last = t
        self.stack.append((genprof_region, name))
        self.entries += genprof_region

    def pop(self) -> None:
        t = time.perf_counter()
        self._charge(t)
        self.stack.pop()
        self.last = t

    def wrap(self, fn: Any, genprof_region: bool) -> Any:
        name = getattr(fn, "__qualname__", type(fn).__name__)

        def w(*a: Any, **k: Any) -> Any:
            self.push(genprof_region, name)
            try:
                return fn(*a, **k)
            finally:
                self.pop()

        return w


def _patch_for_self_time(st: SelfTime) -> Any:
    """Wrap genprof's entry points into the pipeline and its calls back out; returns an undo."""
    from genprof.integrations import diffusers as gd
    from genprof.integrations.diffusers import handle as gd_handle
    from genprof.integrations.diffusers import hooks as gd_hooks

    h = gd.InstrumentHandle
    orig = {"call": h.call, "dh": h._denoiser_hook, "th": h._text_hook,
            "run_phase": gd_hooks._run_phase, "chain": gd_handle._chain_callback}

    def call(self: Any, orig_call: Any, pipe: Any, args: Any, kwargs: Any) -> Any:
        return st.wrap(orig["call"], True)(self, st.wrap(orig_call, False), pipe, args, kwargs)

    def run_phase(phase: str, func: Any, obj: Any, args: Any, kwargs: Any) -> Any:
        return st.wrap(orig["run_phase"], True)(phase, st.wrap(func, False), obj, args, kwargs)

    def chain(user: Any, state: Any) -> Any:
        assert user is None, "the bench passes no callback of its own"
        return st.wrap(orig["chain"](user, state), True)

    h.call = call  # type: ignore[method-assign]
    h._denoiser_hook = lambda self, name: st.wrap(orig["dh"](self, name), True)  # type: ignore[method-assign]
    h._text_hook = lambda self, name: st.wrap(orig["th"](self, name), True)  # type: ignore[method-assign]
    gd_hooks._run_phase = run_phase  # looked up where it is called: the module, not the package
    gd_handle._chain_callback = chain

    def undo() -> None:
        h.call, h._denoiser_hook, h._text_hook = orig["call"], orig["dh"], orig["th"]  # type: ignore[method-assign]
        gd_hooks._run_phase, gd_handle._chain_callback = orig["run_phase"], orig["chain"]

    return undo


def _hook_dispatch_cost_s(torch: Any, n: int = 20000) -> float:
    """Extra time torch spends calling a module that has one (empty) forward pre-hook.

    A hooked module leaves ``Module.__call__``'s fast path; that cost is PyTorch's code, not
    genprof's, so SelfTime does not see it. Measured on a tiny module, median of 7 repeats.
    """
    m = torch.nn.Linear(1, 1)
    x = torch.zeros(1, 1)

    def per_call() -> float:
        t = time.perf_counter()
        for _ in range(n):
            m(x)
        return (time.perf_counter() - t) / n

    def hook(module: Any, args: Any, kwargs: Any) -> None:
        return None

    with torch.no_grad():
        plain = statistics.median(per_call() for _ in range(7))
        handle = m.register_forward_pre_hook(hook, with_kwargs=True)
        hooked = statistics.median(per_call() for _ in range(7))
        handle.remove()
    return max(0.0, hooked - plain)


class SamplerGil:
    """CPU time the sampler thread spends holding the GIL, per profiler run (an upper bound).

    The sampler's CPU share includes its NVML calls, whose C part runs through ctypes with the
    GIL released, so it cannot delay the calling thread. Each tick on the sampler thread is
    timed with ``thread_time``, minus the thread's CPU time inside the ctypes calls into the
    NVML library themselves (pynvml's ``_nvmlGetFunctionPointer`` is wrapped so that each
    foreign call is timed; pynvml's Python code around it counts as holding the GIL). Every
    tick counts, the first (probe warm-up) too.
    """

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.nvml_s = 0.0
        self.ticks = 0
        self.by_source: dict[str, float] = {}  # thread CPU per sampler source (NVML calls included)
        self.alloc_s = 0.0  # thread CPU in the caching allocator's stats read, on the sampler thread
        self._tl = threading.local()
        self._undo: Any = None

    def install(self) -> None:
        """Call before the profiler starts: genprof fetches NVML function pointers when it builds
        its sampler reader, and the allocator reader when it starts."""
        import pynvml
        import torch

        from genprof.sampler import Sampler

        orig_gfp, orig_tick = pynvml._nvmlGetFunctionPointer, Sampler.tick
        orig_stats = getattr(torch._C, "_cuda_memoryStats", None)
        tl = self._tl

        def cpu_into(fn: Any, attr: str) -> Any:
            def timed(*a: Any) -> Any:
                if not getattr(tl, "on", False):
                    return fn(*a)
                c = time.thread_time()
                try:
                    return fn(*a)
                finally:
                    setattr(tl, attr, getattr(tl, attr) + time.thread_time() - c)

            return timed

        def get_function_pointer(name: str) -> Any:
            return cpu_into(orig_gfp(name), "nvml")

        def tick(sampler: Any, now: float | None = None) -> float:
            if threading.current_thread().name != "genprof-sampler":
                return orig_tick(sampler, now)
            for src in sampler.sources:
                if not getattr(src.read, "_bench_timed", False):
                    src.read = self._timed_source(src.name, src.read)
            tl.on, tl.nvml, tl.alloc = True, 0.0, 0.0
            c = time.thread_time()
            try:
                return orig_tick(sampler, now)
            finally:
                tl.on = False
                self.cpu_s += time.thread_time() - c
                self.nvml_s += tl.nvml
                self.alloc_s += tl.alloc
                self.ticks += 1

        pynvml._nvmlGetFunctionPointer = get_function_pointer
        Sampler.tick = tick  # type: ignore[method-assign]
        if orig_stats is not None:
            torch._C._cuda_memoryStats = cpu_into(orig_stats, "alloc")

        def undo() -> None:
            pynvml._nvmlGetFunctionPointer = orig_gfp
            Sampler.tick = orig_tick  # type: ignore[method-assign]
            if orig_stats is not None:
                torch._C._cuda_memoryStats = orig_stats

        self._undo = undo

    def _timed_source(self, name: str, read: Any) -> Any:
        def timed() -> Any:
            c = time.thread_time()
            try:
                return read()
            finally:
                self.by_source[name] = self.by_source.get(name, 0.0) + time.thread_time() - c

        timed._bench_timed = True  # type: ignore[attr-defined]
        return timed

    def remove(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None

    @property
    def gil_s(self) -> float:
        return max(0.0, self.cpu_s - self.nvml_s)


def attribute(kind: str, pipe: Any, kwargs: dict[str, Any], fps: float | None, calls: int) -> dict[str, Any]:
    """genprof's share of instrumented calls by attribution (see SelfTime), per call."""
    import torch

    import genprof
    from genprof.integrations.diffusers import instrument, uninstrument

    per_call: list[dict[str, float]] = []
    sampler: list[float] = []
    forwards = 0
    for i in range(calls + 1):  # the first is a warm-up
        st = SelfTime()
        undo = _patch_for_self_time(st)
        sg = SamplerGil()
        sg.install()
        try:
            prof = genprof.Profiler(f"bench-{kind}-attribution")
            with prof:
                instrument(pipe, prof)
                try:
                    wall = _time_call(torch, pipe, kwargs)
                finally:
                    uninstrument(pipe)
        finally:
            undo()
            sg.remove()
        gen = prof.run.metadata["generations"][-1]
        forwards = sum(gen["denoiser_forwards"]["per_step"]) + sum(
            (gen.get("text_encoder_forwards") or {}).values())
        if i == 0:
            continue
        per_call.append({"wall_s": wall, "genprof_s": st.genprof_s, "entries": st.entries,
                         "genprof_s_by_entry": dict(st.by_entry),
                         "run_s": prof.run.duration_s, "sampler_ticks": sg.ticks, "sampler_cpu_s": sg.cpu_s,
                         "sampler_nvml_cpu_s": sg.nvml_s, "sampler_gil_s": sg.gil_s,
                         "sampler_cpu_s_by_source": dict(sg.by_source), "sampler_alloc_cpu_s": sg.alloc_s})
        share = prof.run.metadata.get("sampler_cpu_share")
        if share is not None:
            sampler.append(share)
    dispatch = _hook_dispatch_cost_s(torch)
    shares = [100.0 * c["genprof_s"] / c["wall_s"] for c in per_call]
    dispatch_pct = [100.0 * forwards * dispatch / c["wall_s"] for c in per_call]
    sampler_pct = 100.0 * max(sampler) if sampler else None
    gil_pct = [100.0 * c["sampler_gil_s"] / c["run_s"] for c in per_call if c["run_s"]]
    total_cpu = [a + b + (sampler_pct or 0.0) for a, b in zip(shares, dispatch_pct, strict=True)]
    total = [a + b + g for a, b, g in zip(shares, dispatch_pct, gil_pct, strict=True)]
    return {
        "calls": per_call,
        "genprof_thread_pct": {"median": statistics.median(shares), "max": max(shares)},
        "hooked_forwards_per_call": forwards,
        "hook_dispatch_s": dispatch,
        "hook_dispatch_pct": {"median": statistics.median(dispatch_pct), "max": max(dispatch_pct)},
        "sampler_cpu_pct_max": sampler_pct,
        "sampler_gil_pct": {"median": statistics.median(gil_pct), "max": max(gil_pct)},
        "total_upper_bound_pct": {"median": statistics.median(total), "max": max(total)},
        "total_with_sampler_cpu_pct": {"median": statistics.median(total_cpu), "max": max(total_cpu)},
        "note": "genprof's exclusive time on the calling thread (wrappers included) + torch's extra "
                "dispatch for hooked modules + the sampler thread's CPU time outside the ctypes calls "
                "into the NVML library (an upper bound on what it can take from the calling thread "
                "through the GIL; ctypes releases the GIL during a foreign call). "
                "total_with_sampler_cpu_pct counts the sampler's whole CPU share instead.",
    }


def bench_one(kind: str, rounds: int, steps: int, seed: int, smoke: bool = False,
              attribution_calls: int = 0) -> dict[str, Any]:
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

    res: dict[str, Any] = {
        "pipeline": type(pipe).__name__,
        "description": demo.description,
        "call": {k: v for k, v in kwargs.items() if k != "prompt"},
        "dtype": str(next((getattr(pipe, "transformer", None) or pipe.unet).parameters()).dtype),
        "build_s": build_s,
        "rounds": rounds,
    }
    if rounds > 0:
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

        res["times"] = times
        res["summary"] = {k: summ(v) for k, v in times.items()}
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
    if attribution_calls > 0:
        res["attribution"] = attribute(kind, pipe, kwargs, demo.fps, attribution_calls)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--pipelines", default="wan,sd", help="comma-separated: wan, sd")
    ap.add_argument("--rounds", type=int, default=None, help="timed A/B rounds (default: wan 5, sd 30; 0: none)")
    ap.add_argument("--attribution-calls", type=int, default=None,
                    help="instrumented calls measured by attribution (default: wan 3, sd 10; 0: none)")
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
        rounds = SETTINGS[kind]["rounds"] if args.rounds is None else args.rounds
        attr_calls = SETTINGS[kind]["attribution_calls"] if args.attribution_calls is None else args.attribution_calls
        steps = args.steps or SETTINGS[kind]["steps"]
        print(f"[{kind}] building and running {rounds} rounds of {steps} steps ...", flush=True)
        out["pipelines"][kind] = bench_one(kind, rounds, steps, args.seed, smoke=args.smoke,
                                            attribution_calls=attr_calls)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        Path(args.out).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    print(f"\ndevice: {out['device']}  torch {out['torch']}  diffusers {out['diffusers']}")
    print(f"{'pipeline':10} {'plain s (min..max)':>24} {'instr s (min..max)':>24} {'ovh %':>7} "
          f"{'paired % (95% CI)':>24} {'TFLOP/s':>8} {'MFU %':>6}")
    for kind, r in out["pipelines"].items():
        a = r.get("attribution")
        if a is not None:
            print(f"{kind:10} by attribution: genprof on the calling thread {a['genprof_thread_pct']['median']:.3f}% "
                  f"(max {a['genprof_thread_pct']['max']:.3f}%), hook dispatch {a['hook_dispatch_pct']['median']:.4f}%, "
                  f"sampler CPU {a['sampler_cpu_pct_max']}% of which GIL-held <= {a['sampler_gil_pct']['max']:.3f}%; total upper bound "
                  f"{a['total_upper_bound_pct']['median']:.3f}% (max {a['total_upper_bound_pct']['max']:.3f}%)")
        if "summary" not in r:
            continue
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
