"""What this machine can do: GPUs (memory, compute capability, bf16/fp8), host RAM, CPU cores,
and, when asked, the pinned host-to-device copy bandwidth (measured once per process, cached).

Without torch or without a GPU the host facts are still returned; GPU fields are ``None`` and
``unavailable`` says why.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_BANDWIDTH_CACHE: dict[int, float] = {}
BANDWIDTH_PROBE_BYTES = 256 * 1024**2
"""Size of the pinned buffer copied to measure host-to-device bandwidth (3 timed copies)."""


@dataclass
class GpuResources:
    index: int
    name: str | None = None
    total_memory_bytes: int | None = None
    free_memory_bytes: int | None = None
    compute_capability: str | None = None
    bf16_supported: bool | None = None
    fp8_supported: bool | None = None
    multiprocessor_count: int | None = None
    h2d_pinned_bandwidth_bytes_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Resources:
    gpus: list[GpuResources] = field(default_factory=list)
    host_ram_total_bytes: int | None = None
    host_ram_available_bytes: int | None = None
    cpu_cores_logical: int | None = None
    cpu_cores_physical: int | None = None
    torch_version: str | None = None
    cuda_version: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def gpu(self) -> GpuResources | None:
        return self.gpus[0] if self.gpus else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": [g.to_dict() for g in self.gpus],
            "host_ram_total_bytes": self.host_ram_total_bytes,
            "host_ram_available_bytes": self.host_ram_available_bytes,
            "cpu_cores_logical": self.cpu_cores_logical,
            "cpu_cores_physical": self.cpu_cores_physical,
            "torch_version": self.torch_version,
            "cuda_version": self.cuda_version,
            "unavailable": dict(self.unavailable),
        }


def fp8_supported(major: int, minor: int) -> bool:
    """FP8 tensor-core math needs compute capability 8.9 (Ada) or 9.0+ (Hopper, Blackwell).

    fp8 *storage* (layerwise casting) works on any GPU; this is about fp8 matmuls.
    """
    return (major, minor) >= (8, 9)


def host_resources() -> Resources:
    """Host RAM and CPU cores only (no torch import): the host half of :func:`resources`."""
    res = Resources()
    try:
        import psutil

        vm = psutil.virtual_memory()
        res.host_ram_total_bytes = int(vm.total)
        res.host_ram_available_bytes = int(vm.available)
        res.cpu_cores_logical = psutil.cpu_count(logical=True)
        res.cpu_cores_physical = psutil.cpu_count(logical=False)
    except (ImportError, OSError) as exc:
        res.unavailable["host"] = f"psutil could not read the host: {exc}"
        res.cpu_cores_logical = os.cpu_count()
    return res


def resources(measure_bandwidth: bool = False) -> Resources:
    """Read the machine. ``measure_bandwidth=True`` times pinned host-to-device copies per GPU (once)."""
    res = host_resources()
    try:
        import torch
    except ImportError:
        res.unavailable["gpu"] = "torch is not installed"
        return res
    res.torch_version = torch.__version__
    res.cuda_version = torch.version.cuda
    if not torch.cuda.is_available():
        res.unavailable["gpu"] = "torch.cuda.is_available() is False (no GPU, no driver, or a CPU-only torch build)"
        return res
    for i in range(torch.cuda.device_count()):
        g = GpuResources(index=i)
        props = torch.cuda.get_device_properties(i)
        g.name = props.name
        g.total_memory_bytes = int(props.total_memory)
        g.multiprocessor_count = int(props.multi_processor_count)
        g.compute_capability = f"{props.major}.{props.minor}"
        g.bf16_supported = props.major >= 8
        g.fp8_supported = fp8_supported(props.major, props.minor)
        try:
            free, _total = torch.cuda.mem_get_info(i)
            g.free_memory_bytes = int(free)
        except RuntimeError as exc:
            res.unavailable[f"gpu{i}.free_memory_bytes"] = str(exc)
        if measure_bandwidth:
            try:
                g.h2d_pinned_bandwidth_bytes_per_s = measure_h2d_bandwidth(i)
            except RuntimeError as exc:
                res.unavailable[f"gpu{i}.h2d_pinned_bandwidth_bytes_per_s"] = str(exc)
        else:
            res.unavailable.setdefault("h2d_pinned_bandwidth_bytes_per_s", "not measured (pass measure_bandwidth=True)")
        res.gpus.append(g)
    return res


def measure_h2d_bandwidth(device_index: int = 0, nbytes: int = BANDWIDTH_PROBE_BYTES) -> float:
    """Pinned host-to-device copy bandwidth in bytes/s (best of 3 copies after a warm-up); cached."""
    if device_index in _BANDWIDTH_CACHE:
        return _BANDWIDTH_CACHE[device_index]
    import torch

    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=f"cuda:{device_index}")
    dev.copy_(host, non_blocking=True)
    torch.cuda.synchronize(device_index)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize(device_index)
        best = min(best, time.perf_counter() - t0)
    del host, dev
    bw = nbytes / best
    _BANDWIDTH_CACHE[device_index] = bw
    log.info("pinned H2D bandwidth on cuda:%d: %.1f GB/s", device_index, bw / 1e9)
    return bw
