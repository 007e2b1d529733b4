"""Profile a diffusers text-to-image pipeline with one line: genprof.instrument(pipe, prof).

    python examples/text_to_image_diffusers.py                      # tiny random-weight SD pipeline (CPU ok)
    python examples/text_to_image_diffusers.py --model /path/to/stable-diffusion-v1-5 --device cuda

``--model`` takes a local diffusers folder (or a Hub id, if you have it cached). The run file
and the HTML report go to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import genprof
from genprof.analysis.throughput import generation_throughput


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="diffusers model folder; default: tiny random-weight SD")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--prompt", default="a photo of an astronaut riding a horse")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--runs", type=int, default=2, help="generations to run")
    ap.add_argument("--out", default="genprof-examples")
    args = ap.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prof = genprof.Profiler("text-to-image", output_dir=args.out, tags={"example": "text_to_image"})
    with prof:
        # loading: time and memory after the pipeline is placed (seed 000)
        with genprof.profile_load(prof) as load:
            with load.component("pipeline") as slot:
                if args.model:
                    from diffusers import DiffusionPipeline

                    dtype = torch.float16 if device == "cuda" else torch.float32
                    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype).to(device)
                    call = {"num_inference_steps": args.steps or 30}
                else:
                    from genprof.integrations.demo import build_pipeline

                    demo = build_pipeline("sd", device=device)
                    pipe, call = demo.pipe, dict(demo.call_kwargs)
                    if args.steps:
                        call["num_inference_steps"] = args.steps
                slot.module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            load.pipeline(pipe)
        genprof.instrument(pipe, prof)  # <- the one line
        call["prompt"] = args.prompt
        for _ in range(args.runs):
            pipe(**call)
    for g in generation_throughput(prof.run):
        print(f"generation: {g.duration_s:.3f} s, {g.steps} steps, "
              f"{g.steps_per_s:.2f} steps/s, {g.output_frames} image(s)")
    print(f"run file: {prof.run_path}")
    html = genprof.write_html(prof.run, Path(args.out) / "text-to-image.html")
    print(f"report:   {html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
