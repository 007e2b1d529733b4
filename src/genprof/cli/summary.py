"""``genprof summary RUN.json``: the usage statistics, video throughput and the phase table, on stdout."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "summary",
        help="print the usage statistics and phase table of a saved run",
        description="Print the usage statistics, the video throughput (output fps, real-time factor, time to first frame, deadline misses) and the phase table of a saved run file.",
    )
    p.add_argument("run_file", metavar="RUN.json", help="run file written by genprof")
    p.add_argument("--width", type=int, default=None, help="table width in columns (default: the terminal's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from genprof.errors import UsageError
    from genprof.model import load_run
    from genprof.render.console import print_summary

    if args.width is not None and args.width < 40:
        raise UsageError(f"--width must be at least 40 columns, got {args.width}")
    the_run = load_run(args.run_file)
    con = Console(width=args.width) if args.width else Console()
    print_summary(the_run, console=con)
    if the_run.end.status == "oom":
        from genprof.planning.oom import explain_oom
        from genprof.render.html import oom_advice_lines

        for line in oom_advice_lines(explain_oom(the_run)) or []:
            con.print(line, highlight=False, markup=False)
    return 0
