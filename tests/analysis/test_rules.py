"""Each rule: one run that fires it, one that does not; no GPU advice without GPU data."""

from __future__ import annotations

import pytest
from synth import GiB, make_run

from genprof.analysis import rules as R
from genprof.analysis.findings import Finding


def _fires(rule: R.Rule, run: object) -> Finding:
    f = rule(run)  # type: ignore[arg-type]
    assert f is not None, f"{rule.__name__} should fire"
    assert f.evidence and f.cause and f.suggestion
    return f


# ------------------------------------------------------------------ dominant phase
def test_dominant_phase_fires_on_self_time() -> None:
    run = make_run(steps=50, step_s=0.2, load_s=1.0)
    f = _fires(R.rule_dominant_phase, run)
    assert f.phase == "generation/denoise"
    assert f.numbers["share_pct"] > 50
    assert f.code is not None and "compile" in f.code


def test_dominant_phase_quiet_when_balanced() -> None:
    run = make_run(steps=10, step_s=0.1, load_s=1.0, decode_s=1.0)
    assert R.rule_dominant_phase(run) is None


def test_dominant_phase_does_not_double_count_nesting() -> None:
    # GIVEN the whole generation is one phase wrapping denoise: the outer phase must not win
    # with its inclusive time.
    run = make_run(steps=10, step_s=0.1, load_s=0.9, decode_s=0.01, encode_s=0.01)
    gen = next(s for s in run.spans if s.kind == "generation")
    gen.kind = "phase"
    f = R.rule_dominant_phase(run)
    assert f is None or f.phase != "generation"


# ------------------------------------------------------------------ warm-up
def test_warmup_fires_on_slow_first_step() -> None:
    run = make_run(step_times=[2.0, 0.5] + [0.1] * 18)
    f = _fires(R.rule_warmup_steps, run)
    assert f.numbers["ratio"] == pytest.approx(20.0)
    assert "step 1" in f.evidence


def test_warmup_quiet_on_even_steps() -> None:
    assert R.rule_warmup_steps(make_run(step_times=[0.2] + [0.1] * 19)) is None
    assert R.rule_warmup_steps(make_run(step_times=[2.0, 0.1, 0.1])) is None  # too few steps


# ------------------------------------------------------------------ host-bound
def test_gpu_idle_fires_on_low_utilization_during_steps() -> None:
    run = make_run(steps=20, step_s=0.1, utilization_pct=[30, 40, 35])
    f = _fires(R.rule_gpu_idle_between_steps, run)
    assert 30 <= f.numbers["mean_utilization_pct"] <= 40


def test_gpu_idle_quiet_when_busy_or_no_series_or_cpu() -> None:
    assert R.rule_gpu_idle_between_steps(make_run(utilization_pct=[97, 99])) is None
    assert R.rule_gpu_idle_between_steps(make_run()) is None
    assert R.rule_gpu_idle_between_steps(make_run(gpu=False)) is None


# ------------------------------------------------------------------ near capacity
def test_near_capacity_decode_peak_suggests_tiling() -> None:
    run = make_run(total_memory_bytes=80 * GiB, decode_peak_bytes=75 * GiB)
    f = _fires(R.rule_peak_near_capacity, run)
    assert f.phase == "generation/decode"
    assert f.code is not None and "enable_tiling" in f.code


def test_near_capacity_weight_peak_suggests_offload() -> None:
    run = make_run(total_memory_bytes=24 * GiB, weights_bytes=21 * GiB, denoise_peak_bytes=23 * GiB,
                   decode_peak_bytes=21 * GiB)
    f = _fires(R.rule_peak_near_capacity, run)
    assert f.phase == "generation/denoise"
    assert f.code == "pipe.enable_model_cpu_offload()"


def test_near_capacity_quiet_with_headroom_or_unknown_capacity() -> None:
    assert R.rule_peak_near_capacity(make_run(total_memory_bytes=80 * GiB)) is None
    assert R.rule_peak_near_capacity(make_run(total_memory_bytes=None, decode_peak_bytes=75 * GiB)) is None


# ------------------------------------------------------------------ fragmentation
def test_fragmentation_fires_on_large_gap() -> None:
    run = make_run(reserved_extra_bytes=8 * GiB)
    f = _fires(R.rule_fragmentation, run)
    assert "expandable_segments:True" in (f.code or "")
    assert f.numbers["gap_bytes"] == 8 * GiB


def test_fragmentation_quiet_on_small_gap() -> None:
    assert R.rule_fragmentation(make_run(reserved_extra_bytes=512 * 1024**2)) is None


# ------------------------------------------------------------------ throttling
def test_throttling_decodes_power_and_thermal_bits() -> None:
    # 0x4 sw power cap from t=0.5, 0x20|0x4 later, cleared at t=1.5 (run is ~4.4 s long)
    run = make_run(steps=20, step_s=0.1, clock_reasons=[(0.0, 0), (0.5, 0x4), (1.0, 0x24), (1.5, 0x1)])
    f = _fires(R.rule_throttling, run)
    kinds = {r["kind"] for r in f.numbers["reasons"]}
    assert kinds == {"power", "thermal"}
    power = next(r for r in f.numbers["reasons"] if r["kind"] == "power")
    assert power["seconds"] == pytest.approx(1.0)


def test_throttling_ignores_idle_and_short_blips() -> None:
    assert R.rule_throttling(make_run(clock_reasons=[(0.0, 0x1), (1.0, 0)])) is None  # gpu_idle only
    assert R.rule_throttling(make_run(clock_reasons=[(0.0, 0), (1.0, 0x4), (1.01, 0)])) is None
    assert R.rule_throttling(make_run()) is None


# ------------------------------------------------------------------ decode memory
def test_decode_memory_fires() -> None:
    f = _fires(R.rule_decode_memory, make_run(denoise_peak_bytes=14 * GiB, decode_peak_bytes=30 * GiB))
    assert f.numbers["ratio"] > 2


def test_decode_memory_quiet() -> None:
    assert R.rule_decode_memory(make_run(denoise_peak_bytes=14 * GiB, decode_peak_bytes=12 * GiB)) is None


# ------------------------------------------------------------------ fp32 weights
PIPE_FP32 = {
    "class": "FluxPipeline",
    "components": {
        "transformer": {"dtype": "torch.float32", "device": "cuda:0", "parameters_bytes": 47 * GiB},
        "vae": {"dtype": "torch.bfloat16", "device": "cuda:0", "parameters_bytes": GiB // 4},
    },
}


def test_fp32_weights_fires_on_bf16_gpu() -> None:
    f = _fires(R.rule_fp32_weights, make_run(pipeline=PIPE_FP32, bf16=True))
    assert f.numbers["components"] == ["transformer"]
    assert "bfloat16" in (f.code or "")


def test_fp32_weights_quiet_without_bf16_or_metadata() -> None:
    assert R.rule_fp32_weights(make_run(pipeline=PIPE_FP32, bf16=False)) is None
    assert R.rule_fp32_weights(make_run(pipeline=PIPE_FP32, bf16=None)) is None
    assert R.rule_fp32_weights(make_run(bf16=True)) is None


# ------------------------------------------------------------------ text encoder
PIPE_TE = {
    "components": [
        {"name": "text_encoder_2", "dtype": "bfloat16", "device": "cuda:0", "parameters_bytes": 9 * GiB},
        {"name": "transformer", "dtype": "bfloat16", "device": "cuda:0", "parameters_bytes": 23 * GiB},
    ]
}


def test_text_encoder_on_gpu_fires() -> None:
    f = _fires(R.rule_text_encoder_on_gpu, make_run(pipeline=PIPE_TE))
    assert f.numbers["text_encoder_bytes"] == 9 * GiB


def test_text_encoder_quiet_when_offloaded_or_on_cpu() -> None:
    assert R.rule_text_encoder_on_gpu(make_run(pipeline={**PIPE_TE, "offload": "model"})) is None
    cpu = {"components": [{"name": "text_encoder", "dtype": "bfloat16", "device": "cpu", "parameters_bytes": 9 * GiB}]}
    assert R.rule_text_encoder_on_gpu(make_run(pipeline=cpu)) is None
    assert R.rule_text_encoder_on_gpu(make_run(gpu=False, pipeline=PIPE_TE)) is None


# ------------------------------------------------------------------ slowing down
def test_steps_slow_down_fires_and_names_memory_growth() -> None:
    times = [0.1 + 0.005 * i for i in range(30)]
    f = _fires(R.rule_steps_slow_down, make_run(step_times=times, step_alloc_growth_bytes=100 * 1024**2))
    assert f.numbers["ratio"] > 1.15
    assert "allocated memory grew" in f.cause


def test_steps_slow_down_quiet_on_noise() -> None:
    import random

    rnd = random.Random(1)
    times = [0.1 * (1 + 0.05 * rnd.uniform(-1, 1)) for _ in range(30)]
    assert R.rule_steps_slow_down(make_run(step_times=times)) is None


# ------------------------------------------------------------------ across rules
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


def test_spearman() -> None:
    assert R.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert R.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert R.spearman([1, 2, 3], [5, 5, 5]) is None


# the layout the diffusers helper writes (genprof.integrations.diffusers_facts.pipeline_facts)
PIPE_FACTS = {
    "class": "FluxPipeline",
    "components": {
        "text_encoder": {"class": "CLIPTextModel", "parameters": 123_000_000, "dtype": "bfloat16", "device": "cuda:0",
                         "offload": None},
        "text_encoder_2": {"class": "T5EncoderModel", "parameters": 4_760_000_000, "dtype": "float32",
                           "device": "cuda:0", "offload": None},
        "transformer": {"class": "FluxTransformer2DModel", "parameters": 11_900_000_000, "dtype": "bfloat16",
                        "dtypes": None, "device": "cuda:0", "offload": None},
        "scheduler": {"class": "FlowMatchEulerDiscreteScheduler"},
    },
    "text_encoders": ["text_encoder", "text_encoder_2"],
}


def test_rules_read_the_diffusers_helper_layout() -> None:
    run = make_run(pipeline=PIPE_FACTS)
    te = _fires(R.rule_text_encoder_on_gpu, run)
    assert te.numbers["text_encoder_bytes"] == 123_000_000 * 2 + 4_760_000_000 * 4
    fp = _fires(R.rule_fp32_weights, run)
    assert fp.numbers["components"] == ["text_encoder_2"]
    assert fp.numbers["bytes_saved_estimate"] == 4_760_000_000 * 2
    hooked = {**PIPE_FACTS, "components": {k: {**v, "offload": {"CpuOffload": 1}} if "text" in k else v
                                            for k, v in PIPE_FACTS["components"].items()}}
    assert R.rule_text_encoder_on_gpu(make_run(pipeline=hooked)) is None


def _block_loop_with_steps(first_step_s: float, second_block_first_s: float = 0.05):
    from block_loop import block_loop_run
    from genprof.model import Span

    run = block_loop_run(generation=True)
    nid = max(s.id for s in run.spans) + 1
    for b in [s for s in run.spans if s.kind == "block"]:
        for k in range(4):
            d = first_step_s if (b.index == 0 and k == 0) else (second_block_first_s if k == 0 else 0.05)
            run.spans.append(Span(id=nid, name="step", kind="step", start_s=b.start_s + 0.01 * nid, duration_s=d,
                                  index=k, parent_id=b.id))
            nid += 1
    return run


def test_warmup_in_a_block_loop_is_the_loops_first_step_only() -> None:
    # GIVEN a block loop whose very first step is 6x slower; each block's first step is normal
    f = R.rule_warmup_steps(_block_loop_with_steps(0.3))
    assert f is not None and f.numbers["first_step_s"] == pytest.approx(0.3)
    assert f.numbers["median_rest_s"] == pytest.approx(0.05)
    # and a loop whose blocks all start at normal speed has no warm-up finding
    assert R.rule_warmup_steps(_block_loop_with_steps(0.05)) is None
