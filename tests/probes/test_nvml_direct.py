"""Direct NVML reads (``NvmlProbe.reader``) against nvidia-ml-py's own wrappers.

The real ``pynvml`` module is used with its C library replaced by Python functions that write
their results into the caller's buffer at the byte layout of nvml.h. pynvml's wrappers and the
direct reader then read the same fake device, each with its own buffers, so they must agree.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import pytest

pynvml = pytest.importorskip("pynvml")

from genprof.probes import nvml as nvml_mod  # noqa: E402
from genprof.probes.nvml import NvmlDevice, NvmlProbe, _FastReader  # noqa: E402

NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED


def _write(ref: Any, fmt: str, *values: int) -> None:
    data = struct.pack(fmt, *values)
    ctypes.memmove(ctypes.addressof(ref._obj), data, len(data))


class FakeLib:
    """The subset of libnvidia-ml the sampler calls, as C would behave (return codes, out-params)."""

    def __init__(self) -> None:
        self.used = 10 * 2**30
        self.util = 55
        self.temp = 61
        self.sm_mhz = 1980
        self.reasons = 4
        self.power_mw = 312_500
        self.instant_mw: int | None = 298_250  # None: the instant-power field is not supported
        self.fail: set[str] = set()
        self.calls: list[str] = []

    def _rc(self, name: str) -> int | None:
        self.calls.append(name)
        return NOT_SUPPORTED if name in self.fail else None

    def nvmlDeviceGetMemoryInfo(self, h: Any, ref: Any) -> int:  # noqa: N802
        rc = self._rc("nvmlDeviceGetMemoryInfo")
        if rc is None:
            _write(ref, "QQQ", 80 * 2**30, 80 * 2**30 - self.used, self.used)
        return rc or 0

    def nvmlDeviceGetUtilizationRates(self, h: Any, ref: Any) -> int:  # noqa: N802
        rc = self._rc("nvmlDeviceGetUtilizationRates")
        if rc is None:
            _write(ref, "II", self.util, 7)
        return rc or 0

    def nvmlDeviceGetTemperature(self, h: Any, sensor: Any, ref: Any) -> int:  # noqa: N802
        rc = self._rc("nvmlDeviceGetTemperature")
        assert getattr(sensor, "value", sensor) == 0
        if rc is None:
            _write(ref, "I", self.temp)
        return rc or 0

    def nvmlDeviceGetClockInfo(self, h: Any, kind: Any, ref: Any) -> int:  # noqa: N802
        rc = self._rc("nvmlDeviceGetClockInfo")
        assert getattr(kind, "value", kind) == 1
        if rc is None:
            _write(ref, "I", self.sm_mhz)
        return rc or 0

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any, ref: Any) -> int:  # noqa: N802
        rc = self._rc("nvmlDeviceGetCurrentClocksEventReasons")
        if rc is None:
            _write(ref, "Q", self.reasons)
        return rc or 0

    def nvmlDeviceGetPowerUsage(self, h: Any, ref: Any) -> int:  # noqa: N802
        rc = self._rc("nvmlDeviceGetPowerUsage")
        if rc is None:
            _write(ref, "I", self.power_mw)
        return rc or 0

    def nvmlDeviceGetFieldValues(self, h: Any, count: Any, ref: Any) -> int:  # noqa: N802
        rc = self._rc("nvmlDeviceGetFieldValues")
        if rc is not None:
            return rc
        for i in range(getattr(count, "value", count)):
            v = ref._obj[i]
            if self.instant_mw is None or v.fieldId != nvml_mod.NVML_FI_DEV_POWER_INSTANT:
                v.nvmlReturn = NOT_SUPPORTED
                continue
            v.nvmlReturn = 0
            v.valueType = 1  # unsigned int
            v.value.uiVal = self.instant_mw
        return 0

    def nvmlErrorString(self, ret: Any) -> bytes:  # noqa: N802
        return b"Not Supported" if getattr(ret, "value", ret) == NOT_SUPPORTED else b"Unknown Error"


@pytest.fixture
def lib(monkeypatch: pytest.MonkeyPatch) -> FakeLib:
    fake = FakeLib()
    monkeypatch.setattr(pynvml, "nvmlLib", fake)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(nvml_mod, "_import_nvml", lambda: pynvml)
    return fake


def _device() -> NvmlDevice:
    return NvmlDevice(pynvml.c_nvmlDevice_t(), 0, "GPU-aaaa", "Fake H100")


@pytest.mark.parametrize("instant", [True, False])
def test_direct_reads_agree_with_the_wrappers(lib: FakeLib, instant: bool) -> None:
    if not instant:
        lib.instant_mw = None
    probe = NvmlProbe()
    dev = _device()
    read = probe.reader(dev)
    assert isinstance(read, _FastReader)
    direct = read()
    assert direct == probe.read(dev)
    assert direct == {
        "memory_used_bytes": 10 * 2**30, "utilization_pct": 55.0, "temperature_c": 61.0,
        "power_w": 298.25 if instant else 312.5, "sm_clock_mhz": 1980.0, "clock_event_reasons": 4,
    }
    # the buffers are reused: a second sample sees new values
    lib.used, lib.util, lib.temp, lib.sm_mhz, lib.reasons = 2**30, 99, 70, 1410, 0x40
    lib.power_mw, lib.instant_mw = 100_000, (123_000 if instant else None)
    second = read()
    assert second == probe.read(dev)
    assert second["memory_used_bytes"] == 2**30 and second["clock_event_reasons"] == 0x40
    assert second["power_w"] == (123.0 if instant else 100.0)
    assert probe.unavailable == {}


def test_turned_off_readings_are_not_called(lib: FakeLib) -> None:
    probe = NvmlProbe()
    read = probe.reader(_device(), power=False, temperature=False, clocks=False, clock_events=False)
    lib.calls.clear()
    assert read() == {"memory_used_bytes": 10 * 2**30, "utilization_pct": 55.0}
    assert lib.calls == ["nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUtilizationRates"]


def test_a_failing_reading_is_none_with_its_reason_recorded_once(lib: FakeLib) -> None:
    lib.fail.add("nvmlDeviceGetTemperature")
    probe = NvmlProbe()
    read = probe.reader(_device())
    first, second = read(), read()
    assert first["temperature_c"] is None and second["temperature_c"] is None
    assert first["utilization_pct"] == 55.0  # the others still read
    assert list(probe.unavailable) == ["temperature"]
    assert "nvmlDeviceGetTemperature failed" in probe.unavailable["temperature"]
    assert "Not Supported" in probe.unavailable["temperature"]
    # same reason text as the wrapper path records
    other = NvmlProbe()
    other.read(_device())
    assert other.unavailable == probe.unavailable


def test_power_falls_back_to_power_usage_when_the_field_read_fails(lib: FakeLib) -> None:
    probe = NvmlProbe()
    read = probe.reader(_device())  # the instant field was readable when the reader was built
    lib.fail.add("nvmlDeviceGetFieldValues")
    assert read()["power_w"] == 312.5
    lib.fail.add("nvmlDeviceGetPowerUsage")
    assert read()["power_w"] is None
    assert "nvmlDeviceGetPowerUsage failed" in probe.unavailable["power"]


def test_falls_back_to_the_wrappers_without_direct_function_pointers(monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import FakeNvml  # a module-like fake without _nvmlGetFunctionPointer

    fake = FakeNvml()
    monkeypatch.setattr(nvml_mod, "_import_nvml", lambda: fake)
    probe = NvmlProbe()
    dev = probe.device_by_uuid("GPU-aaaa")
    assert dev is not None
    read = probe.reader(dev)
    assert not isinstance(read, _FastReader)
    assert read() == probe.read(dev)


def test_falls_back_when_a_function_is_missing(lib: FakeLib, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(FakeLib, "nvmlDeviceGetCurrentClocksEventReasons")  # an older driver
    probe = NvmlProbe()
    read = probe.reader(_device())
    assert not isinstance(read, _FastReader)  # the symbol lookup failed: wrappers, which record it
    r = read()
    assert r["clock_event_reasons"] is None and r["memory_used_bytes"] == 10 * 2**30


def test_keys_are_mapped_once_on_both_paths(lib: FakeLib, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = NvmlProbe()
    direct = probe.reader(_device(), key=lambda name: ("gpu0", name))()
    assert direct[("gpu0", "memory_used_bytes")] == 10 * 2**30 and ("gpu0", "power_w") in direct

    from fakes import FakeNvml

    monkeypatch.setattr(nvml_mod, "_import_nvml", lambda: FakeNvml())
    other = NvmlProbe()
    dev = other.device_by_uuid("GPU-aaaa")
    assert dev is not None
    wrapped = other.reader(dev, key=lambda name: ("gpu0", name))()
    assert set(wrapped) == set(direct)
