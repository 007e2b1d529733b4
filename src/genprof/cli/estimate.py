"""``genprof estimate``: predicted peak GPU memory of a generation, by phase and component."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from genprof.cli.options import (
    add_generation_args,
    add_pipeline_args,
    byte_unit,
    fmt_in,
    generation_kwargs,
    new_table,
    pipeline_kwargs,
    print_model_list,
    require_model,
)
from genprof.units import format_bytes

COMPONENT_PHASES = {"text_encoder": "text_encode", "transformer": "denoise", "denoiser": "denoise",
                    "unet": "denoise", "vae_decode": "vae_decode"}


def register(sub: Any) -> None:
    p = sub.add_parser("estimate", help="predict peak GPU memory of a generation (no GPU, no weights needed)")
    add_generation_args(p)
    add_pipeline_args(p)
    p.add_argument("--component", default=None, choices=sorted(COMPONENT_PHASES),
                   help="estimate one component's phase alone (transformer/unet/denoiser: denoising; "
                        "vae_decode; text_encoder: text encoding); faster, as the other phases are not traced")
    p.add_argument("--reserved-method", default="replay", choices=("factor", "replay"),
                   help="how peak reserved follows from the traced allocations: 'replay' (the call's allocation "
                        "sequence replayed through a model of PyTorch's caching allocator, the default; with "
                        "offloading the factors are used) or 'factor' (fitted per-phase factors); see "
                        "docs/allocator.md for where each is closer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print_model_list()
        return 0
    from genprof.planning.estimate import estimate

    est = estimate(
        require_model(args),
        **generation_kwargs(args),
        **pipeline_kwargs(args),
        phases=(COMPONENT_PHASES[args.component],) if args.component else None,
        reserved_method=args.reserved_method,
    )
    if args.json:
        json.dump(est.to_dict(), sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print_estimate(est)
    return 0


def traced_batch_line(s: dict[str, Any]) -> str:
    """What batch each phase is traced with: images per prompt, CFG doubling, calls per step."""
    b = s["batch_size"]
    passes = s["cfg_passes"]
    per = f"{b} image{'s' if b > 1 else ''} per prompt" if s["num_frames"] <= 1 else f"{b} video{'s' if b > 1 else ''} per prompt"
    if passes == 1:
        cfg = "no CFG doubling" + (" (guidance distilled into the model)" if s["cfg_mode"] == "distilled" else "")
    elif s["cfg_mode"] == "batched":
        cfg = f"CFG doubles it in one call: denoiser traced at batch {s.get('denoiser_call_batch', b * passes)}"
    else:
        cfg = f"CFG runs {s.get('denoiser_calls_per_step', passes)} denoiser calls per step at batch {b} each"
    return f"traced batch: {per}; {cfg}; VAE decode at batch {b}"


def print_estimate(est: Any) -> None:
    from rich.console import Console

    con = Console()
    s = est.settings
    size = f"{s['height']}x{s['width']}" + (f", {s['num_frames']} frames" if s["num_frames"] > 1 else "")
    con.print(f"[bold]{est.model}[/bold]  {size}, batch {s['batch_size']}, {s['dtype']}, offload {s['offload']}, "
              f"attention {s['attention_backend']}, CFG {s['cfg_mode']} x{s['cfg_passes']}")
    con.print(traced_batch_line(s))
    wu, wsize = byte_unit([c.weight_bytes for c in est.components])
    t = new_table("weights", [("component", "left"), ("class", "left"), ("params (billions)", "right"),
                              (f"bytes ({wu})", "right")])
    for c in est.components:
        t.add_row(c.name, c.class_name, f"{c.params / 1e9:.3f}", fmt_in(c.weight_bytes, wsize))
    con.print(t)
    # quantities as rows and phases as columns: fits 80 columns, and each row has one unit
    rows = (("weights on GPU", "resident_weights_bytes"), ("kept tensors", "persistent_bytes"),
            ("activations", "activation_peak_bytes"), ("workspace", "workspace_bytes"),
            ("allocated", "peak_allocated_bytes"), ("reserved", "peak_reserved_bytes"))
    marks = {p.name: (" *" if p.name == est.peak_phase and len(est.phases) > 1 else "") for p in est.phases}
    t = new_table("peak GPU memory by phase (predicted)",
                  [("", "left")] + [(p.name + marks[p.name], "right") for p in est.phases])
    for label, attr in rows:
        unit, usize = byte_unit([getattr(p, attr) for p in est.phases])
        t.add_row(f"{label} ({unit})", *(fmt_in(getattr(p, attr), usize) for p in est.phases))
    con.print(t)
    con.print(f"peak: [bold]{format_bytes(est.peak_reserved_bytes)} reserved[/bold], "
              f"{format_bytes(est.peak_allocated_bytes)} allocated, in {est.peak_phase}"
              + (" (marked *)" if len(est.phases) > 1 else ""))
    how = ("replaying the call's traced allocations through a model of the caching allocator"
           if s.get("reserved_method") == "replay" else "the fitted reserved factors")
    con.print(f"reserved from {how}; allocated and workspace rows from the trace and its measured factors")
    for n in est.notes:
        con.print(f"note: {n}")
