"""``genprof estimate``: predicted peak GPU memory of a generation, by phase and component."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from genprof.units import format_bytes


def add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name or alias (see --list), or a diffusers model folder")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, dest="num_frames", help="video frames (video models)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, dest="num_inference_steps")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(sub: Any) -> None:
    p = sub.add_parser("estimate", help="predict peak GPU memory of a generation (no GPU, no weights needed)")
    add_generation_args(p)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--offload", default="none", help="none, model, group_block[_stream], group_leaf[_stream], sequential")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument("--vae-slicing", action="store_true")
    p.add_argument("--fp8", action="store_true", help="layerwise fp8 weight storage for the denoiser")
    p.add_argument("--attention", default="flash", help="flash, efficient, cudnn or math")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genprof.planning.estimate import estimate

    est = estimate(
        args.model,
        height=args.height,
        width=args.width,
        num_frames=args.num_frames,
        batch_size=args.batch_size,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        dtype=args.dtype,
        offload=args.offload,
        vae_tiling=args.vae_tiling,
        vae_slicing=args.vae_slicing,
        layerwise_fp8=args.fp8,
        attention_backend=args.attention,
    )
    if args.json:
        json.dump(est.to_dict(), sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print_estimate(est)
    return 0


def print_estimate(est: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    s = est.settings
    size = f"{s['height']}x{s['width']}" + (f", {s['num_frames']} frames" if s["num_frames"] > 1 else "")
    con.print(f"[bold]{est.model}[/bold]  {size}, batch {s['batch_size']}, {s['dtype']}, offload {s['offload']}, "
              f"attention {s['attention_backend']}, CFG {s['cfg_mode']} x{s['cfg_passes']}")
    t = Table(title="weights")
    for col in ("component", "class", "params", "bytes"):
        t.add_column(col, justify="right" if col in ("params", "bytes") else "left")
    for c in est.components:
        t.add_row(c.name, c.class_name, f"{c.params / 1e9:.3f} B", format_bytes(c.weight_bytes))
    con.print(t)
    t = Table(title="peak GPU memory by phase (predicted)")
    for col in ("phase", "weights on GPU", "kept tensors", "activations", "workspace", "allocated", "reserved"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    for p in est.phases:
        mark = " *" if p.name == est.peak_phase else ""
        t.add_row(p.name + mark, format_bytes(p.resident_weights_bytes), format_bytes(p.persistent_bytes),
                  format_bytes(p.activation_peak_bytes), format_bytes(p.workspace_bytes),
                  format_bytes(p.peak_allocated_bytes), format_bytes(p.peak_reserved_bytes))
    con.print(t)
    con.print(f"peak: [bold]{format_bytes(est.peak_reserved_bytes)} reserved[/bold], "
              f"{format_bytes(est.peak_allocated_bytes)} allocated, in {est.peak_phase}")
    for n in est.notes:
        con.print(f"note: {n}")
