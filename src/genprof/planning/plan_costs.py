"""What a plan candidate costs besides GPU memory: its predicted time and the host RAM it needs.

:class:`TimeModel` states the time model's inputs (measured figures or the stated assumptions);
``_predict_time`` predicts one generation's time from an estimate, ``_host_ram`` the host RAM its
offloaded weights need; ``_calibrated_time_model`` reads the times ``genprof tune --calibrate`` saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from genprof.planning.estimate import Estimate


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
