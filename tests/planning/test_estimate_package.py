"""The estimate package's seams: the allocation sequence handed to a replay, the old import paths."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _replayed_peak(events):
    live = peak = 0
    for kind, _key, nbytes in events:
        if kind == "alloc":
            live += nbytes
        elif kind == "free":
            live -= nbytes
        peak = max(peak, live + (nbytes if kind == "spike" else 0))
    return peak


def test_traced_allocation_sequence_reproduces_the_phase_peak():
    from genprof.catalog import get_config
    from genprof.planning.estimate import GenerationSettings, trace_phase_allocations

    spec = get_config("sd1.5")
    gen = GenerationSettings(height=512, width=512, num_frames=1, batch_size=1, num_inference_steps=1,
                             guidance_scale=7.5, dtype="fp16", offload="none", vae_tiling=False,
                             vae_slicing=False, attention_backend="math", layerwise_fp8=False, vae_dtype="fp16")
    tr = trace_phase_allocations(spec, "denoise", gen, batch=2)
    assert tr.peak > 0
    assert sum(1 for e in tr.events if e[0] == "alloc") > 100
    assert any(e[0] == "spike" for e in tr.events)  # math attention's score matrix
    assert _replayed_peak(tr.events) == tr.peak
    with pytest.raises(Exception, match="unknown phase"):
        trace_phase_allocations(spec, "decode", gen, batch=1)


def test_old_names_still_import():
    import genprof
    from genprof.planning import estimate as est

    assert genprof.estimate is est.estimate
    for name in ("CALIBRATION", "Estimate", "fit_calibration", "reserved_model", "trace_live_bytes",
                 "CachingAllocatorModel", "LiveBytes", "OFFLOAD_MODES", "ATTENTION_BACKENDS", "DTYPE_BYTES",
                 "_resolve", "_meta_module", "_register", "_denoiser_inputs"):
        assert hasattr(est, name), name
