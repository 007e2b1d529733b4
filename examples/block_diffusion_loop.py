"""A hand-written block-diffusion loop (Self-Forcing-like) profiled with prof.blocks and prof.steps.

    python examples/block_diffusion_loop.py                 # tiny random-weight Wan transformer + VAE (CPU ok)
    python examples/block_diffusion_loop.py --size full     # Wan 2.1 1.3B architecture, random weights (GPU)

The video is produced block by block: each block holds ``--latent-frames`` latent frames,
denoised in a few flow-matching steps while conditioned on the blocks before it (here simply
by concatenating the previous block's clean latents as context frames), then decoded by the VAE
so its frames can be shown at once. Throughput is reported with genprof's block definitions:
blocks/s, per-block latency and its jitter (p95 - p50), and deadline misses at ``--fps``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import genprof
from genprof.analysis.throughput import block_throughput


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--device", default=None)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--latent-frames", type=int, default=3, help="latent frames per block")
    ap.add_argument("--steps", type=int, default=4, help="denoising steps per block")
    ap.add_argument("--fps", type=float, default=16.0, help="target playback frame rate")
    ap.add_argument("--out", default="genprof-examples")
    args = ap.parse_args()

    import torch

    from genprof.integrations.demo import build_pipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    demo = build_pipeline("wan", args.size, device=device)
    transformer, vae = demo.pipe.transformer, demo.pipe.vae
    dtype = next(transformer.parameters()).dtype
    h, w = (60, 104) if args.size == "full" else (2, 2)
    ch = transformer.config.in_channels
    text_dim = transformer.config.text_dim
    text = torch.randn(1, 16, text_dim, device=device, dtype=dtype)  # stands in for encoded prompt
    temporal = 4  # Wan VAE: 1 + 4*(T-1) frames from T latent frames
    frames_per_block = 1 + temporal * (args.latent_frames - 1)
    sigmas = torch.linspace(1.0, 0.0, args.steps + 1, device=device)

    prof = genprof.Profiler("block-diffusion", output_dir=args.out, tags={"example": "block_diffusion"})
    with prof, torch.no_grad():
        context = None
        for b in prof.blocks(range(args.blocks), steps_per_block=args.steps, frames_per_block=frames_per_block):
            x = torch.randn(1, ch, args.latent_frames, h, w, device=device, dtype=dtype)
            for i in prof.steps(range(args.steps), phase=None):
                inp = x if context is None else torch.cat([context, x], dim=2)
                t = (sigmas[i] * 1000).expand(1).to(dtype)
                v = transformer(hidden_states=inp, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
                v = v[:, :, -args.latent_frames:]
                x = x + (sigmas[i + 1] - sigmas[i]).to(dtype) * v  # Euler step of the flow ODE
            context = x
            with prof.phase("vae_decode", block=b):
                frames = vae.decode(x.to(vae.dtype), return_dict=False)[0]
            assert frames.shape[2] == frames_per_block
    bt = block_throughput(prof.run, target_fps=args.fps)
    print(f"{bt.blocks} blocks: {bt.blocks_per_s:.2f} blocks/s, {bt.frames_per_s:.2f} frames/s, "
          f"latency p50 {bt.latency.p50:.4f} s, jitter {bt.jitter_s:.4f} s, "
          f"time to first frame {bt.time_to_first_frame_s:.3f} s, "
          f"deadline misses at {args.fps:g} fps: {bt.deadline_misses}/{bt.blocks}")
    print(f"run file: {prof.run_path}")
    print(f"report:   {genprof.write_html(prof.run, Path(args.out) / 'block-diffusion.html')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
