"""Image VAE decode on the GPU: peak allocated above the baseline against the meta-device trace.

    python bench/tools/vae_decode_alloc.py [--out vae_decode_alloc.json]

For the SDXL and Flux VAEs (random bf16 weights from their configs) at 512, 768, 1024 and 1280 px:
the estimator's traced activation peak, and the measured peak allocated (and reserved) of
``vae.decode`` with the default settings, with cuDNN off, and with the math or the efficient
attention backend forced. Without CUDA it prints the traced peaks only.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from genprof.planning import estimate as est
from genprof.planning.build import build_component

SIZES = (512, 768, 1024, 1280)
VARIANTS = ("default", "no_cudnn", "sdpa_math", "sdpa_efficient")


def _decode(vae: Any, z: Any, variant: str) -> Any:
    if variant == "no_cudnn":
        with torch.backends.cudnn.flags(enabled=False):
            return vae.decode(z, return_dict=False)[0]
    if variant.startswith("sdpa"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = SDPBackend.MATH if variant == "sdpa_math" else SDPBackend.EFFICIENT_ATTENTION
        with sdpa_kernel(backend):
            return vae.decode(z, return_dict=False)[0]
    return vae.decode(z, return_dict=False)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if cuda else "cpu", "cases": []}
    for name in ("sdxl", "flux.1-schnell"):
        spec = est._resolve(name)
        est._register(spec)
        comp = spec.component(spec.vae.name)
        vae = None
        if cuda:
            vae = build_component(comp, device="meta", dtype=torch.bfloat16).to_empty(device="cuda")
            with torch.no_grad():
                for p in vae.parameters():
                    p.normal_(0, 0.02)
            vae.eval()
        for size in SIZES:
            lh = size // 8
            row: dict[str, Any] = {"model": spec.name, "size": size}
            m = est._meta_module(spec.name, spec.vae.name, "bf16")
            z = torch.empty(1, spec.latent_channels, lh, lh, device="meta", dtype=torch.bfloat16)
            with est.trace_live_bytes("flash") as (counter, _):
                o = m.decode(z, return_dict=False)[0]
                del o
            row["traced_peak"] = counter.peak
            for variant in VARIANTS if vae is not None else ():
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                zz = torch.randn(1, spec.latent_channels, lh, lh, device="cuda", dtype=torch.bfloat16)
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                try:
                    with torch.no_grad():
                        o = _decode(vae, zz, variant)
                    torch.cuda.synchronize()
                    row[variant] = torch.cuda.max_memory_allocated() - base
                    row[variant + "_reserved"] = torch.cuda.max_memory_reserved()
                    del o  # freed before the next variant's baseline
                except torch.OutOfMemoryError as exc:
                    row[variant] = f"OutOfMemoryError: {str(exc)[:100]}"
                del zz
            print(json.dumps({k: (round(v / 2**20) if isinstance(v, int) and k != "size" else v)  # noqa: T201
                              for k, v in row.items()}), flush=True)
            out["cases"].append(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
