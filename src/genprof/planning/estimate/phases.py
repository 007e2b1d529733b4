"""Phases: trace the denoiser, the text encoders and the VAE decode of one call (cached per model and shape).

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genprof.catalog import ComponentSpec, ModelSpec
from genprof.errors import UsageError
from genprof.planning.estimate import cache
from genprof.planning.estimate.settings import (
    _TORCH_DTYPES,
    GenerationSettings,
    _denoiser_inputs,
    _input_bytes,
    _vae_decode_args,
)
from genprof.planning.estimate.trace import LiveBytes, _round_alloc, _torch, memo_enabled, trace_live_bytes
from genprof.planning.estimate.weights import _SPEC_REGISTRY, _meta_module, _register

if TYPE_CHECKING:
    from genprof.planning.estimate.replay import PhaseRecording

log = logging.getLogger(__name__)

_TRACE_ERRORS = (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError)

# ------------------------------------------------------------------ phases
def _run_denoiser(model: str, gen: GenerationSettings, batch: int, record: bool = False,
                  recorder: Any = None, marks: list[int] | None = None) -> tuple[LiveBytes, Any]:
    """One denoiser forward on meta tensors under the live-bytes trace (raises what the forward raises).

    With ``recorder`` the allocation sequence is recorded in the same pass, and ``marks`` gets the
    recorder's event count when the forward returned (before its outputs are freed).
    """
    spec = _SPEC_REGISTRY[model]
    m = _meta_module(model, spec.denoiser.name, gen.dtype)
    inputs = _denoiser_inputs(spec, gen, batch)
    with _sdpa_dispatch(), trace_live_bytes(gen.attention_backend, record=record, recorder=recorder) as (counter, attn):
        out = m(**inputs)
        _mark(recorder, marks)
        del out
    return counter, attn


def _sdpa_dispatch() -> Any:
    """diffusers' default attention dispatch (``F.scaled_dot_product_attention``) for the trace.

    The trace models the attention backend itself (``gen.attention_backend``); diffusers'
    process-wide backend, which ``set_attention_backend`` also sets (a plan applied earlier in the
    process), must not decide how the meta forward runs: its native flash backend refuses the
    attention masks LTX-Video's and HunyuanVideo's denoisers pass.
    """
    try:
        from diffusers.models.attention_dispatch import attention_backend
    except ImportError:  # older diffusers: no dispatch registry
        return contextlib.nullcontext()
    return attention_backend("native")


def _mark(recorder: Any, marks: list[int] | None) -> None:
    if recorder is not None and marks is not None:
        marks.append(len(recorder.events))


@functools.lru_cache(maxsize=256)
def _trace_denoiser(model: str, gen: GenerationSettings, batch: int) -> tuple[int, int, int, str | None]:
    key = cache.cache_key("denoise", _SPEC_REGISTRY[model], gen, batch)
    hit = _cached(key)
    if hit is not None:
        _ATTN_FLOPS[(model, gen, batch)] = float(hit["attention_flops"])
        return int(hit["peak"]), int(hit["tokens"]), int(hit["ops"]), None
    try:
        counter, attn = _run_denoiser(model, gen, batch)
        _ATTN_FLOPS[(model, gen, batch)] = attn.flops
        cache.store(key, {"peak": counter.peak, "tokens": attn.max_tokens, "ops": counter.ops, "attention_flops": attn.flops})
        return counter.peak, attn.max_tokens, counter.ops, None
    except _TRACE_ERRORS as exc:
        log.warning("tracing %s on the meta device failed: %s", _SPEC_REGISTRY[model].denoiser.class_name, exc)
        return 0, 0, 0, f"{type(exc).__name__}: {exc}"


def _denoiser_input_bytes(spec: ModelSpec, gen: GenerationSettings, batch: int) -> int:
    """Bytes of the denoiser's call inputs (disk-cached: a warm ``plan`` then needs no torch import)."""
    key = cache.cache_key("denoiser_inputs", spec, gen, batch)
    hit = cache.load(key)
    if hit is not None:
        return int(hit)
    n = _input_bytes(_denoiser_inputs(spec, gen, batch))
    cache.store(key, n)
    return n


def _cached(key: str) -> Any:
    """A trace result: from a recording pass of this process (then also stored on disk), else the disk cache."""
    hit = _PREFILL.pop(key, None)
    if hit is not None:
        cache.store(key, hit)
        return hit
    return cache.load(key)


_PREFILL: dict[str, Any] = {}
"""Trace results of a recording pass (:func:`record_phase`), by cache key, taken once by the cached traces."""

_ATTN_FLOPS: dict[tuple[str, GenerationSettings, int], float] = {}
"""Attention FLOPs of one denoiser call, by the :func:`_trace_denoiser` key (filled by the trace)."""


def _run_text_encoder(model: str, comp_name: str, dtype: str, batch: int, backend: str,
                      record: bool = False, recorder: Any = None, marks: list[int] | None = None) -> LiveBytes:
    spec = _SPEC_REGISTRY[model]
    comp = spec.component(comp_name)
    m = _meta_module(model, comp_name, dtype)
    torch = _torch()
    ids = torch.zeros(batch, comp.seq_len or 77, dtype=torch.long, device="meta")
    with trace_live_bytes(backend, record=record, recorder=recorder) as (counter, _):
        out = m(input_ids=ids, output_hidden_states=comp.output_hidden_states)
        _mark(recorder, marks)
        del out
    return counter


@functools.lru_cache(maxsize=256)
def _trace_text_encoder(model: str, comp_name: str, dtype: str, batch: int, backend: str) -> tuple[int, str | None]:
    key = cache.cache_key("text_encode", _SPEC_REGISTRY[model], comp_name, dtype, batch, backend)
    hit = _cached(key)
    if hit is not None:
        return int(hit["peak"]), None
    try:
        peak = _run_text_encoder(model, comp_name, dtype, batch, backend).peak
        cache.store(key, {"peak": peak})
        return peak, None
    except (*_TRACE_ERRORS, AttributeError) as exc:
        cls = _SPEC_REGISTRY[model].component(comp_name).class_name
        log.info("tracing %s on the meta device failed (%s); using the analytic estimate", cls, exc)
        return 0, f"{type(exc).__name__}: {exc}"


def _text_analytic(comp: ComponentSpec, batch: int, esize: int) -> int:
    """Fallback for a text encoder that cannot run on meta: hidden states kept plus one MLP."""
    cfg = comp.config.get("text_config", comp.config)
    hidden = int(cfg.get("hidden_size") or cfg.get("d_model") or 1024)
    inter = int(cfg.get("intermediate_size") or cfg.get("d_ff") or 4 * hidden)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("num_layers") or 1)
    seq = comp.seq_len or 77
    kept = (layers + 1) if comp.output_hidden_states else 2
    vocab = int(cfg.get("vocab_size") or 0) if comp.class_name.endswith("ForConditionalGeneration") else 0
    return batch * seq * (hidden * kept + 3 * inter + vocab) * esize


_VAE_5D = ("AutoencoderKLWan", "AutoencoderKLQwenImage")


def _run_vae_decode(model: str, gen: GenerationSettings, batch: int, record: bool = False,
                    recorder: Any = None, marks: list[int] | None = None) -> tuple[LiveBytes, int, tuple[int, int, int]]:
    """``vae.decode`` on meta latents: (counter, output bytes, (decoder calls, decode weight bytes, leaves))."""
    spec = _SPEC_REGISTRY[model]
    m = _meta_module(model, spec.vae.name, gen.vae_dtype)
    torch = _torch()
    lf, lh, lw = gen.latent_shape(spec)
    dt = getattr(torch, _TORCH_DTYPES[gen.vae_dtype])
    if spec.kind == "video" or spec.vae.class_name in _VAE_5D:
        z = torch.empty(batch, spec.latent_channels, lf, lh, lw, device="meta", dtype=dt)
    else:
        z = torch.empty(batch, spec.latent_channels, lh, lw, device="meta", dtype=dt)
    decoder = getattr(m, "decoder", None)
    calls = [0]
    hook = decoder.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) if decoder is not None else None
    try:
        with _vae_modes(m, gen.vae_tiling, gen.vae_slicing):
            with trace_live_bytes(gen.attention_backend, record=record, recorder=recorder) as (counter, attn), \
                    _decoder_memo(torch, counter, attn, recorder, decoder):
                out = m.decode(z, *_vae_decode_args(spec, batch, gen.vae_dtype), return_dict=False)[0]
                out_bytes = _round_alloc(out.numel() * out.element_size())
                _mark(recorder, marks)
                del out
            return counter, out_bytes, (calls[0], *_decode_weights(m))
    finally:
        if hook is not None:
            hook.remove()


def _decoder_memo(torch: Any, counter: LiveBytes, attn: Any, recorder: Any, decoder: Any) -> Any:
    """A video VAE's decoder calls repeat with the same inputs (frame after frame, tile after tile): replay them."""
    if decoder is None or not memo_enabled():
        return contextlib.nullcontext()
    from genprof.planning.estimate.call_memo import CallMemo

    return CallMemo(torch, counter, attn, recorder).wrapping(decoder)


@functools.lru_cache(maxsize=256)
def _trace_vae_decode(model: str, gen: GenerationSettings, batch: int) -> tuple[int, int, str | None]:
    """(activation peak, output bytes, error) of ``vae.decode``; also fills :data:`_VAE_CALLS`."""
    key = cache.cache_key("vae_decode", _SPEC_REGISTRY[model], gen, batch)
    hit = _cached(key)
    if hit is not None:
        _VAE_CALLS[(model, gen, batch)] = (int(hit["calls"][0]), int(hit["calls"][1]), int(hit["calls"][2]))
        return int(hit["peak"]), int(hit["output_bytes"]), None
    try:
        counter, out_bytes, calls = _run_vae_decode(model, gen, batch)
        _VAE_CALLS[(model, gen, batch)] = calls
        cache.store(key, {"peak": counter.peak, "output_bytes": out_bytes, "calls": list(calls)})
        return counter.peak, out_bytes, None
    except _TRACE_ERRORS as exc:
        log.warning("tracing %s.decode on the meta device failed: %s", _SPEC_REGISTRY[model].vae.class_name, exc)
        return 0, 0, f"{type(exc).__name__}: {exc}"


_VAE_CALLS: dict[tuple[str, GenerationSettings, int], tuple[int, int, int]] = {}
"""Per :func:`_trace_vae_decode` key: (decoder forward calls, decode weight bytes, decode leaves with weights).

A video VAE calls its decoder once per latent frame, and with tiling once per tile and latent frame
(Wan 2.1 at 480x832x81: 21 calls untiled, 315 tiled); an offloading hook moves the decoder's weights
at every call, so the plan's time model needs the count.
"""


def _decode_weights(vae: Any) -> tuple[int, int]:
    """(weight bytes, leaf modules with weights) of what ``decode`` runs: ``decoder`` and ``post_quant_conv``."""
    nbytes = leaves = 0
    for name in ("decoder", "post_quant_conv"):
        sub = getattr(vae, name, None)
        if sub is None:
            continue
        for mod in sub.modules():
            own = list(mod.parameters(recurse=False))
            if own and not list(mod.children()):
                leaves += 1
            nbytes += sum(_round_alloc(p.numel() * p.element_size()) for p in own)
    return nbytes, leaves


@contextlib.contextmanager
def _vae_modes(vae: Any, tiling: bool, slicing: bool) -> Iterator[None]:
    old_tiling = getattr(vae, "use_tiling", False)
    old_slicing = getattr(vae, "use_slicing", False)
    try:
        if tiling:
            if not hasattr(vae, "enable_tiling"):
                raise UsageError(f"{type(vae).__name__} has no tiled decoding (enable_tiling)")
            vae.enable_tiling()
        elif hasattr(vae, "use_tiling"):
            vae.use_tiling = False
        if hasattr(vae, "use_slicing"):
            vae.use_slicing = bool(slicing)
        yield
    finally:
        if hasattr(vae, "use_tiling"):
            vae.use_tiling = old_tiling
        if hasattr(vae, "use_slicing"):
            vae.use_slicing = old_slicing




# ------------------------------------------------------------------ the allocator-replay seam
@dataclass(frozen=True)
class PhaseTrace:
    """The allocation sequence of one phase's forward, as the meta trace saw it.

    ``events`` are ``(kind, storage_key, bytes)`` in order, ``kind`` one of ``"alloc"``,
    ``"free"``, ``"spike"`` (sizes already rounded like the caching allocator's ``allocated``).
    ``peak`` is the live-bytes peak, the figure :func:`genprof.planning.estimate.estimate`
    multiplies by the fitted ``reserved_factor`` of the phase. An allocator replay takes
    ``events`` instead and gives the reserved peak directly.
    """

    phase: str
    peak: int
    events: tuple[tuple[str, int, int], ...]


def trace_phase_allocations(spec: ModelSpec, phase: str, gen: GenerationSettings, batch: int,
                            component: str | None = None) -> PhaseTrace:
    """Trace ``phase`` (``"denoise"``, ``"vae_decode"`` or ``"text_encode"``) and keep its allocation sequence.

    Not cached (the sequence can be long: hundreds of thousands of events for a tiled video
    decode). ``component`` names the text encoder for ``"text_encode"`` (the first one by default).
    ``batch`` is the traced batch: with batched CFG the denoiser sees twice the prompts.
    """
    _register(spec)
    if phase == "denoise":
        counter, _ = _run_denoiser(spec.name, gen, batch, record=True)
    elif phase == "vae_decode":
        counter, _, _ = _run_vae_decode(spec.name, gen, batch, record=True)
    elif phase == "text_encode":
        name = component or spec.text_encoders[0].name
        counter = _run_text_encoder(spec.name, name, gen.dtype, batch, gen.attention_backend, record=True)
    else:
        raise UsageError(f"unknown phase {phase!r}; choose denoise, vae_decode or text_encode")
    return PhaseTrace(phase=phase, peak=counter.peak, events=tuple(counter.events or ()))


def record_phase(spec: ModelSpec, phase: str, gen: GenerationSettings, batch: int,
                 component: str | None = None) -> PhaseRecording:
    """Trace ``phase`` once with the allocation recorder on: its allocator requests in order.

    The same pass gives the live-bytes figures of the factor path (its cached traces then take
    them, so the phase is traced once). ``gen`` and ``batch`` are the traced settings (the keys
    :func:`genprof.planning.estimate.estimate` uses); ``component`` names the text encoder.
    """
    from genprof.planning.alloc_trace import AllocRecorder
    from genprof.planning.estimate.replay import PhaseRecording

    _register(spec)
    rec = AllocRecorder()
    marks: list[int] = []
    if phase == "denoise":
        counter, attn = _run_denoiser(spec.name, gen, batch, recorder=rec, marks=marks)
        _ATTN_FLOPS[(spec.name, gen, batch)] = attn.flops
        _PREFILL[cache.cache_key("denoise", spec, gen, batch)] = {
            "peak": counter.peak, "tokens": attn.max_tokens, "ops": counter.ops, "attention_flops": attn.flops}
    elif phase == "vae_decode":
        counter, out_bytes, calls = _run_vae_decode(spec.name, gen, batch, recorder=rec, marks=marks)
        _PREFILL[cache.cache_key("vae_decode", spec, gen, batch)] = {
            "peak": counter.peak, "output_bytes": out_bytes, "calls": list(calls)}
    elif phase == "text_encode":
        name = component or spec.text_encoders[0].name
        counter = _run_text_encoder(spec.name, name, gen.dtype, batch, gen.attention_backend, recorder=rec, marks=marks)
        _PREFILL[cache.cache_key("text_encode", spec, name, gen.dtype, batch, gen.attention_backend)] = {"peak": counter.peak}
    else:
        raise UsageError(f"unknown phase {phase!r}; choose denoise, vae_decode or text_encode")
    return PhaseRecording(events=tuple(rec.events), mark=marks[0] if marks else len(rec.events))
