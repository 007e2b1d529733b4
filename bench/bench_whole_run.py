"""A whole profiled run against the plain loop: construct, enter, the loop, exit and save, side by side.

``bench_overhead.py`` starts the profiler before its timer, so it measures what the loop pays;
this script times what a user pays for a run as they write it::

    with genprof.Profiler("wan") as prof:     # or preset="dev"
        for i in prof.steps(range(12)): ...
    prof.save("run.json")

on a Wan 2.1 T2V 1.3B-shaped transformer (diffusers' WanTransformer3DModel from the 1.3B config,
random bf16 weights, nothing downloaded) at 480x832, 33 frames (9x60x104 latents, 14,040
tokens), 12 denoise steps, each running the transformer twice (classifier-free guidance as two
calls, as WanPipeline does). Modes, interleaved in a rotating order each round so drift hits all
alike, each timed from before the ``Profiler`` is built to after the run file is written, the
loop bracketed by ``torch.cuda.synchronize()``:

* ``plain``: the loop alone;
* ``default``: ``Profiler(name)`` at the default config (step spans with CUDA events, allocator
  peaks, RSS, the GPU/CPU sampler, phase energy, the end summary), then ``prof.save``;
* ``dev``: ``Profiler(name, preset="dev")``: the live view (drawn to a buffer), 10 Hz sampling,
  raw samples kept, and both end reports (JSON and HTML) written to a temporary folder.

The overhead is the paired ratio (per round: mode / plain - 1, the calls of one round back to
back), its median over rounds with a percentile-bootstrap 95% CI; the plain loop's own spread is
printed as the noise floor. The fixed parts of each profiled run (construct+enter, exit, save)
are timed inside the same runs.

Usage (GPU machine, about 3 minutes on an H100 with the default 10 rounds)::

    python bench/bench_whole_run.py --out whole-run.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_overhead import (  # the same model, inputs and step as the loop-overhead bench
    build,
    cfg_step,
    inputs,
)

from genprof.analysis.summary import bootstrap_median_ci
from genprof.profiler import Profiler

MODES = ("plain", "default", "dev")


@torch.inference_mode()
def _body(model: Any, x: dict[str, Any], it: Any, ts: Any) -> None:
    lat = x["hidden_states"]
    for i in it:
        lat = cfg_step(model, x, lat, ts[i : i + 1])
    torch.cuda.synchronize()


def one_run(mode: str, model: Any, x: dict[str, Any], steps: int, out_dir: Path) -> dict[str, float]:
    """One whole run of ``mode``; total wall time and, for profiled modes, its fixed parts."""
    ts = torch.linspace(999, 1, steps, device="cuda")
    gc.collect()  # every mode starts from the same heap state
    torch.cuda.synchronize()
    if mode == "plain":
        t0 = time.perf_counter()
        _body(model, x, range(steps), ts)
        return {"total_s": time.perf_counter() - t0}
    kw: dict[str, Any] = {"preset": "dev", "output_dir": str(out_dir), "display_force": True} if mode == "dev" else {}
    err = io.StringIO()  # the end summary and (dev) the live view go to stderr: keep the log readable
    with contextlib.redirect_stderr(err):
        t0 = time.perf_counter()
        prof = Profiler("bench", **kw)
        prof.__enter__()
        t1 = time.perf_counter()
        try:
            _body(model, x, prof.steps(range(steps), phase="denoise"), ts)
        finally:
            t2 = time.perf_counter()
            prof.__exit__(None, None, None)
            t3 = time.perf_counter()
        prof.save(out_dir / f"run-{mode}.json")
        t4 = time.perf_counter()
    return {"total_s": t4 - t0, "enter_s": t1 - t0, "exit_s": t3 - t2, "save_s": t4 - t3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    ap.add_argument("--steps", type=int, default=12, help="denoise steps per run (default 12)")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--modes", default=",".join(MODES))
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_whole_run.py needs a CUDA GPU: the loop is a GPU-bound denoise loop")
    modes = [m for m in a.modes.split(",") if m]
    if "plain" not in modes or any(m not in MODES for m in modes):
        sys.exit(f"--modes: a comma-separated subset of {','.join(MODES)} that includes plain")
    model = build()
    x = inputs(a.frames, a.height, a.width)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for m in modes:  # one untimed run of each: first-profiler costs, kernels autotuned, reports' imports
            one_run(m, model, x, 2, Path(tmp))
        for r in range(a.rounds):
            for m in modes[r % len(modes):] + modes[: r % len(modes)]:
                runs[m].append(one_run(m, model, x, a.steps, Path(tmp)))
    base = [r["total_s"] for r in runs["plain"]]
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": a.steps,
        "shape": [a.frames, a.height, a.width], "rounds": a.rounds,
        "plain_s_median": statistics.median(base),
        "plain_spread_pct": (max(base) - min(base)) / statistics.median(base) * 100.0,
        "runs": runs, "modes": {},
    }
    print(f"{res['device']}, {a.steps} steps at {a.frames}x{a.height}x{a.width}, {a.rounds} rounds: "
          f"plain {res['plain_s_median']:.3f} s median, spread {res['plain_spread_pct']:.2f}%")
    for m in modes:
        if m == "plain":
            continue
        per_round = [(r["total_s"] - b) / b * 100.0 for r, b in zip(runs[m], base, strict=True)]
        lo, hi = bootstrap_median_ci(per_round)
        parts = {k: statistics.median(r[k] for r in runs[m]) * 1e3 for k in ("enter_s", "exit_s", "save_s")}
        res["modes"][m] = {"overhead_pct_median": statistics.median(per_round), "overhead_pct_ci95": [lo, hi],
                           "overhead_pct_min": min(per_round), "overhead_pct_max": max(per_round),
                           "parts_ms_median": parts}
        print(f"  {m:8s} {statistics.median(per_round):+.3f}% (95% CI {lo:+.3f}..{hi:+.3f}%, "
              f"min {min(per_round):+.3f}% max {max(per_round):+.3f}%); enter {parts['enter_s']:.2f} ms, "
              f"exit {parts['exit_s']:.2f} ms, save {parts['save_s']:.2f} ms")
    a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
