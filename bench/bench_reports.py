"""Report rendering benchmark: a synthetic one-hour run sampled at 10 Hz.

Builds the run with ``tests/render/runs.py`` (8 series of 36,000 points, about 3,000 spans),
times the HTML report (cold: first render in the process, including reading plotly.js; warm:
median of the next renders), the Perfetto trace, and one live-view refresh, and measures file
sizes. Writes the figures as JSON to ``--out`` and prints a short table. CPU only.

    python bench/bench_reports.py --out bench_reports.json [--screenshot docs/images/report.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _runs_module():
    spec = importlib.util.spec_from_file_location("genprof_bench_runs", ROOT / "tests" / "render" / "runs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def screenshot(html: Path, png: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--screenshot needs chromium (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as prof:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={prof}", "--window-size=1400,2300", "--hide-scrollbars",
             "--virtual-time-budget=15000", f"--screenshot={png}", html.as_uri()],
            check=True, capture_output=True, timeout=180,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="write the figures as JSON here")
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshot", help="also save a screenshot of a small demo report (PNG)")
    args = ap.parse_args()

    from genprof.render.html import render_html, write_html
    from genprof.render.live import render_cost
    from genprof.render.trace import write_trace

    runs = _runs_module()
    t0 = time.perf_counter()
    run = runs.make_long_run(hours=args.hours, sample_hz=args.hz)
    build_s = time.perf_counter() - t0
    points = sum(len(s.values) for s in run.series)

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        html = write_html(run, d / "r.html", findings=[])
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            write_html(run, d / "r.html", findings=[])
            warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        page_with_rules = render_html(run)
        rules_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        trace = write_trace(run, d / "r.trace.json")
        trace_s = time.perf_counter() - t0
        run_file = run.save(d / "r.json")
        sizes = {"html_bytes": html.stat().st_size, "trace_bytes": trace.stat().st_size,
                 "run_file_bytes": run_file.stat().st_size, "html_with_rules_bytes": len(page_with_rules.encode())}

    snap = {"name": "x", "elapsed_s": 3.2, "phase": "denoise", "step_index": 4, "steps_done": 5, "steps_total": 50,
            "step_rate_per_s": 2.5, "eta_s": 18.0,
            "gpu": {"name": "NVIDIA H100 80GB HBM3", "memory_used_bytes": 30 * 2**30, "memory_total_bytes": 80 * 2**30,
                    "utilization_pct": 97.0, "power_w": 650.0, "temperature_c": 71.0},
            "allocated_bytes": 25 * 2**30, "reserved_bytes": 28 * 2**30, "cpu_pct": 12.0, "rss_bytes": 3 * 2**30}
    live = render_cost(lambda: snap, repeats=500)

    result = {
        "machine": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "run": {"hours": args.hours, "sample_hz": args.hz, "series": len(run.series), "points": points,
                "spans": len(run.spans), "build_s": build_s},
        "html_render_cold_s": cold,
        "html_render_warm_median_s": statistics.median(warm),
        "html_render_with_rules_s": rules_s,
        "trace_write_s": trace_s,
        "live_refresh_s": live["per_refresh_s"],
        "live_share_at_1s_interval_pct": 100.0 * live["per_refresh_s"] / 1.0,
        **sizes,
        "targets": {"html_render_s": 3.0, "html_bytes": 8_000_000},
    }
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")

    mb = 1e6
    rows = [
        ("run", f"{args.hours:g} h at {args.hz:g} Hz: {len(run.series)} series, {points} points, {len(run.spans)} spans"),
        ("HTML render, cold", f"{cold:.2f} s (target < 3 s)"),
        ("HTML render, warm median", f"{statistics.median(warm):.2f} s"),
        ("HTML render with analysis rules", f"{rules_s:.2f} s"),
        ("HTML size", f"{sizes['html_bytes'] / mb:.2f} MB (target < 8 MB)"),
        ("trace write", f"{trace_s:.2f} s"),
        ("trace size", f"{sizes['trace_bytes'] / mb:.1f} MB"),
        ("run file size", f"{sizes['run_file_bytes'] / mb:.1f} MB"),
        ("live view, one refresh", f"{live['per_refresh_s'] * 1e3:.2f} ms"),
    ]
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a.ljust(w)}  {b}")
    print(f"machine: {result['machine']['cpu']} ({result['machine']['cpus']} CPUs)")

    if args.screenshot:
        demo = runs.make_run(generations=3, steps=12, name="wan-t2v-demo")
        with tempfile.TemporaryDirectory() as tmp:
            page = write_html(demo, Path(tmp) / "demo.html")
            screenshot(page, Path(args.screenshot))
        print(f"screenshot: {args.screenshot}")
    ok = cold < 3.0 and sizes["html_bytes"] < 8_000_000
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
