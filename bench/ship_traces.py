"""Write genprof's shipped meta-trace results: the catalogue's models at their default settings.

``genprof plan`` and ``genprof estimate`` trace each model's components on the meta device the
first time (seconds to tens of seconds on a small CPU) and cache the results per user. This script
runs, for every model of the catalogue, ``genprof plan`` at a few budgets and ``genprof estimate``
at the defaults, each in a fresh process with an empty cache folder, and gathers the results into
``src/genprof/planning/estimate/shipped_traces.json``; a user whose genprof source, torch, diffusers
and transformers versions match those recorded there gets a first plan without tracing.

Run it after any change to the estimator (the shipped file then no longer matches its source, and
``tests/planning/test_shipped_traces.py`` says so)::

    python bench/ship_traces.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUDGETS = ("24GiB", "16GiB", "8GiB")


def _run(model: str, cache: Path) -> tuple[str, float, list[str]]:
    env = dict(os.environ, GENPROF_CACHE_DIR=str(cache))
    env.pop("GENPROF_NO_CACHE", None)
    t = time.perf_counter()
    failed = []
    cmds = [[sys.executable, "-m", "genprof", "plan", "--model", model, "--budget", b] for b in BUDGETS]
    cmds.append([sys.executable, "-m", "genprof", "estimate", "--model", model])
    for cmd in cmds:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if r.returncode not in (0, 1):  # 1: no configuration fits the budget (still traced)
            failed.append(f"{' '.join(cmd[3:])}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return model, time.perf_counter() - t, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="models traced at once (default 2)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                    / "src/genprof/planning/estimate/shipped_traces.json")
    args = ap.parse_args()
    from genprof.catalog.load import load_catalog
    from genprof.planning.estimate import cache

    models = sorted(load_catalog())
    entries: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as d:
        dirs = {m: Path(d) / m for m in models}
        with ThreadPoolExecutor(args.jobs) as pool:
            for model, secs, failed in pool.map(lambda m: _run(m, dirs[m]), models):
                sys.stdout.write(f"{model}: {secs:.1f} s{'; ' + '; '.join(failed) if failed else ''}\n")
        for m in models:
            for f in sorted((dirs[m] / "meta-trace").glob("*.json")):
                entries[f.stem] = json.loads(f.read_text(encoding="utf-8"))
    cache._versions.cache_clear()
    data = {"versions": cache._versions(), "models": models, "entries": dict(sorted(entries.items()))}
    args.out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    sys.stdout.write(f"{len(entries)} results for {len(models)} models -> {args.out}\n")


if __name__ == "__main__":
    main()
