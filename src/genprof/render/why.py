"""The HTML report's "Why" section: the diagnose window's figures as an HTML fragment.

:func:`why_data` gives the section's data (for a template); :func:`why_html` renders it as a
self-contained fragment (escaped, no script) that the report template can include as is.
Both return None when the run has no diagnose window.
"""

from __future__ import annotations

from html import escape
from typing import Any

from genprof.analysis.diagnose import analyze
from genprof.analysis.rules import DIAGNOSE_RULES, run_rules
from genprof.model import Run


def why_data(run: Run) -> dict[str, Any] | None:
    """The figures of :func:`genprof.analysis.diagnose.analyze` plus the window's findings."""
    a = analyze(run)
    if a is None:
        return None
    a["findings"] = [f.to_dict() for f in run_rules(run, DIAGNOSE_RULES)]
    return a


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ms(us: float | None) -> str:
    return "n/a" if us is None else f"{us / 1e3:.2f} ms"


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="why-table"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def _absent(what: str, reason: str | None) -> str:
    return f'<p class="why-absent">{escape(what)}: not measured ({escape(reason or "no data")}).</p>'


def why_html(run: Run) -> str | None:
    """The "Why" section as an HTML fragment, or None without a diagnose window."""
    a = why_data(run)
    if a is None:
        return None
    out = ['<section class="why" id="why"><h2>Why: diagnose window</h2>']
    status = "" if a["status"] == "ok" else f" ({escape(a['status'])}: {escape(a['status_reason'] or '')})"
    out.append(f"<p>Window {escape(a['window'])}, steps {escape(', '.join(map(str, a['steps'])) or 'none')}"
               f" on {escape(a['device_name'] or a['device'])}{status}.</p>")
    ov = a["overhead"]
    if ov.get("slowdown") is not None:
        out.append(f"<p>Inside the window the steps took {_pct(ov['slowdown'])} longer than {escape(ov['method'])} "
                   f"(median {ov['inside_median_s'] * 1e3:.2f} ms vs {ov['outside_median_s'] * 1e3:.2f} ms).</p>")
    costs = [f"{what} {ov[key] * 1e3:.1f} ms ({where})" for what, key, where in
             (("start", "start_cost_s", "in the step before the window"),
              ("stop and trace flush", "stop_cost_s", "in the step after it")) if ov.get(key) is not None]
    if costs:
        out.append(f"<p>torch.profiler's own costs, paid once outside the window's steps: {'; '.join(costs)}.</p>")
    if a["findings"]:
        out.append("<h3>Findings</h3><ul class=\"why-findings\">")
        for f in a["findings"]:
            out.append(f'<li class="sev-{escape(f["severity"])}"><b>{escape(f["title"])}</b><br>{escape(f["evidence"])}'
                       f'<br><i>{escape(f["suggestion"])}</i></li>')
        out.append("</ul>")
    if a["gpu_reason"]:
        out.append(_absent("GPU figures (idle, syncs, kernels)", a["gpu_reason"]))
        out.append(f"<p>{a['cpu_ops']} CPU ops recorded in the window.</p>")
    else:
        idle = a["idle"]
        out.append(f"<h3>GPU idle</h3><p>Idle {_pct(idle['idle_share'])} of {_ms(idle.get('wall_us'))}; "
                   f"verdict: {escape(str(idle.get('verdict')))}.</p>")
        out.append(_table(["step", "device time", "busy", "idle", "median kernel", "sync wait", "verdict"],
                          [[str(s["index"]), _ms(s["extent_us"]), _ms(s["busy_us"]), _pct(s["idle_share"]),
                            "n/a" if s["median_kernel_us"] is None else f"{s['median_kernel_us']:.1f} us",
                            _ms(s["sync_wait_us"]), s["verdict"]] for s in idle["steps"]]))
        if idle["gaps"]:
            out.append(_table(["gap", "host code during it", "ops"],
                              [[_ms(g["gap_us"]), "; ".join(g["frames"]) or "-", ", ".join(g["ops"]) or "-"]
                               for g in idle["gaps"]]))
        s = a["syncs"]
        if s.get("sites"):
            out.append("<h3>Host-device syncs</h3>")
            out.append(_table(["site", "op", "per step", "wait per step", "share of step"],
                              [[x["site"] or "?", x["op"] or ", ".join(x["calls"]), f"{x['per_step']:.3g}",
                                _ms(x["wait_per_step_us"]), _pct(x["share_of_step"])] for x in s["sites"]]))
        c = a["classes"]
        if c.get("classes"):
            out.append("<h3>GPU time by op class</h3>")
            out.append(_table(["class", "per step", "share", "kernels", "TFLOP/s", "of peak"],
                              [[n, _ms(r["gpu_us_per_step"]), _pct(r["share"]), str(r["kernels"]),
                                "n/a" if r.get("tflops") is None else f"{r['tflops']:.1f}",
                                _pct(r.get("peak_share"))] for n, r in c["classes"].items()]))
        m = a["modules"]
        if m.get("modules"):
            out.append("<h3>GPU time by module</h3>")
            out.append(_table(["module", "per step", "share"],
                              [[r["name"], _ms(r["gpu_us_per_step"]), _pct(r["share"])] for r in m["modules"][:40]]))
            out.append(_table(["block part", "per step", "share"],
                              [[r["name"], _ms(r["gpu_us_per_step"]), _pct(r["share"])] for r in m["children"][:20]]))
        else:
            out.append(_absent("GPU time by module", m.get("reason")))
        if a["top_kernels"]:
            out.append("<h3>Top kernels</h3>")
            out.append(_table(["kernel", "class", "calls", "total", "share"],
                              [[k["name"][:120], k["class"], str(k["calls"]), _ms(k["gpu_us"]), _pct(k["share"])]
                               for k in a["top_kernels"]]))
    comp = a["compile"]
    if comp.get("compiled"):
        out.append(f"<h3>torch.compile</h3><p>{comp['frames_compiled']} frames compiled in "
                   f"{comp['compile_time_s']:.2f} s; {len(comp['graph_breaks'])} graph break place(s), "
                   f"{len(comp['recompiles'])} recompile(s).</p>")
        if comp["graph_breaks"]:
            out.append(_table(["reason", "where", "count"],
                              [[g["reason"], f"{g['file']}:{g['line']}" if g["file"] else "?", str(g["count"])]
                               for g in comp["graph_breaks"]]))
        if comp["recompiles"]:
            out.append(_table(["function", "where", "failed guard"],
                              [[r["function"] or "?", f"{r['file']}:{r['line']}", r["reason"]] for r in comp["recompiles"]]))
    out.append("</section>")
    return "\n".join(out)


__all__ = ["why_data", "why_html"]
