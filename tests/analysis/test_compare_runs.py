from __future__ import annotations

import json
import random

import pytest
from synth import GiB, make_run

from genprof.analysis.compare import bootstrap_pct_change, compare


def _noisy(n: int, mean: float, rel: float, seed: int) -> list[float]:
    rnd = random.Random(seed)
    return [mean * (1 + rel * rnd.uniform(-1, 1)) for _ in range(n)]


def test_real_speedup_is_significant() -> None:
    # GIVEN steps 20% faster after, with 5% noise
    a = make_run(step_times=_noisy(30, 0.10, 0.05, 1), run_id="a")
    b = make_run(step_times=_noisy(30, 0.08, 0.05, 2), run_id="b", decode_peak_bytes=8 * GiB)
    c = compare(a, b)
    step = c.overall_change("step_time_mean_s")
    assert step is not None
    assert step.better and step.significant
    assert step.change_pct is not None and -25 < step.change_pct < -15
    assert step.ci_low_pct is not None and step.ci_high_pct is not None
    assert step.ci_low_pct < step.change_pct < step.ci_high_pct < 0
    assert step.factor == pytest.approx(step.before / step.after)  # type: ignore[operator]
    den = c.phase("generation/denoise")
    assert den is not None and den.time.significant is True
    assert den.time.note == "interval from the step times inside the phase"
    assert c.phase("generation/decode").peak_reserved.better  # type: ignore[union-attr]
    assert not c.warnings


def test_noise_is_not_called_a_change() -> None:
    a = make_run(step_times=_noisy(30, 0.10, 0.10, 3), run_id="a")
    b = make_run(step_times=_noisy(30, 0.10, 0.10, 4), run_id="b")
    step = compare(a, b).overall_change("step_time_mean_s")
    assert step is not None and step.significant is False
    assert "within noise" in step.verdict


def test_single_samples_have_no_interval() -> None:
    a = make_run(generations=1, run_id="a")
    b = make_run(generations=1, run_id="b", step_s=0.05)
    g = compare(a, b).overall_change("generation_time_s")
    assert g is not None and g.better and g.significant is None
    assert g.samples_before == 1


def test_bootstrap_is_deterministic() -> None:
    xa, xb = _noisy(20, 1.0, 0.1, 5), _noisy(20, 0.9, 0.1, 6)
    assert bootstrap_pct_change(xa, xb) == bootstrap_pct_change(xa, xb)
    assert bootstrap_pct_change([1.0], xb) is None


def test_warns_on_different_models_shapes_and_devices() -> None:
    a = make_run(run_id="a", tags={"model": "flux-dev", "height": 1024, "user": "x"})
    b = make_run(run_id="b", tags={"model": "sdxl", "height": 768, "user": "x"}, gpu_name="NVIDIA A100",
                 steps=30)
    fields = {w["field"] for w in compare(a, b).warnings}
    assert {"model", "shape.height", "device", "shape.steps_per_generation"} <= fields
    assert "tag.user" not in fields


def test_missing_figures_are_not_comparable_with_reason() -> None:
    a = make_run(run_id="a", gpu=False)
    b = make_run(run_id="b")
    c = compare(a, b)
    pk = c.overall_change("peak_reserved_bytes")
    assert pk is not None and pk.before is None and pk.delta is None
    assert pk.verdict == "not comparable" and pk.note and "before" in pk.note


def test_to_dict_is_json() -> None:
    a = make_run(run_id="a")
    b = make_run(run_id="b", step_s=0.09)
    d = compare(a, b).to_dict()
    s = json.dumps(d, allow_nan=False)
    assert json.loads(s)["format"] == "genprof.comparison"
    assert {p["path"] for p in d["phases"]} >= {"load", "generation", "generation/denoise"}
    assert "bootstrap" in d["method"]
