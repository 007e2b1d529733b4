"""Pure analysis: throughput definitions, latent facts, GPU peak table."""

from __future__ import annotations

import pytest

from genprof.analysis.devices import GPU_PEAKS, normalize_dtype, peak_tflops
from genprof.analysis.latents import compression, describe_latent, encode_rate, infer_layout
from genprof.analysis.throughput import block_throughput, generation_throughput, throughput_summary
from genprof.errors import UsageError
from genprof.model import Run, Span


def _run(spans: list[Span], metadata: dict | None = None) -> Run:
    return Run(name="t", run_id="r", started_at="2025-01-01T00:00:00Z", started_unix_s=0.0,
               duration_s=100.0, spans=spans, metadata=metadata or {})


def _video_run() -> Run:
    spans = [
        Span(1, "generation", "generation", 0.0, duration_s=10.0),
        Span(2, "text_encode", "phase", 0.0, parent_id=1, duration_s=1.0),
        Span(3, "denoise", "phase", 1.0, parent_id=1, duration_s=6.0),
    ]
    for i in range(4):
        spans.append(Span(10 + i, "step", "step", 1.0 + 1.5 * i, parent_id=3, index=i, duration_s=1.5))
    spans.append(Span(4, "vae_decode", "phase", 7.0, parent_id=1, duration_s=2.0))
    spans.append(Span(5, "postprocess", "phase", 9.0, parent_id=1, duration_s=1.0))
    meta = {"generations": [{"span_id": 1, "duration_s": 10.0, "output_frames": 33, "fps": 16}]}
    return _run(spans, meta)


def test_generation_throughput_counts_decoded_frames_not_latent_frames_per_step() -> None:
    (g,) = generation_throughput(_video_run())
    assert g.steps == 4
    assert g.steps_per_s == pytest.approx(4 / 6.0)
    assert g.output_frames_per_s == pytest.approx(3.3)
    assert g.video_seconds == pytest.approx(33 / 16)
    assert g.real_time_factor == pytest.approx((33 / 16) / 10.0)
    assert g.time_to_first_frame_s == pytest.approx(9.0)


def test_generation_without_decode_or_fps_gives_none_with_reasons() -> None:
    run = _video_run()
    run.spans = [s for s in run.spans if s.name != "vae_decode"]
    run.metadata["generations"][0]["fps"] = None
    (g,) = generation_throughput(run)
    assert g.real_time_factor is None and "real_time_factor" in g.reasons
    assert g.time_to_first_frame_s is None and "time_to_first_frame_s" in g.reasons
    assert g.output_frames_per_s == pytest.approx(3.3)


def _block_run(latencies: list[float], frames: int | None = 3) -> Run:
    spans = [Span(1, "blocks", "phase", 0.0, duration_s=sum(latencies) + 0.5)]
    t = 0.5
    for i, lat in enumerate(latencies):
        attrs = {} if frames is None else {"frames": frames}
        spans.append(Span(2 + i, "block", "block", t, parent_id=1, index=i, duration_s=lat, attributes=attrs))
        t += lat
    return _run(spans)


def test_block_throughput_jitter_and_deadlines() -> None:
    lats = [0.1, 0.1, 0.1, 0.1, 0.3]
    b = block_throughput(_block_run(lats), target_fps=16.0)
    assert b.blocks == 5
    assert b.total_s == pytest.approx(sum(lats))
    assert b.blocks_per_s == pytest.approx(5 / sum(lats))
    assert b.frames == 15
    assert b.frames_per_s == pytest.approx(15 / sum(lats))
    assert b.latency.p50 == pytest.approx(0.1)
    assert b.jitter_s == pytest.approx(b.latency.p95 - 0.1)
    assert b.jitter_s > 0
    # budget 3/16 = 0.1875 s: only the last block misses
    assert b.deadline_misses == 1 and b.misses[0].index == 4
    assert b.time_to_first_frame_s == pytest.approx(0.6)


def test_block_deadlines_need_frames() -> None:
    b = block_throughput(_block_run([0.1, 0.2], frames=None), target_fps=16.0)
    assert b.deadline_misses is None and "deadline_misses" in b.reasons
    assert b.frames is None
    with pytest.raises(UsageError):
        block_throughput(_block_run([0.1]), target_fps=0)


def test_throughput_summary_includes_blocks_only_when_present() -> None:
    assert "blocks" not in throughput_summary(_video_run())
    assert throughput_summary(_block_run([0.1]))["blocks"]["blocks"] == 1


def test_latent_layouts() -> None:
    assert infer_layout([1, 4, 8, 8]) == ("BCHW", False)
    assert infer_layout([1, 16, 9, 60, 104]) == ("BCTHW", False)
    assert infer_layout([1, 9, 16, 60, 104]) == ("BTCHW", False)
    assert infer_layout([1, 16, 16, 8, 8]) == ("BCTHW", True)
    assert infer_layout([1, 13, 16, 8, 8], channels=16) == ("BTCHW", False)
    f = describe_latent([1, 16, 9, 60, 104], "torch.bfloat16", "cuda:0")
    assert f.elements == 16 * 9 * 60 * 104
    assert f.bytes == 2 * f.elements
    assert f.dims == {"B": 1, "C": 16, "T": 9, "H": 60, "W": 104}
    assert f.meaning == "video (B,C,T,H,W)"
    assert describe_latent([2, 4096, 64], "float32").layout == "BND"
    weird = describe_latent([1, 2], "mystery")
    assert weird.bytes is None and weird.notes
    with pytest.raises(UsageError):
        describe_latent([1, -4, 8, 8], "float32")


def test_compression_against_decoded_output() -> None:
    lat = describe_latent([1, 16, 9, 60, 104], "bfloat16")
    c = compression(lat, [1, 3, 33, 480, 832], "BCTHW")
    assert c.spatial == pytest.approx(64.0)
    assert c.temporal == pytest.approx(33 / 9)
    img = compression(describe_latent([1, 4, 64, 64], "float16"), [1, 3, 512, 512], "BCHW")
    assert img.spatial == pytest.approx(64.0) and img.temporal is None


def test_encode_rate() -> None:
    r = encode_rate([1, 3, 16, 512, 512], "float32", 2.0)
    assert r["input_frames"] == 16
    assert r["frames_per_s"] == pytest.approx(8.0)
    assert r["megabytes_per_s"] == pytest.approx(3 * 16 * 512 * 512 * 4 / 1e6 / 2.0)
    assert encode_rate([1, 3, 16, 512, 512], "float32", None)["frames_per_s"] is None


def test_peak_table() -> None:
    v, src = peak_tflops("NVIDIA H100 80GB HBM3", "torch.bfloat16")
    assert v == 989.5 and "H100" in src
    assert peak_tflops("NVIDIA H100 PCIe", "fp16")[0] == 756.5
    assert peak_tflops("NVIDIA H200", "bf16")[0] == 989.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "float32")[0] == 19.5
    assert peak_tflops("NVIDIA L4", "bf16")[0] == 121.0
    assert peak_tflops("NVIDIA L40S", "bf16")[0] == 366.5
    assert peak_tflops("Tesla T4", "bf16")[0] is None
    assert peak_tflops("NVIDIA A10G", "bf16")[0] is None
    assert peak_tflops("Some Future GPU", "bf16") [0] is None
    assert peak_tflops(None, "bf16")[0] is None
    assert normalize_dtype("torch.float16") == "fp16"
    assert all(row.source for row in GPU_PEAKS)


def test_bootstrap_median_ci_contains_the_median_and_narrows_with_data() -> None:
    import random

    from genprof.analysis.summary import bootstrap_median_ci, percentile

    assert bootstrap_median_ci([]) is None
    assert bootstrap_median_ci([3.0]) == (3.0, 3.0)
    assert bootstrap_median_ci([2.0] * 20) == (2.0, 2.0)
    rng = random.Random(1)
    small = [rng.gauss(10, 2) for _ in range(20)]
    big = [rng.gauss(10, 2) for _ in range(400)]
    lo_s, hi_s = bootstrap_median_ci(small) or (0, 0)
    lo_b, hi_b = bootstrap_median_ci(big) or (0, 0)
    assert lo_s <= (percentile(small, 50) or 0) <= hi_s
    assert lo_b <= 10.0 <= hi_b
    assert hi_b - lo_b < hi_s - lo_s  # more data, narrower interval
    assert bootstrap_median_ci(small, seed=7) == bootstrap_median_ci(small, seed=7)  # seeded
