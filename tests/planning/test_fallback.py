import pytest

from genprof.planning.fallback import AllStrategiesFailedError, is_oom, with_fallbacks

torch = pytest.importorskip("torch")


def _oom():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_falls_back_on_oom_and_records_each_attempt():
    calls = []

    def tiled():
        calls.append("tiled")
        return 42

    r = with_fallbacks([("direct", _oom), ("tiled", tiled), ("cpu", lambda: 0)])
    assert r.value == 42 and r.strategy == "tiled"
    assert [a.strategy for a in r.attempts] == ["direct", "tiled"]
    assert not r.attempts[0].ok and "OutOfMemoryError" in r.attempts[0].error
    assert r.attempts[0].duration_s >= 0 and r.attempts[1].ok
    assert calls == ["tiled"]


def test_runtime_error_saying_out_of_memory_counts_but_other_errors_propagate():
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    with pytest.raises(ValueError):
        with_fallbacks([("direct", lambda: (_ for _ in ()).throw(ValueError("bug"))), ("cpu", lambda: 1)])


def test_all_failing_raises_and_never_returns_data():
    with pytest.raises(AllStrategiesFailedError) as ei:
        with_fallbacks([("direct", _oom), ("tiled", _oom)])
    assert [a.strategy for a in ei.value.attempts] == ["direct", "tiled"]
    assert "direct" in str(ei.value) and "tiled" in str(ei.value)


def test_vae_strategies_order_is_configurable():
    from diffusers import AutoencoderKL

    from genprof.planning.fallback import vae_decode_strategies

    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=32)
    z = torch.randn(1, 4, 8, 8)
    strategies = vae_decode_strategies(vae, z, order=("cpu", "direct"))
    assert [n for n, _ in strategies] == ["cpu", "direct"]
    r = with_fallbacks(strategies)
    assert r.strategy == "cpu" and r.value.shape == (1, 3, 16, 16)
