"""``genprof plan``: the fastest way to run a model within a GPU memory budget."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from genprof.cli.options import (
    add_generation_args,
    byte_unit,
    fmt_in,
    generation_kwargs,
    new_table,
    print_model_list,
    require_model,
)
from genprof.units import format_bytes, format_seconds, parse_bytes


def register(sub: Any) -> None:
    p = sub.add_parser("plan", help="choose dtype, offloading, VAE tiling, fp8 storage for a VRAM budget")
    add_generation_args(p)
    p.add_argument("--budget", default=None, help="GPU memory budget, e.g. 16GiB or 24GB (required)")
    p.add_argument("--margin", type=float, default=None,
                   help="fraction of the budget kept free (default 0.08: the estimator's worst measured "
                        "under-prediction, docs/planning.md)")
    p.add_argument("--step-time", type=float, default=None, help="measured seconds per denoising step, all on GPU")
    p.add_argument("--vae-time", type=float, default=None, help="measured seconds of the VAE decode")
    p.add_argument("--bandwidth", default=None, help="pinned host-to-device bandwidth, e.g. 24GB (per second)")
    p.add_argument("--host-ram", default=None, help="host RAM available for offloaded weights, e.g. 64GiB")
    p.add_argument("--all", action="store_true",
                   help="list every candidate, also those another candidate beats and those that do not fit")
    p.set_defaults(func=run)


def _cuda_here() -> bool:
    """Whether this machine has a CUDA GPU; asks torch only if it is already imported (a warm plan never imports it)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def run(args: argparse.Namespace) -> int:
    if args.list:
        print_model_list()
        return 0
    from genprof.errors import UsageError
    from genprof.planning.plan import DEFAULT_SAFETY_MARGIN, TimeModel, plan

    model = require_model(args)
    if not args.budget:
        raise UsageError("--budget is required, e.g. --budget 24GiB")
    tm = TimeModel(
        step_time_s=args.step_time,
        vae_decode_s=args.vae_time,
        h2d_bandwidth_bytes_per_s=float(parse_bytes(args.bandwidth)) if args.bandwidth else None,
    )
    p = plan(
        model,
        parse_bytes(args.budget),
        safety_margin=DEFAULT_SAFETY_MARGIN if args.margin is None else args.margin,
        time_model=tm,
        host_ram_bytes=parse_bytes(args.host_ram) if args.host_ram else None,
        **generation_kwargs(args),
    )
    if args.json:
        json.dump(p.to_dict(), sys.stdout, indent=2, sort_keys=True)
        print()
        return 0 if p.fits else 1
    print_plan(p, tm, show_all=args.all, cuda_here=_cuda_here())
    return 0 if p.fits else 1


def print_plan(p: Any, tm: Any, *, show_all: bool, cuda_here: bool) -> None:
    from rich.console import Console
    from rich.syntax import Syntax

    from genprof.cli.estimate import traced_batch_line
    from genprof.planning.plan import _describe, plan_code

    con = Console()
    con.print(f"[bold]{p.model}[/bold]  budget {format_bytes(p.budget_bytes)}, margin {p.safety_margin:.0%} "
              f"(usable {format_bytes(int(p.budget_bytes * (1 - p.safety_margin)))})")
    if p.estimate is not None:
        con.print(traced_batch_line(p.estimate.settings))
    if tm.step_time_s is None:
        con.print(f"times assume the speed of {tm.assumed_device}; pass --step-time and --vae-time "
                  "measured on your GPU for times of your machine")
        if not cuda_here:
            con.print("[yellow]no CUDA GPU on this machine: the times are predictions for that GPU, "
                      "not for this machine[/yellow]")
    if p.chosen is None:
        con.print(f"[red]{p.needed}[/red]")
    else:
        c = p.chosen
        con.print(f"plan: [bold]{_describe(c.settings)}[/bold]")
        con.print(f"predicted peak {format_bytes(c.peak_reserved_bytes)} reserved ({c.peak_phase}), "
                  f"time {format_seconds(c.time_s)}, host RAM {format_bytes(c.host_ram_bytes)} "
                  f"(pinned {format_bytes(c.pinned_host_ram_bytes)})")
        den = next((w.name for w in p.estimate.components if w.role == "denoiser"), "transformer") if p.estimate else "transformer"
        code = "\n".join(plan_code(c.settings, denoiser=den))
        con.print("apply it to a loaded diffusers pipeline `pipe`:")
        con.print(Syntax(code, "python", theme="ansi_dark", word_wrap=True))
        gen = "".join(f", {k}={v!r}" for k, v in p.generation.items() if v is not None)
        con.print("or let genprof do it:")
        con.print(Syntax(f"import genprof\n\nplan = genprof.plan({p.model!r}, {p.budget_bytes}{gen}, "
                         f"safety_margin={p.safety_margin})\ngenprof.apply(pipe, plan)",
                         "python", theme="ansi_dark", word_wrap=True))
    if show_all:
        rows = sorted(p.candidates, key=lambda c: c.time_s)
        hidden = 0
    else:
        rows = p.undominated()
        hidden = sum(1 for c in p.candidates if c.fits) - len(rows)
    if not rows:
        return
    pu, psize = byte_unit([c.peak_reserved_bytes for c in rows])
    hu, hsize = byte_unit([c.host_ram_bytes for c in rows])
    t = new_table("every candidate" if show_all else "candidates that fit and that no other beats",
                  [("settings", "left"), (f"peak reserved ({pu})", "right"), ("fits", "left"),
                   ("time", "right"), (f"host RAM ({hu})", "right")])
    for c in rows:
        t.add_row(_describe(c.settings), fmt_in(c.peak_reserved_bytes, psize), "yes" if c.fits else "no",
                  format_seconds(c.time_s), fmt_in(c.host_ram_bytes, hsize))
    con.print(t)
    if hidden > 0:
        con.print(f"{hidden} more fitting candidate{'s' if hidden > 1 else ''} hidden: each is slower than one shown "
                  "and needs no less GPU memory and host RAM; --all shows every candidate")
    for a in p.assumptions:
        con.print(f"assumption: {a}")
