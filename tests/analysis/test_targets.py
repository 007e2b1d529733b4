from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from synth import GiB, make_run

from genprof.analysis.targets import (
    FIGURES,
    Target,
    check_targets,
    parse_target,
    parse_targets,
)
from genprof.errors import UsageError


def test_parse_simple_targets() -> None:
    assert parse_target("generation_time_s<=5") == Target("generation_time_s", "<=", 5.0)
    assert parse_target("peak_reserved_bytes<=16GiB") == Target("peak_reserved_bytes", "<=", float(16 * GiB))
    assert parse_target(" output_fps >= 8 ") == Target("output_fps", ">=", 8.0)
    assert parse_target("step_time_p95_s<250ms").limit == pytest.approx(0.25)
    assert parse_target("energy_per_generation_j<=2kJ").limit == 2000.0
    assert parse_target("generation_time_s=<1min") == Target("generation_time_s", "<=", 60.0)


@pytest.mark.parametrize(
    "text, words",
    [
        ("generation_time<=5", ["unknown figure", "generation_time_s"]),
        ("generation_time_s 5", ["cannot read target"]),
        ("peak_reserved_bytes<=16 parsecs", ["unknown size unit"]),
        ("generation_time_s<=5GiB", ["cannot read the limit", "800ms"]),
        ("", ["cannot read target"]),
    ],
)
def test_bad_targets_name_the_problem(text: str, words: list[str]) -> None:
    with pytest.raises(UsageError) as ei:
        parse_target(text)
    for w in words:
        assert w in str(ei.value)


@given(
    name=st.sampled_from(sorted(n for n, f in FIGURES.items() if f.unit in ("s", "fps", "ratio"))),
    op=st.sampled_from(["<=", ">=", "<", ">"]),
    value=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
)
def test_parse_roundtrip_numbers(name: str, op: str, value: float) -> None:
    t = parse_target(f"{name}{op}{value!r}")
    assert t.figure == name and t.op == op
    assert math.isclose(t.limit, value, rel_tol=1e-12, abs_tol=0)


@given(st.text(max_size=40))
def test_parse_never_crashes_with_other_errors(text: str) -> None:
    try:
        parse_target(text)
    except UsageError:
        pass


def test_mapping_targets_use_the_figures_direction() -> None:
    ts = parse_targets({"generation_time_s": 5, "output_fps": 8, "peak_reserved_bytes": "16GiB"})
    assert ts == [
        Target("generation_time_s", "<=", 5.0),
        Target("output_fps", ">=", 8.0),
        Target("peak_reserved_bytes", "<=", float(16 * GiB)),
    ]


def test_holding_targets_score_100() -> None:
    run = make_run(steps=10, step_s=0.1)
    rep = check_targets(run, ["generation_time_s<=5", "peak_reserved_bytes<=16GiB"])
    assert rep.all_hold
    assert rep.score == 100.0
    r = rep.results[0]
    assert r.measured is not None and r.margin == pytest.approx(5 - r.measured)


def test_failed_time_target_names_the_phase_and_the_cut() -> None:
    # GIVEN one generation of 40 steps of 0.25 s (denoise ~10 s) and a 5 s target
    run = make_run(steps=40, step_s=0.25)
    rep = check_targets(run, ["generation_time_s<=5"])
    r = rep.results[0]
    assert r.status == "fail" and not rep.all_hold
    assert r.phase == "generation/denoise"
    assert r.measured is not None
    assert r.score == pytest.approx(round(100 * 5 / r.measured, 1))
    assert any("cutting 'generation/denoise' by" in d for d in r.diagnostics)
    assert r.margin is not None and r.margin < 0


def test_failed_memory_target_names_the_peak_phase() -> None:
    run = make_run(decode_peak_bytes=30 * GiB, denoise_peak_bytes=14 * GiB)
    rep = check_targets(run, ["peak_reserved_bytes<=20GiB"])
    r = rep.results[0]
    assert r.status == "fail"
    assert r.phase == "generation/decode"
    assert "must drop by" in r.diagnostics[0]


def test_step_target_diagnostics_point_at_warmup() -> None:
    run = make_run(step_times=[3.0] + [0.1] * 19)
    r = check_targets(run, ["step_time_max_s<=0.5"]).results[0]
    assert r.status == "fail" and r.phase == "denoise"
    assert "1 of 20 steps" in r.diagnostics[0]
    assert any("warm-up" in d for d in r.diagnostics)


def test_cpu_run_memory_target_is_not_measured_not_zero() -> None:
    run = make_run(gpu=False)
    rep = check_targets(run, ["peak_reserved_bytes<=16GiB", "generation_time_s<=100"])
    bad, good = rep.results
    assert bad.status == "not_measured" and bad.measured is None and bad.score == 0.0
    assert bad.reason == "no CUDA device"
    assert good.holds
    assert rep.score == 50.0


@pytest.mark.gpu
def test_real_gpu_run_measures_memory_and_runs_rules() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import genprof
    from genprof.analysis.rules import run_rules

    x = torch.randn(4096, 4096, device="cuda")
    with genprof.Profiler(name="gpu-targets") as prof:
        with prof.generation():
            for _ in prof.steps(range(8), phase="denoise"):
                x = (x @ x).tanh()
            with prof.phase("decode"):
                y = torch.empty(int(1.5 * 2**30), dtype=torch.uint8, device="cuda")
                del y
    rep = check_targets(prof.run, ["peak_reserved_bytes<=1TiB", "step_time_p95_s<=10", "generation_time_s<=60"])
    assert rep.all_hold, rep.to_dict()
    assert rep.results[0].measured is not None and rep.results[0].measured >= 1.5 * 2**30
    findings = run_rules(prof.run)
    assert all(f.evidence for f in findings)
