"""The plan's time model (genprof.planning.plan_costs) against measured H100 figures."""

import pytest

from genprof.planning.plan_costs import TimeModel, _leaf_count, _predict_time

pytest.importorskip("torch")


def test_time_model_ranks_sequential_before_streamed_leaf_with_tiling_for_wan():
    # bench/results/plan_wan_h100.json: sequential 10.97 s, group leaf + streams + VAE tiling 17.33 s
    # (tiled decoding calls the decoder 315 times, each moving its weights leaf by leaf)
    from genprof.planning.estimate import _resolve, estimate

    gen = {"height": 480, "width": 832, "num_frames": 81, "num_inference_steps": 2}
    tm = TimeModel(h2d_bandwidth_bytes_per_s=54.7e9, step_time_s=1.562, vae_decode_s=2.077, text_encode_s=0.038)
    seq = estimate("wan2.1-1.3b", offload="sequential", **gen)
    gls = estimate("wan2.1-1.3b", offload="group_leaf_stream", vae_tiling=True, **gen)
    params = next(c for c in seq.components if c.role == "denoiser").params
    leaves = _leaf_count(_resolve("wan2.1-1.3b"))
    t_seq = _predict_time(seq, tm, params, leaves)[0]
    t_gls = _predict_time(gls, tm, params, leaves)[0]
    assert t_seq < t_gls
    assert abs(t_seq - 10.97) / 10.97 < 0.15 and abs(t_gls - 17.33) / 17.33 < 0.15
