import json

import pytest

from genprof.errors import UsageError
from genprof.planning.estimate import (
    CachingAllocatorModel,
    LiveBytes,
    estimate,
    fit_calibration,
    reserved_model,
    trace_live_bytes,
)

torch = pytest.importorskip("torch")


def test_live_bytes_counts_peak_and_frees():
    with trace_live_bytes() as (counter, _):
        a = torch.empty(1024, 1024, device="meta")  # 4 MiB
        b = a + 1  # 4 MiB more
        del a
        c = b.view(-1)  # a view: no new storage
        del b
        del c
    assert counter.peak == 8 * 2**20
    assert counter.current == 0


def test_math_attention_is_quadratic_and_flash_linear():
    q = torch.empty(1, 8, 4096, 64, device="meta", dtype=torch.bfloat16)
    peaks = {}
    for backend in ("flash", "math"):
        with trace_live_bytes(backend) as (counter, attn):
            out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
            del out
        peaks[backend] = counter.peak
        assert attn.calls == 1
    assert peaks["math"] >= 2 * 8 * 4096 * 4096 * 2
    assert peaks["flash"] < 2 * 8 * 4096 * 64 * 2 + 8 * 4096 * 4 + 4096


def test_live_bytes_spike_is_transient():
    c = LiveBytes()
    c.spike(100)
    assert c.peak == 100 and c.current == 0


@pytest.mark.slow
def test_wan_estimate_has_phases_and_scales_with_frames():
    small = estimate("wan2.1-1.3b", height=240, width=416, num_frames=9)
    big = estimate("wan2.1-1.3b", height=240, width=416, num_frames=17)
    assert [p.name for p in big.phases] == ["text_encode", "denoise", "vae_decode"]
    assert big.phase("denoise").activation_peak_bytes > small.phase("denoise").activation_peak_bytes
    assert big.phase("vae_decode").activation_peak_bytes > small.phase("vae_decode").activation_peak_bytes
    # weights: 1.42B + 0.127B + 5.68B params in bf16
    assert abs(big.total_weight_bytes / 2 / 7.23e9 - 1) < 0.02
    for p in big.phases:
        assert p.peak_reserved_bytes >= p.peak_allocated_bytes > 0
    json.dumps(big.to_dict())


@pytest.mark.slow
def test_offload_tiling_and_fp8_lower_the_peak():
    base = estimate("wan2.1-1.3b", height=240, width=416, num_frames=17)
    model = estimate("wan2.1-1.3b", height=240, width=416, num_frames=17, offload="model")
    leaf = estimate("wan2.1-1.3b", height=240, width=416, num_frames=17, offload="group_leaf")
    tiled = estimate("wan2.1-1.3b", height=240, width=416, num_frames=17, vae_tiling=True)
    fp8 = estimate("wan2.1-1.3b", height=240, width=416, num_frames=17, layerwise_fp8=True)
    assert leaf.peak_reserved_bytes < model.peak_reserved_bytes < base.peak_reserved_bytes
    assert tiled.phase("vae_decode").activation_peak_bytes < base.phase("vae_decode").activation_peak_bytes
    den = next(c for c in fp8.components if c.role == "denoiser")
    assert den.fp8_bytes < 0.6 * den.weight_bytes
    assert fp8.phase("denoise").resident_weights_bytes < base.phase("denoise").resident_weights_bytes


@pytest.mark.slow
def test_batched_cfg_doubles_the_unet_batch():
    one = estimate("sd1.5", guidance_scale=1.0)
    two = estimate("sd1.5", guidance_scale=7.5)
    assert two.phase("denoise").detail["call_batch"] == 2
    assert one.phase("denoise").detail["call_batch"] == 1
    assert two.phase("denoise").activation_peak_bytes > one.phase("denoise").activation_peak_bytes


def test_bad_sizes_are_usage_errors():
    with pytest.raises(UsageError, match="4\\*n\\+1"):
        estimate("wan2.1-1.3b", num_frames=80)
    with pytest.raises(UsageError, match="multiples"):
        estimate("sd1.5", height=500)
    with pytest.raises(UsageError, match="offload"):
        estimate("sd1.5", offload="everything")


def _case(name, wr, act, measured):
    pred = {"activation_peak_bytes": act, "resident_weights_bytes": wr, "persistent_bytes": 0, "workspace_bytes": 0,
            "peak_reserved_bytes": 0, "peak_allocated_bytes": wr + act,
            "detail": {"resident_weights_reserved_bytes": wr}}
    return {"case": name, "phases": {"vae_decode": {"predicted": pred, "measured_reserved_bytes": measured}}}


def test_fit_calibration_recovers_known_constants():
    # synthetic cases made with weights factor 1.2 and VAE factor 1.6: small activations hide in the
    # weights' free space, large ones add segments
    gib = 2**30
    cases = [_case(f"c{i}", w * gib, a * gib, int(max(1.2 * w * gib, w * gib + 1.6 * a * gib)))
             for i, (w, a) in enumerate([(10, 0.5), (10, 8), (20, 1), (20, 12), (5, 6)])]
    cal = fit_calibration(cases)
    assert cal["weights_reserved_factor"] == pytest.approx(1.2, abs=0.003)
    assert cal["reserved_factor_vae_decode"] == pytest.approx(1.6, abs=0.011)
    for c in cases:
        assert reserved_model(c, "vae_decode", cal) == pytest.approx(c["phases"]["vae_decode"]["measured_reserved_bytes"], rel=0.01)


def test_fit_calibration_without_measurements_is_an_error():
    with pytest.raises(UsageError, match="nothing to fit"):
        fit_calibration([{"case": "x", "phases": {}}])


def test_caching_allocator_model_packs_and_fragments():
    mib = 2**20
    sim = CachingAllocatorModel()
    small = [sim.malloc(100_000) for _ in range(20)]  # 97.7 KiB -> 98 KiB blocks, one 2 MiB segment
    assert sim.reserved == 2 * mib
    big = sim.malloc(30 * mib + 1)  # own segment, rounded to 2 MiB
    assert sim.reserved == 2 * mib + 32 * mib
    sim.free(big)
    sim.empty_cache()
    assert sim.reserved == 2 * mib  # a fully free segment is returned
    for h in small[1:]:
        sim.free(h)
    sim.empty_cache()
    assert sim.reserved == 2 * mib  # one live block pins its segment
    assert sim.peak_reserved == 34 * mib
