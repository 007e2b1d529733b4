"""Command-line options shared by the commands that take a generation (``estimate``, ``plan``, ``tune``).

One place for the flags, their help and how they become keyword arguments, so the commands
cannot drift apart; plus the table helpers those commands print with.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from genprof.errors import UsageError

GENERATION_DESTS = ("height", "width", "num_frames", "batch_size", "num_inference_steps", "guidance_scale")


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """``--model`` (or ``--list``), the size of the generation, and ``--json``."""
    p.add_argument("--model", default=None, help="model name or alias (see --list), or a diffusers model folder")
    p.add_argument("--list", action="store_true", help="list the known models and their defaults, then exit")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, dest="num_frames", help="video frames (video models)")
    p.add_argument("--batch-size", type=int, default=1, help="images or videos per prompt")
    p.add_argument("--steps", type=int, default=None, dest="num_inference_steps")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="classifier-free guidance scale; above 1 doubles the denoiser's work unless the model is distilled")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """How the pipeline is run: dtype, offloading, VAE tiling/slicing, fp8 storage, attention backend."""
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--offload", default="none", help="none, model, group_block[_stream], group_leaf[_stream], sequential")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument("--vae-slicing", action="store_true")
    p.add_argument("--fp8", action="store_true", help="layerwise fp8 weight storage for the denoiser")
    p.add_argument("--attention", default="flash", help="flash, efficient, cudnn or math")


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in GENERATION_DESTS}


def pipeline_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dtype": args.dtype,
        "offload": args.offload,
        "vae_tiling": args.vae_tiling,
        "vae_slicing": args.vae_slicing,
        "layerwise_fp8": args.fp8,
        "attention_backend": args.attention,
    }


def require_model(args: argparse.Namespace) -> str:
    if not args.model:
        raise UsageError("--model is required (a name from --list, an alias, or a diffusers model folder)")
    return str(args.model)


def print_model_list() -> None:
    """The catalogue: name, kind, default size, steps, CFG mode and aliases, one block per model."""
    from rich.console import Console
    from rich.table import Table

    from genprof.catalog import MODEL_NAMES, get_config

    t = Table(title="known models (genprof.catalog)", show_lines=False)
    for col in ("model", "kind", "default size", "CFG", "aliases"):
        t.add_column(col, overflow="fold")
    for name in MODEL_NAMES:
        s = get_config(name)
        size = f"{s.default_height}x{s.default_width}" + (f"x{s.default_num_frames}f" if s.kind == "video" else "")
        t.add_row(name, s.kind, f"{size}, {s.default_steps} steps", s.cfg_mode, ", ".join(s.aliases))
    Console().print(t)


# ------------------------------------------------------------------ tables
_UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024), ("B", 1))


def byte_unit(values: Sequence[int | None]) -> tuple[str, int]:
    """One unit for a whole column: the largest that shows its largest value as at least 1."""
    top = max((abs(v) for v in values if v is not None), default=0)
    for name, size in _UNITS:
        if top >= size:
            return name, size
    return "MiB", 1024**2


def fmt_in(v: int | None, size: int) -> str:
    if v is None:
        return "n/a"
    return f"{v / size:.0f}" if size == 1 else f"{v / size:.2f}"


def new_table(title: str, columns: Sequence[tuple[str, str]]) -> Any:
    """A rich table whose cells and headers wrap (fold) instead of being cut with an ellipsis."""
    from rich.table import Table

    t = Table(title=title)
    for header, justify in columns:
        t.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return t
