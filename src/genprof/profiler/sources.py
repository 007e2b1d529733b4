"""The sampler's sources for a run: the device's (NVML, the allocator) and the host's (CPU, RAM, RSS)."""

from __future__ import annotations

from collections.abc import Callable

from genprof.config import ProfilerConfig
from genprof.probes import host as host_probe
from genprof.profiler.device import Device
from genprof.sampler import Readings, Sampler, Source

SeriesMeta = dict[tuple[str, str], tuple[str, str]]


def host_source(cfg: ProfilerConfig) -> tuple[list[Source], SeriesMeta, host_probe.HostProbe | None]:
    """The host's source as the config asks (none when it asks for no host readings), and its probe to close."""
    if not (cfg.monitor_cpu_usage or cfg.monitor_system_memory):
        return [], {}, None
    hp = host_probe.HostProbe()
    cpu, memory = cfg.monitor_cpu_usage, cfg.monitor_system_memory

    def read_host() -> Readings:
        r = hp.read(cpu=cpu, memory=memory)
        out: Readings = {}
        for k, v in r.items():
            out[("process" if k in ("rss_bytes", "process_cpu_pct") else "host", k)] = v
        return out

    meta: SeriesMeta = {
        ("host", "cpu_pct"): ("gauge", f"{hp.source}: system-wide CPU percent since the last sample"),
        ("process", "process_cpu_pct"): ("gauge", f"{hp.source}: this process's CPU percent (100 = one core)"),
        ("process", "rss_bytes"): ("gauge", "resident set size of this process"),
    }
    return [Source("host", cfg.cpu_monitor_interval, read_host)], meta, hp


def build_sampler(cfg: ProfilerConfig, device: Device, *, t0: float, clock: Callable[[], float],
                  on_samples: Callable[[dict[str, float]], None] | None,
                  unavailable: dict[str, str]) -> tuple[Sampler | None, host_probe.HostProbe | None]:
    """A started sampler over the device's and the host's sources (None when the config asks for none).

    Reasons for readings that cannot be sampled go into ``unavailable``.
    """
    gpu, meta, why = device.gpu_sources(
        interval_s=cfg.gpu_monitor_interval, memory=cfg.monitor_gpu_memory,
        utilization=cfg.monitor_gpu_utilization, temperature=cfg.monitor_gpu_temperature,
        power=cfg.monitor_gpu_power, clocks=cfg.monitor_gpu_clocks,
    )
    unavailable.update(why)
    host, host_meta, hp = host_source(cfg)
    sources = gpu + host
    if not sources:
        return None, hp
    meta.update(host_meta)
    sampler = Sampler(sources, t0=t0, clock=clock, max_points=cfg.max_data_points, sources_meta=meta,
                      on_samples=on_samples)
    sampler.start()
    return sampler, hp
