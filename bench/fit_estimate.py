"""Fit the estimator's allocator constants on measured cases; report in-sample and leave-one-out errors.

Pure CPU arithmetic on the JSON that ``bench/bench_estimate.py`` writes (no GPU, no re-tracing:
the predicted parts of every phase are in the file and do not depend on the constants)::

    python bench/fit_estimate.py --data bench/results/estimate_h100_uncalibrated.json [--out cal.json]

The model (``genprof.planning.estimate.reserved_model``) for the peak reserved bytes of a phase is

    reserved = max(weights_reserved_factor * Wr,  Wr + kept + reserved_factor[phase] * activations + workspace)

``Wr`` is the weights as the allocator packs them, ``kept`` the tensors held across the phase.
The first term is the weights' own segments (free space inside them is reused by activations
first); the second is what activations add once they outgrow that free space. Leave-one-out:
for each case, fit on the other cases and predict the left-out case's peak.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from genprof.planning.estimate import CALIBRATION, fit_calibration, reserved_model

GiB = 1024**3


def predict_peak(case: dict[str, Any], cal: dict[str, float]) -> int:
    return max(reserved_model(case, phase, cal) for phase in case["phases"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="JSON written by bench/bench_estimate.py")
    ap.add_argument("--out", default=None, help="write the fitted constants here (JSON, usable as GENPROF_CALIBRATION)")
    args = ap.parse_args()
    with open(args.data, encoding="utf-8") as fh:
        data = json.load(fh)
    cases = [c for c in data["cases"] if "phases" in c]
    skipped = [c["case"] for c in data["cases"] if "phases" not in c]
    cal = fit_calibration(cases)
    rows = []
    for i, c in enumerate(cases):
        loo_cal = fit_calibration(cases[:i] + cases[i + 1:])
        meas = c["measured_peak_reserved_bytes"]
        ins, loo = predict_peak(c, cal), predict_peak(c, loo_cal)
        old = c["predicted"]["peak_reserved_bytes"]
        rows.append({"case": c["case"], "measured_bytes": meas, "predicted_bytes": ins, "predicted_loo_bytes": loo,
                     "uncalibrated_bytes": old,
                     "error_pct": 100.0 * (ins - meas) / meas, "error_loo_pct": 100.0 * (loo - meas) / meas,
                     "error_uncalibrated_pct": 100.0 * (old - meas) / meas})
    print(f"data: {args.data} ({data.get('device')}, torch {data.get('torch')}); {len(cases)} cases"
          + (f"; skipped (no measurement): {', '.join(skipped)}" if skipped else ""))
    print(f"{'case':28s} {'measured':>9s} {'predicted':>9s} {'err':>7s} {'LOO pred':>9s} {'err LOO':>8s} {'uncal':>7s}")
    for r in rows:
        print(f"{r['case']:28s} {r['measured_bytes'] / GiB:8.2f}G {r['predicted_bytes'] / GiB:8.2f}G "
              f"{r['error_pct']:+6.1f}% {r['predicted_loo_bytes'] / GiB:8.2f}G {r['error_loo_pct']:+7.1f}% "
              f"{r['error_uncalibrated_pct']:+6.1f}%")
    worst = max(abs(r["error_pct"]) for r in rows)
    worst_loo = max(abs(r["error_loo_pct"]) for r in rows)
    rms = math.sqrt(sum(r["error_pct"] ** 2 for r in rows) / len(rows))
    print(f"max |error| in-sample {worst:.1f}%, leave-one-out {worst_loo:.1f}%; rms in-sample {rms:.1f}%")
    print("constants: " + ", ".join(f"{k}={v:g}" for k, v in cal.items() if cal[k] != CALIBRATION.get(k)) or "unchanged")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"calibration": cal, "data": args.data, "device": data.get("device"), "torch": data.get("torch"),
                       "rows": rows, "max_abs_error_pct": worst, "max_abs_error_loo_pct": worst_loo}, fh, indent=1)


if __name__ == "__main__":
    main()
