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
    ("wan2.1-1.3b", "model", False): 11651776512,
    ("wan2.1-1.3b", "none", False): 21734883328,
    ("sdxl", "group_block", False): 8004829184,
    ("sdxl", "group_block_stream", False): 10540285952,
    ("sdxl", "group_leaf", False): 4691329024,
    ("sdxl", "group_leaf_stream", False): 5179965440,
    ("sdxl", "sequential", False): 2732589056,
    ("sdxl", "model", False): 6043992064,
}


@pytest.mark.parametrize("case", sorted(MEASURED), ids=lambda c: f"{c[0]}-{c[1]}-{'tiled' if c[2] else 'full'}")
def test_predicted_peak_within_band_of_measured(case):
    model, offload, tiling = case
    est = estimate(model, offload=offload, vae_tiling=tiling, **GEN[model])
    measured = MEASURED[case]
    err = (est.peak_reserved_bytes - measured) / measured
    # under-prediction is what makes a plan run out of memory: at most 10% low in every mode (the old
    # model was 20-53% low for the group modes); over-prediction (safe side) at most 13% (Wan group_leaf
    # and sequential with tiling were +11% / +12% before this change and are unchanged by it)
    assert -0.10 <= err <= 0.13, f"{case}: predicted {est.peak_reserved_bytes}, measured {measured}, error {err:+.1%}"


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
