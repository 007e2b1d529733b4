"""``genprof tune``: measure the speed and memory recipes on a model and GPU, pick the fastest that fits."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("tune", help="measure recipes (offload, compile, attention, caching, ...) and pick the fastest")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a diffusers model folder or Hub name (loaded with from_pretrained per candidate), or "
                          "'pkg.mod:fn' naming a function that builds the pipeline")
    src.add_argument("--demo", help="a demo pipeline built in code with random weights: wan, sd, sdxl, flux, cogvideox")
    p.add_argument("--size", default="tiny", choices=("tiny", "full"), help="demo pipeline size (full = real size, CUDA)")
    p.add_argument("--budget", default=None, help="GPU memory budget, e.g. 16GiB (enforced per process on CUDA)")
    p.add_argument("--candidates", default=None,
                   help="comma-separated recipes, e.g. vae_tiling,offload=model,compile=max-autotune-no-cudagraphs "
                        "(+ joins: offload=model+vae_tiling); default: every supported single recipe")
    p.add_argument("--quality", default=None, help="quality floor against the baseline, e.g. psnr>=30 or ssim>=0.9")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per candidate (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per candidate (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=("bf16", "fp16", "fp32"), help="baseline dtype (default bf16 on CUDA)")
    # generation options (move to cli/options.py at merge)
    p.add_argument("--prompt", default="a red fox in the snow")
    p.add_argument("--steps", type=int, default=None, help="num_inference_steps")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="num_frames (video)")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--planner-model", default=None,
                   help="model name the planner and calibration use (default: --model, or the demo's shipped config)")
    p.add_argument("--isolation", default="auto", choices=("auto", "process", "reset"),
                   help="each candidate in its own process, or in this one after a full reset (default auto: process "
                        "where the pipeline can be rebuilt in a child)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per candidate before its process is stopped and it is recorded failed (process isolation)")
    p.add_argument("--calibrate", action="store_true", help="save the measurements as calibration for this model and GPU")
    p.add_argument("--out", default="tune.json", help="result file (rewritten after every candidate)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    p.set_defaults(func=run)


_DEMO_MODELS = {"wan": "wan2.1-1.3b", "sd": "sd1.5", "sdxl": "sdxl", "flux": "flux.1-dev", "cogvideox": "cogvideox-2b"}


def run(args: argparse.Namespace) -> int:
    from genprof.render.tune_html import console_table
    from genprof.tune import tune

    call: dict[str, Any] = {"prompt": args.prompt}
    for key, val in (("num_inference_steps", args.steps), ("height", args.height), ("width", args.width),
                     ("num_frames", args.frames), ("guidance_scale", args.guidance_scale)):
        if val is not None:
            call[key] = val
    model = args.planner_model
    if args.demo:
        from genprof.integrations.demo import build_pipeline

        kind, size, device = args.demo, args.size, args.device
        # a partial of a module-level function pickles, so each candidate can be built in its own process
        factory = functools.partial(build_pipeline, kind, size, device="cpu" if size == "tiny" else device)
        demo_kw = build_pipeline(kind, "tiny", device="cpu").call_kwargs if size == "tiny" else {}
        call = {**{k: v for k, v in demo_kw.items() if k != "prompt"}, **call}
        source: Any = factory
        model = model or (_DEMO_MODELS.get(kind) if size == "full" else None)  # a tiny demo is not the shipped config
    else:
        source = args.model
        model = model or args.model
    cands = [c.strip() for c in args.candidates.split(",")] if args.candidates else None
    r = tune(source, budget=args.budget, candidates=cands, quality=args.quality, warmup=args.warmup, repeats=args.repeats,
             seed=args.seed, device=args.device, dtype=args.dtype, model=model, out=args.out,
             isolation=args.isolation, timeout_s=args.timeout, progress=not args.no_progress, calibrate=args.calibrate, **call)
    if args.json:
        print(json.dumps(r.to_dict(), indent=1, default=str))
    else:
        console_table(r.to_dict())
        print(f"wrote {args.out}", file=sys.stderr)
    if r.status == "interrupted":
        return 130
    return 0 if r.best is not None else 1
