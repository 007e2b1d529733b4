"""``genprof report RUN.json [--html OUT.html] [--trace OUT.trace.json] [--json OUT.report.json]``.

With no output flag, writes ``RUN.html`` next to the run file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "report",
        help="write the HTML report, a Perfetto trace or a JSON report of a saved run",
        description=(
            "Render a saved run file. With no output flag, writes RUN.html next to RUN.json. "
            "The trace opens in https://ui.perfetto.dev or chrome://tracing."
        ),
    )
    p.add_argument("run_file", metavar="RUN.json", help="run file written by genprof")
    p.add_argument("--html", metavar="OUT.html", help="write the self-contained HTML report here")
    p.add_argument("--trace", metavar="OUT.trace.json", help="write a Chrome Trace Event / Perfetto JSON file here")
    p.add_argument("--json", dest="json_report", metavar="OUT.report.json", help="write the JSON report here")
    p.add_argument(
        "--compare",
        metavar="BASELINE.json",
        help="add a comparison with this baseline run to the HTML report (needs genprof.analysis.compare)",
    )
    p.set_defaults(func=run)


def _comparison(baseline_path: str, run: Any) -> dict[str, Any]:
    from genprof.errors import UsageError
    from genprof.model import load_run

    baseline = load_run(baseline_path)
    try:
        from genprof.analysis.compare import compare
    except ModuleNotFoundError as exc:
        if exc.name == "genprof.analysis.compare":
            raise UsageError("--compare needs genprof.analysis.compare, which this genprof build lacks") from exc
        raise
    result: Any = compare(baseline, run)
    data = result.to_dict() if hasattr(result, "to_dict") else result
    if not isinstance(data, dict):
        raise UsageError(f"genprof.analysis.compare returned {type(result).__name__}, not a dict")
    return data


def run(args: argparse.Namespace) -> int:
    from genprof.model import atomic_write_text, load_run
    from genprof.render.html import write_html
    from genprof.render.reports import render_json_report
    from genprof.render.trace_merge import write_merged_trace

    src = Path(args.run_file)
    if _is_tune_result(src):  # genprof tune's result: its own table and page
        return _report_tune(src, args.html)
    the_run = load_run(src)
    html, trace, json_report = args.html, args.trace, args.json_report
    if not (html or trace or json_report):
        html = str(src.with_suffix(".html")) if src.suffix == ".json" else str(src) + ".html"
    written: list[Path] = []
    if html:
        comparison = _comparison(args.compare, the_run) if args.compare else None
        advice = None
        if the_run.end.status == "oom":
            from genprof.planning.oom import explain_oom

            advice = explain_oom(the_run)
        written.append(write_html(the_run, html, comparison=comparison, oom_advice=advice))
    if trace:
        written.append(write_merged_trace(the_run, trace))  # the plain trace without a diagnose window
    if json_report:
        p = Path(json_report)
        atomic_write_text(p, render_json_report(the_run) + "\n")
        written.append(p)
    for p in written:
        print(p)
    return 0


def _is_tune_result(src: Path) -> bool:
    """Whether ``src`` is a ``genprof tune`` result (schema ``genprof.tune/N``), read cheaply."""
    try:
        with src.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False  # load_run reports the unreadable file with its own clear error
    return b'"genprof.tune/' in head


def _report_tune(src: Path, html: str | None) -> int:
    from genprof.render.tune_html import console_table, to_html
    from genprof.tune.result import load_tune

    # read through the result model, so best, speed-up and drift follow from the measurements
    # by the current rule, whatever genprof wrote the file
    data = load_tune(src).to_dict()
    if html:
        out = Path(html)
        out.write_text(to_html(data), encoding="utf-8")
        print(out)
        return 0
    console_table(data)
    return 0
