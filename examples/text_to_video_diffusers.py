"""Profile a diffusers text-to-video pipeline (Wan): load each component with its memory, then generate.

    python examples/text_to_video_diffusers.py                    # tiny random-weight Wan 2.1 (CPU ok)
    python examples/text_to_video_diffusers.py --model /path/to/Wan2.1-T2V-1.3B-Diffusers --device cuda

With ``--model`` each component (text encoder, transformer, VAE) is loaded on its own inside
``genprof.profile_load``, so the run records the load time and the memory after each one is
placed (the pattern of seed 000). Prints time per video, output frames/s and the real-time
factor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import genprof
from genprof.analysis.throughput import generation_throughput
from genprof.units import format_bytes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Wan diffusers folder; default: tiny random weights")
    ap.add_argument("--device", default=None)
    ap.add_argument("--prompt", default="a cat walking on the beach at sunset")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--out", default="genprof-examples")
    args = ap.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prof = genprof.Profiler("text-to-video", output_dir=args.out, tags={"example": "text_to_video"})
    with prof:
        with genprof.profile_load(prof) as load:
            if args.model:
                from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
                from transformers import AutoTokenizer, UMT5EncoderModel

                with load.component("text_encoder") as slot:
                    slot.module = UMT5EncoderModel.from_pretrained(
                        args.model, subfolder="text_encoder", torch_dtype=torch.bfloat16).to(device)
                with load.component("transformer") as slot2:
                    slot2.module = WanTransformer3DModel.from_pretrained(
                        args.model, subfolder="transformer", torch_dtype=torch.bfloat16).to(device)
                with load.component("vae") as slot3:
                    slot3.module = AutoencoderKLWan.from_pretrained(
                        args.model, subfolder="vae", torch_dtype=torch.float32).to(device)
                pipe = WanPipeline.from_pretrained(
                    args.model, text_encoder=slot.module, transformer=slot2.module, vae=slot3.module,
                    tokenizer=AutoTokenizer.from_pretrained(args.model, subfolder="tokenizer"))
                call = {"height": 480, "width": 832, "num_frames": args.frames or 33,
                        "num_inference_steps": args.steps or 30, "output_type": "np"}
                fps = 16
            else:
                from genprof.integrations.demo import build_pipeline

                with load.component("pipeline") as slot:
                    demo = build_pipeline("wan", device=device)
                    slot.module = demo.pipe.transformer
                pipe, call, fps = demo.pipe, dict(demo.call_kwargs), demo.fps
                if args.steps:
                    call["num_inference_steps"] = args.steps
                if args.frames:
                    call["num_frames"] = args.frames
            load.pipeline(pipe)
        genprof.instrument(pipe, prof, fps=fps)
        call["prompt"] = args.prompt
        pipe(**call)
    for g in generation_throughput(prof.run):
        rtf = "n/a" if g.real_time_factor is None else f"{g.real_time_factor:.4f}"
        print(f"video: {g.duration_s:.3f} s, {g.steps} steps ({g.steps_per_s:.2f} steps/s), "
              f"{g.output_frames} frames -> {g.output_frames_per_s:.2f} output frames/s, real-time factor {rtf}")
    for e in prof.run.metadata.get("load", []):
        print(f"loaded {e['component']}: RSS {format_bytes(e['rss_bytes'])}, "
              f"GPU allocated {format_bytes(e['allocated_bytes'])}")
    print(f"run file: {prof.run_path}")
    print(f"report:   {genprof.write_html(prof.run, Path(args.out) / 'text-to-video.html')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
