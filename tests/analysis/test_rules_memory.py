"""Rules on memory: each fires on one run and stays quiet on another; the diffusers helper's layout is read."""

from __future__ import annotations

from rule_cases import PIPE_FACTS, PIPE_FP32, PIPE_TE, fires
from synth import GiB, make_run

from genprof.analysis.rules import memory


# ------------------------------------------------------------------ near capacity
def test_near_capacity_decode_peak_suggests_tiling() -> None:
    run = make_run(total_memory_bytes=80 * GiB, decode_peak_bytes=75 * GiB)
    f = fires(memory.rule_peak_near_capacity, run)
    assert f.phase == "generation/decode"
    assert f.code is not None and "enable_tiling" in f.code


def test_near_capacity_weight_peak_suggests_offload() -> None:
    run = make_run(total_memory_bytes=24 * GiB, weights_bytes=21 * GiB, denoise_peak_bytes=23 * GiB,
                   decode_peak_bytes=21 * GiB)
    f = fires(memory.rule_peak_near_capacity, run)
    assert f.phase == "generation/denoise"
    assert f.code == "pipe.enable_model_cpu_offload()"


def test_near_capacity_quiet_with_headroom_or_unknown_capacity() -> None:
    assert memory.rule_peak_near_capacity(make_run(total_memory_bytes=80 * GiB)) is None
    assert memory.rule_peak_near_capacity(make_run(total_memory_bytes=None, decode_peak_bytes=75 * GiB)) is None


# ------------------------------------------------------------------ fragmentation
def test_fragmentation_fires_on_large_gap() -> None:
    run = make_run(reserved_extra_bytes=8 * GiB)
    f = fires(memory.rule_fragmentation, run)
    assert "expandable_segments:True" in (f.code or "")
    assert f.numbers["gap_bytes"] == 8 * GiB


def test_fragmentation_quiet_on_small_gap() -> None:
    assert memory.rule_fragmentation(make_run(reserved_extra_bytes=512 * 1024**2)) is None


# ------------------------------------------------------------------ decode memory
def test_decode_memoryfires() -> None:
    f = fires(memory.rule_decode_memory, make_run(denoise_peak_bytes=14 * GiB, decode_peak_bytes=30 * GiB))
    assert f.numbers["ratio"] > 2


def test_decode_memory_quiet() -> None:
    assert memory.rule_decode_memory(make_run(denoise_peak_bytes=14 * GiB, decode_peak_bytes=12 * GiB)) is None


# ------------------------------------------------------------------ fp32 weights


def test_fp32_weights_fires_on_bf16_gpu() -> None:
    f = fires(memory.rule_fp32_weights, make_run(pipeline=PIPE_FP32, bf16=True))
    assert f.numbers["components"] == ["transformer"]
    assert "bfloat16" in (f.code or "")


def test_fp32_weights_quiet_without_bf16_or_metadata() -> None:
    assert memory.rule_fp32_weights(make_run(pipeline=PIPE_FP32, bf16=False)) is None
    assert memory.rule_fp32_weights(make_run(pipeline=PIPE_FP32, bf16=None)) is None
    assert memory.rule_fp32_weights(make_run(bf16=True)) is None


# ------------------------------------------------------------------ text encoder


def test_text_encoder_on_gpufires() -> None:
    f = fires(memory.rule_text_encoder_on_gpu, make_run(pipeline=PIPE_TE))
    assert f.numbers["text_encoder_bytes"] == 9 * GiB


def test_text_encoder_quiet_when_offloaded_or_on_cpu() -> None:
    assert memory.rule_text_encoder_on_gpu(make_run(pipeline={**PIPE_TE, "offload": "model"})) is None
    cpu = {"components": [{"name": "text_encoder", "dtype": "bfloat16", "device": "cpu", "parameters_bytes": 9 * GiB}]}
    assert memory.rule_text_encoder_on_gpu(make_run(pipeline=cpu)) is None
    assert memory.rule_text_encoder_on_gpu(make_run(gpu=False, pipeline=PIPE_TE)) is None


def test_rules_read_the_diffusers_helper_layout() -> None:
    run = make_run(pipeline=PIPE_FACTS)
    te = fires(memory.rule_text_encoder_on_gpu, run)
    assert te.numbers["text_encoder_bytes"] == 123_000_000 * 2 + 4_760_000_000 * 4
    fp = fires(memory.rule_fp32_weights, run)
    assert fp.numbers["components"] == ["text_encoder_2"]
    assert fp.numbers["bytes_saved_estimate"] == 4_760_000_000 * 2
    hooked = {**PIPE_FACTS, "components": {k: {**v, "offload": {"CpuOffload": 1}} if "text" in k else v
                                            for k, v in PIPE_FACTS["components"].items()}}
    assert memory.rule_text_encoder_on_gpu(make_run(pipeline=hooked)) is None


def test_component_weights_read_short_dtype_names() -> None:
    # GIVEN a text encoder recorded as a parameter count with the short dtype name "fp16"
    pipe = {"components": {"text_encoder": {"parameters": 2 * GiB, "dtype": "fp16", "device": "cuda:0"}}}
    f = fires(memory.rule_text_encoder_on_gpu, make_run(pipeline=pipe))
    assert f.numbers["text_encoder_bytes"] == 4 * GiB
