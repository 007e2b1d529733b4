"""GIVEN a calibration saved by genprof tune for a model on a GPU WHEN the planner plans that model
for that GPU THEN it uses the measured step time and says so; another GPU or use_calibration=False
keeps the assumptions."""

from __future__ import annotations

from pathlib import Path

import pytest

import genprof
from genprof.tune.calibration import save_calibration
from genprof.tune.recipes import parse_recipe
from genprof.tune.result import CandidateResult, TuneResult

GiB = 1 << 30


def _calibrate(model: str, gpu: str, step_s: float) -> None:
    base = CandidateResult(parse_recipe("default"), status="ok", median_s=10 * step_s,
                           observations={"phase_s": {"denoise": 10 * step_s, "vae_decode": 0.5}})
    save_calibration(TuneResult(model=model, gpu=gpu, device="cuda", budget_bytes=None,
                                generation={"num_inference_steps": 10}, candidates=[base]))


def test_the_planner_reads_the_measured_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path))
    kw = dict(height=512, width=512, num_inference_steps=10)
    before = genprof.plan("sd1.5", 24 * GiB, gpu_name="NVIDIA H200", **kw)
    _calibrate("sd1.5", "NVIDIA H200", step_s=7.0)
    after = genprof.plan("sd1.5", 24 * GiB, gpu_name="NVIDIA H200", **kw)
    assert any("genprof tune" in a for a in after.assumptions)
    assert not any("genprof tune" in a for a in before.assumptions)
    assert after.chosen.time_s > before.chosen.time_s  # 7 s a step is far slower
    other = genprof.plan("sd1.5", 24 * GiB, gpu_name="NVIDIA H100", **kw)
    off = genprof.plan("sd1.5", 24 * GiB, gpu_name="NVIDIA H200", use_calibration=False, **kw)
    assert other.chosen.time_s == off.chosen.time_s == before.chosen.time_s
