"""The rule set as a whole: no GPU advice without a GPU, no training advice, severity order, a broken
rule skipped; RULES holds every family's rules."""

from __future__ import annotations

import pytest
from rule_cases import PIPE_FP32, PIPE_TE
from synth import GiB, make_run

from genprof.analysis import rules as R
from genprof.analysis.findings import Finding
from genprof.analysis.rules import device, memory, speed, window


def test_rules_lists_every_family_rule_once_and_exports_it() -> None:
    family = [f for m in (speed, device, memory, window) for n, f in vars(m).items() if n.startswith("rule_")]
    assert sorted(r.__name__ for r in R.RULES) == sorted(r.__name__ for r in family)
    assert len(set(R.RULES)) == len(R.RULES)
    assert R.RULES[-len(R.DIAGNOSE_RULES):] == R.DIAGNOSE_RULES
    assert all(getattr(R, r.__name__) is r for r in R.RULES)


def test_cpu_only_run_gets_no_gpu_advice() -> None:
    run = make_run(gpu=False, steps=30, step_s=0.1, pipeline=PIPE_FP32)
    findings = R.run_rules(run)
    gpu_rules = {"gpu_idle_between_steps", "peak_near_capacity", "fragmentation", "throttling", "decode_memory",
                 "fp32_weights", "text_encoder_on_gpu"}
    assert not [f.rule_id for f in findings if f.rule_id in gpu_rules]


def test_no_training_advice_for_inference_runs() -> None:
    run = make_run(
        step_times=[2.0] + [0.1 + 0.005 * i for i in range(29)],
        total_memory_bytes=16 * GiB, reserved_extra_bytes=2 * GiB, decode_peak_bytes=15 * GiB,
        utilization_pct=[20], clock_reasons=[(0.0, 0x4)], pipeline={**PIPE_FP32, **PIPE_TE},
        step_alloc_growth_bytes=100 * 1024**2,
    )
    findings = R.run_rules(run)
    assert len(findings) >= 6
    words = ("gradient", "optimizer", "backward", "learning rate", "training", "checkpointing")
    for f in findings:
        text = " ".join([f.title, f.evidence, f.cause, f.suggestion, f.code or ""]).lower()
        assert not [w for w in words if w in text], f.rule_id
    sev = [f.severity for f in findings]
    assert sev == sorted(sev, key=lambda s: {"critical": 0, "warning": 1, "info": 2}[s])


def test_run_rules_skips_a_broken_rule_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    def broken(run: object) -> Finding | None:
        raise KeyError("nope")

    out = R.run_rules(make_run(reserved_extra_bytes=8 * GiB), [broken, R.rule_fragmentation])
    assert [f.rule_id for f in out] == ["fragmentation"]
    assert "broken" in caplog.text
