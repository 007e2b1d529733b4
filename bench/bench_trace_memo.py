"""The trace memos checked: every VAE decode traced with and without them, request for request.

For each case, ``vae.decode`` of a catalogue model runs on meta tensors twice with the allocation
recorder on: once with the operator memo and the decoder-call memo (the default), once with both
off (``GENPROF_TRACE_MEMO=0``'s switch). The two allocation sequences must be the same requests in
the same order, and the live-bytes peak, the operator count and the decoder-call count the same;
the trace time of each is reported (the module is built once, before either).

    PYTHONPATH=src python bench/bench_trace_memo.py --out bench/results/trace_memo_cpu2.json
    PYTHONPATH=src python bench/bench_trace_memo.py --cases wan2.1-t2v-1.3b:480x832x33:tiled

Exit status 1 when any case differs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

CASES = [
    "wan2.1-t2v-1.3b:480x832x33", "wan2.1-t2v-1.3b:480x832x33:tiled", "wan2.1-t2v-14b:480x832x33:tiled",
    "wan2.2-ti2v-5b:704x1280x121:tiled", "hunyuanvideo:320x512x33", "hunyuanvideo:320x512x33:tiled",
    "cogvideox-2b:480x720x49", "cogvideox-2b:480x720x49:tiled", "ltx-video:512x768x97", "ltx-video:512x768x97:tiled",
    "qwen-image:1024x1024x1", "qwen-image:1024x1024x1:tiled", "sdxl:1024x1024x1:tiled", "flux.1-dev:1024x1024x1",
]


def _case(text: str) -> tuple[str, int, int, int, bool]:
    model, size, *rest = text.split(":")
    h, w, f = (int(v) for v in size.split("x"))
    return model, h, w, f, rest == ["tiled"]


def run_case(text: str) -> dict[str, Any]:
    from genprof.catalog import get_config
    from genprof.planning.alloc_trace import AllocRecorder
    from genprof.planning.estimate import phases
    from genprof.planning.estimate import trace as trace_mod
    from genprof.planning.estimate.call_memo import events_equal
    from genprof.planning.estimate.settings import GenerationSettings

    model, h, w, f, tiled = _case(text)
    spec = get_config(model)
    phases._register(spec)
    vae_dtype = "fp32" if spec.vae.class_name == "AutoencoderKLWan" else "bf16"
    gen = GenerationSettings(height=h, width=w, num_frames=f, batch_size=1, num_inference_steps=1, guidance_scale=5.0,
                             dtype="bf16", offload="none", vae_tiling=tiled, vae_slicing=False,
                             attention_backend="flash", layerwise_fp8=False, vae_dtype=vae_dtype)
    phases._meta_module(spec.name, spec.vae.name, gen.vae_dtype)  # built once, outside the timings
    runs: dict[bool, Any] = {}
    for memo in (True, False):
        trace_mod._MEMO.clear()
        trace_mod._MEMO_ON[0] = memo
        rec = AllocRecorder()
        t0 = time.perf_counter()
        try:
            counter, out_bytes, calls = phases._run_vae_decode(spec.name, gen, 1, recorder=rec)
        finally:
            trace_mod._MEMO_ON[0] = True
        runs[memo] = (time.perf_counter() - t0, list(rec.events), counter.peak, counter.ops, out_bytes, calls)
    (t_on, ev_on, *rest_on), (t_off, ev_off, *rest_off) = runs[True], runs[False]
    same = events_equal(ev_on, ev_off) and rest_on == rest_off
    return {"case": text, "same": same, "requests": len(ev_on), "decoder_calls": rest_on[3][0],
            "operators": rest_on[1], "live_peak_bytes": rest_on[0], "trace_s_memo": round(t_on, 3),
            "trace_s_no_memo": round(t_off, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help="model:HxWxF[:tiled], comma-separated")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    rows = []
    for text in args.cases.split(","):
        row = run_case(text)
        rows.append(row)
        sys.stdout.write(f"{row['case']:<36} {'same' if row['same'] else 'DIFFERENT':<9} "
                         f"{row['decoder_calls']:>4} calls {row['requests']:>7} requests  "
                         f"{row['trace_s_memo']:>6.2f} s memo  {row['trace_s_no_memo']:>6.2f} s without\n")
        sys.stdout.flush()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                       "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}, fh, indent=1)
    sys.exit(0 if all(r["same"] for r in rows) else 1)


if __name__ == "__main__":
    main()
