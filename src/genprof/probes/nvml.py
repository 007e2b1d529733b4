"""NVML adapter (``nvidia-ml-py``): every call goes through one guarded query.

A query that fails returns ``None`` and records its reason once in :attr:`NvmlProbe.unavailable`
(keyed by reading), so callers never branch on "is there a GPU" and never see a made-up zero.
Tests replace the NVML module by patching :func:`_import_nvml`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# NVML field ids (nvml.h); used only through nvmlDeviceGetFieldValues.
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186

# Clock event (throttle) reason bits, from nvml.h.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event (throttle) reason mask."""
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]


def _import_nvml() -> Any:
    """Import the NVML bindings of ``nvidia-ml-py`` (module name ``pynvml``)."""
    import pynvml

    return pynvml


@dataclass
class NvmlDevice:
    """An NVML device handle with the facts read once."""

    handle: Any
    nvml_index: int | None
    uuid: str | None
    name: str | None


class NvmlProbe:
    """Guarded access to NVML. Construct freely: nothing is initialised until first use."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._init_done = False
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.unavailable: dict[str, str] = {}
        self._power_field: dict[int, int | None] = {}

    # ------------------------------------------------------------- lifecycle
    @property
    def available(self) -> bool:
        self._ensure_init()
        return self._nvml is not None

    def _ensure_init(self) -> None:
        if self._init_done:
            return
        with self._lock:
            if self._init_done:
                return
            self._init_done = True
            try:
                nvml = _import_nvml()
            except ImportError as exc:
                self.reason = f"NVML bindings not installed ({exc}); install nvidia-ml-py"
                log.info("NVML unavailable: %s", self.reason)
                return
            try:
                nvml.nvmlInit()
            except Exception as exc:  # noqa: BLE001 - NVMLError subclasses vary by driver
                self.reason = f"nvmlInit failed: {_err(exc)} (no NVIDIA driver, or no GPU visible)"
                log.info("NVML unavailable: %s", self.reason)
                return
            self._nvml = nvml

    def shutdown(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception as exc:  # noqa: BLE001
                    log.debug("nvmlShutdown failed: %s", _err(exc))
            self._nvml = None
            self._init_done = False

    # ---------------------------------------------------------------- query
    def query(self, reading: str, fn_name: str, *args: Any) -> Any:
        """Call ``nvml.<fn_name>(*args)``; on failure record the reason under ``reading`` and return None."""
        self._ensure_init()
        if self._nvml is None:
            self.unavailable.setdefault(reading, self.reason or "NVML unavailable")
            return None
        fn: Callable[..., Any] | None = getattr(self._nvml, fn_name, None)
        if fn is None:
            self.unavailable.setdefault(reading, f"{fn_name} is not in this nvidia-ml-py version")
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported, NoPermission, ...
            if reading not in self.unavailable:
                self.unavailable[reading] = f"{fn_name} failed: {_err(exc)}"
                log.info("NVML reading %r unavailable: %s", reading, self.unavailable[reading])
            return None

    # -------------------------------------------------------------- devices
    def driver_version(self) -> str | None:
        return _s(self.query("driver_version", "nvmlSystemGetDriverVersion"))

    def nvml_version(self) -> str | None:
        return _s(self.query("nvml_version", "nvmlSystemGetNVMLVersion"))

    def device_count(self) -> int | None:
        c = self.query("device_count", "nvmlDeviceGetCount")
        return None if c is None else int(c)

    def device_by_uuid(self, uuid: str) -> NvmlDevice | None:
        h = self.query("device_handle", "nvmlDeviceGetHandleByUUID", uuid)
        if h is None:
            return None
        idx = self.query("device_index", "nvmlDeviceGetIndex", h)
        return NvmlDevice(h, None if idx is None else int(idx), uuid, _s(self.query("name", "nvmlDeviceGetName", h)))

    def device_by_index(self, index: int) -> NvmlDevice | None:
        h = self.query("device_handle", "nvmlDeviceGetHandleByIndex", index)
        if h is None:
            return None
        return NvmlDevice(
            h,
            index,
            _s(self.query("uuid", "nvmlDeviceGetUUID", h)),
            _s(self.query("name", "nvmlDeviceGetName", h)),
        )

    def visible_devices(self) -> list[NvmlDevice]:
        """NVML devices this process may use, honouring ``CUDA_VISIBLE_DEVICES``.

        Used only when torch cannot tell the UUIDs. Indices in ``CUDA_VISIBLE_DEVICES`` are
        read in PCI bus order, which matches CUDA's order only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``;
        UUID entries (``GPU-...``) are exact.
        """
        n = self.device_count()
        if n is None:
            return []
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is None:
            devs = [self.device_by_index(i) for i in range(n)]
            return [d for d in devs if d is not None]
        out: list[NvmlDevice] = []
        for tok in [t.strip() for t in env.split(",") if t.strip()]:
            if tok.startswith(("GPU-", "MIG-")):
                d = self.device_by_uuid(tok)
            elif tok.lstrip("-").isdigit():
                i = int(tok)
                if i < 0 or i >= n:
                    break  # CUDA stops at the first invalid entry
                d = self.device_by_index(i)
            else:
                break
            if d is not None:
                out.append(d)
        return out

    def device_facts(self, dev: NvmlDevice) -> dict[str, Any]:
        h = dev.handle
        mem = self.query("memory", "nvmlDeviceGetMemoryInfo", h)
        limit = self.query("power_limit", "nvmlDeviceGetEnforcedPowerLimit", h)
        mig = self.query("mig_mode", "nvmlDeviceGetMigMode", h)
        cc = self.query("compute_capability", "nvmlDeviceGetCudaComputeCapability", h)
        return {
            "name": dev.name,
            "uuid": dev.uuid,
            "nvml_index": dev.nvml_index,
            "total_memory_bytes": None if mem is None else int(mem.total),
            "power_limit_w": None if limit is None else float(limit) / 1000.0,
            "mig_mode": None if mig is None else bool(mig[0]),
            "compute_capability": None if cc is None else f"{cc[0]}.{cc[1]}",
        }

    # ------------------------------------------------------------- readings
    def power_source(self, dev: NvmlDevice) -> str:
        """How the power figure of :meth:`read` is defined on this device."""
        field = self._power_field_id(dev)
        if field == NVML_FI_DEV_POWER_INSTANT:
            return "instant power (NVML field NVML_FI_DEV_POWER_INSTANT)"
        return (
            "nvmlDeviceGetPowerUsage: averaged over 1 s on Ampere and newer (except A100), "
            "instant on older GPUs"
        )

    def _power_field_id(self, dev: NvmlDevice) -> int | None:
        key = id(dev.handle)
        if key in self._power_field:
            return self._power_field[key]
        chosen: int | None = None
        nvml = self._nvml
        if nvml is not None and hasattr(nvml, "nvmlDeviceGetFieldValues"):
            try:
                vals = nvml.nvmlDeviceGetFieldValues(dev.handle, [NVML_FI_DEV_POWER_INSTANT])
                if vals and int(getattr(vals[0], "nvmlReturn", 1)) == 0:
                    chosen = NVML_FI_DEV_POWER_INSTANT
            except Exception as exc:  # noqa: BLE001
                log.debug("instant power field not readable: %s", _err(exc))
        self._power_field[key] = chosen
        return chosen

    def _power_w(self, dev: NvmlDevice) -> float | None:
        field = self._power_field_id(dev)
        if field is not None:
            vals = self.query("power", "nvmlDeviceGetFieldValues", dev.handle, [field])
            if vals:
                v = vals[0]
                if int(getattr(v, "nvmlReturn", 1)) == 0:
                    return _field_value(v) / 1000.0
        mw = self.query("power", "nvmlDeviceGetPowerUsage", dev.handle)
        return None if mw is None else float(mw) / 1000.0

    def read(
        self,
        dev: NvmlDevice,
        *,
        memory: bool = True,
        utilization: bool = True,
        temperature: bool = True,
        power: bool = True,
        clocks: bool = True,
        clock_events: bool = True,
    ) -> dict[str, float | int | None]:
        """One sample of the device. Keys carry units; a reading that failed is None."""
        h = dev.handle
        out: dict[str, float | int | None] = {}
        if memory:
            m = self.query("memory", "nvmlDeviceGetMemoryInfo", h)
            out["memory_used_bytes"] = None if m is None else int(m.used)
        if utilization:
            u = self.query("utilization", "nvmlDeviceGetUtilizationRates", h)
            out["utilization_pct"] = None if u is None else float(u.gpu)
        if temperature:
            t = self.query("temperature", "nvmlDeviceGetTemperature", h, 0)  # NVML_TEMPERATURE_GPU
            out["temperature_c"] = None if t is None else float(t)
        if power:
            out["power_w"] = self._power_w(dev)
        if clocks:
            c = self.query("sm_clock", "nvmlDeviceGetClockInfo", h, 1)  # NVML_CLOCK_SM
            out["sm_clock_mhz"] = None if c is None else float(c)
        if clock_events:
            fn = (
                "nvmlDeviceGetCurrentClocksEventReasons"
                if self._nvml is not None and hasattr(self._nvml, "nvmlDeviceGetCurrentClocksEventReasons")
                else "nvmlDeviceGetCurrentClocksThrottleReasons"
            )
            r = self.query("clock_event_reasons", fn, h)
            out["clock_event_reasons"] = None if r is None else int(r)
        return out

    def energy_j(self, dev: NvmlDevice) -> float | None:
        """The device's total-energy counter (joules since driver load). About 4 ms a read on an H100."""
        mj = self.query("gpu_energy", "nvmlDeviceGetTotalEnergyConsumption", dev.handle)
        return None if mj is None else float(mj) / 1000.0


def _field_value(v: Any) -> float:
    """Value of an ``nvmlFieldValue_t`` whatever its type tag."""
    val = v.value
    vt = int(getattr(v, "valueType", 1))
    # 0 double, 1 uint, 2 ulong, 3 ulonglong, 4 slonglong, 5 sint
    for attr in ({0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}.get(vt, "uiVal"),):
        if hasattr(val, attr):
            return float(getattr(val, attr))
    return float(val)


def _s(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return str(x)


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
