"""Measure the cuDNN convolution workspace that the caching allocator hands out per conv call.

A meta trace sees every tensor a VAE decode creates, but not the workspace cuDNN asks the
caching allocator for inside each convolution; on image VAE decodes that workspace is what the
allocator replay missed (up to 13% low on reserved). This script measures it directly: for each
convolution shape (2-D as in image VAEs, 3-D as in video VAEs' causal convs, the dtypes those
run in), it runs the conv twice and records, for the second (steady) call,

* ``workspace_bytes``: the allocated peak during the call, minus what was allocated before it,
  minus the output's bytes (so whatever the call allocated besides its output);
* ``reserved_growth_bytes``: how much reserved memory the call added after one warm call.

The figures are the source of the replay's per-convolution workspace rule
(``conv_workspace_bytes`` in ``genprof.planning.estimate.trace``: input plus output for kernels
larger than 1, nothing for 1x1), which fits no constant to them.

    python bench/bench_conv_workspace.py --out bench/results/conv_workspace_h100.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def _shapes() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # image VAE decoders (SD/SDXL/Flux/SD3 AutoencoderKL): 3x3 convs, channels 128-512, 64-1280 px
    for c, hw, dt in itertools.product((128, 256, 512), (64, 128, 256, 512, 1024), ("float32", "bfloat16", "float16")):
        if c * hw * hw > 512 * 512 * 512:
            continue
        out.append({"dims": 2, "cin": c, "cout": c, "t": 1, "h": hw, "w": hw, "k": 3, "dtype": dt})
    for cin, cout, hw in ((512, 256, 512), (256, 128, 1024), (512, 512, 768), (256, 256, 1280), (128, 3, 1024)):
        out.append({"dims": 2, "cin": cin, "cout": cout, "t": 1, "h": hw, "w": hw, "k": 3, "dtype": "bfloat16"})
        out.append({"dims": 2, "cin": cin, "cout": cout, "t": 1, "h": hw, "w": hw, "k": 1, "dtype": "bfloat16"})
    # video VAE decoders (Wan, CogVideoX, Hunyuan): causal 3x3x3 convs over (T+2) padded frames
    for c, (h, w), t, dt in itertools.product((96, 192, 384), ((60, 104), (120, 208), (240, 416), (480, 832)),
                                              (3, 6), ("bfloat16", "float32")):
        if c * t * h * w > 384 * 6 * 240 * 416:
            continue
        out.append({"dims": 3, "cin": c, "cout": c, "t": t, "h": h, "w": w, "k": 3, "dtype": dt})
    return out


def _measure(torch: Any, s: dict[str, Any]) -> dict[str, Any]:
    dt = getattr(torch, s["dtype"])
    if s["dims"] == 2:
        x = torch.randn(1, s["cin"], s["h"], s["w"], device="cuda", dtype=dt)
        wt = torch.randn(s["cout"], s["cin"], s["k"], s["k"], device="cuda", dtype=dt)
        conv = torch.nn.functional.conv2d
    else:
        x = torch.randn(1, s["cin"], s["t"], s["h"], s["w"], device="cuda", dtype=dt)
        wt = torch.randn(s["cout"], s["cin"], s["k"], s["k"], s["k"], device="cuda", dtype=dt)
        conv = torch.nn.functional.conv3d
    pad = s["k"] // 2
    res: dict[str, Any] = dict(s)
    for call in ("first", "steady"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        reserved_before = torch.cuda.memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        y = conv(x, wt, padding=pad)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        out_bytes = y.numel() * y.element_size()
        res[f"{call}_workspace_bytes"] = int(peak - before - out_bytes)
        res[f"{call}_reserved_growth_bytes"] = int(torch.cuda.memory_reserved() - reserved_before)
        del y
    res["input_bytes"] = x.numel() * x.element_size()
    res["output_bytes"] = res["input_bytes"] // s["cin"] * s["cout"]
    res["weight_bytes"] = wt.numel() * wt.element_size()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = []
    for s in _shapes():
        try:
            rows.append(_measure(torch, s))
        except torch.cuda.OutOfMemoryError as exc:
            rows.append({**s, "error": f"out of memory: {exc}"})
        torch.cuda.empty_cache()
        r = rows[-1]
        if "error" not in r:
            print(f"{r['dims']}d {r['cin']}->{r['cout']} t{r['t']} {r['h']}x{r['w']} k{r['k']} {r['dtype']}: "
                  f"in {r['input_bytes'] / MiB:.0f} MiB, workspace first {r['first_workspace_bytes'] / MiB:.1f} "
                  f"steady {r['steady_workspace_bytes'] / MiB:.1f} MiB")
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
              "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
