"""The whole call: :func:`estimate` puts phases, weights and the allocator model together.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from genprof.catalog import ModelSpec
from genprof.errors import UsageError
from genprof.planning.estimate import cache
from genprof.planning.estimate.calibration import _reserved, load_calibration
from genprof.planning.estimate.phases import (
    _ATTN_FLOPS,
    _TRACE_ERRORS,
    _VAE_5D,
    _VAE_CALLS,
    _denoiser_input_bytes,
    _text_analytic,
    _trace_denoiser,
    _trace_text_encoder,
    _trace_vae_decode,
    record_phase,
)
from genprof.planning.estimate.replay import PhaseRecording, replay_call
from genprof.planning.estimate.results import ComponentWeights, Estimate, PhaseEstimate
from genprof.planning.estimate.settings import (
    ATTENTION_BACKENDS,
    DTYPE_BYTES,
    OFFLOAD_MODES,
    GenerationSettings,
    _nbytes,
)
from genprof.planning.estimate.specs import _resolve
from genprof.planning.estimate.weights import _register, _resident, _side_pool, component_weights

log = logging.getLogger(__name__)

PHASES = ("text_encode", "denoise", "vae_decode")
"""The phases of one call, in order."""

RESERVED_METHODS = ("replay", "factor")
"""How :func:`estimate` turns the trace into peak reserved: allocator replay or fitted factors."""

def estimate(
    pipe_or_config: Any,
    *,
    height: int | None = None,
    width: int | None = None,
    num_frames: int | None = None,
    batch_size: int = 1,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    dtype: str = "bf16",
    offload: str = "none",
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    attention_backend: str = "flash",
    layerwise_fp8: bool = False,
    vae_dtype: str | None = None,
    calibration: Mapping[str, float] | None = None,
    phases: tuple[str, ...] | None = None,
    reserved_method: str = "replay",
) -> Estimate:
    """Predict peak GPU memory (allocated and reserved) of one generation, by component and phase.

    ``pipe_or_config`` is a model name or alias from :mod:`genprof.catalog`,
    a diffusers model folder (``model_index.json`` + component ``config.json`` files), a
    :class:`ModelSpec`, or a loaded diffusers pipeline (only its configs are read). Sizes default
    to the model's defaults. ``offload`` is one of :data:`OFFLOAD_MODES`; ``attention_backend``
    one of :data:`ATTENTION_BACKENDS`. No GPU and no weights are needed.
    ``phases`` (a subset of :data:`PHASES`) estimates only those phases, e.g. ``("vae_decode",)``.
    ``reserved_method`` (one of :data:`RESERVED_METHODS`) is how peak reserved follows from the
    trace: ``"replay"`` feeds the traced allocation sequence of the call through the caching
    allocator model (:mod:`genprof.planning.estimate.replay`), ``"factor"`` applies the fitted
    reserved factors of :data:`CALIBRATION`. Each phase's ``detail`` carries both figures where
    the replay ran (``reserved_replay_bytes``, ``reserved_factor_bytes``).
    """
    if reserved_method not in RESERVED_METHODS:
        raise UsageError(f"reserved_method {reserved_method!r} is not one of {', '.join(RESERVED_METHODS)}")
    spec = _resolve(pipe_or_config)
    _register(spec)
    if dtype not in DTYPE_BYTES:
        raise UsageError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)
    if offload not in OFFLOAD_MODES:
        raise UsageError(f"offload {offload!r} is not one of {', '.join(OFFLOAD_MODES)}")
    if attention_backend not in ATTENTION_BACKENDS:
        raise UsageError(f"attention_backend {attention_backend!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
    h = int(height or spec.default_height)
    w = int(width or spec.default_width)
    f = int(num_frames or spec.default_num_frames) if spec.kind == "video" else 1
    s = spec.vae_scale_factor_spatial * (2 if spec.patch_size[1] == 2 else 1)
    if h <= 0 or w <= 0 or h % s or w % s:
        raise UsageError(f"{spec.name}: height and width must be positive multiples of {s}, got {h}x{w}")
    if spec.kind == "video" and (f < 1 or (f - 1) % spec.vae_scale_factor_temporal):
        k = spec.vae_scale_factor_temporal
        raise UsageError(f"{spec.name}: num_frames must be {k}*n+1 (e.g. {k * ((f - 1) // k) + 1}), got {f}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    vdt = vae_dtype or ("fp32" if (spec.vae_upcast_fp16 and dtype == "fp16") else dtype)
    vdt = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(vdt, vdt)
    gen = GenerationSettings(
        height=h,
        width=w,
        num_frames=f,
        batch_size=int(batch_size),
        num_inference_steps=int(num_inference_steps or spec.default_steps),
        guidance_scale=float(spec.default_guidance_scale if guidance_scale is None else guidance_scale),
        dtype=dtype,
        offload=offload,
        vae_tiling=bool(vae_tiling),
        vae_slicing=bool(vae_slicing),
        attention_backend=attention_backend,
        layerwise_fp8=bool(layerwise_fp8),
        vae_dtype=vdt,
    )
    cal = dict(load_calibration())
    if calibration:
        for key, val in calibration.items():
            if key not in cal:
                raise UsageError(f"unknown calibration constant {key!r}; known: {', '.join(cal)}")
            cal[key] = float(val)
    t0 = time.perf_counter()
    if phases is not None:
        bad = [p for p in phases if p not in PHASES]
        if bad or not phases:
            raise UsageError(f"unknown phase(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(PHASES)}")
    result = _estimate(spec, gen, cal, frozenset(phases or PHASES), reserved_method)
    result.trace_time_s = time.perf_counter() - t0
    return result


def _estimate(spec: ModelSpec, gen: GenerationSettings, cal: dict[str, float],
              want: frozenset[str] = frozenset(PHASES), method: str = "factor") -> Estimate:
    esize = DTYPE_BYTES[gen.dtype]
    notes: list[str] = []
    if method == "replay" and gen.offload != "none":
        notes.append(f"offload {gen.offload}: peak reserved from the fitted factors (the allocator replay "
                     "covers offload none)")
        method = "factor"
    replayed = _replay(spec, gen, cal, want, notes) if method == "replay" else None
    weights = [
        component_weights(spec, c, gen.vae_dtype if c.role == "vae" else gen.dtype) for c in spec.components
    ]
    by_name = {c.name: c for c in weights}
    cfgp = gen.cfg_passes(spec)
    b = gen.batch_size
    lf, lh, lw = gen.latent_shape(spec)
    latent_fp32 = _nbytes(b, spec.latent_channels, lf, lh, lw, esize=4)
    te_specs = spec.text_encoders
    embeds = 0
    for c in te_specs:
        cfg = c.config.get("text_config", c.config)
        hid = int(cfg.get("hidden_size") or cfg.get("d_model") or 768)
        embeds += _nbytes(b * cfgp, c.seq_len or 77, hid, esize=esize)

    def weights_on_gpu(active: list[str]) -> tuple[int, int]:
        alloc = res = 0
        for cw in weights:
            fp8 = gen.layerwise_fp8
            if gen.offload == "none":
                a, r = _resident(cw, "none", fp8)
            elif cw.name in active:
                a, r = _resident(cw, gen.offload, fp8)
            else:
                continue
            alloc += a
            res += r
        return alloc, res

    leaf_level = gen.offload in ("sequential", "group_leaf")

    def leaf_weights(active: list[str]) -> tuple[tuple[int, int], tuple[int, int] | None]:
        # leaf-level and sequential offload: one leaf on the GPU at a time, components run one after
        # another, so the largest leaf of the phase (not a sum over its components); the activations
        # live beside a smaller leaf (the second largest bounds it)
        if not leaf_level:
            return weights_on_gpu(active), None
        big = small = (0, 0)
        for n in active:
            cw = by_name[n]
            b = _resident(cw, gen.offload, gen.layerwise_fp8)
            sm = _resident(replace(cw, largest_leaf_bytes=cw.second_leaf_bytes), gen.offload, gen.layerwise_fp8)
            big, small = max(big, b), max(small, sm)
        return big, small

    def model_offload_max(active: list[str]) -> tuple[int, int]:
        # enable_model_cpu_offload: one component of the phase at a time
        best = (0, 0)
        for n in active:
            a, r = _resident(by_name[n], "model", gen.layerwise_fp8)
            if a > best[0]:
                best = (a, r)
        return best

    phases: list[PhaseEstimate] = []
    ws = int(cal["workspace_bytes"])

    # text encoding: each encoder in turn; the negative prompt is a second call of the same size
    if "text_encode" in want:
        te_peak = 0
        te_detail: dict[str, Any] = {}
        traced_all = True
        for c in te_specs:
            peak, err = _trace_text_encoder(spec.name, c.name, gen.dtype, b, gen.attention_backend)
            if err is not None:
                traced_all = False
                peak = _text_analytic(c, b, esize)
                notes.append(f"{c.name} ({c.class_name}) could not run on the meta device; analytic estimate used ({err[:120]})")
            te_detail[c.name] = {"activation_peak_bytes": peak, "traced": err is None}
            te_peak = max(te_peak, peak)
        names = [c.name for c in te_specs]
        (wa, wr), with_act = ((model_offload_max(names), None) if gen.offload == "model" else leaf_weights(names))
        act = int(te_peak * cal["activation_factor_text_encode"])
        persistent = embeds
        phases.append(_phase("text_encode", ",".join(names), wa, wr, persistent, act, ws, cal["reserved_factor_text_encode"], traced_all, te_detail,
                             cal["weights_reserved_factor"], with_act))

    # denoising: one call with batch*cfg (batched CFG) or cfg calls of batch (separate)
    if "denoise" in want:
        den = spec.denoiser
        call_batch = b * cfgp if spec.cfg_mode == "batched" else b
        den_key = _trace_keys(gen)[0]
        peak, tokens, ops, err = _trace_denoiser(spec.name, den_key, call_batch)
        if err is not None:
            raise UsageError(f"cannot estimate {den.class_name} activations on the meta device: {err}")
        inputs = _denoiser_input_bytes(spec, gen, call_batch)
        noise_keep = _nbytes(b, spec.latent_channels, lf, lh, lw, esize=esize) if (cfgp == 2 and spec.cfg_mode == "separate") else 0
        # latents (fp32) + scheduler step temporaries (about two more latent-sized fp32 tensors)
        persistent = embeds + 3 * latent_fp32 + inputs + noise_keep
        act = int(peak * cal["activation_factor_denoise"])
        (wa, wr), with_act = leaf_weights([den.name])
        if gen.offload == "model":
            wa, wr = model_offload_max([den.name])
        phases.append(
            _phase(
                "denoise",
                den.name,
                wa,
                wr,
                persistent,
                act,
                ws,
                cal["reserved_factor_denoise"],
                True,
                {
                    "call_batch": call_batch,
                    "calls_per_step": 1 if spec.cfg_mode == "batched" or cfgp == 1 else cfgp,
                    "tokens": tokens,
                    "traced_ops": ops,
                    "input_bytes": inputs,
                    "attention_flops_per_call": _ATTN_FLOPS.get((spec.name, den_key, call_batch), 0.0),
                    "latent_frames": lf,
                },
                cal["weights_reserved_factor"],
                with_act,
            )
        )

    # VAE decode
    if "vae_decode" in want:
        vae_key = _trace_keys(gen)[1]
        vpeak, out_bytes, verr = _trace_vae_decode(spec.name, vae_key, b)
        dec_calls, dec_bytes, dec_leaves = _VAE_CALLS.get((spec.name, vae_key, b), (1, 0, 0))
        if verr is not None:
            raise UsageError(f"cannot estimate {spec.vae.class_name}.decode on the meta device: {verr}")
        vae_in = _nbytes(b, spec.latent_channels, lf, lh, lw, esize=DTYPE_BYTES[gen.vae_dtype])
        persistent = latent_fp32 + vae_in
        act = int(vpeak * cal["activation_factor_vae_decode"])
        video_vae = spec.kind == "video"
        # image VAEs: allocated from the measured factor, which includes the convolution workspaces
        alloc_act_ws = None if video_vae else (int(vpeak * cal["activation_factor_vae_decode_image"]), ws)
        (wa, wr), with_act = leaf_weights([spec.vae.name])
        if gen.offload == "model":
            wa, wr = model_offload_max([spec.vae.name])
        phases.append(
            _phase(
                "vae_decode",
                spec.vae.name,
                wa,
                wr,
                persistent,
                act,
                ws + int(cal["vae_conv_workspace_bytes"]),
                cal["reserved_factor_vae_decode_video" if video_vae else "reserved_factor_vae_decode"],
                True,
                {"output_bytes": out_bytes, "tiling": gen.vae_tiling, "slicing": gen.vae_slicing,
                 "decoder_calls": dec_calls, "decoder_weight_bytes": dec_bytes, "decoder_leaves": dec_leaves},
                cal["weights_reserved_factor"],
                with_act,
                alloc_act_ws,
            )
        )

    if len(want) < len(PHASES):
        notes.append(f"only {', '.join(p for p in PHASES if p in want)} estimated: the peak is that phase's alone, "
                     "without cache carried over from earlier phases")
    else:
        _offload_cache(phases, weights, spec, gen, cal)
    if replayed is not None:
        for ph in phases:
            r = replayed[ph.name]["peak_reserved_bytes"]
            ph.detail = {**ph.detail, "reserved_factor_bytes": ph.peak_reserved_bytes, "reserved_replay_bytes": r,
                         "replay_allocated_bytes": replayed[ph.name]["peak_allocated_bytes"]}
            ph.peak_reserved_bytes = max(int(r), ph.peak_allocated_bytes)
    if gen.attention_backend == "math":
        notes.append("math attention: the Lq x Lk score matrix is materialised (quadratic in tokens)")
    if gen.offload != "none":
        notes.append(f"offload {gen.offload}: weights not on the GPU live in host RAM (pinned for streamed group offloading)")
    settings = {
        "height": gen.height,
        "width": gen.width,
        "num_frames": gen.num_frames,
        "batch_size": gen.batch_size,
        "num_inference_steps": gen.num_inference_steps,
        "guidance_scale": gen.guidance_scale,
        "cfg_mode": spec.cfg_mode,
        "cfg_passes": cfgp,
        "denoiser_call_batch": b * cfgp if spec.cfg_mode == "batched" else b,
        "denoiser_calls_per_step": 1 if spec.cfg_mode == "batched" or cfgp == 1 else cfgp,
        "dtype": gen.dtype,
        "vae_dtype": gen.vae_dtype,
        "offload": gen.offload,
        "vae_tiling": gen.vae_tiling,
        "vae_slicing": gen.vae_slicing,
        "attention_backend": gen.attention_backend,
        "layerwise_fp8": gen.layerwise_fp8,
        "reserved_method": method,
        "latent_shape": [b, spec.latent_channels, lf, lh, lw] if spec.kind == "video" else [b, spec.latent_channels, lh, lw],
    }
    return Estimate(model=spec.name, settings=settings, components=weights, phases=phases, calibration=cal, notes=notes)


def _trace_keys(gen: GenerationSettings) -> tuple[GenerationSettings, GenerationSettings]:
    """The settings the denoiser and the VAE decode are traced with (what their traces depend on)."""
    den = replace(gen, offload="none", vae_tiling=False, vae_slicing=False, layerwise_fp8=False,
                  num_inference_steps=0, guidance_scale=0.0, vae_dtype=gen.dtype)
    vae = replace(gen, offload="none", layerwise_fp8=False, num_inference_steps=0, guidance_scale=0.0, dtype=gen.vae_dtype)
    return den, vae


_RECORDED: OrderedDict[str, PhaseRecording] = OrderedDict()
_RECORDED_MAX = 8  # a tiled video decode's recording holds about a million events


def _recorded(spec: ModelSpec, phase: str, gen: GenerationSettings, batch: int,
              component: str | None = None) -> PhaseRecording:
    """:func:`record_phase`, once per process for the same traced settings.

    A plan asks for the replay of many candidates whose phases trace alike (the VAE decode does
    not depend on fp8 storage or the attention backend of the denoiser); a recording is immutable,
    so they share it instead of tracing again.
    """
    key = cache.cache_key("record_phase", spec, phase, gen, batch, component)
    hit = _RECORDED.get(key)
    if hit is not None:
        _RECORDED.move_to_end(key)
        return hit
    rec = record_phase(spec, phase, gen, batch, component)
    _RECORDED[key] = rec
    while len(_RECORDED) > _RECORDED_MAX:
        _RECORDED.popitem(last=False)
    return rec


def _replay(spec: ModelSpec, gen: GenerationSettings, cal: Mapping[str, float], want: frozenset[str],
            notes: list[str]) -> dict[str, dict[str, int]]:
    """Peak reserved per phase by allocator replay of the traced call (records each phase once)."""
    cfgp = gen.cfg_passes(spec)
    call_batch = gen.batch_size * cfgp if spec.cfg_mode == "batched" else gen.batch_size
    calls = 1 if spec.cfg_mode == "batched" or cfgp == 1 else cfgp
    den_key, vae_key = _trace_keys(gen)

    def record(phase: str, comp: str | None) -> PhaseRecording:
        if phase == "denoise":
            return _recorded(spec, phase, den_key, call_batch)
        if phase == "vae_decode":
            return _recorded(spec, phase, vae_key, gen.batch_size)
        try:
            return _recorded(spec, phase, gen, gen.batch_size, comp)
        except (*_TRACE_ERRORS, AttributeError) as exc:
            notes.append(f"{comp}: not replayed (it could not run on the meta device: {type(exc).__name__})")
            return PhaseRecording(events=(), mark=0)

    try:
        return replay_call(spec, gen, cal, call_batch=call_batch, calls_per_step=calls, want=want, record=record)
    except _TRACE_ERRORS as exc:
        raise UsageError(f"cannot trace {spec.name} on the meta device for the allocator replay: "
                         f"{type(exc).__name__}: {exc}; pass reserved_method='factor'") from exc


def _offload_cache(phases: list[PhaseEstimate], weights: list[ComponentWeights], spec: ModelSpec, gen: GenerationSettings,
                   cal: Mapping[str, float]) -> None:
    """Carry the allocator's cache from phase to phase (in place) where nothing empties it.

    Reserved memory only grows during a generation unless someone calls ``empty_cache``; accelerate's
    model offload does after each offload (``offload="model"``: phases stay independent). Without
    offloading, only an image VAE's decode is raised, by the part of the denoise cache it cannot
    reuse (:func:`_image_decode_carry`). Diffusers' group offloading and accelerate's sequential
    offload never empty it either; for them, in this order:

    * each phase's peak is at least the previous one's (segments stay reserved);
    * block-level group offloading frees whole components (the unmatched group) after they ran;
      a fraction ``group_freed_unreused_fraction`` of their segments is not reusable by later phases;
    * streamed groups live in the side stream's pool (:func:`_side_pool`), added to every phase;
    * for a UNet denoiser under group offloading, ``group_unet_extra_fraction`` of its weight bytes
      from the denoising phase on (fitted; see :data:`CALIBRATION`).
    """
    mode = gen.offload
    if mode == "none":
        _image_decode_carry(phases, spec, cal)
        return
    if mode == "model":
        return
    fp8 = gen.layerwise_fp8
    side = max((_side_pool(cw, mode, fp8) for cw in weights), default=0)
    den = spec.denoiser
    unet_extra = 0
    if mode.startswith("group_") and "UNet" in den.class_name:
        dw = next(cw for cw in weights if cw.name == den.name)
        unet_extra = int(cal["group_unet_extra_fraction"] * dw.weight_bytes)
    freed = 0
    prev = 0
    for i, ph in enumerate(phases):
        carried = int(cal["group_freed_unreused_fraction"] * freed) if mode.startswith("group_block") else 0
        extra = unet_extra if i > 0 else 0
        own = ph.peak_reserved_bytes + carried + extra
        res = max(prev, own)
        prev = res
        ph.detail = {**ph.detail, "carried_cache_bytes": carried, "side_stream_pool_bytes": side, "group_unet_extra_bytes": extra}
        ph.peak_reserved_bytes = int(res + side)
        ph.peak_allocated_bytes = int(ph.peak_allocated_bytes + side)
        freed += int(ph.detail.get("resident_weights_reserved_bytes", 0))


def _image_decode_carry(phases: list[PhaseEstimate], spec: ModelSpec, cal: Mapping[str, float]) -> None:
    """Without offloading: the part of the denoise phase's cache an image VAE's decode cannot reuse (in place).

    See ``carry_unreused_fraction_vae_decode_image`` in :data:`CALIBRATION`. Video VAEs reuse it, and
    so, by the same frame-by-frame design, is assumed of Qwen-Image's 5-D VAE (not measured).
    """
    if spec.kind == "video" or spec.vae.class_name in _VAE_5D:
        return
    by = {ph.name: ph for ph in phases}
    den, dec = by.get("denoise"), by.get("vae_decode")
    if den is None or dec is None:
        return
    cache = max(0, den.peak_reserved_bytes - int(den.detail.get("resident_weights_reserved_bytes", 0)))
    carried = int(cal["carry_unreused_fraction_vae_decode_image"] * cache)
    dec.detail = {**dec.detail, "carried_cache_bytes": carried}
    dec.peak_reserved_bytes += carried


def _phase(
    name: str,
    comp: str,
    wa: int,
    wr: int,
    persistent: int,
    act: int,
    ws: int,
    factor: float,
    traced: bool,
    detail: dict[str, Any],
    weights_factor: float = 1.0,
    with_activations: tuple[int, int] | None = None,
    alloc_act_ws: tuple[int, int] | None = None,
) -> PhaseEstimate:
    """One phase's peak. Workspaces count in ``allocated`` too: cuBLAS and cuDNN take them from the caching allocator.

    ``with_activations`` = (allocated, reserved) weight bytes resident while the activations live, when
    that is less than ``wa`` / ``wr`` (leaf-level and sequential offload: the largest leaf, UMT5's
    2 GiB shared embedding, is on the GPU only during its own forward, before the encoder's
    activations exist, and its freed segment is then reused by them). The phase's peak is then the
    larger of the two moments, not their sum.

    ``alloc_act_ws`` = (activations, workspace) for the allocated figure when they differ from the
    reserved model's (image VAE decode: a measured factor that includes the convolution workspaces).
    """
    a_act, a_ws = alloc_act_ws if alloc_act_ws is not None else (act, ws)
    alloc = wa + persistent + a_act + a_ws
    reserved = _reserved(wr, persistent, act, ws, factor, weights_factor)
    if with_activations is not None:
        wa_act, wr_act = with_activations
        alloc = max(wa + persistent + a_ws, wa_act + persistent + a_act + a_ws)
        reserved = max(_reserved(wr, persistent, 0, ws, factor, weights_factor),
                       _reserved(wr_act, persistent, act, ws, factor, weights_factor))
    detail = {**detail, "resident_weights_reserved_bytes": int(wr)}
    if with_activations is not None:
        detail["resident_with_activations_reserved_bytes"] = int(with_activations[1])
    return PhaseEstimate(
        name=name,
        component=comp,
        resident_weights_bytes=wa,
        persistent_bytes=persistent,
        activation_peak_bytes=act,
        workspace_bytes=ws,
        peak_allocated_bytes=int(alloc),
        peak_reserved_bytes=int(max(reserved, alloc)),
        traced=traced,
        detail=detail,
    )


