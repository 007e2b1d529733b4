"""How long ``genprof doctor`` takes, as a user runs it (a fresh process each time).

Times ``python -m genprof doctor`` (the default: torch imported only when its build can use a
GPU), ``doctor --import-torch`` (what doctor cost before, when it always imported torch) and
``python -c pass`` (the interpreter's own start) in interleaved rounds, and reports each one's
median and range. Writes JSON to ``--out``. CPU or GPU.

    PYTHONPATH=src python bench/bench_doctor.py --rounds 10 --out bench/results/doctor_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "genprof doctor": [sys.executable, "-m", "genprof", "doctor"],
    "genprof doctor --import-torch": [sys.executable, "-m", "genprof", "doctor", "--import-torch"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.rounds):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    out = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "rounds": args.rounds,
        "wall_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in times.items()},
    }
    for k, v in out["wall_s"].items():
        print(f"{k:32s} median {v['median']:.3f} s  (min {v['min']:.3f}, max {v['max']:.3f}, {args.rounds} runs)")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
