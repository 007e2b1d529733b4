"""The allocator model's constants (:data:`CALIBRATION`), how to load them, the reserved model and its fit.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genprof.errors import UsageError
from genprof.planning.estimate.trace import MiB, _round_reserved

log = logging.getLogger(__name__)

CALIBRATION: dict[str, float] = {
    # Fitted on bench/results/estimate_h100_realistic.json: 10 cases measured on the lent NVIDIA
    # H100 80GB HBM3 (torch 2.11.0+cu130, diffusers 0.42.1, 2026-11-22) with weights placed tensor by
    # tensor like from_pretrained + .to("cuda"); every case within 10% in-sample and leave-one-out
    # (bench/fit_estimate.py). An earlier fit (1.1825 / 1.0 / 2.78 / 1.77) was on a bench artefact:
    # weights initialised in fp32 on the GPU and cast, which leaves their segments half empty.
    # reserved / allocated of the weights' segments while resident (free space inside them is
    # reused by activations first); the allocator model predicts ~1.01 for loaded weights.
    "weights_reserved_factor": 1.0125,
    # reserved bytes per traced activation byte once activations outgrow the weights' free space:
    # every new large size needs a new segment (video VAE convolutions: 1.3-1.5 by the allocator model).
    "reserved_factor_text_encode": 1.68,
    "reserved_factor_denoise": 1.34,
    "reserved_factor_vae_decode": 1.65,
    # Video VAEs (Wan, CogVideoX, HunyuanVideo) decode latent frame by latent frame (tile by tile
    # with tiling) with a feature cache, so the same tensor sizes come back every frame and the
    # caching allocator reuses their blocks: replaying the meta trace through
    # CachingAllocatorModel gives 1.41 reserved per traced byte for the Wan 2.1 VAE at 480x832x81
    # against 1.79 for the SDXL VAE at 1024x1024. Fitted (fit_calibration) on the six video cases
    # of bench/results/estimate_h100_realistic.json: 1.59, leave-one-out 1.55-1.62 (docs/planning.md).
    # reserved_factor_vae_decode (1.65, all ten cases) stays for image VAEs.
    "reserved_factor_vae_decode_video": 1.59,
    # multiplies the traced activation peak (allocated) to cover what meta tracing cannot see:
    # kernels' temporary buffers, autocast copies. 1.0 = trust the trace (allocated errors <= 3%
    # except SD VAE decode, -11%, on the H100 data).
    "activation_factor_text_encode": 1.0,  # measured: allocated within 3%
    "activation_factor_denoise": 1.0,  # measured: allocated within 3%
    "activation_factor_vae_decode": 1.0,  # measured: within 3% for video VAEs
    # image VAEs (AutoencoderKL, 2-D convolutions): allocated above the baseline during decode is
    # 1.567 x the traced activation peak (+41 MiB), the same at 512, 768, 1024 and 1280 px for the SDXL
    # and Flux VAEs (bench/results/vae_decode_alloc_h100.json, H100, bf16, cuDNN on; 2.4-3.9x with cuDNN
    # off): the convolutions' cuDNN workspaces grow with the image, so they are in this factor and the
    # fixed conv workspace is not added to allocated. Reserved keeps its own fit (reserved_factor_vae_decode).
    "activation_factor_vae_decode_image": 1.567,
    # cuBLAS / cuBLASLt workspaces the caching allocator holds once GEMMs ran (bytes).
    "workspace_bytes": 64 * MiB,  # assumption (PyTorch's default cuBLAS workspace on sm90 is 32 MiB/stream)
    # cuDNN convolution workspace while the VAE decodes (bytes), factor path only: the replay
    # requests each 2-D convolution's own workspace (trace.conv_workspace_bytes).
    "vae_conv_workspace_bytes": 256 * MiB,  # assumption
    # Block-level group offloading runs a component without top-level block lists (UMT5, CLIP: the
    # whole encoder is diffusers' "unmatched group") as one group, and never calls empty_cache
    # (accelerate's model offload does, after each offload). The freed weights' segments (one per
    # tensor: 32/80 MiB for UMT5-XXL) stay reserved, and later phases reuse only the part whose
    # free blocks are large enough for their tensors. Fraction of those freed bytes that later
    # phases do NOT reuse: fitted on bench/results/plan_wan_h100.json (group_block and
    # group_block_stream without VAE tiling: 13.87 / 14.18 GiB measured), 2026-11-22, H100.
    "group_freed_unreused_fraction": 0.6,
    # Group offloading of a UNet (skip connections kept across the whole forward) left about
    # 1.3-1.9 GiB more reserved than the same allocations under accelerate's sequential offload in
    # every group mode (bench/results/plan_sdxl_h100.json: group_leaf 4.37 GiB vs sequential 2.54 GiB
    # with the same 2.42 GiB allocated peak). Mechanism not identified (allocator fragmentation from
    # weight churn interleaved with long-lived skip tensors is the suspect); fitted as a fraction of
    # the UNet's weight bytes on the four SDXL group modes of that file (one UNet model: a fit, not a law).
    "group_unet_extra_fraction": 0.33,
    # Without offloading, a pipeline call never empties the cache between phases, so the segments
    # denoising left cached stay reserved while the VAE decodes. An image VAE's large 2-D
    # convolution tensors reuse only part of them: the decode's peak reserved in a whole call
    # exceeded the same decode from an emptied cache by this fraction of the denoise phase's
    # predicted cache (its peak reserved less its resident weights): 0.53 / 0.58 / 0.70 / 0.95 for
    # SD 1.5 / SDXL / SDXL tiled / Flux, mean 0.69 (bench/results/estimate_h100_seq.json, H100,
    # bench_estimate.py --sequence). Video VAEs decode frame by frame in small blocks and
    # reuse the cache: -0.06..+0.05 for CogVideoX, Wan 2.1 81 frames and Wan 2.2 (not applied).
    "carry_unreused_fraction_vae_decode_image": 0.69,
}

_CAL_ENV = "GENPROF_CALIBRATION"


def load_calibration(path: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """The constants to use: :data:`CALIBRATION`, updated from a JSON file when given.

    ``path`` defaults to the environment variable ``GENPROF_CALIBRATION``. Unknown keys are
    errors (a typo would silently keep a default).
    """
    cal = dict(CALIBRATION)
    p = path if path is not None else os.environ.get(_CAL_ENV)
    if not p:
        return cal
    try:
        data = json.loads(Path(p).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read calibration file {p}: {exc}") from exc
    data = data.get("calibration", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise UsageError(f"calibration file {p}: expected a JSON object of constant -> number")
    for k, v in data.items():
        if k not in cal:
            raise UsageError(f"calibration file {p}: unknown constant {k!r}; known: {', '.join(cal)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise UsageError(f"calibration file {p}: {k} must be a number >= 0, got {v!r}")
        cal[k] = float(v)
    return cal


def _reserved(wr: int, persistent: int, act: int, ws: int, factor: float, weights_factor: float) -> int:
    """The reserved model: the weights' segments, or weights + kept + activations once they outgrow them."""
    return int(max(wr * weights_factor, wr + _round_reserved(persistent) + act * factor + ws))


def _factor_key(case: Mapping[str, Any], phase: str) -> str:
    """The calibration constant for ``phase`` of a bench case: video VAEs have their own decode factor."""
    shape = ((case.get("predicted") or {}).get("settings") or {}).get("latent_shape") or ()
    if phase == "vae_decode" and len(shape) == 5:
        return "reserved_factor_vae_decode_video"
    return f"reserved_factor_{phase}"


def reserved_model(case: Mapping[str, Any], phase: str, cal: Mapping[str, float]) -> int:
    """Peak reserved bytes of ``phase`` of a bench case (``bench_estimate.py`` JSON) under constants ``cal``.

    Uses the predicted parts stored in the case (weights, kept tensors, traced activations,
    workspace), so refitting needs neither a GPU nor re-tracing.
    """
    ph = case["phases"][phase]["predicted"]
    wr = (ph.get("detail") or {}).get("resident_weights_reserved_bytes")
    if wr is None:  # files written before the field existed: the bench keeps every component resident
        wr = sum(int(c["reserved_bytes"]) for c in case["predicted"]["components"])
    return _reserved(int(wr), int(ph["persistent_bytes"]), int(ph["activation_peak_bytes"]), int(ph["workspace_bytes"]),
                     float(cal[_factor_key(case, phase)]), float(cal["weights_reserved_factor"]))


# ------------------------------------------------------------------ calibration
def fit_calibration(cases: list[Mapping[str, Any]], base: Mapping[str, float] | None = None) -> dict[str, float]:
    """Refit ``weights_reserved_factor`` and ``reserved_factor_<phase>`` on measured cases.

    The VAE decode of video cases (5-D latents) gets its own factor, ``reserved_factor_vae_decode_video``.

    ``cases`` is the ``cases`` list of ``bench_estimate.py``: each holds ``phases``:
    ``{name: {"predicted": PhaseEstimate.to_dict(), "measured_reserved_bytes": n, ...}}``.
    Least squares on the log of predicted / measured peak reserved of every phase of every case,
    under :func:`reserved_model`, by grid search (weights factor 1.0-2.0 in steps of 0.0025;
    phase factors 1.0-4.0 in steps of 0.01; for a given weights factor each phase factor is
    fitted on its own phase). Other constants are kept from ``base``. Returns a full
    calibration dict to save as JSON and pass with ``GENPROF_CALIBRATION=file.json``.
    """
    cal = dict(base or CALIBRATION)
    phases = ("text_encode", "denoise", "vae_decode")
    keys = ("text_encode", "denoise", "vae_decode", "vae_decode_video")
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in keys}
    for case in cases:
        for phase in phases:
            ph = case.get("phases", {}).get(phase)
            if not ph or not ph.get("measured_reserved_bytes"):
                continue
            key = _factor_key(case, phase)
            zero = dict(cal, weights_reserved_factor=0.0, **{key: 0.0})
            fixed = float(reserved_model(case, phase, zero))  # Wr + kept + workspace
            pred = ph["predicted"]
            wr = fixed - _round_reserved(int(pred["persistent_bytes"])) - int(pred["workspace_bytes"])
            rows[key.removeprefix("reserved_factor_")].append((wr, fixed, float(pred["activation_peak_bytes"]), float(ph["measured_reserved_bytes"])))
    if not any(rows.values()):
        raise UsageError("fit_calibration: no case has a measured phase; nothing to fit")
    fgrid = [1.0 + 0.01 * i for i in range(301)]

    def phase_fit(data: list[tuple[float, float, float, float]], kw: float) -> tuple[float, float]:
        best = (math.inf, 1.0)
        for f in fgrid:
            err = sum(math.log(max(wr * kw, fx + f * act) / m) ** 2 for wr, fx, act, m in data)
            if err < best[0]:
                best = (err, f)
        return best

    best_total, best = math.inf, (1.0, {k: 1.0 for k in keys})
    for i in range(401):
        kw = 1.0 + 0.0025 * i
        total, fs = 0.0, {}
        for k in keys:
            err, f = phase_fit(rows[k], kw) if rows[k] else (0.0, cal[f"reserved_factor_{k}"])
            total += err
            fs[k] = f
        if total < best_total:
            best_total, best = total, (kw, fs)
    cal["weights_reserved_factor"] = round(best[0], 4)
    for k in keys:
        cal[f"reserved_factor_{k}"] = round(best[1][k], 4)
    return cal
