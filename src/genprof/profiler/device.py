"""What the profiler asks of its GPU, behind one small interface, with a null object for no GPU.

:class:`Device` is the interface: facts and the reasons for what cannot be read, the
allocator's readers and peak reset, CUDA-event timing, NVTX, the total-energy counter, the
sampler's GPU source and out-of-memory forensics. :class:`CudaDevice` implements it on the
PyTorch CUDA allocator and NVML (each part that NVML cannot give is None with a reason);
:class:`NullDevice` stands for "no torch, no CUDA device": every figure it gives is None with
its reason, never 0, so the profiler does not branch on whether a GPU is there. Zeus's
``zeus/device/gpu/common.py`` (a ``GPU`` class and an empty stand-in) is the model.

The profiler's hot path still reads a few flags taken from the device once, at start
(``Profiler._timer``, ``_nvtx``, ``_mem_kinds``): a null timer's method would be a Python call
on every span of a CPU run.

The devices are kept for the process's life (:func:`open_device`): their facts (torch's
device properties, NVML's handle, power limit, MIG mode, driver version, whether the energy
counter reads) do not change while it runs, and reading them was most of a warm run's start.
:func:`genprof.profiler.facts.forget_machine_facts` drops them.

This module sits in the profiler layer, not in ``probes/``: it builds a
:class:`~genprof.timing.GpuTimer` and :class:`~genprof.model.GpuInfo`, which sit above the probes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from genprof.model import GpuInfo
from genprof.probes import torch_cuda
from genprof.probes.nvml import NvmlDevice, NvmlProbe
from genprof.sampler import Readings, Source
from genprof.timing import GpuTimer, Nvtx

log = logging.getLogger("genprof")

MemoryStats = Callable[[int], tuple[int, int, int, int]]
"""``stats(index) -> (allocated, peak allocated, reserved, peak reserved)`` bytes."""


class Device:
    """The profiler's view of one GPU. Subclasses: :class:`CudaDevice`, :class:`NullDevice`.

    Capabilities are plain attributes, fixed for the device's life: ``is_gpu`` (spans record a
    device index), ``label`` (the series' device name, ``gpu0``; ``gpu`` without one), ``index``.
    """

    is_gpu: bool = False
    label: str = "gpu"
    index: int | None = None

    def gpus(self) -> list[GpuInfo]:
        """The GPUs this run uses (a fresh copy each call; the run may change it)."""
        raise NotImplementedError

    def unavailable(self) -> dict[str, str]:
        """What this device cannot give, and why (merged into ``run.unavailable``)."""
        raise NotImplementedError

    def software(self) -> dict[str, str | None]:
        """``driver`` and ``nvml`` versions (None where NVML is absent)."""
        raise NotImplementedError

    def allocator(self) -> tuple[MemoryStats, Callable[[int], Any]] | None:
        """The allocator's fast stats reader and peak reset, or None (no allocator)."""
        raise NotImplementedError

    def memory(self) -> dict[str, Any]:
        """The allocator's allocated and reserved bytes now; None with a ``reason`` without one."""
        raise NotImplementedError

    def timer(self) -> GpuTimer | None:
        """A CUDA-event timer, or None when the device has no events (the hot path's flag)."""
        raise NotImplementedError

    def nvtx(self) -> Nvtx | None:
        """NVTX range push/pop, or None (the hot path's flag)."""
        raise NotImplementedError

    def energy_counter(self) -> tuple[bool, str | None, float | None]:
        """Whether the total-energy counter reads, why not, and a first reading (None after the first call).

        The first call in the process reads the counter once (about 3 ms on an H100); later
        calls answer from that, so a later run takes its start reading off the caller's thread.
        """
        raise NotImplementedError

    def energy_j(self) -> float | None:
        """The total-energy counter in joules (about 4 ms a read on an H100), or None."""
        raise NotImplementedError

    def gpu_sources(self, *, interval_s: float, memory: bool, utilization: bool, temperature: bool,
                    power: bool, clocks: bool) -> tuple[list[Source], dict[tuple[str, str], tuple[str, str]], dict[str, str]]:
        """The sampler's GPU sources, their series' descriptions, and the reasons for none."""
        raise NotImplementedError

    def is_oom(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a CUDA out-of-memory error."""
        return torch_cuda.is_oom_error(torch_cuda.get_torch(import_if_needed=False), exc)

    def oom_state(self) -> dict[str, Any]:
        """The allocator's state for out-of-memory forensics, or a ``reason`` why there is none."""
        raise NotImplementedError

    def nvml_unavailable(self) -> dict[str, str]:
        """The NVML readings that failed so far, and why (``nvml.<reading>`` in the run)."""
        raise NotImplementedError


class NullDevice(Device):
    """No GPU for this run: no torch, a torch without CUDA, or no CUDA device visible.

    Every figure is None with ``reason``; NVML may still be there (its driver version is recorded).
    """

    def __init__(self, reason: str, nvml: NvmlProbe) -> None:
        self.reason = reason
        self._nvml = nvml

    def gpus(self) -> list[GpuInfo]:
        return []

    def unavailable(self) -> dict[str, str]:
        out = {"cuda": self.reason, "gpu_time": self.reason, "gpu_memory": self.reason}
        if not self._nvml.available:
            out["nvml"] = self._nvml.reason or "NVML unavailable"
        out["gpu_energy"] = "no NVML device for this process's GPU"
        return out

    def software(self) -> dict[str, str | None]:
        return _nvml_versions(self._nvml)

    def allocator(self) -> None:
        return None

    def memory(self) -> dict[str, Any]:
        return {"allocated_bytes": None, "reserved_bytes": None, "reason": self.reason}

    def timer(self) -> None:
        return None

    def nvtx(self) -> None:
        return None

    def energy_counter(self) -> tuple[bool, str | None, float | None]:
        return False, "no NVML device for this process's GPU", None

    def energy_j(self) -> None:
        return None

    def gpu_sources(self, *, interval_s: float, memory: bool, utilization: bool, temperature: bool,
                    power: bool, clocks: bool) -> tuple[list[Source], dict[tuple[str, str], tuple[str, str]], dict[str, str]]:
        wanted = memory or utilization or temperature or power or clocks
        return [], {}, ({"gpu_samples": self.reason} if wanted else {})

    def oom_state(self) -> dict[str, Any]:
        return {"reason": self.reason}

    def nvml_unavailable(self) -> dict[str, str]:
        return dict(self._nvml.unavailable)


class CudaDevice(Device):
    """A CUDA device as torch sees it, with its NVML device when NVML has one (found by UUID)."""

    is_gpu = True

    def __init__(self, torch: Any, index: int, nvml: NvmlProbe) -> None:
        self._torch = torch
        self.index = index
        self.label = f"gpu{index}"
        self._nvml = nvml
        self._info = GpuInfo(**torch_cuda.device_facts(torch, index))
        self._stats, self._reset = _allocator_fns(torch)
        self._dev: NvmlDevice | None = None
        # NVML device of *this* process's GPU, by UUID (honours CUDA_VISIBLE_DEVICES)
        if self._info.uuid and nvml.available:
            self._dev = nvml.device_by_uuid(self._info.uuid)
        elif nvml.available:
            vis = nvml.visible_devices()
            if index < len(vis):
                self._dev = vis[index]
        if self._dev is not None:
            nf = nvml.device_facts(self._dev)
            self._info.nvml_index = nf["nvml_index"]
            self._info.power_limit_w = nf["power_limit_w"]
            self._info.mig_mode = nf["mig_mode"]
        self._energy_known: tuple[bool, str | None] | None = None
        self._energy_lock = threading.Lock()

    def gpus(self) -> list[GpuInfo]:
        return [GpuInfo(**self._info.to_dict())]

    def unavailable(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if not self._nvml.available:
            out["nvml"] = self._nvml.reason or "NVML unavailable"
        if self._dev is None:
            out["gpu_energy"] = "no NVML device for this process's GPU"
        if self._info.mig_mode:
            out["mig"] = "MIG is enabled: NVML utilization, power and energy are per GPU, not per instance"
        return out

    def software(self) -> dict[str, str | None]:
        return _nvml_versions(self._nvml)

    def allocator(self) -> tuple[MemoryStats, Callable[[int], Any]]:
        return self._stats, self._reset

    def memory(self) -> dict[str, Any]:
        alloc, _pa, res, _pr = self._stats(self.index or 0)
        return {"allocated_bytes": alloc, "reserved_bytes": res}

    def timer(self) -> GpuTimer:
        return GpuTimer(self._torch, device_index=self.index or 0)

    def nvtx(self) -> Nvtx:
        return Nvtx(self._torch)

    def energy_counter(self) -> tuple[bool, str | None, float | None]:
        dev = self._dev
        if dev is None:
            return False, "no NVML device for this process's GPU", None
        with self._energy_lock:
            if self._energy_known is not None:
                return self._energy_known[0], self._energy_known[1], None
            first = self._nvml.energy_j(dev)  # the process's first run on this GPU: is the counter there?
            self._energy_known = (first is not None, self._nvml.unavailable.get("gpu_energy"))
            return self._energy_known[0], self._energy_known[1], first

    def energy_j(self) -> float | None:
        if self._dev is None:
            return None
        return self._nvml.energy_j(self._dev)

    def gpu_sources(self, *, interval_s: float, memory: bool, utilization: bool, temperature: bool,
                    power: bool, clocks: bool) -> tuple[list[Source], dict[tuple[str, str], tuple[str, str]], dict[str, str]]:
        if not (memory or utilization or temperature or power or clocks):
            return [], {}, {}
        name = self.label
        meta: dict[tuple[str, str], tuple[str, str]] = {}
        dev = self._dev
        nvml_read = None if dev is None else self._nvml.reader(
            dev, memory=memory, utilization=utilization, temperature=temperature, power=power,
            clocks=clocks, clock_events=clocks, key=lambda n: (name, n),
        )
        stats = self._stats if memory else None
        idx = self.index or 0

        def read_gpu() -> Readings:
            out: Readings = nvml_read() if nvml_read is not None else {}
            if stats is not None:
                st = stats(idx)
                out[(name, "allocated_bytes")] = st[0]
                out[(name, "reserved_bytes")] = st[2]
            return out

        if dev is not None:
            meta[(name, "utilization_pct")] = (
                "gauge", "NVML busy time: percent of the last sample period (1/6 s to 1 s) in which a kernel ran")
            meta[(name, "power_w")] = ("gauge", self._nvml.power_source(dev))
            meta[(name, "memory_used_bytes")] = ("gauge", "NVML device memory used (all processes)")
            meta[(name, "temperature_c")] = ("gauge", "NVML GPU core temperature")
            meta[(name, "sm_clock_mhz")] = ("gauge", "NVML SM clock")
            meta[(name, "clock_event_reasons")] = (
                "state", "NVML clock event (throttle) reason bitmask, recorded when it changes")
        meta[(name, "allocated_bytes")] = ("gauge", "PyTorch caching allocator: allocated (this process)")
        meta[(name, "reserved_bytes")] = ("gauge", "PyTorch caching allocator: reserved (this process)")
        return [Source("gpu", interval_s, read_gpu)], meta, {}

    def is_oom(self, exc: BaseException) -> bool:
        return torch_cuda.is_oom_error(self._torch, exc)

    def oom_state(self) -> dict[str, Any]:
        try:
            return torch_cuda.allocator_state(self._torch, self.index or 0)
        except RuntimeError as e:
            return {"error": f"allocator state unreadable: {e}"}

    def nvml_unavailable(self) -> dict[str, str]:
        return dict(self._nvml.unavailable)


def _nvml_versions(nvml: NvmlProbe) -> dict[str, str | None]:
    if not nvml.available:
        return {"driver": None, "nvml": None}
    return {"driver": nvml.driver_version(), "nvml": nvml.nvml_version()}


def _allocator_fns(torch: Any) -> tuple[MemoryStats, Callable[[int], Any]]:
    """Fast readers of (allocated, peak allocated, reserved, peak reserved) and the peak reset."""
    raw = getattr(torch._C, "_cuda_memoryStats", None)
    if raw is not None:

        def stats(idx: int) -> tuple[int, int, int, int]:
            s = raw(idx)
            a = s["allocated_bytes"]["all"]
            r = s["reserved_bytes"]["all"]
            return int(a["current"]), int(a["peak"]), int(r["current"]), int(r["peak"])
    else:  # pragma: no cover - older or future torch without the private accessor

        def stats(idx: int) -> tuple[int, int, int, int]:
            return (
                int(torch.cuda.memory_allocated(idx)), int(torch.cuda.max_memory_allocated(idx)),
                int(torch.cuda.memory_reserved(idx)), int(torch.cuda.max_memory_reserved(idx)),
            )

    reset = getattr(torch._C, "_cuda_resetPeakMemoryStats", None) or torch.cuda.reset_peak_memory_stats
    return stats, reset


# ------------------------------------------------------------------ the process's devices
_NVML: list[NvmlProbe] = []  # the process's NVML probe (nvmlInit once), made on first use
_DEVICES: dict[tuple[int, int | None], Device] = {}
_LOCK = threading.Lock()


def nvml_probe() -> NvmlProbe:
    """The process's NVML probe: initialised once, shared by every run."""
    with _LOCK:
        if not _NVML:
            _NVML.append(NvmlProbe())
        return _NVML[0]


def open_device(device_index: int | None) -> tuple[Device, Any | None]:
    """The device this process's runs use (the current CUDA device unless ``device_index``), and torch.

    Kept per process and per (torch module, index); :func:`forget_devices` drops them. Without
    torch or a CUDA device: a :class:`NullDevice` saying why.
    """
    torch = torch_cuda.get_torch()
    nvml = nvml_probe()
    reason = torch_cuda.cuda_unavailable_reason(torch)
    if reason is not None or torch is None:
        key: tuple[int, int | None] = (id(torch), -1)
        with _LOCK:
            dev = _DEVICES.get(key)
            if dev is None:
                dev = _DEVICES[key] = NullDevice(reason or "torch is not installed", nvml)
        return dev, torch
    idx = int(torch.cuda.current_device()) if device_index is None else int(device_index)
    key = (id(torch), idx)
    with _LOCK:
        dev = _DEVICES.get(key)
    if dev is None:
        dev = CudaDevice(torch, idx, nvml)  # outside the lock: NVML look-ups take milliseconds
        with _LOCK:
            dev = _DEVICES.setdefault(key, dev)
    return dev, torch


def forget_devices() -> None:
    """Drop the process's devices and its NVML probe: the next run finds and reads them again."""
    with _LOCK:
        _DEVICES.clear()
        _NVML.clear()
