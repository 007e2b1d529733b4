"""Choose how to run a pipeline within a GPU memory budget, and apply the choice.

:func:`plan` estimates every candidate (dtype x offloading x VAE tiling/slicing x layerwise
fp8 storage x attention backend) with :func:`genprof.planning.estimate.estimate`, keeps those
whose predicted peak *reserved* memory fits ``budget * (1 - safety_margin)``, and picks the one
with the smallest predicted time. Time is a model, stated in :class:`TimeModel`: a denoising
step time and a VAE decode time (measured figures when you pass them; otherwise assumptions,
flagged in the plan), plus what each offloading mode moves over PCIe at the measured (or
assumed) bandwidth. When nothing fits, the plan says the smallest achievable peak and what
would be needed.

:func:`apply` applies a plan to a loaded pipeline with diffusers' own APIs, in this order:
dtype, layerwise fp8 storage (before offloading, so offloaded groups move fp8 weights),
offloading, VAE tiling/slicing, attention backend. It returns what it did.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from genprof.errors import UsageError
from genprof.planning.estimate import ATTENTION_BACKENDS, OFFLOAD_MODES, Estimate, _resolve, estimate

log = logging.getLogger(__name__)

DEFAULT_SAFETY_MARGIN = 0.08
"""Fraction of the budget kept free: a plan fits when ``peak_reserved <= budget * (1 - margin)``.

The rule: the estimator's worst measured under-prediction of peak reserved, rounded up to a whole
percent. Over the 38 configurations measured on the H100 (the ten estimate cases run as whole
pipeline calls, and the 28 offload / tiling candidates of the plan validation) the worst was 7.9%
(Wan 2.1 with streamed leaf-level group offloading and VAE tiling; docs/BENCHMARKS.md).
"""


@dataclass
class TimeModel:
    """Inputs of the time prediction. ``None`` fields fall back to the stated assumptions.

    * ``step_time_s``: one denoising step with everything on the GPU (all CFG passes);
      assumption: ``2 * denoiser_params * tokens * passes / ASSUMED_FLOPS``.
    * ``vae_decode_s``: the VAE decode without tiling; assumption: one step time.
    * ``h2d_bandwidth_bytes_per_s``: pinned host-to-device bandwidth
      (``resources(measure_bandwidth=True)``); assumption: 20 GB/s (PCIe 4 x16 in practice).
    * ``pageable_fraction``: pageable copies (no pinning: model/sequential offload, group
      offload without streams) run at this fraction of pinned bandwidth; assumption 0.5.
    """

    step_time_s: float | None = None
    vae_decode_s: float | None = None
    text_encode_s: float | None = None
    h2d_bandwidth_bytes_per_s: float | None = None
    pageable_fraction: float = 0.5  # kept for old callers; the copies below have their own measured rates
    assumed_flops: float = 300e12  # effective dense bf16 FLOP/s of an H100-class GPU; assumption
    assumed_device: str = "an NVIDIA H100-class GPU (300 TFLOP/s effective dense bf16)"  # whose speed assumed_flops is
    assumed_bandwidth: float = 20e9  # assumption
    # pageable host-to-device copies (.to("cuda") of unpinned weights: model offload, sequential offload):
    # bench/results/plan_wan_h100.json, model offload, text encoding: 11.36 GB of UMT5 in 1.88 s
    pageable_h2d_bytes_per_s: float = 6.0e9
    # device-to-host copies into fresh pageable memory (model offload's .to("cpu")): same file, model
    # offload, denoising 11.25 s = 3.12 s compute + 11.36 GB UMT5 out + 2.84 GB transformer in
    d2h_pageable_bytes_per_s: float = 1.5e9
    # group offloading without streams: onload .to(cuda) + offload module.to("cpu") of every group each call,
    # per byte of weights; geometric mean of UMT5 text encoding and Wan denoising under group_block and
    # group_leaf (1.40, 2.42, 1.17, 2.24 GB/s) in bench/results/plan_wan_h100.json
    group_sync_bytes_per_s: float = 1.7e9
    # per leaf module onload under leaf-level group offloading and sequential offload (hooks, per-tensor
    # copies and syncs): bench/results/plan_wan_h100.json: sequential denoising 5.56 s vs 3.12 s without
    # offload = 0.61 s per call, 0.47 s of it pageable copies, the rest over 457 leaves (300 us); streamed
    # leaf offload of the VAE: 22-27 ms per decoder call over 69 leaves (330-385 us); streamed leaf
    # denoising 180 us. Was 30 us (assumption).
    leaf_overhead_s: float = 300e-6
    fp8_cast_overhead: float = 0.05  # fraction of step time to upcast fp8 weights; assumption
    # extra VAE decode time with tiling: video VAEs (temporal + spatial tiles, causal cache per tile):
    # bench/results/plan_wan_h100.json, no offload: 2.08 s -> 5.01 s (+141%)
    tiling_overhead_video: float = 1.41
    # image VAEs: assumption (SDXL at 1024x1024 fits one tile, so plan_sdxl_h100.json measured no overhead)
    tiling_overhead: float = 0.25
    math_attention_overhead: float = 0.5  # extra step time of math attention vs fused; assumption

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    settings: dict[str, Any]
    peak_reserved_bytes: int
    peak_allocated_bytes: int
    peak_phase: str
    fits: bool
    time_s: float
    time_breakdown: dict[str, float]
    host_ram_bytes: int
    pinned_host_ram_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """The chosen settings, why, and what it costs."""

    model: str
    budget_bytes: int
    safety_margin: float
    generation: dict[str, Any]
    chosen: Candidate | None
    candidates: list[Candidate]
    estimate: Estimate | None
    assumptions: list[str] = field(default_factory=list)
    fits: bool = True
    smallest_peak_bytes: int | None = None
    needed: str | None = None

    @property
    def settings(self) -> dict[str, Any]:
        if self.chosen is None:
            raise UsageError(f"no plan fits {self.budget_bytes} bytes: {self.needed}")
        return self.chosen.settings

    def fastest_feasible(self) -> list[Candidate]:
        return sorted((c for c in self.candidates if c.fits), key=lambda c: c.time_s)

    def undominated(self, only_fitting: bool = True) -> list[Candidate]:
        """Candidates no other one beats: none is at least as fast with no more GPU memory and no more host RAM
        (and strictly better in one of them). Sorted by predicted time."""
        pool = [c for c in self.candidates if c.fits or not only_fitting]

        def beats(a: Candidate, b: Candidate) -> bool:
            no_worse = (a.time_s <= b.time_s and a.peak_reserved_bytes <= b.peak_reserved_bytes
                        and a.host_ram_bytes <= b.host_ram_bytes)
            better = (a.time_s < b.time_s or a.peak_reserved_bytes < b.peak_reserved_bytes
                      or a.host_ram_bytes < b.host_ram_bytes)
            return no_worse and better

        return sorted((c for c in pool if not any(beats(o, c) for o in pool)), key=lambda c: c.time_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "budget_bytes": self.budget_bytes,
            "safety_margin": self.safety_margin,
            "usable_bytes": int(self.budget_bytes * (1 - self.safety_margin)),
            "generation": dict(self.generation),
            "fits": self.fits,
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "smallest_peak_bytes": self.smallest_peak_bytes,
            "needed": self.needed,
            "assumptions": list(self.assumptions),
            "candidates": [c.to_dict() for c in self.candidates],
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
        }


def _predict_time(est: Estimate, tm: TimeModel, params: int, leaves: int) -> tuple[float, dict[str, float], list[str]]:
    """Predicted time of one generation: text encoding + denoising + VAE decode, each with its transfers.

    Transfers follow what each offload mode does (diffusers 0.42 / accelerate):

    * ``model``: each component ``.to(cuda)`` once (pageable) and ``.to(cpu)`` when the next runs;
    * ``sequential``: every leaf copied in (pageable) at each call and dropped (no copy back);
    * ``group_block`` / ``group_leaf``: every group copied in and ``module.to("cpu")`` back at each call
      (``group_sync_bytes_per_s`` per byte, the round trip);
    * ``*_stream``: prefetched groups come from pinned copies at the measured bandwidth, overlapped
      with compute, and are dropped (no copy back); at block level a component without block lists
      (UMT5, CLIP: diffusers' unmatched group, ``stream=None``) still goes the synchronous way.

    Video VAEs (Wan) call the decoder once per latent frame, and with tiling once per tile and latent
    frame (Wan 2.1 at 480x832x81: 21 and 315 calls, counted by the estimate's trace); an offload hook
    moves the decoder's weights (and pays its per-leaf cost at leaf level) at every call.
    """
    s = est.settings
    assumptions: list[str] = []
    den = est.phase("denoise")
    tokens = int(den.detail.get("tokens") or 0)
    passes = int(s.get("cfg_passes", 1)) * int(s.get("batch_size", 1))
    calls = int(den.detail.get("calls_per_step", 1))
    attn_flops = float(den.detail.get("attention_flops_per_call") or 0.0) * calls
    if tm.step_time_s is not None:
        step = tm.step_time_s
    else:
        step = max(1e-3, (2.0 * params * max(tokens, 1) * passes + attn_flops) / tm.assumed_flops)
        assumptions.append(f"step time {step:.3f} s from (2*params*tokens*passes + attention FLOPs) / {tm.assumed_flops:.0e} FLOP/s, "
                           f"the speed of {tm.assumed_device} (pass --step-time measured on your GPU)")
    vae = tm.vae_decode_s if tm.vae_decode_s is not None else step
    if tm.vae_decode_s is None:
        assumptions.append("VAE decode time assumed equal to one step (pass --vae-time)")
    bw = tm.h2d_bandwidth_bytes_per_s or tm.assumed_bandwidth
    if tm.h2d_bandwidth_bytes_per_s is None:
        assumptions.append(f"host-to-device bandwidth assumed {tm.assumed_bandwidth / 1e9:.0f} GB/s (measure with genprof doctor --bandwidth)")
    steps = int(s["num_inference_steps"])
    fp8 = bool(s["layerwise_fp8"])
    by_role: dict[str, int] = {"text_encoder": 0, "denoiser": 0, "vae": 0}
    te_params = 0
    for c in est.components:
        by_role[c.role] = by_role.get(c.role, 0) + (c.fp8_bytes if (fp8 and c.role == "denoiser") else c.weight_bytes)
        if c.role == "text_encoder":
            te_params += c.params
    te_w, den_w, vae_w = by_role["text_encoder"], by_role["denoiser"], by_role["vae"]
    te_outside = sum(c.outside_blocks_bytes for c in est.components if c.role == "text_encoder")
    den_c = next(c for c in est.components if c.role == "denoiser")
    den_outside = den_c.outside_blocks_bytes if not fp8 else int(den_c.outside_blocks_bytes * den_w / max(den_c.weight_bytes, 1))
    video = len(s.get("latent_shape") or ()) == 5
    vdet = est.phase("vae_decode").detail
    vae_calls = int(vdet.get("decoder_calls") or (int(den.detail.get("latent_frames") or 1) if video else 1))
    dec_w = int(vdet.get("decoder_weight_bytes") or vae_w)
    dec_leaf_t = int(vdet.get("decoder_leaves") or 0) * tm.leaf_overhead_s
    step_t = step * (1 + (tm.math_attention_overhead if s["attention_backend"] == "math" else 0.0))
    if fp8:
        step_t *= 1 + tm.fp8_cast_overhead
    # text encoders: compute is small next to their transfers; 2 * params * tokens FLOPs (77-512 tokens)
    te_compute = tm.text_encode_s if tm.text_encode_s is not None else 2.0 * te_params * 512 / tm.assumed_flops
    compute_den = steps * step_t
    mode = s["offload"]
    ph2d, d2h, rt = tm.pageable_h2d_bytes_per_s, tm.d2h_pageable_bytes_per_s, tm.group_sync_bytes_per_s
    n_calls = steps * calls
    leaf_t = leaves * tm.leaf_overhead_s
    if mode == "none":
        te_x = den_x = vae_x = 0.0
        denoise = compute_den
    elif mode == "model":
        te_x = te_w / ph2d
        den_x = te_w / d2h + den_w / ph2d
        vae_x = den_w / d2h + vae_w / ph2d
        denoise = compute_den + den_x
    elif mode == "sequential":
        te_x = te_w / ph2d
        den_x = n_calls * (den_w / ph2d + leaf_t)
        vae_x = vae_calls * (dec_w / ph2d + dec_leaf_t)
        denoise = compute_den + den_x
    elif mode in ("group_block", "group_leaf"):
        te_x = te_w / rt
        den_x = n_calls * (den_w / rt + (leaf_t if mode == "group_leaf" else 0.0))
        vae_x = vae_calls * (dec_w / rt + (dec_leaf_t if mode == "group_leaf" else 0.0))
        denoise = compute_den + den_x
    else:  # streamed
        if mode == "group_block_stream":
            te_x = te_outside / rt + (te_w - te_outside) / bw
            sync = den_outside / rt
        else:
            te_x = te_w / bw
            sync = n_calls * leaf_t / max(n_calls, 1)
        den_x = n_calls * (den_w / bw)
        denoise = max(compute_den, den_x) + n_calls * sync
        vae_x = vae_calls * (dec_w / bw + (dec_leaf_t if mode == "group_leaf_stream" else 0.0))
    te_t = te_compute + te_x
    tiling = (tm.tiling_overhead_video if video else tm.tiling_overhead) if s["vae_tiling"] else 0.0
    vae_t = vae * (1 + tiling) + vae_x
    total = te_t + denoise + vae_t
    return total, {"text_encode_s": te_t, "denoise_s": denoise, "vae_decode_s": vae_t,
                   "transfer_s": te_x + vae_x + (denoise - compute_den)}, assumptions


def _host_ram(est: Estimate) -> tuple[int, int]:
    """(host RAM, of which pinned) that the offloaded weights need."""
    mode = est.settings["offload"]
    if mode == "none":
        return 0, 0
    total = sum(
        (c.fp8_bytes if (est.settings["layerwise_fp8"] and c.role == "denoiser") else c.weight_bytes) for c in est.components
    )
    if mode.endswith("_stream"):
        return 2 * total, total  # pageable original plus a pinned copy
    return total, 0


def plan(
    pipe_or_config: Any,
    budget_bytes: int,
    *,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    time_model: TimeModel | None = None,
    offload_modes: tuple[str, ...] = OFFLOAD_MODES,
    attention_backends: tuple[str, ...] = ("flash",),
    allow_fp8: bool = True,
    dtypes: tuple[str, ...] = ("bf16",),
    host_ram_bytes: int | None = None,
    use_calibration: bool = True,
    gpu_name: str | None = None,
    **generation: Any,
) -> Plan:
    """The fastest candidate whose predicted peak reserved memory fits the budget.

    ``generation`` holds :func:`estimate`'s size arguments (``height``, ``width``,
    ``num_frames``, ``batch_size``, ``num_inference_steps``, ``guidance_scale``).
    ``host_ram_bytes`` (e.g. ``resources().host_ram_available_bytes``) rules out candidates
    whose offloaded weights would not fit in host RAM. Without a ``time_model``, a calibration
    that ``genprof tune --calibrate`` saved for this model on ``gpu_name`` (default: the current
    CUDA device) supplies the measured step, decode and text-encode times
    (``use_calibration=False`` to ignore it).
    """
    if budget_bytes <= 0:
        raise UsageError(f"budget must be > 0 bytes, got {budget_bytes}")
    if not 0 <= safety_margin < 1:
        raise UsageError(f"safety_margin must be in [0, 1), got {safety_margin}")
    for m in offload_modes:
        if m not in OFFLOAD_MODES:
            raise UsageError(f"offload mode {m!r} is not one of {', '.join(OFFLOAD_MODES)}")
    for a in attention_backends:
        if a not in ATTENTION_BACKENDS:
            raise UsageError(f"attention backend {a!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
    bad = set(generation) - {"height", "width", "num_frames", "batch_size", "num_inference_steps", "guidance_scale", "vae_dtype", "calibration"}
    if bad:
        raise UsageError(f"unknown generation argument(s): {', '.join(sorted(bad))}")
    spec = _resolve(pipe_or_config)
    tm = time_model or TimeModel()
    calibrated: str | None = None
    if time_model is None and use_calibration:
        tm, calibrated = _calibrated_time_model(spec.name, gpu_name)
    usable = int(budget_bytes * (1 - safety_margin))
    batch = int(generation.get("batch_size", 1))
    slicing_opts = (False, True) if batch > 1 else (False,)
    fp8_opts = (False, True) if allow_fp8 else (False,)
    candidates: list[Candidate] = []
    estimates: list[Estimate] = []
    assumptions: list[str] = [calibrated] if calibrated else []
    den_params = None
    leaves = 0
    for dtype, mode, tiling, slicing, fp8, attn in itertools.product(
        dtypes, offload_modes, (False, True), slicing_opts, fp8_opts, attention_backends
    ):
        est = estimate(
            spec,
            dtype=dtype,
            offload=mode,
            vae_tiling=tiling,
            vae_slicing=slicing,
            layerwise_fp8=fp8,
            attention_backend=attn,
            **generation,
        )
        if den_params is None:
            dc = next(c for c in est.components if c.role == "denoiser")
            den_params = dc.params
            leaves = _leaf_count(spec)
        t, breakdown, notes = _predict_time(est, tm, den_params, leaves)
        for n in notes:
            if n not in assumptions:
                assumptions.append(n)
        ram, pinned = _host_ram(est)
        fits = est.peak_reserved_bytes <= usable and (host_ram_bytes is None or ram <= host_ram_bytes)
        s = dict(est.settings)
        candidates.append(
            Candidate(
                settings=s,
                peak_reserved_bytes=est.peak_reserved_bytes,
                peak_allocated_bytes=est.peak_allocated_bytes,
                peak_phase=est.peak_phase,
                fits=fits,
                time_s=t,
                time_breakdown=breakdown,
                host_ram_bytes=ram,
                pinned_host_ram_bytes=pinned,
            )
        )
        estimates.append(est)
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i].time_s, candidates[i].peak_reserved_bytes))
    chosen_i = next((i for i in order if candidates[i].fits), None)
    smallest_i = min(range(len(candidates)), key=lambda i: candidates[i].peak_reserved_bytes)
    smallest = candidates[smallest_i]
    gen_settings = {k: v for k, v in generation.items() if k != "calibration"}
    if chosen_i is None:
        need = int(smallest.peak_reserved_bytes / (1 - safety_margin)) + 1
        from genprof.units import format_bytes

        needed = (
            f"nothing fits {format_bytes(budget_bytes)} (usable {format_bytes(usable)} with a "
            f"{safety_margin:.0%} margin). The smallest predicted peak is {format_bytes(smallest.peak_reserved_bytes)} "
            f"({_describe(smallest.settings)}, peak in {smallest.peak_phase}); it needs a budget of at least "
            f"{format_bytes(need)}, or fewer frames / a smaller resolution / batch size."
        )
        if host_ram_bytes is not None and smallest.host_ram_bytes > host_ram_bytes:
            needed += f" It also needs {format_bytes(smallest.host_ram_bytes)} of host RAM."
        return Plan(
            model=spec.name,
            budget_bytes=int(budget_bytes),
            safety_margin=safety_margin,
            generation=gen_settings,
            chosen=None,
            candidates=candidates,
            estimate=estimates[smallest_i],
            assumptions=assumptions,
            fits=False,
            smallest_peak_bytes=smallest.peak_reserved_bytes,
            needed=needed,
        )
    return Plan(
        model=spec.name,
        budget_bytes=int(budget_bytes),
        safety_margin=safety_margin,
        generation=gen_settings,
        chosen=candidates[chosen_i],
        candidates=candidates,
        estimate=estimates[chosen_i],
        assumptions=assumptions,
        fits=True,
        smallest_peak_bytes=smallest.peak_reserved_bytes,
    )


def _leaf_count(spec: Any) -> int:
    from genprof.planning.estimate import _meta_module, cache

    key = cache.cache_key("leaf_count", spec)
    hit = cache.load(key)
    if hit is not None:
        return int(hit)
    m = _meta_module(spec.name, spec.denoiser.name, "bf16")
    n = sum(1 for sub in m.modules() if not list(sub.children()) and any(True for _ in sub.parameters(recurse=False)))
    cache.store(key, n)
    return n


def _describe(s: Mapping[str, Any]) -> str:
    parts = [s["dtype"], f"offload={s['offload']}"]
    if s.get("layerwise_fp8"):
        parts.append("fp8 weights")
    if s.get("vae_tiling"):
        parts.append("VAE tiling")
    if s.get("vae_slicing"):
        parts.append("VAE slicing")
    parts.append(f"attention={s['attention_backend']}")
    return ", ".join(parts)


def _calibrated_time_model(model: str, gpu_name: str | None) -> tuple[TimeModel, str | None]:
    """The time model from a saved ``genprof tune --calibrate`` for ``model`` on ``gpu_name``, if any."""
    from genprof.planning.calibration_store import calibration_path, load_calibration

    gpu = gpu_name
    if gpu is None:
        from genprof.probes import torch_cuda

        torch = torch_cuda.get_torch()
        if torch is None or torch_cuda.cuda_unavailable_reason(torch) is not None:
            return TimeModel(), None
        gpu = str(torch.cuda.get_device_name())
    cal = load_calibration(model, gpu)
    known = {f.name for f in fields(TimeModel) if f.name not in ("assumed_device",)}
    kw: dict[str, Any] = {k: float(v) for k, v in ((cal or {}).get("time_model") or {}).items() if k in known and v is not None}
    if not kw:
        return TimeModel(), None
    note = (f"times measured by genprof tune on {gpu} ({', '.join(sorted(kw))}; {calibration_path(model, gpu)}); "
            "use_calibration=False to ignore")
    return TimeModel(**kw), note


def plan_code(settings: Mapping[str, Any], *, denoiser: str = "transformer", device: str = "cuda") -> list[str]:
    """The diffusers statements that :func:`apply` runs for ``settings``, as Python source lines.

    ``denoiser`` is the pipeline attribute of the denoiser (``"transformer"`` or ``"unet"``).
    """
    dt = {"bf16": "torch.bfloat16", "fp16": "torch.float16", "fp32": "torch.float32"}[settings.get("dtype", "bf16")]
    lines = ["import torch", "", f"pipe.to(dtype={dt})"]
    if settings.get("layerwise_fp8"):
        lines.append(f"pipe.{denoiser}.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype={dt})")
    mode = settings.get("offload", "none")
    if mode == "none":
        lines.append(f"pipe.to({device!r})")
    elif mode == "model":
        lines.append("pipe.enable_model_cpu_offload()")
    elif mode == "sequential":
        lines.append("pipe.enable_sequential_cpu_offload()")
    elif mode.startswith("group_"):
        level = "block_level" if mode.startswith("group_block") else "leaf_level"
        blocks = ", num_blocks_per_group=1" if level == "block_level" else ""
        lines.append(f"pipe.enable_group_offload(onload_device=torch.device({device!r}), offload_device=torch.device('cpu'), "
                     f"offload_type={level!r}{blocks}, use_stream={mode.endswith('_stream')})")
    else:
        raise UsageError(f"unknown offload mode {mode!r}")
    if settings.get("vae_tiling"):
        lines.append("pipe.vae.enable_tiling()")
    if settings.get("vae_slicing"):
        lines.append("pipe.vae.enable_slicing()")
    attn = settings.get("attention_backend", "flash")
    lines.append(f"pipe.{denoiser}.set_attention_backend({_ATTN_NAMES[attn]!r})  # diffusers >= 0.35")
    return lines


_ATTN_NAMES = {"flash": "_native_flash", "efficient": "_native_efficient", "cudnn": "_native_cudnn", "math": "_native_math"}


def apply(pipe: Any, plan_or_settings: Plan | Mapping[str, Any], *, device: str = "cuda") -> list[str]:
    """Apply a plan to a loaded diffusers pipeline; returns what was done, in order.

    Order: dtype; layerwise fp8 storage on the denoiser; offloading (or ``pipe.to(device)``);
    VAE tiling and slicing; attention backend. Raises :class:`UsageError` when the pipeline
    lacks an API the plan needs (nothing is silently skipped).
    """
    import torch

    s = plan_or_settings.settings if isinstance(plan_or_settings, Plan) else dict(plan_or_settings)
    done: list[str] = []
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[s.get("dtype", "bf16")]
    pipe.to(dtype=dt)
    done.append(f"pipe.to(dtype={dt})")
    den_name = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
    den = getattr(pipe, den_name, None)
    if den is None:
        raise UsageError("the pipeline has neither a transformer nor a unet")
    if s.get("layerwise_fp8"):
        if not hasattr(den, "enable_layerwise_casting"):
            raise UsageError(f"{type(den).__name__} has no enable_layerwise_casting (diffusers >= 0.33 needed)")
        den.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dt)
        done.append(f"{den_name}.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype={dt})")
    mode = s.get("offload", "none")
    dev = torch.device(device)
    if mode == "none":
        pipe.to(dev)
        done.append(f"pipe.to({device!r})")
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=dev)
        done.append("pipe.enable_model_cpu_offload()")
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=dev)
        done.append("pipe.enable_sequential_cpu_offload()")
    elif mode.startswith("group_"):
        level = "block_level" if mode.startswith("group_block") else "leaf_level"
        stream = mode.endswith("_stream")
        kw: dict[str, Any] = {"onload_device": dev, "offload_device": torch.device("cpu"), "offload_type": level, "use_stream": stream}
        if level == "block_level":
            kw["num_blocks_per_group"] = 1
        pipe.enable_group_offload(**kw)
        done.append(f"pipe.enable_group_offload(offload_type={level!r}, num_blocks_per_group=1, use_stream={stream})"
                    if level == "block_level" else f"pipe.enable_group_offload(offload_type={level!r}, use_stream={stream})")
    else:
        raise UsageError(f"unknown offload mode {mode!r}")
    vae = getattr(pipe, "vae", None)
    if s.get("vae_tiling"):
        if vae is None or not hasattr(vae, "enable_tiling"):
            raise UsageError("the plan asks for VAE tiling but the pipeline's VAE has no enable_tiling")
        vae.enable_tiling()
        done.append("vae.enable_tiling()")
    if s.get("vae_slicing"):
        if vae is None or not hasattr(vae, "enable_slicing"):
            raise UsageError("the plan asks for VAE slicing but the pipeline's VAE has no enable_slicing")
        vae.enable_slicing()
        done.append("vae.enable_slicing()")
    attn = s.get("attention_backend", "flash")
    if attn != "flash" or hasattr(den, "set_attention_backend"):
        if not hasattr(den, "set_attention_backend"):
            raise UsageError(f"{type(den).__name__} has no set_attention_backend (diffusers >= 0.35 needed)")
        den.set_attention_backend(_ATTN_NAMES[attn])
        done.append(f"{den_name}.set_attention_backend({_ATTN_NAMES[attn]!r})")
    log.info("applied plan: %s", "; ".join(done))
    return done
