"""``genprof check RUN.json --target generation_time_s<=5 ...``: gate CI on performance targets.

Exit status: 0 when every target holds, 1 when one fails (or is not measured), 2 for bad
input (an unreadable run file, a target that cannot be parsed).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check",
        help="check a run against performance targets (exit 1 if one fails)",
        description="Check a saved run against targets such as generation_time_s<=5 or "
        "peak_reserved_bytes<=16GiB; print measured values, margins, the 0-100 score and, for a "
        "missed target, the phase that missed and by how much. Exit 1 when a target fails.",
    )
    p.add_argument("run_file", metavar="RUN.json", help="run file written by genprof")
    p.add_argument("-t", "--target", action="append", default=[], metavar="FIGURE<=LIMIT",
                   help="a target; repeat for several. Without any, the run's config 'targets' are used")
    p.add_argument("--findings", action="store_true", help="also print the rule findings (suggestions)")
    p.add_argument("--json", metavar="OUT.json", help="also write the target report as JSON")
    p.add_argument("--list-figures", action="store_true", help="list the figures a target can name and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from genprof.analysis.targets import FIGURES, check_targets, format_value
    from genprof.errors import UsageError
    from genprof.model import atomic_write_text, load_run

    console = Console()
    if args.list_figures:
        t = Table()
        for col in ("figure", "unit", "better", "meaning"):
            t.add_column(col, overflow="fold")
        for f in FIGURES.values():
            t.add_row(f.name, f.unit, "lower" if f.lower_is_better else "higher", f.description)
        console.print(t)
        return 0
    the_run = load_run(args.run_file)
    targets: Any = list(args.target)
    if not targets:
        # from the profiler's config ({figure: limit}), else from monitor_generation(target_time=...)
        targets = the_run.config.get("targets") or the_run.metadata.get("targets")
        if not targets:
            raise UsageError(
                "no targets: pass --target FIGURE<=LIMIT (e.g. --target generation_time_s<=5); "
                "`genprof check --list-figures x` lists the figures"
            )
    report = check_targets(the_run, targets)
    table = Table(title=f"targets for {the_run.name} ({the_run.run_id})")
    for col in ("target", "measured", "margin", "result", "score"):
        table.add_column(col, justify="right" if col in ("measured", "margin", "score") else "left", overflow="fold")
    for r in report.results:
        if r.status == "not_measured":
            margin = "n/a"
            result = "[red]NOT MEASURED[/red]"
        else:
            m = r.margin or 0.0
            margin = ("+" if m >= 0 else "-") + format_value(r.target.figure, abs(m))
            if r.margin_pct is not None:
                margin += f" ({r.margin_pct:+.1f}%)"
            result = "[green]ok[/green]" if r.holds else "[red]FAIL[/red]"
        table.add_row(r.target.text, format_value(r.target.figure, r.measured), margin, result, f"{r.score:.1f}")
    console.print(table)
    for r in report.results:
        if r.status == "not_measured":
            console.print(f"  {r.target.figure}: not measured: {r.reason}", highlight=False)
        for d in r.diagnostics:
            console.print(f"  {r.target.figure}: {d}", highlight=False)
    console.print(f"score: {report.score:.1f}/100" if report.score is not None else "score: n/a")
    if args.findings:
        from genprof.analysis.rules import run_rules

        for fd in run_rules(the_run):
            console.print(f"[{fd.severity}] {fd.title}: {fd.evidence} {fd.suggestion}", highlight=False, markup=False)
    if args.json:
        from pathlib import Path

        atomic_write_text(Path(args.json), json.dumps(report.to_dict(), indent=1, sort_keys=True, allow_nan=False))
    return 0 if report.all_hold else 1
