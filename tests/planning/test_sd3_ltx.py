"""Stable Diffusion 3.5 and LTX-Video in the catalogue and the estimator.

Two kinds of checks: the estimator's traced inputs (denoiser call, ``vae.decode``) have the shapes
the real diffusers pipelines pass (tiny random-weight copies of the catalogue's architectures run
end to end through ``StableDiffusion3Pipeline`` / ``LTXPipeline``, their calls captured); and the
catalogue models estimate end to end at reduced sizes with figures that follow from their
architecture (token counts, CFG batch, VAE tiling).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from genprof.catalog import ModelSpec, get_config
from genprof.planning.build import build_component
from genprof.planning.estimate import GenerationSettings, estimate
from genprof.planning.estimate.settings import _denoiser_inputs, _vae_decode_args

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")


def _gen(h: int, w: int, frames: int = 1, guidance: float = 5.0) -> GenerationSettings:
    return GenerationSettings(height=h, width=w, num_frames=frames, batch_size=1, num_inference_steps=1,
                              guidance_scale=guidance, dtype="fp32", offload="none", vae_tiling=False,
                              vae_slicing=False, attention_backend="flash", layerwise_fp8=False, vae_dtype="fp32")


def _tiny(spec: ModelSpec, configs: dict[str, dict[str, Any]], seq_lens: dict[str, int]) -> ModelSpec:
    """``spec`` with its components' configs shrunk (same classes, same structure flags)."""
    comps = []
    for c in spec.components:
        cfg = {**c.config, **configs.get(c.name, {})}
        comps.append(dataclasses.replace(c, config=cfg, seq_len=seq_lens.get(c.name, c.seq_len)))
    return dataclasses.replace(spec, name=spec.name + "-tiny", components=tuple(comps))


def _build(spec: ModelSpec) -> dict[str, Any]:
    torch.manual_seed(0)
    return {c.name: build_component(c, device="cpu", dtype=torch.float32) for c in spec.components}


class _Capture:
    """The keyword arguments of every ``transformer`` call and the arguments of ``vae.decode``."""

    def __init__(self, pipe: Any) -> None:
        self.denoiser: list[dict[str, Any]] = []
        self.decode: list[tuple[Any, ...]] = []
        pipe.transformer.register_forward_pre_hook(lambda _m, _a, kw: self.denoiser.append(dict(kw)), with_kwargs=True)
        real = pipe.vae.decode

        def decode(*args: Any, **kw: Any) -> Any:
            self.decode.append(args)
            return real(*args, **kw)

        pipe.vae.decode = decode


def _same_shapes(traced: dict[str, Any], passed: dict[str, Any]) -> None:
    """Every input the estimator traces with is one the pipeline passes, of the same shape (or value)."""
    for name, want in traced.items():
        if name == "return_dict":
            continue
        assert name in passed, f"the pipeline does not pass {name}"
        got = passed[name]
        if isinstance(want, torch.Tensor):
            assert isinstance(got, torch.Tensor), name
            assert tuple(want.shape) == tuple(got.shape), (name, tuple(want.shape), tuple(got.shape))
            assert want.is_floating_point() == got.is_floating_point(), name
        elif isinstance(want, tuple):
            assert tuple(float(x) for x in want) == pytest.approx(tuple(float(x) for x in got)), name
        else:
            assert want == got, (name, want, got)


def _run(pipe: Any, prompt: str, **kw: Any) -> None:
    """Call ``pipe`` with diffusers' default attention dispatch (PyTorch SDPA).

    ``ModelMixin.set_attention_backend`` also sets diffusers' process-wide active backend, so a
    test that applied a plan with flash attention leaves it set; LTX's masked cross-attention
    cannot run on it.
    """
    from diffusers.models.attention_dispatch import attention_backend

    with attention_backend("native"):
        pipe(prompt, **kw)


def _tokenizer(n: int, clip: bool) -> Any:
    from genprof.integrations.demo import build_tokenizer

    return build_tokenizer(n, clip_style=clip)


_CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=64,
             projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1)
_T5 = dict(vocab_size=64, d_model=64, d_kv=8, d_ff=37, num_layers=1, num_heads=4, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def _sd3_tiny(name: str) -> ModelSpec:
    spec = get_config(name)
    den = spec.denoiser.config
    dual = [0] if den.get("dual_attention_layers") else []
    return _tiny(spec, {
        "transformer": dict(num_layers=2, attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16,
                            joint_attention_dim=64, pooled_projection_dim=64, pos_embed_max_size=16, sample_size=8,
                            dual_attention_layers=dual),
        "vae": dict(block_out_channels=[8, 8, 8, 8], norm_num_groups=4, layers_per_block=1),
        "text_encoder": _CLIP, "text_encoder_2": _CLIP, "text_encoder_3": _T5,
    }, {"text_encoder_3": 16})


@pytest.mark.parametrize("name", ["sd3.5-medium", "sd3.5-large"])
def test_sd3_traced_inputs_are_what_the_pipeline_passes(name: str) -> None:
    spec = _sd3_tiny(name)
    m = _build(spec)
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=m["transformer"], vae=m["vae"], scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=m["text_encoder"], tokenizer=_tokenizer(77, True),
        text_encoder_2=m["text_encoder_2"], tokenizer_2=_tokenizer(77, True),
        text_encoder_3=m["text_encoder_3"], tokenizer_3=_tokenizer(16, False),
    )
    cap = _Capture(pipe)
    _run(pipe, "a cat on the beach", height=64, width=64, num_inference_steps=1, guidance_scale=4.5,
         max_sequence_length=16, output_type="np")
    gen = _gen(64, 64, guidance=4.5)
    batch = gen.batch_size * gen.cfg_passes(spec)
    assert batch == 2  # batched CFG: one call of twice the prompts
    _same_shapes(_denoiser_inputs(spec, gen, batch), cap.denoiser[0])
    assert len(cap.decode) == 1 and cap.decode[0][1:] == _vae_decode_args(spec, 1, "fp32") == ()
    z = cap.decode[0][0]
    assert tuple(z.shape) == (1, spec.latent_channels, *gen.latent_shape(spec)[1:])


def _ltx_tiny(name: str) -> ModelSpec:
    spec = get_config(name)
    vae = spec.vae.config
    # same up/down structure and flags, channels in the published ratios (1/16), one layer per block
    dec_blocks = [c // 16 for c in vae["decoder_block_out_channels"]]
    return _tiny(spec, {
        "transformer": dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8,
                            cross_attention_dim=16, num_layers=1, caption_channels=64),
        "vae": dict(latent_channels=16, block_out_channels=[8, 8, 16, 16], decoder_block_out_channels=dec_blocks,
                    layers_per_block=[1] * len(vae["layers_per_block"]),
                    decoder_layers_per_block=[1] * len(vae["decoder_layers_per_block"])),
        "text_encoder": _T5,
    }, {"text_encoder": 16})


@pytest.mark.parametrize("name", ["ltx-video", "ltx-video-0.9.1"])
def test_ltx_traced_inputs_are_what_the_pipeline_passes(name: str) -> None:
    spec = dataclasses.replace(_ltx_tiny(name), latent_channels=16)
    m = _build(spec)
    pipe = diffusers.LTXPipeline(transformer=m["transformer"], vae=m["vae"], text_encoder=m["text_encoder"],
                                 tokenizer=_tokenizer(16, False), scheduler=diffusers.FlowMatchEulerDiscreteScheduler())
    assert (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio) == (
        spec.vae_scale_factor_spatial, spec.vae_scale_factor_temporal)
    cap = _Capture(pipe)
    _run(pipe, "a cat on the beach", height=64, width=96, num_frames=9, num_inference_steps=1, guidance_scale=3.0,
         max_sequence_length=16, output_type="np")
    gen = _gen(64, 96, frames=9, guidance=3.0)
    assert gen.latent_shape(spec) == (2, 2, 3)
    _same_shapes(_denoiser_inputs(spec, gen, 2), cap.denoiser[0])
    z, *rest = cap.decode[0]
    assert tuple(z.shape) == (1, spec.latent_channels, *gen.latent_shape(spec))
    want = _vae_decode_args(spec, 1, "fp32")
    assert len(rest) == len(want) or (rest == [None] and want == ())  # 0.9.0: the pipeline passes temb=None
    for got, exp in zip(rest, want, strict=False):
        assert tuple(got.shape) == tuple(exp.shape)
    assert bool(want) == bool(spec.vae.config["timestep_conditioning"])


@pytest.mark.parametrize("name", ["sd3.5-medium", "sd3.5-large", "ltx-video", "ltx-video-0.9.1"])
def test_catalogue_configs_build_with_the_pipelines_scale_factors(name: str) -> None:
    spec = get_config(name)
    vae = build_component(spec.vae)
    den = build_component(spec.denoiser)
    if spec.vae.class_name == "AutoencoderKLLTXVideo":
        assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (32, 8)
        assert den.config.in_channels == vae.config.latent_channels == spec.latent_channels == 128
        assert den.config.caption_channels == spec.text_encoders[0].config["d_model"]
    else:
        assert 2 ** (len(vae.config.block_out_channels) - 1) == spec.vae_scale_factor_spatial
        assert den.config.in_channels == vae.config.latent_channels == spec.latent_channels == 16
        assert den.config.caption_projection_dim == den.config.num_attention_heads * den.config.attention_head_dim
        # pooled = both CLIP projections; the joint context is T5-wide
        te = {c.name: c.config for c in spec.text_encoders}
        assert den.config.pooled_projection_dim == te["text_encoder"]["projection_dim"] + te["text_encoder_2"]["projection_dim"]
        assert den.config.joint_attention_dim == te["text_encoder_3"]["d_model"]
        assert spec.patch_size[1] == den.config.patch_size


@pytest.mark.slow
def test_sd3_estimates_end_to_end() -> None:
    est = estimate("sd3.5-large", height=512, width=512)
    den = est.phase("denoise")
    # joint attention over the image tokens and the 77 CLIP + 256 T5 text tokens, CFG batched
    assert den.detail["tokens"] == (512 // 16) ** 2 + 77 + 256
    assert den.detail["call_batch"] == 2 and den.detail["calls_per_step"] == 1
    assert [c.name for c in est.components] == ["transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"]
    for p in est.phases:
        assert p.peak_reserved_bytes >= p.peak_allocated_bytes > p.resident_weights_bytes > 0
    # without CFG one call of one image; at 1024 the activations (not the start of the call, where
    # the live-bytes count sees the view of the whole positional-embedding buffer) decide the peak
    cfg, no_cfg = (estimate("sd3.5-large", height=1024, width=1024, guidance_scale=g, phases=("denoise",)).phase("denoise")
                   for g in (3.5, 1.0))
    assert (cfg.detail["call_batch"], no_cfg.detail["call_batch"]) == (2, 1)
    assert 1.8 < cfg.activation_peak_bytes / no_cfg.activation_peak_bytes < 2.2
    medium = estimate("sd3.5-medium", height=768, width=768, phases=("denoise",))
    assert medium.phase("denoise").detail["tokens"] == (768 // 16) ** 2 + 333
    assert medium.total_weight_bytes < est.total_weight_bytes


@pytest.mark.slow
def test_ltx_estimates_end_to_end_and_tiling_lowers_the_decode() -> None:
    est = estimate("ltx-video-0.9.1", height=256, width=768, num_frames=25)
    den = est.phase("denoise")
    assert den.detail["latent_frames"] == 4
    assert den.detail["tokens"] == 4 * (256 // 32) * (768 // 32)  # self-attention over every latent token
    assert den.detail["call_batch"] == 2
    assert est.settings["latent_shape"] == [1, 128, 4, 8, 24]
    tiled = estimate("ltx-video-0.9.1", height=256, width=768, num_frames=25, vae_tiling=True, phases=("vae_decode",))
    assert tiled.phase("vae_decode").detail["decoder_calls"] > 1 == est.phase("vae_decode").detail["decoder_calls"]
    assert tiled.phase("vae_decode").activation_peak_bytes < est.phase("vae_decode").activation_peak_bytes
    with pytest.raises(Exception, match="8\\*n\\+1"):
        estimate("ltx-video", height=256, width=384, num_frames=24)
    with pytest.raises(Exception, match="multiples of 32"):
        estimate("ltx-video", height=240, width=384, num_frames=25)
