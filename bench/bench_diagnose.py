"""The diagnose window on real-size random-weight denoisers: its figures checked, its cost measured.

For a Wan 2.1 T2V 1.3B-shaped transformer (480x832, 33 frames -> 9x60x104 latents) and an SD
1.5-size UNet (512x512 -> 64x64 latents), built from genprof's model configs with random
weights (nothing downloaded), the script runs a hand-written denoise loop (Euler update) in a
genprof Profiler and reports:

* ``module_sum_vs_step``: GPU time summed over the module scopes against the window steps'
  total kernel time (target: within 5%);
* ``idle_vs_direct``: the analysis's idle share against one computed directly from
  torch.profiler's own device events (``prof.events()``), not the parsed trace (target: 2 points);
* ``planted_sync``: an ``.item()`` planted in the step body found with its line;
* ``planted_graph_break``: a ``print`` inside a ``torch.compile(backend="eager")`` function
  called in the step, found with its reason and line;
* ``overhead_outside``: paired A/B of whole loops without genprof's window vs with it, on the
  steps outside the window (target <= 0.5% on Wan), and ``slowdown_inside`` (the window's steps).

Usage (GPU machine; under 5 minutes on an H200)::

    python bench/bench_diagnose.py --out bench-diagnose.json
    python bench/bench_diagnose.py --device cpu --tiny --out /tmp/smoke.json   # smoke test, no GPU
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _direct_idle(prof: Any, lo_us: float, hi_us: float) -> float | None:
    """Idle share from torch.profiler's FunctionEvents (device side), by a plain sweep: no genprof parsing."""
    ivs = []
    for e in prof.events():
        # device activity only: Kineto also puts each record_function scope (ProfilerStep#N, the
        # module scopes) on the GPU timeline as a user annotation spanning kernels and the gaps
        if (str(getattr(e, "device_type", "")).endswith("CUDA") and not getattr(e, "is_user_annotation", False)
                and not e.name.startswith(("ProfilerStep#", "genprof.module:"))):
            ivs.append((e.time_range.start, e.time_range.end))
    if not ivs:
        return None
    ivs.sort()
    # the same extent as the analysis, in torch's own clock: first device event to last
    lo, hi = ivs[0][0], max(e for _, e in ivs)
    busy, cur_s, cur_e = 0.0, None, 0.0
    for s, e in ivs:
        if cur_s is None or s > cur_e:
            if cur_s is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_s is not None:
        busy += cur_e - cur_s
    return 1 - busy / (hi - lo) if hi > lo else None


def _compiled_break(torch: Any) -> tuple[Any, int]:
    def post(x: Any) -> Any:
        y = x * 1.0
        print("genprof bench: planted graph break", file=sys.stderr)  # PLANTED-BREAK
        return y

    src, first = inspect.getsourcelines(post)
    line = first + next(i for i, s in enumerate(src) if "PLANTED-BREAK" in s)
    return torch.compile(post, backend="eager"), line


def _build(kind: str, tiny: bool, device: str, torch: Any) -> tuple[Any, Any, Any, Any]:
    """(denoiser, call(latents, t) -> prediction, latents, step FLOPs by op class or None)."""
    import diffusers as d

    from genprof.integrations import flops
    from genprof.integrations.diffusers.facts import tensor_spec

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if kind == "wan":
        if tiny:
            m = d.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                                        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
            lat, ctx = torch.randn(1, 16, 3, 8, 8), torch.randn(1, 16, 32)
        else:
            from genprof.catalog.load import get_config
            from genprof.planning.build import build_component

            spec = get_config("wan2.1-t2v-1.3b")
            comp = next(c for c in spec.components if c.name == "transformer")
            m = build_component(comp, device=device, dtype=dtype)
            lat, ctx = torch.randn(1, 16, 9, 60, 104), torch.randn(1, 512, 4096)
        m = m.to(device=device, dtype=dtype).eval()
        lat, ctx = lat.to(device, dtype), ctx.to(device, dtype)

        def call(x: Any, t: Any) -> Any:
            return m(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]

        t0 = torch.full((lat.shape[0],), 999, device=device, dtype=torch.long)
        by_class = flops.forward_flops_by_class(
            m, tensor_spec(()), tensor_spec({"hidden_states": lat, "timestep": t0, "encoder_hidden_states": ctx,
                                             "return_dict": False}))
    else:
        if tiny:
            m = d.UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4,
                                       out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                       norm_num_groups=2, attention_head_dim=2)
            lat, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 32)
        else:
            from genprof.catalog.load import get_config
            from genprof.planning.build import build_component

            spec = get_config("sd1.5")
            comp = next(c for c in spec.components if c.name == "unet")
            m = build_component(comp, device=device, dtype=torch.float16)
            lat, ctx = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 768)
            dtype = torch.float16
        m = m.to(device=device, dtype=dtype).eval()
        lat, ctx = lat.to(device, dtype), ctx.to(device, dtype)

        def call(x: Any, t: Any) -> Any:
            return m(x, t, encoder_hidden_states=ctx, return_dict=False)[0]

        t0 = torch.full((lat.shape[0],), 999, device=device, dtype=torch.long)
        by_class = flops.forward_flops_by_class(
            m, tensor_spec((lat, t0)), tensor_spec({"encoder_hidden_states": ctx, "return_dict": False}))
    return m, call, lat, by_class


def _loop(torch: Any, prof: Any, call: Any, lat: Any, steps: int, brk: Any, plant: bool) -> tuple[Any, int]:
    x = lat.clone()
    sync_line = 0
    with torch.no_grad():
        for i in prof.steps(range(steps)) if prof is not None else range(steps):
            t = torch.full((x.shape[0],), 999 - i * 10, device=x.device, dtype=torch.long)
            x = x - 0.01 * call(x, t)
            if plant:
                x = brk(x)
                sync_line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
                _ = float(x.float().abs().mean().item())  # PLANTED-SYNC: a callback reading a value
    return x, sync_line


def _case(kind: str, args: argparse.Namespace, torch: Any) -> dict[str, Any]:
    import genprof
    from genprof.analysis import diagnose as dg
    from genprof.analysis.rules import DIAGNOSE_RULES, run_rules
    from genprof.diagnose import DiagnoseWindow

    dev = args.device
    m, call, lat, step_flops = _build(kind, args.tiny, dev, torch)
    brk, break_line = _compiled_break(torch)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    steps = args.steps
    out: dict[str, Any] = {"kind": kind, "steps": steps, "latents": list(lat.shape)}
    # warm-up (and compile the planted break outside the timed loops)
    _loop(torch, None, call, lat, 2, brk, True)
    sync()

    # 1) planted sync and graph break, window on steps 2-3
    with genprof.Profiler(f"diag-{kind}", config=genprof.ProfilerConfig(output_dir=None)) as p:
        w = DiagnoseWindow("steps:2-3", modules=m).attach(p)
        if step_flops is not None:
            w.set_step_flops(step_flops, "bench_diagnose: FlopCounterMode on a meta-device copy, one forward per step")
        torch._dynamo.reset()
        brk, break_line = _compiled_break(torch)
        _, sync_line = _loop(torch, p, call, lat, steps, brk, True)
        sync()
    run = p.run
    if args.save_runs is not None:
        args.save_runs.mkdir(parents=True, exist_ok=True)
        run.save(args.save_runs / f"diagnose-{kind}.json")
    a = dg.analyze(run)
    d = dg.diagnosis_of(run)
    assert a is not None and d is not None
    out["status"] = d.status
    out["gpu_reason"] = d.gpu_reason
    out["cpu_ops"] = len(d.cpu_ops)
    sites = a["syncs"].get("sites") or []
    out["planted_sync"] = {"line": sync_line, "found": any(s["site"] and s["site"].endswith(f":{sync_line}") for s in sites),
                           "sites": sites[:3]}
    gbs = (d.compile.graph_breaks if d.compile else [])
    out["planted_graph_break"] = {"line": break_line, "found": any(g.line == break_line and "print" in g.reason for g in gbs),
                                  "breaks": [g.__dict__ for g in gbs][:3]}
    out["findings"] = [f.title for f in run_rules(run, DIAGNOSE_RULES)]
    out["overhead_in_run"] = a["overhead"]
    if d.gpu_reason is None:
        mods = a["modules"]
        tot = a["classes"]["total_gpu_us"]
        out["module_sum_vs_step"] = {"scoped_us": mods.get("scoped_gpu_us"), "step_kernel_us": tot,
                                     "ratio": (mods.get("scoped_gpu_us") or 0) / tot if tot else None,
                                     "within_5pct": bool(tot) and abs((mods.get("scoped_gpu_us") or 0) / tot - 1) <= 0.05}
        direct = _direct_idle(w.torch_profile, 0, 0) if w.torch_profile is not None else None
        out["idle_vs_direct"] = {"analysis": a["idle"]["idle_share"], "direct": direct,
                                 "within_2pts": direct is not None and abs(a["idle"]["idle_share"] - direct) <= 0.02}
        out["classes"] = {k: {"share": v["share"], "tflops": v.get("tflops"), "peak_share": v.get("peak_share")}
                          for k, v in a["classes"]["classes"].items()}
        out["step_flops_by_class"] = step_flops
        out["verdict"] = a["idle"]["verdict"]
    else:
        out["module_sum_vs_step"] = out["idle_vs_direct"] = {"reason": d.gpu_reason}

    # 2) overhead: paired rounds, no plant; plain Profiler vs Profiler + window (steps:2-3)
    rounds = args.rounds
    outside, inside, after, start_cost, stop_cost = [], [], [], [], []
    for r in range(rounds):
        res: dict[str, list[float]] = {}
        for mode in (("plain", "window") if r % 2 == 0 else ("window", "plain")):
            with genprof.Profiler(f"ovh-{kind}-{mode}", config=genprof.ProfilerConfig(output_dir=None)) as p:
                if mode == "window":
                    ow = DiagnoseWindow("steps:2-3", modules=m).attach(p)
                _loop(torch, p, call, lat, steps, brk, False)
                sync()
            durs = [s.gpu_time_s or s.duration_s for s in p.run.spans if s.kind == "step"]
            res[mode] = [float(x or 0.0) for x in durs]
        # outside: neither the window (2, 3) nor the steps that pay torch.profiler's start (1) and
        # stop (4): those two are reported on their own, as the window's start and stop costs
        keep = [i for i in range(steps) if i not in (0, 1, 2, 3, 4)]
        outside.append(sum(res["window"][i] for i in keep) / sum(res["plain"][i] for i in keep) - 1)
        inside.append(sum(res["window"][i] for i in (2, 3)) / sum(res["plain"][i] for i in (2, 3)) - 1)
        after.append(res["window"][4] - res["plain"][4])
        if ow.diagnosis is not None:
            start_cost.append(ow.diagnosis.start_cost_s)
            stop_cost.append(ow.diagnosis.stop_cost_s)
    out["overhead_outside"] = {"median": statistics.median(outside), "rounds": outside,
                               "target": 0.005 if kind == "wan" else None,
                               "met": statistics.median(outside) <= 0.005 if kind == "wan" else None}
    out["slowdown_inside"] = {"median": statistics.median(inside), "rounds": inside}
    out["step_after_window_extra_s"] = {"median": statistics.median(after), "rounds": after}
    out["window_start_cost_s"] = {"median": statistics.median([x for x in start_cost if x is not None] or [0.0]),
                                  "rounds": start_cost}
    out["window_stop_cost_s"] = {"median": statistics.median([x for x in stop_cost if x is not None] or [0.0]),
                                 "rounds": stop_cost}
    del m
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models (smoke test of the script)")
    ap.add_argument("--pipelines", default="wan,sd")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--save-runs", type=Path, default=None, help="folder for the planted case's run files")
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu --tiny for the smoke test", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res: dict[str, Any] = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                           "torch": torch.__version__, "tiny": args.tiny, "cases": {}}
    for kind in args.pipelines.split(","):
        res["cases"][kind] = _case(kind, args, torch)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    res["wall_s"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: {x: v.get(x) for x in ("planted_sync", "planted_graph_break", "overhead_outside",
                                                       "window_stop_cost_s", "step_after_window_extra_s")}
                      for k, v in res["cases"].items()}, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
