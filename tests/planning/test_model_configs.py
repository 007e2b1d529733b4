import pytest

from genprof.catalog import MODEL_NAMES, get_config
from genprof.errors import UsageError
from genprof.planning.build import build_component

# published parameter counts (billions) of each component
EXPECTED_B = {
    ("wan2.1-t2v-1.3b", "transformer"): 1.42,
    ("wan2.1-t2v-14b", "transformer"): 14.29,
    ("wan2.2-ti2v-5b", "transformer"): 5.00,
    ("wan2.1-t2v-1.3b", "text_encoder"): 5.68,
    ("sd1.5", "unet"): 0.86,
    ("sdxl", "unet"): 2.57,
    ("sdxl", "text_encoder_2"): 0.695,
    ("flux.1-dev", "transformer"): 11.90,
    ("flux.1-dev", "text_encoder_2"): 4.76,
    ("qwen-image", "transformer"): 20.43,
    ("qwen-image", "text_encoder"): 8.29,
    ("hunyuanvideo", "transformer"): 12.82,
    ("hunyuanvideo", "text_encoder"): 7.50,
    ("cogvideox-2b", "transformer"): 1.69,
    ("cogvideox-5b", "transformer"): 5.57,
    ("sd3.5-large", "text_encoder_2"): 0.695,
    ("sd3.5-large", "text_encoder_3"): 4.76,
    ("ltx-video", "text_encoder"): 4.76,
}
# published sizes (billions) that count the buffers too: Stability AI's "8.1B" (large) and "2.5B"
# (medium) include SD3's fixed positional-embedding table (192^2 x 2432 and 384^2 x 1536), a buffer
# stored in the checkpoint; rounded figures, hence the wider tolerance
WITH_BUFFERS_B = {
    ("sd3.5-large", "transformer"): 8.1,
    ("sd3.5-medium", "transformer"): 2.5,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_component_builds_on_meta_with_installed_libraries(name):
    spec = get_config(name)
    for comp in spec.components:
        m = build_component(comp)  # meta device: no memory
        n = sum(p.numel() for p in m.parameters())
        assert n > 0
        assert all(p.device.type == "meta" for p in m.parameters())
        want = EXPECTED_B.get((spec.name, comp.name))
        if want is not None:
            assert abs(n / 1e9 - want) / want < 0.01, (comp.name, n)
        want = WITH_BUFFERS_B.get((spec.name, comp.name))
        if want is not None:
            nb = n + sum(b.numel() for b in m.buffers())
            assert abs(nb / 1e9 - want) / want < 0.02, (comp.name, nb)


def test_aliases_and_unknown_names():
    assert get_config("Wan-AI/Wan2.1-T2V-1.3B-Diffusers").name == "wan2.1-t2v-1.3b"
    assert get_config("SDXL").name == "sdxl"
    assert get_config("stabilityai/stable-diffusion-3.5-large").name == "sd3.5-large"
    assert get_config("Lightricks/LTX-Video").name == "ltx-video"
    with pytest.raises(UsageError, match="known models"):
        get_config("wan-3.0-9000b")


def test_pipeline_facts_are_consistent():
    for name in MODEL_NAMES:
        s = get_config(name)
        assert s.cfg_mode in ("batched", "separate", "distilled")
        assert s.denoiser and s.vae and s.text_encoders
        if s.kind == "video":
            # 4x temporal compression (Wan, HunyuanVideo, CogVideoX), 8x for LTX-Video's VAE
            assert s.vae_scale_factor_temporal == (8 if s.pipeline_class.startswith("LTX") else 4) and s.default_fps
        d = s.to_dict()
        assert d["components"][0]["config"] is not s.components[0].config
