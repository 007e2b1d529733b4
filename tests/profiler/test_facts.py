"""Machine facts are read by the process's first run and reused; forget_machine_facts reads them again."""

from __future__ import annotations

from typing import Any

import pytest

from fakes import FakeAllocator, FakeNvml, install_fake_cuda
from genprof.probes import host as host_probe
from genprof.probes import torch_cuda
from genprof.probes.nvml import NvmlProbe
from genprof.profiler import Profiler, forget_machine_facts

QUIET = {"handle_sigterm": False, "monitor_cpu_usage": False, "monitor_system_memory": False,
         "monitor_gpu_memory": False, "monitor_gpu_utilization": False, "monitor_gpu_temperature": False,
         "monitor_gpu_power": False, "monitor_gpu_clocks": False}


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the reads of each fact source (the fake device's properties, the host's, the versions)."""
    counts = {"device_facts": 0, "software_versions": 0, "cpu_model": 0, "nvml_device_facts": 0}

    def counted(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            counts[name] += 1
            return fn(*a, **k)

        return wrapper

    monkeypatch.setattr(torch_cuda, "device_facts", counted("device_facts", torch_cuda.device_facts))
    monkeypatch.setattr(torch_cuda, "software_versions", counted("software_versions", torch_cuda.software_versions))
    monkeypatch.setattr(host_probe, "cpu_model", counted("cpu_model", host_probe.cpu_model))
    monkeypatch.setattr(NvmlProbe, "device_facts", counted("nvml_device_facts", NvmlProbe.device_facts))
    return counts


def _run(name: str) -> Profiler:
    with Profiler(name, **QUIET) as prof:
        pass
    return prof


def test_second_run_reuses_the_facts_of_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a fake GPU and NVML, and counters on every fact source
    nvml = FakeNvml()
    install_fake_cuda(monkeypatch, FakeAllocator(), nvml)
    counts = _count_reads(monkeypatch)
    # WHEN two runs start one after the other
    first, second = _run("a"), _run("b")
    # THEN the second read nothing again, and records the same facts
    assert counts == {"device_facts": 1, "software_versions": 1, "cpu_model": 1, "nvml_device_facts": 1}
    assert nvml.calls["nvmlInit"] == 1
    assert second.run.gpus == first.run.gpus and second.run.gpus[0].name == "Fake H100"
    assert second.run.software == first.run.software and second.run.software.driver is not None
    assert second.run.host.cpu_model == first.run.host.cpu_model
    # and a run's record is its own copy: changing it does not change the next run's
    first.run.gpus[0].name = "changed"
    assert _run("c").run.gpus[0].name == "Fake H100"


def test_forget_machine_facts_makes_the_next_run_read_them_again(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml()
    install_fake_cuda(monkeypatch, FakeAllocator(), nvml)
    counts = _count_reads(monkeypatch)
    _run("a")
    # WHEN the facts are forgotten (a driver or GPU change) and the power limit changed meanwhile
    nvml.devices[0]["limit_mw"] = 400_000
    forget_machine_facts()
    after = _run("b")
    # THEN the next run reads every source again and records the new value
    assert counts == {"device_facts": 2, "software_versions": 2, "cpu_model": 2, "nvml_device_facts": 2}
    assert nvml.calls["nvmlInit"] == 2
    assert after.run.gpus[0].power_limit_w == pytest.approx(400.0)


def test_hostname_and_pid_are_read_by_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    _run("a")
    monkeypatch.setattr(socket, "gethostname", lambda: "renamed-host")
    assert _run("b").run.host.hostname == "renamed-host"
