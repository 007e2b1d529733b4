"""Measured tuning on real-size random-weight pipelines (Wan 2.1 1.3B, SDXL), before and after --calibrate.

    python bench/bench_tune.py --out tune_wan.json --model wan --budgets 24GiB,12GiB     # H200, one call
    python bench/bench_tune.py --out tune_sdxl.json --model sdxl --budgets 24GiB,12GiB
    python bench/bench_tune.py --out smoke.json --tiny --device cpu                      # CPU smoke

Each candidate runs in its own child process by default (--isolation process: the child builds
the pipeline with the sweep's seed, so every candidate has the same random weights);
--isolation reset copies one live pipeline in this process instead.

Per model and budget: a sweep over a small candidate set (sized to fit one 8-minute call), the
chosen recipe with its 95% CI, its speed-up over the default pipeline, and the Spearman rank
correlation of the planner's predicted times with the measured ones, before and after the
measured results are saved as calibration (the second figure replans with the calibrated time model).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = {
    "wan": ["offload=model", "offload=group_block_stream", "vae_tiling", "attention=cudnn", "cache=first_block",
            "compile=max-autotune-no-cudagraphs"],
    "sdxl": ["offload=model", "vae_tiling", "channels_last", "attention=efficient", "compile=max-autotune-no-cudagraphs"],
}
MODELS = {"wan": "wan2.1-1.3b", "sdxl": "sdxl"}
CALL = {"wan": {"height": 480, "width": 832, "num_frames": 33, "num_inference_steps": 4},
        "sdxl": {"height": 1024, "width": 1024, "num_inference_steps": 8}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="sdxl", choices=sorted(MODELS))
    ap.add_argument("--budgets", default="24GiB", help="comma-separated budgets")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny pipelines (CPU smoke)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--candidates", default=None, help="override the candidate list (comma-separated)")
    ap.add_argument("--isolation", default="process", choices=("process", "reset"),
                    help="process (default): each candidate built in its own child; reset: one live pipeline copied")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per candidate (process isolation)")
    a = ap.parse_args()

    from genprof.integrations.demo import build_pipeline
    from genprof.tune import tune
    from genprof.tune.calibration import save_calibration

    size = "tiny" if a.tiny else "full"
    build_device = "cpu" if a.tiny else a.device
    if a.isolation == "process":
        # the parent never holds the pipeline: each child builds it (same seed, so the same random weights)
        source: Any = functools.partial(build_pipeline, a.model, size, device=build_device)
        call: dict[str, Any] = dict(build_pipeline(a.model, "tiny", device="cpu").call_kwargs) if a.tiny else \
            {"prompt": "a cat sitting on the beach at sunset", "output_type": "np"}
    else:
        demo = build_pipeline(a.model, size, device=build_device)
        source, call = demo.pipe, dict(demo.call_kwargs)
    if not a.tiny:
        call.update(CALL[a.model])
    cands = a.candidates.split(",") if a.candidates else (["vae_tiling", "vae_slicing", "attention=math"] if a.tiny else CANDIDATES[a.model])
    os.environ.setdefault("GENPROF_CACHE_DIR", tempfile.mkdtemp(prefix="genprof-bench-cal-"))
    report: dict[str, Any] = {"model": a.model, "size": size, "device": a.device, "isolation": a.isolation,
                              "call": {k: v for k, v in call.items() if k != "prompt"}, "candidates": cands, "budgets": {}}
    out = Path(a.out)
    for budget in a.budgets.split(","):
        t0 = time.monotonic()
        # the planner reads the live pipeline's configs (the tiny one in smoke mode, the real-size one otherwise)
        r = tune(source, budget=None if a.tiny else budget, candidates=cands, device=a.device, repeats=a.repeats,
                 model=None if a.tiny else MODELS[a.model], out=out.with_name(f"{out.stem}-{budget}.tune.json"),
                 isolation=a.isolation, timeout_s=a.timeout, progress=False, use_calibration=False, **call)
        entry: dict[str, Any] = {"wall_s": time.monotonic() - t0, "best": None if r.best is None else r.best.name,
                                 "best_median_s": None if r.best is None else r.best.median_s,
                                 "best_ci_s": None if r.best is None else r.best.ci_s, "speedup": r.speedup(),
                                 "spearman_before": r.spearman, "spearman_n": r.spearman_n, "spearman_note": r.spearman_note,
                                 "result": r.to_dict()}
        if r.model and r.gpu:
            entry["calibration_file"] = str(save_calibration(r))
            from genprof.tune import _planning, load_calibration
            from genprof.tune.runner import _predict  # replan with the calibration the sweep just saved

            cal = load_calibration(r.model, r.gpu) or {}
            _predict(r, r.model, r.budget_bytes, r.generation, _planning.make_time_model(**(cal.get("time_model") or {})))
            entry["spearman_after"] = r.spearman
        else:
            entry["spearman_after"] = None
            entry["spearman_after_note"] = "no GPU name (CPU smoke): calibration is keyed by model and GPU"
        report["budgets"][budget] = entry
        out.write_text(json.dumps(report, indent=1, default=str))
        print(f"{a.model} {budget} ({r.isolation}): best {entry['best']} {entry['best_median_s']} s CI {entry['best_ci_s']}, "
              f"speed-up {entry['speedup']}, Spearman {entry['spearman_before']} -> {entry['spearman_after']}, {entry['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
