"""``genprof history``: list recorded runs, the trend of a figure, regressions; ``history add RUN.json``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "history",
        help="record runs in a local history and show trends and regressions",
        description="Without an action: list recorded runs with key figures. `history add RUN.json...` records "
        "runs. --figure shows the trend of one figure, --regressions the runs where a figure got worse "
        "beyond its noise. The store is SQLite: --db, else $GENPROF_HISTORY, else "
        "$XDG_DATA_HOME/genprof/history.sqlite (~/.local/share/genprof/history.sqlite).",
    )
    _add_options(p, defaults=True)
    # ``add`` and ``list`` are sub-commands with the same options, so that options go before or
    # after the action, as users type them (``history add --db X RUN.json``, ``history --db X add``)
    actions = p.add_subparsers(dest="action", metavar="ACTION", help="list (default) or add")
    add = actions.add_parser("add", help="record run files in the history",
                             description="Record RUN.json files in the history (all are read first: a bad file "
                             "records nothing).")
    add.add_argument("files", nargs="*", metavar="RUN.json", help="run files to add")
    _add_options(add, defaults=False)
    lst = actions.add_parser("list", help="list recorded runs (the default)")
    _add_options(lst, defaults=False)
    p.set_defaults(func=run, files=[])


def _add_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The history options; on an action's parser they default to unset, keeping what came before it."""

    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--db", metavar="PATH", default=d(None), help="history database file")
    p.add_argument("--tag", action="append", default=d([]), metavar="KEY=VALUE", help="only runs with this tag")
    p.add_argument("--name", default=d(None), help="only runs with this name")
    p.add_argument("--figure", metavar="NAME", default=d(None),
                   help="show the trend of this figure (e.g. generation_time_s)")
    p.add_argument("--regressions", action="store_true", default=d(False),
                   help="show runs where a figure got worse beyond noise")
    p.add_argument("--limit", type=int, default=d(50), help="show at most this many recent runs (default 50)")
    p.add_argument("--json", action="store_true", default=d(False), help="print JSON instead of a table")


_COLUMNS = ("generation_time_s", "step_time_p95_s", "peak_reserved_bytes", "energy_per_generation_j", "output_fps")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from genprof.analysis.history import HistoryStore, parse_tag_filters
    from genprof.analysis.targets import format_value
    from genprof.errors import UsageError
    from genprof.model import load_run

    store = HistoryStore(args.db)
    tags = parse_tag_filters(args.tag)
    console = Console()
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    if args.action == "add":
        if not args.files:
            raise UsageError("history add needs run files: genprof history add RUN.json [...]")
        runs = [load_run(f) for f in args.files]  # read all first: a bad file records nothing
        for f, r in zip(args.files, runs, strict=True):
            store.add(r, source=str(f))
            console.print(f"recorded {r.name} ({r.run_id}) in {store.path}", highlight=False)
        return 0
    if args.files:
        raise UsageError("run files are given only with `history add`")
    if args.regressions:
        figs = [args.figure] if args.figure else None
        regs = store.regressions(figs, tags=tags)
        if args.json:
            print(json.dumps([g.to_dict() for g in regs], indent=1, sort_keys=True))
            return 0
        if not regs:
            console.print("no regressions beyond noise", highlight=False)
            return 0
        t = Table(title=f"regressions ({store.path})")
        for col in ("started", "run", "figure", "value", "baseline", "change", "noise"):
            t.add_column(col)
        for g in regs:
            t.add_row(g.entry.started_at, f"{g.entry.name} {g.entry.run_id}", g.figure, format_value(g.figure, g.value),
                      format_value(g.figure, g.baseline), f"{g.change_pct:+.1f}%", format_value(g.figure, g.noise))
        console.print(t)
        return 0
    if args.figure:
        trend = store.trend(args.figure, tags=tags, name=args.name)[-args.limit:]
        if args.json:
            print(json.dumps([{"run_id": e.run_id, "name": e.name, "started_at": e.started_at, "value": v}
                              for e, v in trend], indent=1, sort_keys=True))
            return 0
        t = Table(title=f"{args.figure} over time ({store.path})")
        for col in ("started", "run", "value", "vs previous"):
            t.add_column(col)
        prev = None
        for e, v in trend:
            delta = "" if v is None or prev is None or prev == 0 else f"{100 * (v - prev) / prev:+.1f}%"
            t.add_row(e.started_at, f"{e.name} {e.run_id}", format_value(args.figure, v), delta)
            prev = v if v is not None else prev
        console.print(t)
        return 0
    entries = store.runs(tags=tags, name=args.name, limit=args.limit)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1, sort_keys=True, default=str))
        return 0
    t = Table(title=f"runs in {store.path}")
    for col in ("started", "name", "run", "device", "tags", *_COLUMNS):
        t.add_column(col)
    for e in entries:
        t.add_row(e.started_at, e.name, e.run_id, e.device or "", ",".join(f"{k}={v}" for k, v in e.tags.items()),
                  *(format_value(c, e.figures.get(c)) for c in _COLUMNS))
    console.print(t)
    if not entries:
        console.print("no runs recorded; add one with: genprof history add RUN.json", highlight=False)
    return 0
