"""NVML adapter (``nvidia-ml-py``): every call goes through one guarded query.

A query that fails returns ``None`` and records its reason once in :attr:`NvmlProbe.unavailable`
(keyed by reading), so callers never branch on "is there a GPU" and never see a made-up zero.
Tests replace the NVML module by patching :func:`_import_nvml`.
"""

from __future__ import annotations

import ctypes
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

    def reader(
        self,
        dev: NvmlDevice,
        *,
        memory: bool = True,
        utilization: bool = True,
        temperature: bool = True,
        power: bool = True,
        clocks: bool = True,
        clock_events: bool = True,
        key: Callable[[str], Any] | None = None,
    ) -> Callable[[], dict[Any, float | int | None]]:
        """A function that takes one sample of the device, as :meth:`read` does, for the sampler.

        ``key`` maps each reading's name to the key the caller wants in the returned dict (the
        sampler's ``(device, name)``), once, when the reader is built.

        With nvidia-ml-py's ctypes bindings it calls NVML's C functions directly, with output
        buffers allocated once: pynvml's Python wrapper around each call (argument objects, a
        new ctypes structure, the return check, a Python-level ``__getattribute__`` on the
        result) costs several times the foreign call itself, and it runs with the GIL held,
        on the sampler thread, while the pipeline's own thread wants it. Without those
        bindings (or if one function is missing) it falls back to :meth:`read`.
        """
        flags = {"memory": memory, "utilization": utilization, "temperature": temperature, "power": power,
                 "clocks": clocks, "clock_events": clock_events}
        self._ensure_init()
        k = key or (lambda name: name)
        fast = _FastReader.build(self, dev, flags, k) if self._nvml is not None else None
        if fast is not None:
            return fast
        if key is None:
            return lambda: self.read(dev, **flags)
        return lambda: {k(name): v for name, v in self.read(dev, **flags).items()}

    def _record_failure(self, reading: str, fn_name: str, ret: int) -> None:
        """A direct NVML call returned ``ret`` (not success): record why, once, as :meth:`query` does."""
        if reading in self.unavailable:
            return
        err_cls = getattr(self._nvml, "NVMLError", None)
        why = f"NVMLError: return code {ret}"
        if err_cls is not None:
            try:
                why = _err(err_cls(ret))
            except Exception as exc:  # noqa: BLE001 - the message lookup itself calls NVML
                log.debug("NVML error %s has no message: %s", ret, _err(exc))
        self.unavailable[reading] = f"{fn_name} failed: {why}"
        log.info("NVML reading %r unavailable: %s", reading, self.unavailable[reading])

    def energy_j(self, dev: NvmlDevice) -> float | None:
        """The device's total-energy counter (joules since driver load). About 4 ms a read on an H100."""
        mj = self.query("gpu_energy", "nvmlDeviceGetTotalEnergyConsumption", dev.handle)
        return None if mj is None else float(mj) / 1000.0


# nvmlValueType_t -> ctypes type of the union member it selects (nvml.h)
_VALUE_TYPES: dict[int, Any] = {
    0: ctypes.c_double, 1: ctypes.c_uint, 2: ctypes.c_ulong, 3: ctypes.c_ulonglong, 4: ctypes.c_longlong,
    5: ctypes.c_int, 6: ctypes.c_ushort,
}


class _FastReader:
    """Sampler readings of one device through NVML's C functions, with preallocated outputs.

    Layouts, from nvml.h: ``nvmlMemory_t`` is three unsigned long longs (total, free, used),
    ``nvmlUtilization_t`` two unsigned ints (gpu, memory); the others are one scalar. The
    instant-power field uses nvidia-ml-py's own ``c_nvmlFieldValue_t``, read through views at
    its fields' offsets.
    """

    def __init__(self, probe: NvmlProbe, items: list[tuple[Any, Callable[[], float | int | None]]]) -> None:
        self.probe = probe
        self.items = items

    def __call__(self) -> dict[Any, float | int | None]:
        return {key: get() for key, get in self.items}

    @classmethod
    def build(cls, probe: NvmlProbe, dev: NvmlDevice, flags: dict[str, bool],
              key: Callable[[str], Any]) -> _FastReader | None:
        nvml = probe._nvml
        gfp = getattr(nvml, "_nvmlGetFunctionPointer", None)
        if gfp is None:
            return None
        try:
            h = dev.handle
            items: list[tuple[Any, Callable[[], float | int | None]]] = []

            def scalar(name: str, reading: str, fn_name: str, ctype: Any, conv: Callable[[Any], float | int],
                       *args: Any, index: int = 0, length: int = 1) -> None:
                fn = gfp(fn_name)
                out_key = key(name)
                buf = (ctype * length)()
                call_args = (h, *args, ctypes.byref(buf))
                fail = probe._record_failure

                def get() -> float | int | None:
                    ret = fn(*call_args)
                    if ret == 0:
                        return conv(buf[index])
                    fail(reading, fn_name, ret)
                    return None

                items.append((out_key, get))

            if flags["memory"]:
                scalar("memory_used_bytes", "memory", "nvmlDeviceGetMemoryInfo", ctypes.c_ulonglong, int,
                       index=2, length=3)
            if flags["utilization"]:
                scalar("utilization_pct", "utilization", "nvmlDeviceGetUtilizationRates", ctypes.c_uint, float,
                       length=2)
            if flags["temperature"]:
                scalar("temperature_c", "temperature", "nvmlDeviceGetTemperature", ctypes.c_uint, float,
                       0)  # NVML_TEMPERATURE_GPU
            if flags["power"]:
                items.append((key("power_w"), cls._power(probe, dev, gfp)))
            if flags["clocks"]:
                scalar("sm_clock_mhz", "sm_clock", "nvmlDeviceGetClockInfo", ctypes.c_uint, float, 1)  # NVML_CLOCK_SM
            if flags["clock_events"]:
                fn_name = ("nvmlDeviceGetCurrentClocksEventReasons"
                           if hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons")
                           else "nvmlDeviceGetCurrentClocksThrottleReasons")
                scalar("clock_event_reasons", "clock_event_reasons", fn_name, ctypes.c_ulonglong, int)
        except Exception as exc:  # noqa: BLE001 - missing symbol (NVMLError_FunctionNotFound) or layout
            log.debug("direct NVML reads unavailable (%s); using nvidia-ml-py's wrappers", _err(exc))
            return None
        return cls(probe, items)

    @staticmethod
    def _power(probe: NvmlProbe, dev: NvmlDevice, gfp: Callable[[str], Any]) -> Callable[[], float | None]:
        h = dev.handle
        usage_fn = gfp("nvmlDeviceGetPowerUsage")
        usage = (ctypes.c_uint * 1)()
        usage_ref = ctypes.byref(usage)
        fail = probe._record_failure
        field = probe._power_field_id(dev)
        st = getattr(probe._nvml, "c_nvmlFieldValue_t", None)
        if field is None or st is None:

            def power_usage() -> float | None:
                ret = usage_fn(h, usage_ref)
                if ret == 0:
                    return usage[0] / 1000.0
                fail("power", "nvmlDeviceGetPowerUsage", ret)
                return None

            return power_usage
        field_fn = gfp("nvmlDeviceGetFieldValues")
        values = (st * 1)()
        values[0].fieldId = field
        values_ref = ctypes.byref(values)
        count = ctypes.c_int32(1)
        ret_view = ctypes.c_uint.from_buffer(values, st.nvmlReturn.offset)
        type_view = ctypes.c_uint.from_buffer(values, st.valueType.offset)
        value_views = {vt: ct.from_buffer(values, st.value.offset) for vt, ct in _VALUE_TYPES.items()}

        def power_field() -> float | None:
            ret = field_fn(h, count, values_ref)
            if ret == 0 and ret_view.value == 0:
                view = value_views.get(type_view.value)
                if view is not None:
                    return float(view.value) / 1000.0
            ret = usage_fn(h, usage_ref)
            if ret == 0:
                return usage[0] / 1000.0
            fail("power", "nvmlDeviceGetPowerUsage", ret)
            return None

        return power_field


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
