"""Render a tuning result (the ``tune.json`` dict): an 80-column console table and an offline HTML page.

Takes the plain dict (``TuneResult.to_dict()`` or the file), so the render layer never imports
``genprof.tune``. The HTML page has the table and a speed / memory / quality scatter (plotly,
its JavaScript inlined: no network needed to open it).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from genprof.units import format_bytes


def _q(c: dict[str, Any]) -> str:
    q = c.get("quality") or {}
    p = q.get("psnr")
    if p is None:
        return "n/a"
    if p == float("inf"):  # the baseline itself, or an output identical to it
        return "base" if q.get("reason") == "the baseline itself" else "same"
    return f"{p:.1f}"


def _t(c: dict[str, Any]) -> str:
    m, ci = c.get("median_s"), c.get("ci_s")
    if m is None:
        return "-"
    return f"{m:.3g}" + (f" [{ci[0]:.3g},{ci[1]:.3g}]" if ci else "")


def rows(data: dict[str, Any]) -> list[list[str]]:
    """Table rows: candidate, status, median [95% CI] s, predicted s, peak, predicted peak, PSNR, compile s."""
    out = []
    again = data.get("baseline_again")
    for c in [*data.get("candidates", []), *([{**again, "again": True}] if again else [])]:
        pr = c.get("predicted_time_s")
        comp = c.get("compile_s")
        name = c["recipe"]["name"] + (" (measured again, last)" if c.get("again") else "")
        out.append([
            name, c.get("status", "?"), _t(c), "-" if pr is None else f"{pr:.3g}",
            format_bytes(c["peak_reserved_bytes"]) if c.get("peak_reserved_bytes") else "n/a",
            format_bytes(c["predicted_peak_reserved_bytes"]) if c.get("predicted_peak_reserved_bytes") else "-",
            _q(c), "-" if comp is None else f"{comp:.1f}",
        ])
    return out


def notes(data: dict[str, Any]) -> list[str]:
    """Why a candidate did not run or has no quality figure: one line each, for the table's n/a and -."""
    out = []
    for c in data.get("candidates", []):
        name = c["recipe"]["name"]
        if c.get("reason") and c.get("status") != "ok":
            out.append(f"{name}: {c['reason']}")
        elif c.get("status") == "ok" and (c.get("quality") or {}).get("psnr") is None:
            why = (c.get("quality") or {}).get("reason") or "not measured"
            out.append(f"{name}: no quality figure ({why})")
    return out


HEADERS = ["candidate", "status", "median s [95% CI]", "pred s", "peak", "pred peak", "PSNR", "compile s"]


def console_table(data: dict[str, Any], console: Any = None) -> None:
    """Print the table with rich (folds to 80 columns), then best, speed-up, Spearman and skipped candidates."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console(width=80)
    t = Table(title=f"genprof tune: {data.get('model') or '?'} on {data.get('gpu') or data.get('device')}",
              show_lines=False, pad_edge=False)
    for h in HEADERS:
        t.add_column(h, overflow="fold")
    for r in rows(data):
        t.add_row(*r)
    con.print(t)
    best, sp = data.get("best"), data.get("speedup")
    con.print(f"best: {best or 'none'}" + (f" ({sp:.2f}x the default)" if sp else "") + f"; status {data.get('status')}")
    if data.get("baseline_drift") is not None:
        con.print(f"baseline drift: the default measured again last ran {data['baseline_drift']:+.1%} against "
                  "its first measurement; a candidate is chosen only when faster than every call of both")
    if data.get("isolation"):
        why = data.get("isolation_reason")
        con.print(f"isolation: {data['isolation']}" + (f" ({why})" if why else ""), markup=False)
    if data.get("spearman") is not None:
        con.print(f"planner ranking vs measured: Spearman {data['spearman']:.2f} over {data.get('spearman_n')} candidates")
    elif data.get("spearman_note"):
        con.print(f"planner ranking: {data['spearman_note']}")
    for line in notes(data):
        con.print(f"  {line}", markup=False)
    for s in data.get("skipped", []):
        con.print(f"  skipped {s['name']}: {s['reason']}", markup=False)


def to_html(data: dict[str, Any]) -> str:
    """A standalone page: the table and, with plotly installed, the speed/memory/quality scatter."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows(data))
    skipped = "".join(f"<li>{html.escape(s['name'])}: {html.escape(s['reason'])}</li>" for s in data.get("skipped", []))
    skipped = f"<h2>Skipped</h2><ul>{skipped}</ul>" if skipped else ""
    why = "".join(f"<li>{html.escape(line)}</li>" for line in notes(data))
    skipped = (f"<h2>Notes</h2><ul>{why}</ul>" if why else "") + skipped
    plot = "<p>The scatter needs plotly (pip install genprof[html]).</p>"
    try:
        import plotly.graph_objects as go
    except ImportError:
        go = None
    if go is not None:
        timed = [c for c in data.get("candidates", []) if c.get("median_s") is not None]
        # a peak that was not measured (the CPU) has no place on a memory axis: such candidates
        # are plotted by name instead when none has a peak, else listed under the plot
        ok = [c for c in timed if c.get("peak_reserved_bytes")] or timed
        by_name = not any(c.get("peak_reserved_bytes") for c in ok)
        unplotted = [c["recipe"]["name"] for c in timed if c not in ok]
        xs = [c["median_s"] for c in ok]
        ys: list[Any] = [c["recipe"]["name"] if by_name else c["peak_reserved_bytes"] / 2**30 for c in ok]
        qs = [((c.get("quality") or {}).get("psnr")) for c in ok]
        colors = [60.0 if q == float("inf") else q for q in qs]
        # one trace per candidate: the legend names them and hovering gives the figures (names
        # printed beside the markers ran into each other where candidates measure about the same)
        symbols = ("circle", "square", "diamond", "cross", "x", "triangle-up", "triangle-down", "star",
                   "hexagon", "pentagon")
        fig = go.Figure()
        for i, c in enumerate(ok):
            name = c["recipe"]["name"]
            q = qs[i]
            quality = "identical" if q == float("inf") else ("n/a" if q is None else f"{q:.1f} dB")
            peak = "not measured" if by_name else f"{ys[i]:.2f} GiB"
            fig.add_trace(go.Scatter(
                x=[xs[i]], y=[ys[i]], mode="markers", name=name,
                hovertemplate=f"{html.escape(name)}<br>%{{x:.3f}} s<br>peak {peak}<br>PSNR {quality}<extra></extra>",
                marker={"size": 13, "symbol": symbols[i % len(symbols)], "line": {"width": 1, "color": "#333"},
                        "color": [colors[i] if colors[i] is not None else 0], "coloraxis": "coloraxis"},
            ))
        # 60 dB and above (identical output included) is the top of the scale: no eye tells them apart
        fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": 20.0, "cmax": 60.0,
                                     "showscale": any(c is not None for c in colors),
                                     "colorbar": {"title": "PSNR dB<br>(60: 60+ or<br>identical)", "x": 1.02}},
                          legend={"title": {"text": "candidate"}, "x": 1.15})
        fig.update_layout(xaxis_title="median time per generation (s)",
                          yaxis_title="candidate (peak memory not measured here)" if by_name else "peak reserved (GiB)",
                          title="speed / memory / quality")
        plot = fig.to_html(full_html=False, include_plotlyjs=True)
        if unplotted:
            plot += f"<p>Not in the scatter (peak not measured): {html.escape(', '.join(unplotted))}.</p>"
    summary = html.escape(
        f"best: {data.get('best') or 'none'}; speed-up over the default: "
        f"{'n/a' if data.get('speedup') is None else format(data['speedup'], '.2f') + 'x'}; Spearman (predicted vs measured): "
        f"{'n/a' if data.get('spearman') is None else format(data['spearman'], '.2f')}; status {data.get('status')}"
        + ("" if data.get("baseline_drift") is None else
           f"; the default measured again last: {data['baseline_drift']:+.1%} against its first measurement"))
    title = html.escape(f"genprof tune: {data.get('model') or '?'} on {data.get('gpu') or data.get('device')}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>"
            f"</head><body><h1>{title}</h1><p>{summary}</p><table><tr>{head}</tr>{body}</table>"
            f"{skipped}{plot}</body></html>")


def render_tune(path_in: str | os.PathLike[str], html_out: str | os.PathLike[str]) -> Path:
    """Read ``tune.json`` and write the HTML page (for ``genprof report tune.json --html tune.html``)."""
    from genprof.errors import RunFileError

    try:
        data = json.loads(Path(path_in).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunFileError(f"cannot read tune result {path_in}: {e}") from e
    if not str(data.get("schema", "")).startswith("genprof.tune/"):
        raise RunFileError(f"{path_in} is not a genprof tune result (schema {data.get('schema')!r})")
    p = Path(html_out)
    p.write_text(to_html(data), encoding="utf-8")
    return p
