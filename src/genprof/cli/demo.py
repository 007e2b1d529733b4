"""``genprof demo``: profile tiny (or real-size) random-weight diffusers pipelines, write the run and report."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="profile built-in random-weight diffusion pipelines (no download) and write a report",
        description="Build a Wan-style text-to-video pipeline and a Stable-Diffusion-style text-to-image pipeline "
        "with random weights from configs in code (nothing is downloaded), run them under the profiler on the GPU "
        "if there is one (else the CPU), and write the run file and the HTML report.",
    )
    p.add_argument("--size", choices=("tiny", "full"), default="tiny",
                   help="tiny: 1-2 layer models, seconds on a CPU (default); full: real-size architectures, needs a GPU")
    p.add_argument("--out", default="genprof-demo", metavar="DIR", help="folder for the run file and report")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    p.add_argument("--pipeline", choices=("wan", "sd", "all"), default="all", help="which pipeline(s) to run")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="denoising steps (default: 3 tiny, 4 full)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genprof.errors import UsageError
    from genprof.integrations.demo import build_pipeline
    from genprof.integrations.diffusers import instrument, uninstrument
    from genprof.profiler import Profiler
    from genprof.units import format_seconds

    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    try:
        import transformers

        # transformers warns about optional image backends (torchvision) the demo never uses
        transformers.logging.set_verbosity_error()
    except ImportError:
        pass  # build_pipeline names the missing package
    kinds = ["wan", "sd"] if args.pipeline == "all" else [args.pipeline]
    out = Path(args.out)
    demos = []
    for kind in kinds:
        print(f"building {kind} ({args.size}) ...", flush=True)
        demos.append(build_pipeline(kind, args.size, device=args.device))
    device = str(getattr(demos[0].pipe, "device", args.device or "cpu"))
    # the demo prints its own lines per pipeline below
    prof = Profiler("genprof-demo", output_dir=str(out), end_summary="none", tags={"demo": args.pipeline, "size": args.size})
    with prof:
        for d in demos:
            kw = dict(d.call_kwargs)
            if args.steps is not None:
                kw["num_inference_steps"] = args.steps
            instrument(d.pipe, prof, fps=d.fps)
            try:
                d.pipe(**kw)
            finally:
                uninstrument(d.pipe)
    run_obj = prof.run
    print(f"device: {device}")
    for g in run_obj.metadata.get("generations", []):
        fr = g.get("output_frames")
        dur = g.get("duration_s")
        fps = (fr / dur) if fr and dur else None
        line = (f"{g['pipeline_class']}: {format_seconds(dur)}, {g['steps']} steps, "
                f"{g['denoiser_forwards']['total']} denoiser forwards, {fr} output frame{'' if fr == 1 else 's'}"
                + (f" ({fps:.2f} frames/s)" if fps else ""))
        print(textwrap.fill(line, width=max(40, shutil.get_terminal_size().columns), initial_indent="  ",
                            subsequent_indent="    "))
    run_path = prof.run_path or prof.save(out / "genprof-demo.json")
    print(f"run file: {run_path}")
    try:
        from genprof.render.html import write_html
    except ImportError as exc:
        print(f"HTML report not written: {exc}")
        return 0
    html = write_html(run_obj, Path(run_path).with_suffix(".html"))
    print(f"report:   {html}")
    return 0
