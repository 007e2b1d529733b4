"""The self-contained HTML report.

One file that opens offline: the page is one Jinja2 template (autoescaped) fed one JSON blob
(sorted keys, so output is deterministic), with plotly.js's basic partial bundle
(vendored beside the templates) inlined (no CDN). Charts are drawn in the browser from the blob by ``templates/report.js``;
tables are rendered on the server so the page is readable without JavaScript.

Three modules, one concern each: this one assembles the page (template, context, inlined
resources); :mod:`genprof.render.html_data` builds the JSON blob the charts are drawn from;
:mod:`genprof.render.html_tables` formats the server-rendered cards and tables. The names
tests and callers use are re-exported here.

Escaping: every string from the run (names, tags, attributes, messages) is escaped by Jinja's
autoescape in HTML, and by :func:`embed_json` in the blob (``<``, ``>`` and ``&`` as ``\\uXXXX``,
so neither ``</script>`` nor ``<!--`` can end the script element). The chart code escapes
strings again before handing them to plotly, which otherwise reads a few HTML tags in labels.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from genprof._version import __version__
from genprof.analysis.findings import Finding
from genprof.analysis.summary import phase_table
from genprof.errors import MissingDependencyError
from genprof.model import Run, atomic_write_text
from genprof.render.html_data import (
    MAX_EVENTS_TABLE,
    MAX_GANTT_SPANS,
    MAX_SERIES_POINTS,
    MAX_SHADED_PHASES,
    WARMUP_STEPS,
    decimate_minmax,
    report_data,
)
from genprof.render.html_tables import (
    VIDEO_CARDS,
    cards,
    comparison_ctx,
    end_ctx,
    flatten,
    oom_advice_lines,
    phase_table_ctx,
    pipeline_rows,
    scalar,
)
from genprof.render.reports import collect_findings, json_default
from genprof.render.why import why_html
from genprof.units import format_bytes, format_seconds

__all__ = [
    "MAX_EVENTS_TABLE", "MAX_GANTT_SPANS", "MAX_SERIES_POINTS", "MAX_SHADED_PHASES", "PLOTLY_BASIC_BUNDLE",
    "VIDEO_CARDS", "WARMUP_STEPS", "decimate_minmax", "embed_json", "oom_advice_lines", "render_html",
    "report_data", "write_html",
]

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).parent / "templates"


def render_html(
    run: Run,
    *,
    findings: Iterable[Finding | Mapping[str, Any]] | None = None,
    comparison: Mapping[str, Any] | None = None,
    oom_advice: Mapping[str, Any] | None = None,
) -> str:
    """The report page as a string (see :func:`write_html`)."""
    found, note = collect_findings(run, findings)
    data = report_data(run, findings=found, findings_note=note, comparison=comparison)
    env = _jinja_env()
    template = env.get_template("report.html.j2")
    ctx = _context(run, data, found, note, comparison)
    ctx["oom_advice"] = oom_advice_lines(oom_advice)
    ctx["why"] = why_html(run)  # the diagnose window's section; None without one (escaped inside)
    return template.render(
        **ctx,
        data_json=embed_json(data),
        plotly_js=_plotly_js(),
        report_js=_static("report.js"),
        report_css=_static("report.css"),
    )


def write_html(
    run: Run,
    path: str | os.PathLike[str],
    *,
    findings: Iterable[Finding | Mapping[str, Any]] | None = None,
    comparison: Mapping[str, Any] | None = None,
    oom_advice: Mapping[str, Any] | None = None,
) -> Path:
    """Write the self-contained HTML report of ``run`` to ``path`` (atomically); returns the path.

    ``findings`` defaults to ``genprof.analysis.rules.run_rules(run)`` when that module exists
    (the page says when no rules ran). ``comparison`` (a dict, e.g. from
    ``genprof.analysis.compare``) adds a comparison section. ``oom_advice`` (from
    ``genprof.planning.oom.explain_oom``, computed by the caller: renderers sit below the planner)
    says, for a run that ran out of memory, what would have fit.
    """
    p = Path(path)
    atomic_write_text(p, render_html(run, findings=findings, comparison=comparison, oom_advice=oom_advice))
    log.info("wrote HTML report %s", p)
    return p


def embed_json(data: Any) -> str:
    """JSON text that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026`` (so ``</script>`` and
    ``<!--`` cannot appear), and U+2028/U+2029 are escaped too. ``JSON.parse`` reads it back
    unchanged.
    """
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False, default=json_default)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# ------------------------------------------------------------ server-side context
def _context(
    run: Run,
    data: Mapping[str, Any],
    found: list[Finding] | None,
    note: str | None,
    comparison: Mapping[str, Any] | None,
) -> dict[str, Any]:
    sev_order = {"critical": 0, "warning": 1, "info": 2}
    findings = None if found is None else sorted(found, key=lambda f: (sev_order.get(f.severity, 3), f.rule_id))
    devices = [
        " ".join(x for x in (g.name or f"GPU {g.index}", f"({format_bytes(g.total_memory_bytes)})") if x)
        for g in run.gpus
    ] or ["CPU only"]
    sw = [(k, v) for k, v in run.software.to_dict().items() if v is not None]
    gpus = [[(k, scalar(v)) for k, v in g.to_dict().items()] for g in run.gpus]
    host = [
        (k, format_bytes(v) if k.endswith("_bytes") else scalar(v)) for k, v in run.host.to_dict().items()
    ]
    return {
        "run": run,
        "title": f"genprof report: {run.name}",
        "version": __version__,
        "tags": [(str(k), scalar(v)) for k, v in sorted(run.tags.items(), key=lambda kv: str(kv[0]))],
        "end": end_ctx(run),
        "devices": devices,
        "software": sw,
        "cards": cards(data["summary"], run),
        "phases": phase_table_ctx(phase_table(run, by_pipeline=True), run),
        "pipelines": pipeline_rows(run),
        "findings": findings,
        "findings_note": note,
        "comparison": comparison_ctx(comparison),
        "events": data["events"],
        "events_total": len(run.events),
        "events_shown": min(len(run.events), MAX_EVENTS_TABLE),
        "fmt_t": format_seconds,
        "scalar": scalar,
        "gpus": gpus,
        "host": host,
        "distributed": None if run.distributed is None else list(run.distributed.to_dict().items()),
        "unavailable": sorted(run.unavailable.items()),
        "config": flatten(run.config),
        "metadata_json": json.dumps(run.metadata, sort_keys=True, indent=2, default=json_default)[:200_000],
        "has_series": bool(run.series),
        "has_steps": bool(data["steps"]["n"]),
        "has_blocks": bool(data["blocks"]["n"]),
        "warmup_steps": WARMUP_STEPS,
    }



# -------------------------------------------------------------------- resources
@lru_cache(maxsize=1)
def _jinja_env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=4)
def _static(name: str) -> str:
    return (_TEMPLATES / name).read_text(encoding="utf-8")


PLOTLY_BASIC_BUNDLE = "plotly-basic.min.js"
"""plotly.js's basic partial bundle (scatter, bar, pie; zoom and hover kept), minified, vendored
beside the templates (MIT licence in ``plotly-basic.LICENSE.txt``). The ``plotly`` Python
package ships only the full 4.8 MB bundle; the basic one is 1.2 MB and draws every chart of the
report (scatter lines, bar timelines, rectangle shapes)."""


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    basic = _TEMPLATES / PLOTLY_BASIC_BUNDLE
    if basic.is_file():
        js: str = basic.read_text(encoding="utf-8")
    else:  # a build without the vendored bundle: fall back to the plotly package's full one
        try:
            from plotly.offline import get_plotlyjs
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.split(".")[0] == "plotly":
                raise MissingDependencyError("plotly", "the HTML report", extra="html") from exc
            raise
        js = get_plotlyjs()
    # the bundle is inlined in a <script> element: it must not close it early
    return js.replace("</script", "<\\/script")
