"""Overhead of genprof's default config on a denoise loop of a Wan 2.1 1.3B-shaped transformer.

    python bench/bench_overhead.py [--rounds 6] [--out overhead.json]

The transformer is diffusers' WanTransformer3DModel built from the Wan 2.1 1.3B config with
random bf16 weights (no download). Two cases: GPU-bound (480x832, 33 frames: 9 latent frames,
14,040 tokens) and launch-bound (128x128, 9 frames: 192 tokens). Each denoise step runs the
transformer twice (classifier-free guidance as separate calls, as WanPipeline does).

Besides the A/B figure, each profiled round reports the overhead by attribution (see attributed()),
which a noisy host cannot blur: spans x measured span cost, plus the sampler and live view threads.

Modes, interleaved in rotating order every round so drift hits all alike:
  plain    the loop without genprof
  default  the loop under Profiler() with the default config (step spans with CUDA events,
           allocator peaks, RSS, the 10 Hz GPU / 1 Hz CPU sampler, phase energy)
  live     default plus the live terminal view (real_time_display, rendered to a buffer)
Each timed loop is bracketed by torch.cuda.synchronize(); the profiler is started before the
timer, so one-time start/stop costs are reported separately.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import sys
import time
from typing import Any

import torch

from genprof.analysis.summary import bootstrap_median_ci
from genprof.profiler import Profiler

WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
)

CASES = {
    "gpu-bound 480x832x33": dict(frames=33, height=480, width=832, steps=6, rounds=6),
    "launch-bound 128x128x9": dict(frames=9, height=128, width=128, steps=6, rounds=30),
}


def build() -> Any:
    from diffusers import WanTransformer3DModel

    with torch.device("cuda"):
        m = WanTransformer3DModel(**WAN_1_3B).to(torch.bfloat16)
    return m.eval().requires_grad_(False)


def inputs(frames: int, height: int, width: int) -> dict[str, Any]:
    t_lat = (frames - 1) // 4 + 1
    g = torch.Generator(device="cuda").manual_seed(0)
    return dict(
        hidden_states=torch.randn(1, 16, t_lat, height // 8, width // 8, device="cuda", dtype=torch.bfloat16, generator=g),
        encoder_hidden_states=torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16, generator=g),
    )


def cfg_step(model: Any, x: dict[str, Any], lat: Any, t: Any) -> Any:
    """One guided denoise step: conditional and unconditional passes, then an Euler-like update."""
    cond = model(hidden_states=lat, timestep=t, encoder_hidden_states=x["encoder_hidden_states"], return_dict=False)[0]
    unc = model(hidden_states=lat, timestep=t, encoder_hidden_states=x["encoder_hidden_states"], return_dict=False)[0]
    return lat - 0.01 * (unc + 5.0 * (cond - unc))


@torch.inference_mode()
def loop(model: Any, x: dict[str, Any], steps: int, prof: Profiler | None) -> float:
    lat = x["hidden_states"]
    ts = torch.linspace(999, 1, steps, device="cuda")
    gc.collect()  # every mode starts from the same heap state
    it = prof.steps(range(steps), phase="denoise") if prof is not None else range(steps)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in it:
        lat = cfg_step(model, x, lat, ts[i : i + 1])
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def span_cost_s(config: dict[str, Any], n: int = 3000) -> float:
    """Host cost of one step span (open + close) with this config, measured now, in this process."""
    with Profiler("cost", handle_sigterm=False, monitor_cpu_usage=False, **config) as p:
        for i in range(200):
            with p.span("step", "step", index=i):
                pass
        t = time.perf_counter()
        for i in range(n):
            with p.span("step", "step", index=i):
                pass
        return (time.perf_counter() - t) / n


def attributed(prof: Profiler, loop_s: float, per_span_s: float) -> dict[str, float]:
    """Host time genprof took from a host-bound loop, as a share of the loop.

    spans: the loop thread's own time in genprof (spans recorded x measured cost per span);
    sampler: CPU time of the sampler thread (an upper bound on what it takes through the GIL:
    NVML calls release it); live: the live view's drawing time.
    """
    n = len(prof.run.spans)
    share = prof._sampler.cpu_share() if prof._sampler is not None else None
    samp = (share or 0.0) * loop_s
    live = 0.0
    if prof.config.real_time_display and "live_view" not in prof.run.unavailable:  # the view ran
        from genprof.render.live import render_cost

        per = render_cost(prof.live_snapshot, repeats=50)["per_refresh_s"]
        live = per * loop_s / prof.config.display_interval
    return {"spans_pct": n * per_span_s / loop_s * 100, "sampler_pct": samp / loop_s * 100,
            "live_pct": live / loop_s * 100, "total_pct": (n * per_span_s + samp + live) / loop_s * 100}


def run_mode(mode: str, model: Any, x: dict[str, Any], steps: int,
             per_span_s: float = 0.0) -> tuple[float, float, dict[str, float] | None]:
    if mode == "plain":
        return loop(model, x, steps, None), 0.0, None
    old = sys.stderr
    if mode == "live":
        sys.stderr = io.StringIO()
    try:
        t = time.perf_counter()
        prof = Profiler("bench", handle_sigterm=False, real_time_display=(mode == "live"), display_force=True)
        prof.start()
        start_cost = time.perf_counter() - t
        try:
            dt = loop(model, x, steps, prof)
        finally:
            t = time.perf_counter()
            prof.stop()
            stop_cost = time.perf_counter() - t
        attr = attributed(prof, dt, per_span_s)
    finally:
        sys.stderr = old
    return dt, start_cost + stop_cost, attr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=0, help="override each case's round count")
    ap.add_argument("--modes", default="plain,default,live")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names (prefix match)")
    ap.add_argument("--out")
    a = ap.parse_args()
    modes = a.modes.split(",")
    model = build()
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": {}}
    wanted = [w.strip() for w in a.cases.split(",")]
    for case, c in CASES.items():
        if not any(case.startswith(w) for w in wanted):
            continue
        x = inputs(c["frames"], c["height"], c["width"])
        loop(model, x, 3, None)  # warm-up
        times: dict[str, list[float]] = {m: [] for m in modes}
        fixed: dict[str, list[float]] = {m: [] for m in modes}
        attrs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        per_span = span_cost_s({})
        for r in range(a.rounds or c["rounds"]):
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            for m in order:
                dt, fc, at = run_mode(m, model, x, c["steps"], per_span)
                times[m].append(dt)
                fixed[m].append(fc)
                if at is not None:
                    attrs[m].append(at)
        res: dict[str, Any] = {"steps": c["steps"], "loop_s": {m: times[m] for m in modes}}
        base = times["plain"]
        for m in modes:
            if m == "plain":
                continue
            per_round = [(t - b) / b * 100.0 for t, b in zip(times[m], base, strict=True)]
            lo, hi = bootstrap_median_ci(per_round)
            res[m] = {
                "overhead_pct_median": round(statistics.median(per_round), 3),
                "overhead_pct_ci95": [round(lo, 3), round(hi, 3)],
                "overhead_pct_min": round(min(per_round), 3),
                "overhead_pct_max": round(max(per_round), 3),
                "start_stop_s_median": round(statistics.median(fixed[m]), 4),
                "attributed_pct_median": {k: round(statistics.median(d[k] for d in attrs[m]), 4)
                                          for k in attrs[m][0]},
            }
        res["span_cost_us"] = round(per_span * 1e6, 3)
        res["plain_loop_s_median"] = round(statistics.median(base), 4)
        # the noise floor: spread of the plain loop itself, as percent of its median
        res["plain_spread_pct"] = round((max(base) - min(base)) / statistics.median(base) * 100.0, 3)
        res["step_s_median"] = round(statistics.median(base) / c["steps"], 5)
        out["cases"][case] = res
        print(f"== {case}: {c['steps']} steps, plain loop median {res['plain_loop_s_median']} s "
              f"({res['step_s_median'] * 1000:.2f} ms/step), plain spread {res['plain_spread_pct']:.2f}%")
        for m in modes:
            if m != "plain":
                r_ = res[m]
                ci = r_["overhead_pct_ci95"]
                print(f"   {m:8s} A/B overhead median {r_['overhead_pct_median']:+.3f}% "
                      f"(95% CI {ci[0]:+.2f}..{ci[1]:+.2f}%, rounds min {r_['overhead_pct_min']:+.3f}% "
                      f"max {r_['overhead_pct_max']:+.3f}%), start+stop {r_['start_stop_s_median']:.3f} s")
                at = r_["attributed_pct_median"]
                print(f"   {m:8s} attributed {at['total_pct']:.3f}% (spans {at['spans_pct']:.3f}%, sampler "
                      f"{at['sampler_pct']:.3f}%, live {at['live_pct']:.3f}%); span cost {res['span_cost_us']} us")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
