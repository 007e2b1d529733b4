"""Rules on the device: a host-bound loop and throttling; each fires on one run, stays quiet on another."""

from __future__ import annotations

import pytest
from rule_cases import fires
from synth import make_run

from genprof.analysis.rules import device


# ------------------------------------------------------------------ host-bound
def test_gpu_idle_fires_on_low_utilization_during_steps() -> None:
    run = make_run(steps=20, step_s=0.1, utilization_pct=[30, 40, 35])
    f = fires(device.rule_gpu_idle_between_steps, run)
    assert 30 <= f.numbers["mean_utilization_pct"] <= 40


def test_gpu_idle_quiet_when_busy_or_no_series_or_cpu() -> None:
    assert device.rule_gpu_idle_between_steps(make_run(utilization_pct=[97, 99])) is None
    assert device.rule_gpu_idle_between_steps(make_run()) is None
    assert device.rule_gpu_idle_between_steps(make_run(gpu=False)) is None


# ------------------------------------------------------------------ throttling
def test_throttling_decodes_power_and_thermal_bits() -> None:
    # 0x4 sw power cap from t=0.5, 0x20|0x4 later, cleared at t=1.5 (run is ~4.4 s long)
    run = make_run(steps=20, step_s=0.1, clock_reasons=[(0.0, 0), (0.5, 0x4), (1.0, 0x24), (1.5, 0x1)])
    f = fires(device.rule_throttling, run)
    kinds = {r["kind"] for r in f.numbers["reasons"]}
    assert kinds == {"power", "thermal"}
    power = next(r for r in f.numbers["reasons"] if r["kind"] == "power")
    assert power["seconds"] == pytest.approx(1.0)


def test_throttling_ignores_idle_and_short_blips() -> None:
    assert device.rule_throttling(make_run(clock_reasons=[(0.0, 0x1), (1.0, 0)])) is None  # gpu_idle only
    assert device.rule_throttling(make_run(clock_reasons=[(0.0, 0), (1.0, 0x4), (1.01, 0)])) is None
    assert device.rule_throttling(make_run()) is None
