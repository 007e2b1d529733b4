"""Overhead of genprof's default config on a denoise loop of a Wan 2.1 1.3B-shaped transformer.

    python bench/bench_overhead.py [--rounds 6] [--out overhead.json]

The transformer is diffusers' WanTransformer3DModel built from the Wan 2.1 1.3B config with
random bf16 weights (no download). Two cases: GPU-bound (480x832, 33 frames: 9 latent frames,
14,040 tokens) and launch-bound (128x128, 9 frames: 192 tokens). Each denoise step runs the
transformer twice (classifier-free guidance as separate calls, as WanPipeline does).

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

from genprof.profiler import Profiler

WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
)

CASES = {
    "gpu-bound 480x832x33": dict(frames=33, height=480, width=832, steps=6, rounds=6),
    "launch-bound 128x128x9": dict(frames=9, height=128, width=128, steps=20, rounds=15),
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


@torch.inference_mode()
def loop(model: Any, x: dict[str, Any], steps: int, prof: Profiler | None) -> float:
    lat = x["hidden_states"]
    ts = torch.linspace(999, 1, steps, device="cuda")
    gc.collect()  # every mode starts from the same heap state
    it = prof.steps(range(steps), phase="denoise") if prof is not None else range(steps)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in it:
        t = ts[i : i + 1]
        cond = model(hidden_states=lat, timestep=t, encoder_hidden_states=x["encoder_hidden_states"], return_dict=False)[0]
        unc = model(hidden_states=lat, timestep=t, encoder_hidden_states=x["encoder_hidden_states"], return_dict=False)[0]
        lat = lat - 0.01 * (unc + 5.0 * (cond - unc))
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_mode(mode: str, model: Any, x: dict[str, Any], steps: int) -> tuple[float, float]:
    if mode == "plain":
        return loop(model, x, steps, None), 0.0
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
    finally:
        sys.stderr = old
    return dt, start_cost + stop_cost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=0, help="override each case's round count")
    ap.add_argument("--modes", default="plain,default,live")
    ap.add_argument("--out")
    a = ap.parse_args()
    modes = a.modes.split(",")
    model = build()
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": {}}
    for case, c in CASES.items():
        x = inputs(c["frames"], c["height"], c["width"])
        loop(model, x, 3, None)  # warm-up
        times: dict[str, list[float]] = {m: [] for m in modes}
        fixed: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(a.rounds or c["rounds"]):
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            for m in order:
                dt, fc = run_mode(m, model, x, c["steps"])
                times[m].append(dt)
                fixed[m].append(fc)
        res: dict[str, Any] = {"steps": c["steps"], "loop_s": {m: times[m] for m in modes}}
        base = times["plain"]
        for m in modes:
            if m == "plain":
                continue
            per_round = [(t - b) / b * 100.0 for t, b in zip(times[m], base, strict=True)]
            res[m] = {
                "overhead_pct_median": round(statistics.median(per_round), 3),
                "overhead_pct_min": round(min(per_round), 3),
                "overhead_pct_max": round(max(per_round), 3),
                "start_stop_s_median": round(statistics.median(fixed[m]), 4),
            }
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
                print(f"   {m:8s} overhead median {r_['overhead_pct_median']:+.3f}% "
                      f"(min {r_['overhead_pct_min']:+.3f}%, max {r_['overhead_pct_max']:+.3f}%), "
                      f"start+stop {r_['start_stop_s_median']:.3f} s")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
