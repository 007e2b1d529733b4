"""``genprof plan``: the fastest way to run a model within a GPU memory budget."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from genprof.cli.estimate import add_generation_args
from genprof.units import format_bytes, format_seconds, parse_bytes


def register(sub: Any) -> None:
    p = sub.add_parser("plan", help="choose dtype, offloading, VAE tiling, fp8 storage for a VRAM budget")
    add_generation_args(p)
    p.add_argument("--budget", required=True, help="GPU memory budget, e.g. 16GiB or 24GB")
    p.add_argument("--margin", type=float, default=None,
                   help="fraction of the budget kept free (default 0.08: the estimator's worst measured "
                        "under-prediction, docs/planning.md)")
    p.add_argument("--step-time", type=float, default=None, help="measured seconds per denoising step, all on GPU")
    p.add_argument("--vae-time", type=float, default=None, help="measured seconds of the VAE decode")
    p.add_argument("--bandwidth", default=None, help="pinned host-to-device bandwidth, e.g. 24GB (per second)")
    p.add_argument("--host-ram", default=None, help="host RAM available for offloaded weights, e.g. 64GiB")
    p.add_argument("--all", action="store_true", help="list every candidate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genprof.planning.plan import DEFAULT_SAFETY_MARGIN, TimeModel, plan

    tm = TimeModel(
        step_time_s=args.step_time,
        vae_decode_s=args.vae_time,
        h2d_bandwidth_bytes_per_s=float(parse_bytes(args.bandwidth)) if args.bandwidth else None,
    )
    p = plan(
        args.model,
        parse_bytes(args.budget),
        safety_margin=DEFAULT_SAFETY_MARGIN if args.margin is None else args.margin,
        time_model=tm,
        host_ram_bytes=parse_bytes(args.host_ram) if args.host_ram else None,
        height=args.height,
        width=args.width,
        num_frames=args.num_frames,
        batch_size=args.batch_size,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
    )
    if args.json:
        json.dump(p.to_dict(), sys.stdout, indent=2, sort_keys=True)
        print()
        return 0 if p.fits else 1
    from rich.console import Console
    from rich.table import Table

    from genprof.planning.plan import _describe

    con = Console()
    con.print(f"[bold]{p.model}[/bold]  budget {format_bytes(p.budget_bytes)}, margin {p.safety_margin:.0%} "
              f"(usable {format_bytes(int(p.budget_bytes * (1 - p.safety_margin)))})")
    if p.chosen is None:
        con.print(f"[red]{p.needed}[/red]")
    else:
        c = p.chosen
        con.print(f"plan: [bold]{_describe(c.settings)}[/bold]")
        con.print(f"predicted peak {format_bytes(c.peak_reserved_bytes)} reserved ({c.peak_phase}), "
                  f"time {format_seconds(c.time_s)}, host RAM {format_bytes(c.host_ram_bytes)} "
                  f"(pinned {format_bytes(c.pinned_host_ram_bytes)})")
    rows = p.candidates if args.all else p.fastest_feasible()[:8]
    t = Table(title="candidates" if args.all else "fastest candidates that fit")
    for col in ("settings", "peak reserved", "fits", "time", "host RAM"):
        t.add_column(col)
    for c in sorted(rows, key=lambda c: c.time_s):
        t.add_row(_describe(c.settings), format_bytes(c.peak_reserved_bytes), "yes" if c.fits else "no",
                  format_seconds(c.time_s), format_bytes(c.host_ram_bytes))
    con.print(t)
    for a in p.assumptions:
        con.print(f"assumption: {a}")
    return 0 if p.fits else 1
