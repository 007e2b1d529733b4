"""The NVML adapter, with nvidia-ml-py replaced by a fake at its import site."""

from __future__ import annotations

import pytest

from fakes import FakeNvml
from genprof.probes import nvml as nvml_mod
from genprof.probes.nvml import NvmlProbe, decode_clock_event_reasons


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    f = FakeNvml()
    monkeypatch.setattr(nvml_mod, "_import_nvml", lambda: f)
    return f


def test_reads_with_units(fake: FakeNvml) -> None:
    p = NvmlProbe()
    dev = p.device_by_uuid("GPU-aaaa")
    assert dev is not None and dev.name == "Fake H100"
    r = p.read(dev)
    assert r == {
        "memory_used_bytes": 10 * 2**30, "utilization_pct": 55.0, "temperature_c": 61.0, "power_w": 312.5,
        "sm_clock_mhz": 1980.0, "clock_event_reasons": 4,
    }
    assert p.energy_j(dev) == 1000.0
    facts = p.device_facts(dev)
    assert facts["power_limit_w"] == 700.0 and facts["compute_capability"] == "9.0"
    assert "averaged" in p.power_source(dev)  # the fake has no instant power field


def test_turned_off_readings_are_not_queried(fake: FakeNvml) -> None:
    p = NvmlProbe()
    dev = p.device_by_uuid("GPU-aaaa")
    assert dev is not None
    r = p.read(dev, power=False, temperature=False)
    assert "power_w" not in r and "temperature_c" not in r
    assert "nvmlDeviceGetPowerUsage" not in fake.calls and "nvmlDeviceGetTemperature" not in fake.calls


def test_unsupported_reading_is_none_with_reason_recorded_once(fake: FakeNvml) -> None:
    fake.fail.add("nvmlDeviceGetTotalEnergyConsumption")
    p = NvmlProbe()
    dev = p.device_by_uuid("GPU-aaaa")
    assert dev is not None
    assert p.energy_j(dev) is None
    assert p.energy_j(dev) is None
    assert list(p.unavailable) == ["gpu_energy"]
    assert "Not Supported" in p.unavailable["gpu_energy"]


def test_without_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml_mod, "_import_nvml", boom)
    p = NvmlProbe()
    assert not p.available
    assert "nvidia-ml-py" in (p.reason or "")
    assert p.device_count() is None and p.unavailable["device_count"]


def test_init_failure_is_a_reason_not_a_crash(fake: FakeNvml) -> None:
    fake.fail.add("nvmlInit")
    p = NvmlProbe()
    assert not p.available and "nvmlInit failed" in (p.reason or "")


@pytest.mark.parametrize(
    "env, expected",
    [(None, ["GPU-0", "GPU-1", "GPU-2"]), ("2,0", ["GPU-2", "GPU-0"]), ("GPU-1", ["GPU-1"]), ("1,7,0", ["GPU-1"]),
     ("", [])],
)
def test_visible_devices_honour_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch, env: str | None,
                                                      expected: list[str]) -> None:
    f = FakeNvml(devices=[dict(FakeNvml().devices[0], uuid=f"GPU-{i}") for i in range(3)])
    monkeypatch.setattr(nvml_mod, "_import_nvml", lambda: f)
    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert [d.uuid for d in NvmlProbe().visible_devices()] == expected


def test_decode_reasons() -> None:
    assert decode_clock_event_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert decode_clock_event_reasons(0) == []
