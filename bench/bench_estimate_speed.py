"""Wall time of ``genprof estimate`` and ``genprof plan`` per shipped model, uncached and cached.

Each measurement is a fresh process (``python -m genprof ...``) with its own empty trace cache
(``GENPROF_CACHE_DIR`` set to a new temporary folder), so the torch import, building the modules
from their configs and the meta traces all count, as on a user's first call; the same command
is then run again on the filled cache (the warm figure).

    PYTHONPATH=src python bench/bench_estimate_speed.py --out /tmp/speed.json
    PYTHONPATH=src python bench/bench_estimate_speed.py --models wan2.1-t2v-1.3b --extra=--vae-tiling

``--extra`` adds arguments to every estimate (e.g. ``--vae-tiling``); the default model list is
``genprof estimate --list``, each at its default size, plus the tiled VAE decode of every video
model, plus ``genprof plan`` on the first model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], cache: str) -> tuple[float, int, str]:
    env = dict(os.environ, GENPROF_CACHE_DIR=cache)
    env.pop("GENPROF_NO_CACHE", None)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, (p.stderr or "")[-400:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--models", default=None, help="comma-separated (default: every model of the catalogue)")
    ap.add_argument("--extra", default="", help="extra arguments for every estimate")
    ap.add_argument("--no-tiled", action="store_true", help="skip the tiled VAE decode cases")
    ap.add_argument("--plan-model", default="wan2.1-t2v-1.3b")
    ap.add_argument("--no-plan", action="store_true")
    args = ap.parse_args()
    from genprof.catalog import MODEL_NAMES, get_config

    models = args.models.split(",") if args.models else list(MODEL_NAMES)
    py = [sys.executable, "-m", "genprof"]
    cases: list[tuple[str, list[str]]] = []
    for m in models:
        cases.append((m, [*py, "estimate", "--model", m, "--json", *shlex.split(args.extra)]))
        if not args.no_tiled and get_config(m).kind == "video":
            cases.append((f"{m} vae_decode tiled", [*py, "estimate", "--model", m, "--json", "--vae-tiling",
                                                    "--component", "vae_decode"]))
    if not args.no_plan:
        cases.append((f"plan {args.plan_model}", [*py, "plan", "--model", args.plan_model, "--budget", "24GiB"]))
    rows = []
    for name, cmd in cases:
        with tempfile.TemporaryDirectory() as cache:
            cold, rc, err = _timed(cmd, cache)
            warm, rc2, _ = _timed(cmd, cache)
        rows.append({"case": name, "command": shlex.join(cmd[2:]), "uncached_s": round(cold, 2),
                     "cached_s": round(warm, 2), "rc": rc, "stderr_tail": err if rc else ""})
        print(f"{name:40s} uncached {cold:6.2f} s  cached {warm:5.2f} s{'' if rc == 0 else f'  rc={rc} ' + err[-200:]}",
              flush=True)
    out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
           "python": platform.python_version(), "cases": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
