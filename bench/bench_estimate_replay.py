"""Peak reserved predicted two ways against the measured GPU results: fitted factors vs allocator replay.

Offline (no GPU): reads the measured cases of ``bench/results/estimate_h100_seq.json`` (written
on the lent H100 by ``bench_estimate.py --sequence``: every phase measured alone from an emptied
cache, and the three phases again one after another as a pipeline call runs them), predicts each
case with ``estimate(..., reserved_method="replay")`` (whose phases also carry the factor figure),
and reports per case and phase: measured, factor prediction, replay prediction and their errors,
for the whole-call sequence (what a pipeline call does, what the replay models). Then the
leave-one-family-out error of the fitted factors on the phases measured alone: refit the
reserved factors (``fit_calibration``) on every family but one and predict that one.

    PYTHONPATH=src python bench/bench_estimate_replay.py --out bench/results/estimate_replay_offline.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_estimate import CASES  # noqa: E402

from genprof.planning.estimate import estimate, fit_calibration, reserved_model  # noqa: E402

GiB = 1024**3
FAMILY = {"sd1.5": "sd", "sdxl": "sd", "flux.1-schnell": "flux", "wan2.1-1.3b": "wan", "wan2.2-5b": "wan",
          "cogvideox-2b": "cogvideox", "hunyuanvideo": "hunyuan"}


def _pct(pred: float, meas: float) -> float:
    return 100.0 * (pred - meas) / meas


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "bench/results/estimate_h100_seq.json"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: every measured case)")
    args = ap.parse_args()
    data = json.loads(Path(args.data).read_text())
    want = set(args.cases.split(",")) if args.cases else None
    rows: list[dict[str, Any]] = []
    lofo_cases: list[dict[str, Any]] = []
    for c in data["cases"]:
        name = c["case"]
        if "sequence" not in c or (want and name not in want):
            continue
        model, kw = CASES[name]
        t0 = time.perf_counter()
        est = estimate(model, **kw, reserved_method="replay")
        dt = time.perf_counter() - t0
        row: dict[str, Any] = {"case": name, "family": FAMILY[model], "estimate_s": round(dt, 1), "phases": {}}
        for ph in est.phases:
            meas = c["sequence"][ph.name]["measured_reserved_bytes"]
            fac, rep = ph.detail["reserved_factor_bytes"], ph.peak_reserved_bytes
            row["phases"][ph.name] = {"measured": meas, "factor": fac, "replay": rep,
                                      "factor_err_pct": round(_pct(fac, meas), 2), "replay_err_pct": round(_pct(rep, meas), 2)}
        m = max(v["measured"] for v in row["phases"].values())
        f = max(v["factor"] for v in row["phases"].values())
        r = max(v["replay"] for v in row["phases"].values())
        row.update(measured_peak=m, factor_peak=f, replay_peak=r, factor_err_pct=round(_pct(f, m), 2),
                   replay_err_pct=round(_pct(r, m), 2))
        rows.append(row)
        print(f"{name:27s} measured {m / GiB:6.2f} GiB  factor {f / GiB:6.2f} ({row['factor_err_pct']:+5.1f}%)  "
              f"replay {r / GiB:6.2f} ({row['replay_err_pct']:+5.1f}%)   [{dt:.0f} s]", flush=True)
        for pn, v in row["phases"].items():
            print(f"    {pn:12s} measured {v['measured'] / GiB:6.2f}  factor {v['factor_err_pct']:+5.1f}%  "
                  f"replay {v['replay_err_pct']:+5.1f}%")
        # the factor path's inputs, for the leave-one-family-out refit (phases measured alone)
        pred = est.to_dict()
        lofo_cases.append({"case": name, "family": FAMILY[model], "predicted": pred, "phases": {
            ph.name: {"predicted": pred["phases"][i], "measured_reserved_bytes": c["phases"][ph.name]["measured_reserved_bytes"]}
            for i, ph in enumerate(est.phases)}})
    lofo = []
    for fam in sorted({c["family"] for c in lofo_cases}):
        cal = fit_calibration([c for c in lofo_cases if c["family"] != fam])
        for c in (c for c in lofo_cases if c["family"] == fam):
            for pn, ph in c["phases"].items():
                pred = reserved_model(c, pn, cal)
                lofo.append({"case": c["case"], "phase": pn, "left_out": fam, "measured": ph["measured_reserved_bytes"],
                             "predicted": pred, "err_pct": round(_pct(pred, ph["measured_reserved_bytes"]), 2)})
    worst = max(lofo, key=lambda x: abs(x["err_pct"])) if lofo else None
    if worst:
        print(f"factor path, leave one family out (phases alone): worst {worst['err_pct']:+.1f}% "
              f"({worst['case']} {worst['phase']}, {worst['left_out']} left out)")
    for key in ("factor_err_pct", "replay_err_pct"):
        if rows:
            print(f"{key}: worst |err| {max(abs(r[key]) for r in rows):.1f}%, "
                  f"worst phase |err| {max(abs(v[key]) for r in rows for v in r['phases'].values()):.1f}%")
    if args.out:
        Path(args.out).write_text(json.dumps({"measured": args.data, "device": data.get("device"),
                                              "date": time.strftime("%Y-%m-%d"), "cases": rows,
                                              "factor_leave_one_family_out": lofo}, indent=1))


if __name__ == "__main__":
    main()
