"""Fuzz the inputs genprof reads: mutated run files and config files (CPU only).

For each run file (a mutation of a small realistic run, see ``tests/fuzz_inputs.py``):
``load_run`` returns a Run or raises RunFileError; ``genprof summary``, ``genprof report``
(HTML, JSON report and trace) and ``genprof check`` are called in-process through
``genprof.cli.main.main`` and must return 0 or 2 (``check``: also 1, a target not met) without
raising; ``report`` must return 0 on every file ``load_run`` accepts. For each config file:
``load_config`` returns a config or raises ConfigError. Each input runs under a 2 s SIGALRM
timer: a hang counts as a failure. A sample of run files also goes through a real
``python -m genprof`` subprocess, to see that no traceback reaches stderr.

    PYTHONPATH=src python bench/bench_fuzz_inputs.py --runs 8000 --configs 4000 --subprocess 40
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import fuzz_inputs as F  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8000, help="mutated run files")
    ap.add_argument("--configs", type=int, default=4000, help="mutated config files")
    ap.add_argument("--subprocess", type=int, default=40, help="run files also checked through python -m genprof")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT.json", help="write the result here")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)
    rng = random.Random(args.seed)
    bases = F.base_runs()
    outcomes: collections.Counter[str] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    slowest = 0.0
    samples: list[bytes] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for _ in range(args.runs):
            data = F.mutate_run(rng, rng.choice(bases))
            if len(samples) < args.subprocess and rng.random() < 2 * args.subprocess / max(args.runs, 1):
                samples.append(data)
            t0 = time.perf_counter()
            try:
                outcomes["run " + F.check_run_bytes(data, tmp)] += 1
            except (AssertionError, F.Hang, Exception) as exc:  # noqa: BLE001 - every failure is counted and shown
                key = f"run: {type(exc).__name__}: {str(exc)[:160]}"
                failures[key] += 1
                examples.setdefault(key, traceback.format_exc()[-1500:])
            slowest = max(slowest, time.perf_counter() - t0)
        t_runs = time.perf_counter() - t_start
        for _ in range(args.configs):
            data = F.mutate_config(rng)
            t0 = time.perf_counter()
            try:
                outcomes["config " + F.check_config_bytes(data, tmp)] += 1
            except (F.Hang, Exception) as exc:  # noqa: BLE001
                key = f"config: {type(exc).__name__}: {str(exc)[:160]}"
                failures[key] += 1
                examples.setdefault(key, traceback.format_exc()[-1500:])
            slowest = max(slowest, time.perf_counter() - t0)
        t_configs = time.perf_counter() - t_start - t_runs
        sub_bad = 0
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        for n, data in enumerate(samples):
            p = tmp / f"sub{n}.json"
            p.write_bytes(data)
            for cmd in (["summary", str(p)], ["report", str(p), "--html", str(tmp / "s.html")]):
                r = subprocess.run([sys.executable, "-m", "genprof", *cmd], capture_output=True, text=True,
                                   errors="replace", env=env, timeout=30)
                if r.returncode not in (0, 2) or "Traceback" in r.stderr:
                    sub_bad += 1
                    key = f"subprocess {cmd[0]}: exit {r.returncode}"
                    failures[key] += 1
                    examples.setdefault(key, r.stderr[-1500:])
    total = args.runs + args.configs
    result = {
        "inputs": total,
        "outcomes": dict(outcomes),
        "failures": sum(failures.values()),
        "failure_kinds": dict(failures),
        "subprocess_files": len(samples),
        "slowest_input_s": round(slowest, 3),
        "run_files_s": round(t_runs, 1),
        "config_files_s": round(t_configs, 1),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "seed": args.seed,
    }
    print(json.dumps(result, indent=1, sort_keys=True))
    for key, ex in examples.items():
        print(f"--- {key}\n{ex}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
