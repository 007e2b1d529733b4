"""Output quality against the baseline: PSNR and SSIM of the decoded output (per frame for video).

Metrics come from torchmetrics (``pip install genprof[quality]``); without it every figure is
``None`` with the reason. LPIPS is not computed: torchmetrics' LPIPS downloads network weights.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genprof.errors import UsageError

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim")
INSTALL_HINT = "pip install genprof[quality] (torchmetrics)"

QualityFn = Callable[[Any, Any], dict[str, Any]]
"""(output, baseline output) -> {"psnr": dB | None, "ssim": ... | None, "reason": str | None, ...}."""


@dataclass
class Floor:
    metric: str
    minimum: float

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "minimum": self.minimum}

    def __str__(self) -> str:
        return f"{self.metric}>={self.minimum:g}"


_FLOOR = re.compile(r"^\s*([a-z]+)\s*>=\s*([-+]?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*$", re.I)


def parse_floor(text: str | None) -> list[Floor]:
    """``"psnr>=30"`` or ``"psnr>=30,ssim>=0.9"`` -> floors; a clear ``UsageError`` otherwise."""
    if text is None or not str(text).strip():
        return []
    floors = []
    for part in str(text).split(","):
        m = _FLOOR.match(part)
        if not m:
            raise UsageError(f"quality floor {part.strip()!r} is not METRIC>=NUMBER (e.g. psnr>=30 or ssim>=0.9)")
        metric = m.group(1).lower()
        if metric not in METRICS:
            raise UsageError(f"quality floor {part.strip()!r}: unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        floors.append(Floor(metric, float(m.group(2))))
    return floors


def to_frames(output: Any) -> Any:
    """A pipeline's decoded output as a float numpy array (frames, H, W, C) in [0, 1]."""
    import numpy as np

    x = output
    for attr in ("frames", "images"):
        if hasattr(x, attr):
            x = getattr(x, attr)
            break
    if isinstance(x, tuple):
        x = x[0]
    if isinstance(x, list):
        x = np.stack([np.asarray(i) for i in x])
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.dtype.kind in "ui" or a.max(initial=0.0) > 1.5:
        a = a / 255.0
    if a.ndim == 3:
        a = a[None]
    if a.ndim == 5:  # (batch, frames, H, W, C)
        a = a.reshape(-1, *a.shape[2:])
    if a.ndim != 4:
        raise UsageError(f"cannot compare pipeline output of shape {a.shape}; use output_type='np'")
    if a.shape[-1] not in (1, 3, 4) and a.shape[1] in (1, 3, 4):  # channels first -> last
        a = a.transpose(0, 2, 3, 1)
    return a


def torchmetrics_quality(output: Any, baseline: Any) -> dict[str, Any]:
    """PSNR (dB) and SSIM of ``output`` against ``baseline``, per frame, with torchmetrics.

    ``psnr`` is over all frames (from their mean squared error), ``psnr_min`` the worst frame;
    ``ssim`` is the mean over frames, ``ssim_min`` the worst. Identical outputs give ``psnr``
    ``inf`` and ``ssim`` 1.0 (``identical: True``), never an error. Without torchmetrics every
    figure is ``None`` and ``reason`` says how to install it.
    """
    try:
        import torch
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    except ImportError:
        return {"psnr": None, "ssim": None, "reason": f"torchmetrics is not installed: {INSTALL_HINT}"}
    a, b = to_frames(output), to_frames(baseline)
    if a.shape != b.shape:
        return {"psnr": None, "ssim": None, "reason": f"output shape {a.shape} differs from the baseline's {b.shape}"}
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).double()
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).double()
    k = min(11, ta.shape[-1], ta.shape[-2])
    k = max(3, k if k % 2 else k - 1)  # SSIM's Gaussian window: odd, no larger than the frame
    psnr: list[float] = []
    ssim: list[float] = []
    mse: list[float] = []
    for i in range(ta.shape[0]):
        fa, fb = ta[i:i + 1], tb[i:i + 1]
        mse.append(float(torch.mean((fa - fb) ** 2)))
        psnr.append(float(peak_signal_noise_ratio(fa, fb, data_range=1.0)))
        s = structural_similarity_index_measure(fa, fb, data_range=1.0, kernel_size=k)
        ssim.append(float(s[0] if isinstance(s, tuple) else s))
    mean_mse = sum(mse) / len(mse)
    overall = math.inf if mean_mse == 0 else 10.0 * math.log10(1.0 / mean_mse)
    return {"psnr": overall, "ssim": sum(ssim) / len(ssim), "psnr_min": min(psnr), "ssim_min": min(ssim),
            "psnr_per_frame": psnr, "ssim_per_frame": ssim, "frames": len(psnr), "identical": mean_mse == 0,
            "reason": None}


def below_floor(quality: dict[str, Any] | None, floors: list[Floor]) -> str | None:
    """Why a candidate is below the floor, or ``None``. An unmeasured metric under a floor is reported, not passed."""
    for f in floors:
        v = None if quality is None else quality.get(f.metric)
        if v is None:
            why = (quality or {}).get("reason") or "not measured"
            return f"{f.metric} not measured ({why}); the floor {f} cannot be checked"
        if v != float("inf") and v < f.minimum:
            return f"{f.metric} {v:.4g} below the floor {f}"
    return None
