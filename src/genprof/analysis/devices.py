"""Dense peak TFLOP/s of common NVIDIA GPUs, each figure with the vendor document it comes from.

All figures are **dense** (without 2:4 structured sparsity): where a datasheet prints only the
sparse figure (marked with an asterisk there), the value here is half of it, and the source says
so. ``fp32`` is the non-tensor-core FP32 rate, which is what PyTorch's float32 matmuls reach
unless TF32 is enabled (``torch.backends.cuda.matmul.allow_tf32``); ``tf32`` is the tensor-core
TF32 rate. ``bf16``/``fp16`` are tensor-core rates with FP32 accumulation (PyTorch's default).

A GPU or a dtype that is not in the table gives ``None`` with the reason: model FLOP
utilization is then not computed, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PEAK_DTYPES = ("bf16", "fp16", "fp32", "tf32")  # the dtypes with a peak-throughput figure in GPU_PEAKS

_DTYPE_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "torch.bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "torch.float16": "fp16",
    "torch.half": "fp16",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "torch.float32": "fp32",
    "torch.float": "fp32",
    "tf32": "tf32",
}


@dataclass(frozen=True)
class GpuPeak:
    """Dense peak TFLOP/s of one GPU model; ``None`` where the GPU lacks the format."""

    name: str
    pattern: str
    bf16: float | None
    fp16: float | None
    fp32: float | None
    tf32: float | None
    source: str


# Order matters: the first pattern that matches a device name wins (more specific first).
GPU_PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak("NVIDIA B200", r"\bB200\b", 2250.0, 2250.0, 75.0, 1125.0,
            "NVIDIA HGX B200 datasheet (8-GPU figures divided by 8; sparse tensor figures halved)"),
    GpuPeak("NVIDIA H200 NVL", r"\bH200\b.*\bNVL\b", 835.5, 835.5, 60.0, 417.5,
            "NVIDIA H200 Tensor Core GPU datasheet, H200 NVL column (sparse tensor figures halved)"),
    GpuPeak("NVIDIA H200 SXM", r"\bH200\b", 989.5, 989.5, 67.0, 494.5,
            "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (sparse tensor figures halved)"),
    GpuPeak("NVIDIA H100 NVL", r"\bH100\b.*\bNVL\b", 835.5, 835.5, 60.0, 417.5,
            "NVIDIA H100 Tensor Core GPU datasheet, H100 NVL column (sparse tensor figures halved)"),
    GpuPeak("NVIDIA H100 PCIe", r"\bH100\b.*\bPCIe\b", 756.5, 756.5, 51.0, 378.0,
            "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column (sparse tensor figures halved)"),
    GpuPeak("NVIDIA H100 SXM", r"\bH100\b", 989.5, 989.5, 67.0, 494.5,
            "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (sparse tensor figures halved)"),
    GpuPeak("NVIDIA A100", r"\bA100\b", 312.0, 312.0, 19.5, 156.0,
            "NVIDIA A100 Tensor Core GPU datasheet (dense figures; same for SXM and PCIe)"),
    GpuPeak("NVIDIA L40S", r"\bL40S\b", 366.5, 366.5, 91.6, 183.0,
            "NVIDIA L40S GPU datasheet (sparse tensor figures halved)"),
    GpuPeak("NVIDIA L4", r"\bL4\b", 121.0, 121.0, 30.3, 60.0,
            "NVIDIA L4 Tensor Core GPU datasheet (sparse tensor figures halved)"),
    GpuPeak("NVIDIA A10", r"\bA10\b(?!G)", 125.0, 125.0, 31.2, 62.5,
            "NVIDIA A10 Tensor Core GPU datasheet (dense figures)"),
    GpuPeak("NVIDIA GeForce RTX 4090", r"\bRTX 4090\b", 165.2, 165.2, 82.6, 82.6,
            "NVIDIA Ada GPU architecture whitepaper, appendix table for GeForce RTX 4090 (FP32 accumulate, dense)"),
    GpuPeak("NVIDIA GeForce RTX 3090", r"\bRTX 3090\b", 71.0, 71.0, 35.6, 35.6,
            "NVIDIA Ampere GA102 GPU architecture whitepaper, GeForce RTX 3090 (FP32 accumulate, dense)"),
    GpuPeak("NVIDIA V100 SXM2", r"\bV100\b.*\bSXM", None, 125.0, 15.7, None,
            "NVIDIA Tesla V100 GPU datasheet, SXM2 column (no BF16 or TF32 on Volta)"),
    GpuPeak("NVIDIA V100 PCIe", r"\bV100\b", None, 112.0, 14.0, None,
            "NVIDIA Tesla V100 GPU datasheet, PCIe column (no BF16 or TF32 on Volta)"),
    GpuPeak("NVIDIA T4", r"\bT4\b", None, 65.0, 8.1, None,
            "NVIDIA T4 Tensor Core GPU datasheet (no BF16 or TF32 on Turing)"),
)

# Devices we know of but for which the vendor publishes no per-format peak we can cite.
_NO_FIGURE = {
    r"\bA10G\b": "NVIDIA publishes no datasheet for the A10G (an AWS-specific part); no peak figure is cited",
}


def normalize_dtype(dtype: object) -> str | None:
    """``"bf16"``, ``"fp16"``, ``"fp32"`` or ``"tf32"`` for a dtype name or torch dtype; else ``None``."""
    key = str(dtype).strip().lower()
    return _DTYPE_ALIASES.get(key)


def find_gpu(device_name: str | None) -> GpuPeak | None:
    """The table row whose pattern matches ``device_name`` (as ``torch.cuda.get_device_name`` gives it)."""
    if not device_name:
        return None
    for row in GPU_PEAKS:
        if re.search(row.pattern, device_name, flags=re.IGNORECASE):
            return row
    return None


def peak_tflops(device_name: str | None, dtype: object) -> tuple[float | None, str]:
    """Dense peak TFLOP/s of ``device_name`` for ``dtype``, and its source (or why there is none).

    >>> peak_tflops("NVIDIA H100 80GB HBM3", "bf16")[0]
    989.5
    """
    if not device_name:
        return None, "no GPU device name (CPU run or device unknown)"
    for pattern, reason in _NO_FIGURE.items():
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return None, reason
    row = find_gpu(device_name)
    if row is None:
        return None, f"device {device_name!r} is not in genprof's peak table (genprof.analysis.devices.GPU_PEAKS)"
    key = normalize_dtype(dtype)
    if key is None:
        return None, f"no peak figure for dtype {dtype!r}; known: {', '.join(PEAK_DTYPES)}"
    value: float | None = getattr(row, key)
    if value is None:
        return None, f"{row.name} has no {key} tensor/core rate ({row.source})"
    return value, row.source
