"""``genprof aggregate DIR_OR_FILES... -o merged.json``: merge the rank files of one distributed job."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "aggregate",
        help="merge the run files of the ranks of one distributed job",
        description="Aggregate rank files (files or folders of *.json): per phase and figure the min, max, mean "
        "and p95 across ranks, the slowest rank of each phase, the skew of step times, and the energy of all "
        "GPUs with a shared GPU counted once. Files from different jobs are refused.",
    )
    p.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE", help="rank files, or folders holding them")
    p.add_argument("-o", "--output", metavar="merged.json", help="write the aggregate as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from genprof.analysis.aggregate import aggregate, load_rank_files, write_aggregate
    from genprof.units import format_seconds

    agg = aggregate(load_rank_files(args.inputs))
    console = Console()
    console.print(
        f"job {agg['job_id'] or '(no job id)'}: {len(agg['ranks'])} of {agg['world_size']} ranks"
        + (f"; missing ranks {agg['missing_ranks']}" if agg["missing_ranks"] else ""),
        highlight=False,
    )
    t = Table(title="phases across ranks (total host time per rank)")
    for col in ("phase", "min", "mean", "p95", "max", "skew", "slowest rank"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    for p in agg["phases"]:
        t.add_row(p["path"], format_seconds(p["min"]), format_seconds(p["mean"]), format_seconds(p["p95"]),
                  format_seconds(p["max"]), "" if p["skew"] is None else f"{p['skew']:.2f}", str(p["slowest_rank"]))
    console.print(t)
    st = agg["steps"]
    if st["mean_skew"] is not None:
        console.print(
            f"step time skew (max/min of per-rank means): {st['mean_skew']:.3f}; slowest rank {st['slowest_rank']}"
            + (f"; worst step {st['worst_step_index']} at {st['worst_step_skew']:.2f}x" if st["worst_step_skew"] else ""),
            highlight=False,
        )
    for s in agg["stragglers"][:5]:
        console.print(f"straggler: rank {s['rank']} in '{s['phase']}' is {format_seconds(s['behind_s'])} "
                      f"({s['behind_pct']:.0f}%) behind rank {s['fastest_rank']}", highlight=False)
    e = agg["energy"]
    console.print("energy: " + ("n/a" if e["total_j"] is None else f"{e['total_j']:.1f} J over {len(e['gpus'])} GPU(s)"),
                  highlight=False)
    if args.output:
        path = write_aggregate(agg, args.output)
        console.print(f"wrote {path}", highlight=False)
    return 0
