"""Predicted peak reserved memory under offloading vs the H100 plan runs.

Measured data (peak_reserved_bytes per candidate, bf16, flash attention, 2 steps, no budget) copied
from bench/results/plan_wan_h100.json (Wan 2.1 1.3B, 480x832, 81 frames) and
bench/results/plan_sdxl_h100.json (SDXL, 1024x1024), measured on an NVIDIA H100 80GB, 2026-11-22.
Before the group-offload model of the estimator (side-stream pool, carried cache, UNet residual)
the group modes were predicted 20-53% low; this test fails if the model goes back to that.
"""

from __future__ import annotations

import pytest

from genprof.planning.estimate import estimate
from genprof.planning.plan import DEFAULT_SAFETY_MARGIN

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

GEN = {
    "wan2.1-1.3b": {"height": 480, "width": 832, "num_frames": 81, "num_inference_steps": 2},
    "sdxl": {"height": 1024, "width": 1024, "num_inference_steps": 2},
}

# (model, offload, vae_tiling) -> measured peak reserved bytes
MEASURED = {
    ("wan2.1-1.3b", "group_block", False): 14893973504,
    ("wan2.1-1.3b", "group_block", True): 11676942336,
    ("wan2.1-1.3b", "group_block_stream", False): 15225323520,
    ("wan2.1-1.3b", "group_block_stream", True): 12008292352,
    ("wan2.1-1.3b", "group_leaf", False): 6939475968,
    ("wan2.1-1.3b", "group_leaf", True): 2183135232,
    ("wan2.1-1.3b", "group_leaf_stream", False): 9225371648,
    ("wan2.1-1.3b", "group_leaf_stream", True): 4859101184,
    ("wan2.1-1.3b", "sequential", False): 6815744000,
    ("wan2.1-1.3b", "sequential", True): 2162163712,
    ("wan2.1-1.3b", "model", False): 11651776512,
    ("wan2.1-1.3b", "none", False): 21734883328,
    ("sdxl", "group_block", False): 8004829184,
    ("sdxl", "group_block_stream", False): 10540285952,
    ("sdxl", "group_leaf", False): 4691329024,
    ("sdxl", "group_leaf_stream", False): 5179965440,
    ("sdxl", "sequential", False): 2732589056,
    ("sdxl", "sequential", True): 2732589056,
    ("sdxl", "model", False): 6043992064,
    # no offload, whole calls (plan_sdxl_h100_s3.json and _s4.json: the same figure in both runs)
    ("sdxl", "none", False): 12218007552,
}


@pytest.mark.parametrize("case", sorted(MEASURED), ids=lambda c: f"{c[0]}-{c[1]}-{'tiled' if c[2] else 'full'}")
def test_predicted_peak_within_band_of_measured(case):
    model, offload, tiling = case
    est = estimate(model, offload=offload, vae_tiling=tiling, **GEN[model])
    measured = MEASURED[case]
    err = (est.peak_reserved_bytes - measured) / measured
    # under-prediction is what makes a plan run out of memory: less than the planner's default
    # margin in every mode (the old model was 20-53% low for the group modes; the worst now is Wan
    # group_leaf_stream with tiling, -7.9%); over-prediction (safe side) at most 11% (SDXL sequential
    # +10.4%; Wan sequential was +8% / +12% without / with tiling before the leaf-level and video VAE
    # changes, now +4.4% / +7.3%)
    assert -DEFAULT_SAFETY_MARGIN < err <= 0.11, f"{case}: predicted {est.peak_reserved_bytes}, measured {measured}, error {err:+.1%}"


def test_wan_sequential_fits_8gb_with_the_default_margin():
    # the plan miss this fixes: measured 6.35 GiB, usable 8e9 * 0.9 bytes; predicted 6.86 GiB before
    est = estimate("wan2.1-1.3b", offload="sequential", **GEN["wan2.1-1.3b"])
    assert MEASURED[("wan2.1-1.3b", "sequential", False)] <= est.peak_reserved_bytes <= int(8e9 * 0.9)


def test_leaf_offload_largest_leaf_not_stacked_on_activations():
    # UMT5's 2 GiB shared embedding is on the GPU only during its own forward: the text-encoding peak is
    # the larger of that moment and the encoder's activations beside a small leaf, not their sum
    est = estimate("wan2.1-1.3b", offload="sequential", vae_tiling=True, **GEN["wan2.1-1.3b"])
    te = est.phase("text_encode")
    leaf = next(c for c in est.components if c.role == "text_encoder").largest_leaf_bytes
    assert te.peak_allocated_bytes < leaf + te.persistent_bytes + te.activation_peak_bytes + te.workspace_bytes
    assert te.peak_reserved_bytes >= leaf


def test_decoder_calls_counted_per_tile_and_latent_frame():
    full = estimate("wan2.1-1.3b", **GEN["wan2.1-1.3b"]).phase("vae_decode").detail
    tiled = estimate("wan2.1-1.3b", vae_tiling=True, **GEN["wan2.1-1.3b"]).phase("vae_decode").detail
    assert full["decoder_calls"] == 21  # one per latent frame
    assert tiled["decoder_calls"] == 21 * 15  # 3 x 5 spatial tiles of 32 latents, stride 24, over 60 x 104
    assert 0 < full["decoder_weight_bytes"] < next(c for c in estimate("wan2.1-1.3b", **GEN["wan2.1-1.3b"]).components
                                                   if c.role == "vae").weight_bytes


def test_streams_put_prefetched_groups_in_a_side_pool():
    est = estimate("sdxl", offload="group_block_stream", **GEN["sdxl"])
    side = est.phase("denoise").detail["side_stream_pool_bytes"]
    unet = next(c for c in est.components if c.role == "denoiser")
    assert side >= 2 * unet.largest_block_bytes
    plain = estimate("sdxl", offload="group_block", **GEN["sdxl"])
    assert plain.phase("denoise").detail["side_stream_pool_bytes"] == 0


def test_model_offload_phases_stay_independent():
    # accelerate empties the cache after each offload: no carried cache, no side pool
    est = estimate("wan2.1-1.3b", offload="model", **GEN["wan2.1-1.3b"])
    assert all("carried_cache_bytes" not in p.detail for p in est.phases)


def test_tied_embedding_counts_once_in_leaves():
    est = estimate("wan2.1-1.3b", offload="group_leaf_stream", **GEN["wan2.1-1.3b"])
    te = next(c for c in est.components if c.role == "text_encoder")
    assert te.second_leaf_bytes < te.largest_leaf_bytes // 4
