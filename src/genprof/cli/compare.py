"""``genprof compare BEFORE.json AFTER.json [--json OUT]``: what changed, and is it real."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "compare",
        help="compare two runs: change in time, memory and energy, with confidence intervals",
        description="Compare a run before a change with one after it: per phase and overall, the change in "
        "time, memory and energy, the improvement factor, and a bootstrap confidence interval from the "
        "step samples that says whether the change is larger than the noise.",
    )
    p.add_argument("before", metavar="BEFORE.json", help="run file before the change")
    p.add_argument("after", metavar="AFTER.json", help="run file after the change")
    p.add_argument("--json", metavar="OUT.json", help="also write the comparison as JSON")
    p.add_argument("--width", type=int, default=None, help="table width in columns (default: the terminal's)")
    p.set_defaults(func=run)


def _pct(c: Any) -> str:
    return "n/a" if c.change_pct is None else f"{c.change_pct:+.1f}%"


def _ci(c: Any) -> str:
    if c.ci_low_pct is None:
        return ""
    return f"[{c.ci_low_pct:+.1f}%, {c.ci_high_pct:+.1f}%]"


def _factor(c: Any) -> str:
    return "" if c.factor is None else f"{c.factor:.2f}x"


FACTOR_HEADER = "factor (>1 better)"
FACTOR_MEANING = ("before/after for figures where lower is better (times, memory, energy), after/before where "
                  "higher is better (fps); > 1 = after is better, < 1 = after is worse")


def noisy_changes(changes: Any) -> list[str]:
    """Labels of the ``(label, change)`` pairs whose 95% interval is wider than the change
    (interval half-width > |change|): run-to-run noise larger than the change."""
    out = []
    for label, c in changes:
        lo, hi, pct = c.ci_low_pct, c.ci_high_pct, c.change_pct
        if lo is None or hi is None or pct is None:
            continue
        if (hi - lo) / 2.0 > abs(pct):
            out.append(str(label))
    return out


def _verdict(c: Any) -> str:
    v = c.verdict
    if v.startswith("better") and "noise" not in v:
        return f"[green]{v}[/green]"
    if v.startswith("worse") and "noise" not in v:
        return f"[red]{v}[/red]"
    return v


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from genprof.analysis.compare import compare
    from genprof.analysis.targets import format_value
    from genprof.model import atomic_write_text, load_run
    from genprof.units import format_bytes, format_seconds

    a, b = load_run(args.before), load_run(args.after)
    cmp = compare(a, b)
    console = Console(width=args.width) if args.width else Console()
    for w in cmp.warnings:
        console.print(f"[yellow]warning:[/yellow] {w['message']}", highlight=False)
    t = Table(title=f"{a.name} ({a.run_id}) -> {b.name} ({b.run_id})")
    for col in ("figure", "before", "after", "change", FACTOR_HEADER, "95% CI", "verdict"):
        # fold, never cut: a long figure or phase name wraps inside its cell at 80 columns
        t.add_column(col, justify="left" if col in ("figure", "verdict") else "right", overflow="fold")
    for c in cmp.overall:
        if c.before is None and c.after is None:
            continue
        t.add_row(c.name, format_value(c.name, c.before), format_value(c.name, c.after), _pct(c), _factor(c), _ci(c),
                  _verdict(c))
    console.print(t)
    pt = Table(title="phases (mean time per occurrence, peak reserved memory)")
    for col in ("phase", "time before", "time after", "change", "95% CI", "verdict", "peak before", "peak after"):
        pt.add_column(col, justify="left" if col in ("phase", "verdict") else "right", overflow="fold")
    for p in cmp.phases:
        pt.add_row(p.path, format_seconds(p.time.before), format_seconds(p.time.after), _pct(p.time), _ci(p.time),
                   _verdict(p.time), format_bytes(p.peak_reserved.before), format_bytes(p.peak_reserved.after))
    console.print(pt)
    console.print(f"factor: {FACTOR_MEANING}", highlight=False)
    noisy = noisy_changes([(c.name, c) for c in cmp.overall] + [(p.path, p.time) for p in cmp.phases])
    if noisy:
        console.print(f"[yellow]warning:[/yellow] run-to-run noise is larger than the change for {len(noisy)} "
                      f"figure(s) ({', '.join(noisy[:5])}{', ...' if len(noisy) > 5 else ''}): their 95% interval "
                      "spans more than the change itself. Repeat each run (several generations per run, or "
                      "several runs merged with genprof aggregate) before reading these changes.", highlight=False)
    console.print(f"statistics: {cmp.method}", highlight=False)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(cmp.to_dict(), indent=1, sort_keys=True, allow_nan=False))
    return 0
