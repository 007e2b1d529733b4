"""``genprof diagnose script.py [args...]``: ``genprof run`` with a diagnose window on."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "diagnose",
        help="run a Python script with a profiler and a diagnose window (kernel trace of a few steps)",
        description="Like 'genprof run': run SCRIPT inside an active genprof Profiler, and record a kernel trace "
        "of a few denoising steps (torch.profiler, only inside the window) to find host-device syncs, GPU idle "
        "gaps, time by module and op class, and torch.compile graph breaks and recompiles. The findings are "
        "printed and stored in the run file (see them again with 'genprof report RUN.json').",
    )
    p.add_argument("--window", default="steps:1-2", metavar="SPEC",
                   help="steps to trace, 0-based: 'steps:A-B' or 'steps:A' (default: steps:1-2, two steps after the first)")
    p.add_argument("--name", default=None, help="run name (default: the script's file name)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the run file and reports (default: output_dir of the config, else ./genprof-runs)")
    p.add_argument("--config", default=None, metavar="FILE", help="profiler config (YAML)")
    p.add_argument("--preset", choices=("dev", "prod"), default=None, help="config preset")
    p.add_argument("script", help="the Python script to run")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genprof.cli import run as run_cmd
    from genprof.diagnose import DiagnoseWindow, parse_window
    from genprof.profiler import on_profiler_start

    spec = parse_window(args.window)  # a bad window is refused before the script runs
    windows: list[DiagnoseWindow] = []

    def attach(prof: Any) -> None:
        if not windows:  # the script's first profiler only (the one genprof run starts)
            windows.append(DiagnoseWindow(spec).attach(prof))

    unregister = on_profiler_start(attach)
    try:
        code = run_cmd.run(args)
    finally:
        unregister()
    _print_findings(windows)
    return code


def _print_findings(windows: list[Any]) -> None:
    if not windows or windows[0].diagnosis is None:
        print("genprof: diagnose window: nothing recorded (the script started no step loop)", file=sys.stderr)
        return
    d = windows[0].diagnosis
    if d.status != "ok":
        print(f"genprof: diagnose window {d.window}: {d.status}: {d.status_reason}", file=sys.stderr)
    if d.gpu_reason:
        print(f"genprof: diagnose window {d.window}: GPU figures not measured: {d.gpu_reason}", file=sys.stderr)
    from genprof.analysis.rules import DIAGNOSE_RULES, run_rules
    from genprof.model import Run

    run = Run(name="diagnose", run_id="-", started_at="", started_unix_s=0.0, metadata={"diagnosis": d.to_dict()})
    for f in run_rules(run, DIAGNOSE_RULES):
        print(f"genprof: [{f.severity}] {f.title}\n  {f.evidence}\n  -> {f.suggestion}", file=sys.stderr)
