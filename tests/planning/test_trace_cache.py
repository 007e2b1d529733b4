"""The on-disk meta-trace cache: a second estimate reads it instead of tracing, with the same figures."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")


def test_second_estimate_reads_the_cache_and_gives_the_same_figures(tmp_path, monkeypatch):
    from genprof.planning.estimate import estimate, phases, weights

    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path))
    traces = (phases._trace_denoiser, phases._trace_text_encoder, phases._trace_vae_decode)
    for f in traces:
        f.cache_clear()  # results an earlier test kept in this process would skip the disk
    first = estimate("sd1.5", height=512, width=512, vae_tiling=True)
    assert list((tmp_path / "meta-trace").glob("*.json"))
    for f in traces:
        f.cache_clear()  # forget the in-process results: only the disk cache is left

    def no_trace(*a, **k):
        raise AssertionError("traced although the result is cached")

    monkeypatch.setattr(phases, "_run_denoiser", no_trace)
    monkeypatch.setattr(phases, "_run_vae_decode", no_trace)
    monkeypatch.setattr(phases, "_run_text_encoder", no_trace)
    monkeypatch.setattr(weights, "_component_weights", no_trace)
    second = estimate("sd1.5", height=512, width=512, vae_tiling=True)
    assert second.to_dict()["phases"] == first.to_dict()["phases"]
    assert second.peak_reserved_bytes == first.peak_reserved_bytes


def test_cache_off_and_corrupt_files(tmp_path, monkeypatch):
    from genprof.planning.estimate import cache

    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path))
    key = cache.cache_key("x", 1, "a")
    assert key != cache.cache_key("x", 2, "a")
    cache.store(key, {"peak": 5})
    assert cache.load(key) == {"peak": 5}
    (tmp_path / "meta-trace" / f"{key}.json").write_text("{not json")
    assert cache.load(key) is None  # unreadable: traced again, not trusted
    monkeypatch.setenv("GENPROF_NO_CACHE", "1")
    assert cache.cache_dir() is None and cache.load(key) is None
