"""Latent tensor facts: shape with its meaning, size, and compression against the decoded output.

Pure functions on plain shapes and dtype names (no torch needed). The diffusers integration
reads these from the tensors it sees (the latent passed to ``vae.decode``, the sample it
returns, the pixels passed to ``vae.encode``) and stores the result in the run's metadata.

Layouts (``B`` batch, ``C`` channels, ``T`` frames, ``H``/``W`` height/width, ``N`` tokens):

* ``"BCHW"``: image latent;
* ``"BCTHW"``: video latent, channels first (diffusers' video VAEs);
* ``"BTCHW"``: video latent, frames first (some video pipelines and block-diffusion loops);
* ``"BND"``: packed token latent (Flux-style, patches flattened into a sequence);
* ``"unknown"``: any other rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from genprof.errors import UsageError

DTYPE_BYTES: dict[str, float] = {
    "float64": 8,
    "double": 8,
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "fp32": 4,  # the short names configs and pipeline facts use
    "fp16": 2,
    "bf16": 2,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "int64": 8,
    "long": 8,
    "int32": 4,
    "int": 4,
    "int16": 2,
    "uint8": 1,
    "int8": 1,
    "bool": 1,
    "complex64": 8,
    "complex128": 16,
}

LAYOUT_MEANING = {
    "BCHW": "image (B,C,H,W)",
    "BCTHW": "video (B,C,T,H,W)",
    "BTCHW": "video (B,T,C,H,W)",
    "BND": "packed tokens (B,N,D)",
    "unknown": "unknown layout",
}

# Latent channel counts of common VAEs, used to tell (B,C,T,H,W) from (B,T,C,H,W).
COMMON_LATENT_CHANNELS = (4, 8, 12, 16, 32, 48, 64, 128)

MB = 1_000_000  # MB/s figures use decimal megabytes


def dtype_name(dtype: object) -> str:
    """``"bfloat16"`` for ``torch.bfloat16`` or ``"torch.bfloat16"``; other strings unchanged."""
    s = str(dtype)
    return s[len("torch."):] if s.startswith("torch.") else s


def dtype_bytes(dtype: object) -> float | None:
    """Bytes per element of a dtype name, ``None`` for a dtype not in :data:`DTYPE_BYTES`."""
    return DTYPE_BYTES.get(dtype_name(dtype))


@dataclass
class LatentFacts:
    """What a latent tensor is. ``bytes`` is ``None`` when the dtype's size is unknown."""

    shape: list[int]
    layout: str
    meaning: str
    dims: dict[str, int]
    dtype: str
    device: str | None
    elements: int
    bytes: int | None
    layout_assumed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def megabytes(self) -> float | None:
        return None if self.bytes is None else self.bytes / MB

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["megabytes"] = self.megabytes
        return d


def _check_shape(shape: Sequence[int], what: str) -> list[int]:
    out: list[int] = []
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UsageError(f"{what} must be a sequence of non-negative integers, got {list(shape)!r}")
        out.append(int(n))
    return out


def infer_layout(shape: Sequence[int], channels: int | None = None) -> tuple[str, bool]:
    """Guess the layout of a latent from its rank (and, for 5-D, its channel count).

    Returns ``(layout, assumed)``; ``assumed`` is true when a 5-D shape could be read both ways
    and no ``channels`` hint settled it (channels-first is then assumed, as diffusers' VAEs use).
    """
    rank = len(shape)
    if rank == 4:
        return "BCHW", False
    if rank == 3:
        return "BND", False
    if rank != 5:
        return "unknown", False
    c1, c2 = shape[1], shape[2]
    if channels is not None:
        if c1 == channels and c2 != channels:
            return "BCTHW", False
        if c2 == channels and c1 != channels:
            return "BTCHW", False
        return "BCTHW", True
    first = c1 in COMMON_LATENT_CHANNELS
    second = c2 in COMMON_LATENT_CHANNELS
    if first and not second:
        return "BCTHW", False
    if second and not first:
        return "BTCHW", False
    return "BCTHW", True


def describe_latent(
    shape: Sequence[int],
    dtype: object,
    device: object = None,
    *,
    layout: str | None = None,
    channels: int | None = None,
) -> LatentFacts:
    """Facts about a latent of ``shape`` and ``dtype`` (layout inferred unless given)."""
    dims_list = _check_shape(shape, "latent shape")
    notes: list[str] = []
    assumed = False
    if layout is None:
        layout, assumed = infer_layout(dims_list, channels)
        if assumed:
            notes.append(
                f"5-D shape {dims_list} reads as (B,C,T,H,W) or (B,T,C,H,W); assumed channels first"
            )
    elif layout not in LAYOUT_MEANING:
        raise UsageError(f"unknown latent layout {layout!r}; allowed: {', '.join(LAYOUT_MEANING)}")
    letters = {"BCHW": "BCHW", "BCTHW": "BCTHW", "BTCHW": "BTCHW", "BND": "BND"}.get(layout)
    dims: dict[str, int] = {}
    if letters is not None and len(letters) == len(dims_list):
        dims = dict(zip(letters, dims_list, strict=True))
    elif letters is not None:
        raise UsageError(f"latent layout {layout} does not fit a shape of rank {len(dims_list)}: {dims_list}")
    elements = math.prod(dims_list) if dims_list else 0
    size = dtype_bytes(dtype)
    if size is None:
        notes.append(f"bytes unknown: dtype {dtype_name(dtype)!r} has no known element size")
    return LatentFacts(
        shape=dims_list,
        layout=layout,
        meaning=LAYOUT_MEANING[layout],
        dims=dims,
        dtype=dtype_name(dtype),
        device=None if device is None else str(device),
        elements=elements,
        bytes=None if size is None else int(elements * size),
        layout_assumed=assumed,
        notes=notes,
    )


def output_dims(shape: Sequence[int], layout: str) -> dict[str, int]:
    """Frames, height and width of a decoded output of ``layout`` (``BCHW``, ``BCTHW``, ``BTCHW``, ``BHWC``, ``BTHWC``)."""
    s = _check_shape(shape, "output shape")
    if len(s) != len(layout):
        raise UsageError(f"output layout {layout} does not fit a shape of rank {len(s)}: {s}")
    d = dict(zip(layout, s, strict=True))
    return {"B": d["B"], "T": d.get("T", 1), "H": d["H"], "W": d["W"]}


@dataclass
class Compression:
    """How much the VAE compresses: output pixels per latent position, output frames per latent frame."""

    spatial: float | None
    temporal: float | None
    output_frames_per_item: int
    output_height: int
    output_width: int
    latent_frames: int | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compression(latent: LatentFacts, output_shape: Sequence[int], output_layout: str) -> Compression:
    """Spatial ``(H_out*W_out)/(H_lat*W_lat)`` and temporal ``T_out/T_lat`` compression.

    ``temporal`` is ``None`` for image latents. For causal video VAEs (Wan, CogVideoX,
    HunyuanVideo) ``T_out = 1 + r*(T_lat-1)``, so ``T_out/T_lat`` is a little below ``r``;
    the figure is the plain ratio, not the VAE's nominal factor.
    """
    out = output_dims(output_shape, output_layout)
    notes: list[str] = []
    h = latent.dims.get("H")
    w = latent.dims.get("W")
    spatial: float | None = None
    if h and w:
        spatial = (out["H"] * out["W"]) / (h * w)
    else:
        notes.append(f"spatial compression unknown for a {latent.layout} latent")
    t = latent.dims.get("T")
    temporal: float | None = None
    if t:
        temporal = out["T"] / t
    return Compression(
        spatial=spatial,
        temporal=temporal,
        output_frames_per_item=out["T"],
        output_height=out["H"],
        output_width=out["W"],
        latent_frames=t,
        notes=notes,
    )


def encode_rate(
    input_shape: Sequence[int], input_dtype: object, duration_s: float | None, *, input_layout: str = "BCTHW"
) -> dict[str, Any]:
    """Frames/s and MB/s (decimal) of pixels processed by a VAE encode that took ``duration_s``.

    Frames are ``B*T`` (``T`` is 1 for an image layout). ``None`` rates when the duration is
    missing or zero.
    """
    s = _check_shape(input_shape, "encode input shape")
    d = dict(zip(input_layout, s, strict=True)) if len(input_layout) == len(s) else {}
    frames = d.get("B", 1) * d.get("T", 1) if d else None
    size = dtype_bytes(input_dtype)
    nbytes = None if size is None else int(math.prod(s) * size)
    ok = duration_s is not None and duration_s > 0
    return {
        "input_shape": s,
        "input_layout": input_layout if d else "unknown",
        "input_dtype": dtype_name(input_dtype),
        "input_frames": frames,
        "input_bytes": nbytes,
        "duration_s": duration_s,
        "frames_per_s": (frames / duration_s) if ok and frames is not None and duration_s else None,
        "megabytes_per_s": (nbytes / MB / duration_s) if ok and nbytes is not None and duration_s else None,
    }
