"""Fakes for GPU-free tests: an NVML module and a CUDA-capable torch stand-in."""

from __future__ import annotations

import types
from typing import Any


class NVMLError(Exception):
    pass


class FakeNvml(types.SimpleNamespace):
    """Enough of pynvml for the probe: one or more devices with settable readings."""

    def __init__(self, devices: list[dict[str, Any]] | None = None, fail: set[str] | None = None) -> None:
        super().__init__()
        self.devices = devices or [
            {"uuid": "GPU-aaaa", "name": "Fake H100", "used": 10 * 2**30, "total": 80 * 2**30, "util": 55,
             "temp": 61, "power_mw": 312_500, "sm": 1980, "reasons": 0x4, "energy_mj": 1_000_000,
             "limit_mw": 700_000}
        ]
        self.fail = fail or set()
        self.calls: dict[str, int] = {}
        self.inited = False

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.fail:
            raise NVMLError(f"{name}: Not Supported")

    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        self.inited = True

    def nvmlShutdown(self) -> None:
        self.inited = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._count("nvmlSystemGetDriverVersion")
        return "580.00"

    def nvmlSystemGetNVMLVersion(self) -> str:
        return "13.580"

    def nvmlDeviceGetCount(self) -> int:
        self._count("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        self._count("nvmlDeviceGetHandleByIndex")
        return self.devices[i]

    def nvmlDeviceGetHandleByUUID(self, u: str) -> dict[str, Any]:
        self._count("nvmlDeviceGetHandleByUUID")
        for d in self.devices:
            if d["uuid"] == u:
                return d
        raise NVMLError("not found")

    def nvmlDeviceGetIndex(self, h: dict[str, Any]) -> int:
        return self.devices.index(h)

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return str(h["uuid"])

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str:
        return str(h["name"])

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> Any:
        self._count("nvmlDeviceGetMemoryInfo")
        return types.SimpleNamespace(used=h["used"], total=h["total"], free=h["total"] - h["used"])

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> Any:
        self._count("nvmlDeviceGetUtilizationRates")
        return types.SimpleNamespace(gpu=h["util"], memory=10)

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        self._count("nvmlDeviceGetTemperature")
        return int(h["temp"])

    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        self._count("nvmlDeviceGetPowerUsage")
        return int(h["power_mw"])

    def nvmlDeviceGetClockInfo(self, h: dict[str, Any], clock: int) -> int:
        self._count("nvmlDeviceGetClockInfo")
        return int(h["sm"])

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: dict[str, Any]) -> int:
        self._count("nvmlDeviceGetCurrentClocksEventReasons")
        return int(h["reasons"])

    def nvmlDeviceGetTotalEnergyConsumption(self, h: dict[str, Any]) -> int:
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        script = h.get("energy_script")
        if script:  # scripted readings in mJ, one per call (the last repeats): exact, whatever the timing
            return int(script.pop(0) if len(script) > 1 else script[0])
        if "watts" in h:  # a counter integrating constant power over real time
            import time

            return int(h["energy_mj"] + h["watts"] * time.perf_counter() * 1000.0)
        return int(h["energy_mj"])

    def nvmlDeviceGetEnforcedPowerLimit(self, h: dict[str, Any]) -> int:
        return int(h["limit_mw"])

    def nvmlDeviceGetMigMode(self, h: dict[str, Any]) -> tuple[int, int]:
        return (0, 0)

    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        return (9, 0)


class FakeAllocator:
    """A caching allocator whose current and peak values the test sets."""

    def __init__(self) -> None:
        self.allocated = 0
        self.reserved = 0
        self.peak_alloc = 0
        self.peak_res = 0
        self.resets = 0

    def set(self, allocated: int, reserved: int | None = None) -> None:
        self.allocated = allocated
        self.reserved = max(self.reserved, allocated) if reserved is None else reserved
        self.peak_alloc = max(self.peak_alloc, self.allocated)
        self.peak_res = max(self.peak_res, self.reserved)

    def stats(self, idx: int) -> tuple[int, int, int, int]:
        return self.allocated, self.peak_alloc, self.reserved, self.peak_res

    def reset(self, idx: int) -> None:
        self.resets += 1
        self.peak_alloc = self.allocated
        self.peak_res = self.reserved


class FakeEvent:
    """A CUDA event on a fake timeline: elapsed time is the difference of fake GPU clocks."""

    gpu_clock = [0.0]  # milliseconds, advanced by tests

    def __init__(self, enable_timing: bool = True) -> None:
        self.t: float | None = None
        self.done = True

    def record(self, stream: object = None) -> None:
        self.t = FakeEvent.gpu_clock[0]

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.done = True

    def elapsed_time(self, other: FakeEvent) -> float:
        assert self.t is not None and other.t is not None
        return other.t - self.t


def install_fake_cuda(monkeypatch: Any, allocator: FakeAllocator, nvml: FakeNvml | None = None) -> None:
    """Make the profiler believe a CUDA device 0 exists, backed by the fakes."""
    from genprof.probes import nvml as nvml_mod
    from genprof.probes import torch_cuda
    from genprof.profiler import device as device_mod

    fake_torch = types.SimpleNamespace(
        __version__="0.0-fake",
        version=types.SimpleNamespace(cuda="12.8"),
        cuda=types.SimpleNamespace(Event=FakeEvent, current_device=lambda: 0, current_stream=lambda *a: None),
        distributed=types.SimpleNamespace(is_available=lambda: False, is_initialized=lambda: False),
        OutOfMemoryError=type("OutOfMemoryError", (RuntimeError,), {}),
    )
    monkeypatch.setattr(torch_cuda, "get_torch", lambda import_if_needed=True: fake_torch)
    monkeypatch.setattr(torch_cuda, "cuda_unavailable_reason", lambda t: None)
    monkeypatch.setattr(torch_cuda, "software_versions", lambda t: {"torch": "fake", "cuda": "12.8", "cudnn": None})
    monkeypatch.setattr(
        torch_cuda,
        "device_facts",
        lambda t, i: {"index": i, "name": "Fake H100", "uuid": "GPU-aaaa", "total_memory_bytes": 80 * 2**30,
                      "compute_capability": "9.0", "multiprocessor_count": 132, "bf16_supported": True},
    )
    monkeypatch.setattr(torch_cuda, "allocator_state", lambda t, i, top_tensors=10: {
        "allocated_bytes": allocator.allocated, "reserved_bytes": allocator.reserved})
    monkeypatch.setattr(device_mod, "_allocator_fns", lambda t: (allocator.stats, allocator.reset))
    fake = nvml or FakeNvml()
    monkeypatch.setattr(nvml_mod, "_import_nvml", lambda: fake)


class FakeClock:
    """A monotonic clock that moves only when told (pyinstrument's fake time, as a callable).

    Pass it as ``Profiler(..., clock=clock)``; ``clock.advance(0.25)`` inside a span makes the
    span last exactly 0.25 s, with no real sleep.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock does not go back"
        self.t += seconds

    def sleep(self, seconds: float) -> None:
        """Drop-in for ``time.sleep`` in code under test: advances instead of waiting."""
        self.advance(seconds)
