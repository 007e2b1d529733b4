"""The profiler's device interface: the CUDA/NVML device (on fakes) and the null device for no GPU."""

from __future__ import annotations

import pytest

from fakes import FakeAllocator, FakeNvml, install_fake_cuda
from genprof.probes import torch_cuda
from genprof.profiler import Profiler
from genprof.profiler.device import CudaDevice, NullDevice, nvml_probe, open_device

QUIET = {"cpu_monitor_interval": 0.05, "gpu_monitor_interval": 0.05, "handle_sigterm": False,
         "monitor_cpu_usage": False, "monitor_system_memory": False}


def _no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_cuda, "get_torch", lambda import_if_needed=True: None)


def test_null_device_gives_none_with_its_reason_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no torch at all
    _no_torch(monkeypatch)
    # WHEN the profiler's device is opened
    dev, torch = open_device(None)
    # THEN it is the null device, and every figure it gives is None with the reason
    assert isinstance(dev, NullDevice) and torch is None
    assert not dev.is_gpu and dev.index is None and dev.gpus() == []
    assert dev.allocator() is None and dev.timer() is None and dev.nvtx() is None
    assert dev.memory() == {"allocated_bytes": None, "reserved_bytes": None, "reason": "torch is not installed"}
    assert dev.energy_j() is None
    ok, why, first = dev.energy_counter()
    assert (ok, first) == (False, None) and why
    assert dev.oom_state() == {"reason": "torch is not installed"}
    why_not = dev.unavailable()
    assert why_not["cuda"] == why_not["gpu_time"] == why_not["gpu_memory"] == "torch is not installed"
    sources, meta, reasons = dev.gpu_sources(interval_s=0.1, memory=True, utilization=False, temperature=False,
                                             power=False, clocks=False)
    assert sources == [] and meta == {} and reasons == {"gpu_samples": "torch is not installed"}


def test_null_device_knows_a_cuda_oom_by_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_torch(monkeypatch)
    dev, _ = open_device(None)
    assert dev.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not dev.is_oom(ValueError("bad shape"))


def test_run_without_gpu_records_reasons_and_no_gpu_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no torch, WHEN a run with GPU monitoring on takes spans
    _no_torch(monkeypatch)
    with Profiler("nogpu", **QUIET) as prof:
        with prof.phase("denoise"):
            pass
    run = prof.run
    # THEN the run has no GPU, says why each GPU figure is missing, and its spans carry None
    assert run.gpus == []
    assert run.unavailable["cuda"] == "torch is not installed"
    assert run.unavailable["gpu_samples"] == "torch is not installed"
    assert "final_memory" not in run.metadata
    sp = run.spans[0]
    assert sp.device_index is None and sp.gpu_time_s is None and sp.peak_allocated_bytes is None


def test_cuda_device_on_fakes_reads_facts_memory_and_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a fake CUDA device 0 with its NVML device
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc, FakeNvml())
    alloc.set(3 * 2**20, 8 * 2**20)
    # WHEN the device is opened
    dev, _ = open_device(None)
    # THEN it reads torch's and NVML's facts, the allocator and the energy counter
    assert isinstance(dev, CudaDevice) and dev.is_gpu and dev.index == 0 and dev.label == "gpu0"
    (gpu,) = dev.gpus()
    assert gpu.name == "Fake H100" and gpu.nvml_index == 0 and gpu.power_limit_w == pytest.approx(700.0)
    assert dev.memory() == {"allocated_bytes": 3 * 2**20, "reserved_bytes": 8 * 2**20}
    ok, why, first = dev.energy_counter()
    assert ok and why is None and first == pytest.approx(1000.0)
    # the counter's support is known from the first call: later calls take no reading
    assert dev.energy_counter() == (True, None, None)
    assert "gpu_energy" not in dev.unavailable()


def test_cuda_device_without_nvml_says_why_energy_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc, FakeNvml(fail={"nvmlInit"}))
    dev, _ = open_device(None)
    assert dev.is_gpu
    assert dev.energy_j() is None
    assert dev.energy_counter()[0] is False
    why = dev.unavailable()
    assert why["nvml"].startswith("nvmlInit failed")
    assert why["gpu_energy"] == "no NVML device for this process's GPU"
    assert dev.software() == {"driver": None, "nvml": None}


def test_the_process_shares_one_nvml_probe_and_one_device() -> None:
    assert nvml_probe() is nvml_probe()
    a, _ = open_device(None)
    b, _ = open_device(None)
    assert a is b
