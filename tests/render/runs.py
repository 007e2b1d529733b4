"""Synthetic but realistic runs for renderer tests and ``bench/bench_reports.py``.

Everything is deterministic (a seeded ``random.Random``), built from the model's dataclasses,
so that rendered output can be compared byte for byte.
"""

from __future__ import annotations

import math
import random
from typing import Any

from genprof.model import (
    EndState,
    Event,
    GpuInfo,
    HostInfo,
    Run,
    Series,
    SoftwareInfo,
    Span,
)

GIB = 2**30


class _Builder:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.next_id = 1

    def span(
        self,
        name: str,
        kind: str,
        start: float,
        duration: float | None,
        parent: Span | None = None,
        *,
        index: int | None = None,
        gpu: float | None = None,
        gpu_reason: str | None = None,
        peak: int | None = None,
        energy: float | None = None,
        thread: str = "MainThread",
        **attrs: Any,
    ) -> Span:
        s = Span(
            id=self.next_id,
            name=name,
            kind=kind,
            start_s=start,
            parent_id=None if parent is None else parent.id,
            index=index,
            duration_s=duration,
            gpu_time_s=gpu,
            gpu_time_reason=gpu_reason,
            thread=thread,
            device_index=0,
            peak_allocated_bytes=peak,
            peak_reserved_bytes=None if peak is None else int(peak * 1.15),
            allocated_start_bytes=None if peak is None else int(peak * 0.8),
            allocated_end_bytes=None if peak is None else int(peak * 0.8),
            rss_peak_bytes=3 * GIB,
            energy_j=energy,
            energy_reliable=None if energy is None else True,
            attributes=dict(attrs),
        )
        self.next_id += 1
        self.spans.append(s)
        return s


def make_run(
    *,
    generations: int = 2,
    steps: int = 8,
    sample_hz: float = 10.0,
    step_s: float = 0.25,
    name: str = "wan-t2v-demo",
    tags: dict[str, Any] | None = None,
    with_gpu: bool = True,
    with_blocks: bool = False,
    end_status: str = "ok",
    seed: int = 0,
    pipelines: tuple[tuple[str, float], ...] | None = None,
) -> Run:
    """A text-to-video style run: load phases, then ``generations`` pipeline calls.

    Each generation has ``encode_prompt``, ``denoise`` (``steps`` steps; the first one slower,
    as a warm-up) and ``decode`` phases. With ``with_blocks`` the denoise phase holds blocks of
    4 steps (block diffusion). Series are sampled at ``sample_hz`` over the whole run.
    ``pipelines`` (``(name, step_s)`` pairs) makes generation ``g`` one of pipeline
    ``pipelines[g % len(pipelines)]``, its ``pipeline`` attribute set and its steps that long.
    """
    rng = random.Random(seed)
    b = _Builder()
    t = 0.0
    gb = GIB
    load = b.span("load", "phase", t, 6.0, peak=20 * gb if with_gpu else None, energy=600.0 if with_gpu else None)
    for comp, d in (("text_encoder", 2.0), ("vae", 0.5), ("transformer", 3.4)):
        b.span(f"load_{comp}", "phase", t, d, load, peak=(6 * gb) if with_gpu else None)
        t += d
    t = 6.1
    for g in range(generations):
        gen_steps = steps
        extra: dict[str, Any] = {}
        if pipelines:
            extra["pipeline"], step_s = pipelines[g % len(pipelines)]
        gen = b.span(
            "generation", "generation", t, None, index=g,
            prompt=f"a cat surfing a wave, take {g}", num_frames=33, height=480, width=832, **extra,
        )
        g0 = t
        b.span("encode_prompt", "phase", t, 0.4, gen, gpu=0.35 if with_gpu else None,
               peak=22 * gb if with_gpu else None, energy=120.0 if with_gpu else None)
        t += 0.4
        den_start = t
        den = b.span("denoise", "phase", t, None, gen, peak=30 * gb if with_gpu else None)
        if with_blocks:
            nblocks = max(1, gen_steps // 4)
            for bi in range(nblocks):
                blk_start = t
                blk = b.span("block", "block", t, None, den, index=bi, frames=3)
                for si in range(4):
                    d = step_s * (3.0 if (bi == 0 and si == 0) else 1.0) * (1 + 0.05 * rng.random())
                    b.span("step", "step", t, d, blk, index=bi * 4 + si,
                           gpu=d * 0.97 if with_gpu else None,
                           gpu_reason=None if with_gpu else "no CUDA device",
                           peak=30 * gb if with_gpu else None)
                    t += d
                blk.duration_s = t - blk_start
                blk.gpu_time_s = blk.duration_s * 0.97 if with_gpu else None
        else:
            for si in range(gen_steps):
                d = step_s * (3.0 if si == 0 else 1.0) * (1 + 0.05 * rng.random())
                b.span("step", "step", t, d, den, index=si, gpu=d * 0.97 if with_gpu else None,
                       gpu_reason=None if with_gpu else "no CUDA device",
                       peak=(29 + (si % 2)) * gb if with_gpu else None)
                t += d
        den.duration_s = t - den_start
        den.gpu_time_s = den.duration_s * 0.97 if with_gpu else None
        den.energy_j = den.duration_s * 650.0 if with_gpu else None
        den.energy_reliable = True if with_gpu else None
        b.span("decode", "phase", t, 1.2, gen, gpu=1.18 if with_gpu else None,
               peak=38 * gb if with_gpu else None, energy=1.2 * 500 if with_gpu else None)
        t += 1.2
        gen.duration_s = t - g0
        gen.gpu_time_s = None
        gen.gpu_time_reason = "generation spans are timed on the host only"
        t += 0.1
    duration = t + 0.2

    series: list[Series] = []
    n = int(duration * sample_hz)
    ts = [round(i / sample_hz, 6) for i in range(n)]

    def shape(tt: float) -> float:
        # 0 while loading, ~1 during denoise, peaks in decode
        return 0.2 if tt < 6 else 0.9 + 0.1 * math.sin(tt)

    if with_gpu:
        series.append(Series("memory_used_bytes", "gpu0", ts, [float(int((8 + 30 * shape(x)) * gb)) for x in ts],
                             source="nvml.nvmlDeviceGetMemoryInfo.used"))
        series.append(Series("allocated_bytes", "gpu0", ts, [float(int((6 + 26 * shape(x)) * gb)) for x in ts],
                             source="torch.cuda.memory_allocated"))
        series.append(Series("reserved_bytes", "gpu0", ts, [float(int((7 + 29 * shape(x)) * gb)) for x in ts],
                             source="torch.cuda.memory_reserved"))
        series.append(Series("utilization_pct", "gpu0", ts, [round(100 * shape(x), 1) for x in ts],
                             source="nvml.nvmlDeviceGetUtilizationRates.gpu"))
        series.append(Series("power_w", "gpu0", ts, [round(90 + 560 * shape(x) + rng.random() * 5, 1) for x in ts],
                             source="nvml power usage (averaged over 1 s)"))
        series.append(Series("temperature_c", "gpu0", ts, [round(35 + 40 * shape(x), 1) for x in ts],
                             source="nvml temperature"))
        series.append(Series("sm_clock_mhz", "gpu0", ts, [float(1980 if shape(x) > 0.5 else 1410) for x in ts],
                             source="nvml clock info SM"))
    series.append(Series("cpu_pct", "host", ts, [round(10 + 20 * rng.random(), 1) for x in ts],
                         source="psutil.cpu_percent"))
    series.append(Series("rss_bytes", "process", ts, [float(int((2 + shape(x)) * gb)) for x in ts],
                         source="psutil rss"))

    events = [
        Event("checkpoint_loaded", 5.9, span_id=1, attributes={"path": "/models/wan2.1/transformer"}),
        Event("vae_tiling_enabled", 6.05, attributes={"tile": 256}),
    ]
    gpus = [
        GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-0000", nvml_index=0,
                total_memory_bytes=80 * gb, compute_capability="9.0", power_limit_w=700.0,
                multiprocessor_count=132, mig_mode=False, bf16_supported=True)
    ] if with_gpu else []
    unavailable: dict[str, str] = {}
    if not with_gpu:
        unavailable["gpu"] = "no CUDA device visible (torch.cuda.is_available() is False)"
        unavailable["gpu_energy"] = "no NVML device"
    end = EndState(status=end_status, at_s=duration)
    if end_status == "oom":
        end.exception_type = "torch.OutOfMemoryError"
        end.message = "CUDA out of memory. Tried to allocate 4.00 GiB."
        end.open_spans = ["generation", "decode"]
        end.oom = {"allocated_bytes": 78 * gb, "reserved_bytes": 79 * gb, "requested_bytes": 4 * gb}
    elif end_status == "exception":
        end.exception_type = "ValueError"
        end.message = "height must be divisible by 16"
    metadata: dict[str, Any] = {"final_memory": {"allocated_bytes": 18 * gb, "reserved_bytes": 24 * gb}}
    if with_gpu:
        phase_energy = sum(s.energy_j or 0.0 for s in b.spans if s.kind == "phase" and s.name != "load")
        metadata["energy"] = {"total_j": round(600.0 + phase_energy + 90.0 * (duration - 6.0 - sum(
            s.duration_s or 0.0 for s in b.spans if s.kind == "phase" and s.parent_id is not None
            and s.name != "load" and not s.name.startswith("load_"))), 3)}
    return Run(
        name=name,
        run_id="20250101T000000-abcdef",
        started_at="2025-01-01T00:00:00+00:00",
        started_unix_s=1735689600.0,
        duration_s=duration,
        tags=dict(tags) if tags is not None else {"model": "Wan2.1-T2V-1.3B", "resolution": "832x480"},
        config={"gpu_monitor_interval": 1.0 / sample_hz, "report_format": "both"},
        software=SoftwareInfo(genprof="0.1.0", python="3.11.2", torch="2.13.0", cuda="12.8" if with_gpu else None,
                              driver="570.86" if with_gpu else None, diffusers="0.42.1"),
        host=HostInfo(hostname="box", os="Linux", cpu_model="AMD EPYC", cpu_count_logical=16,
                      cpu_count_physical=8, ram_total_bytes=128 * gb, pid=4242),
        gpus=gpus,
        spans=b.spans,
        events=events,
        series=series,
        unavailable=unavailable,
        end=end,
        metadata=metadata,
    )


def make_long_run(hours: float = 1.0, sample_hz: float = 10.0, *, n_series: int = 8) -> Run:
    """A run of ``hours`` at ``sample_hz`` (36,000 points per series for one hour at 10 Hz).

    Generations of 50 steps fill the hour (about 2,900 steps and 3,300 spans in all).
    """
    duration = hours * 3600.0
    # one generation: 0.4 + 50 * step + 1.2 + 0.1 s (first step 3x)
    step_s = 1.2
    per_gen = 0.4 + 52 * step_s + 1.2 + 0.1
    gens = max(1, int((duration - 6.2) / per_gen))
    run = make_run(generations=gens, steps=50, sample_hz=sample_hz, step_s=step_s, name="one-hour-soak")
    # stretch the series to exactly the hour and keep ``n_series`` of them
    n = int(duration * sample_hz)
    ts = [round(i / sample_hz, 6) for i in range(n)]
    rng = random.Random(1)
    new: list[Series] = []
    for s in run.series[:n_series]:
        base = s.values[len(s.values) // 2] if s.values else 1.0
        new.append(Series(s.name, s.device, ts, [base * (0.9 + 0.2 * rng.random()) for _ in ts],
                          kind=s.kind, source=s.source))
    run.series = new
    run.duration_s = duration
    run.end.at_s = duration
    return run
