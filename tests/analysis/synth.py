"""Synthetic runs for analysis tests: a load phase, then generations of encode, denoise, decode.

Every number is a parameter so a test states the situation it builds (GIVEN a run whose
decode peak is 70 GiB on an 80 GiB GPU ...). Times are sequential and consistent: a parent
span lasts as long as its children plus small gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genprof.model import DistributedInfo, GpuInfo, HostInfo, Run, Series, Span

GiB = 1024**3


def make_run(
    *,
    name: str = "synth",
    run_id: str = "run-1",
    gpu: bool = True,
    total_memory_bytes: int | None = 80 * GiB,
    bf16: bool | None = True,
    uuid: str = "GPU-0000",
    gpu_name: str = "NVIDIA H100 80GB HBM3",
    generations: int = 1,
    steps: int = 20,
    step_s: float = 0.1,
    step_times: Sequence[float] | None = None,
    load_s: float = 2.0,
    encode_s: float = 0.05,
    decode_s: float = 0.3,
    weights_bytes: int = 10 * GiB,
    denoise_peak_bytes: int = 14 * GiB,
    decode_peak_bytes: int = 12 * GiB,
    reserved_extra_bytes: int = 512 * 1024**2,
    step_alloc_growth_bytes: int = 0,
    phase_energy_w: float | None = 300.0,
    utilization_pct: float | Sequence[float] | None = None,
    clock_reasons: Sequence[tuple[float, int]] | None = None,
    temperatures: Sequence[float] | None = None,
    pipeline: dict[str, Any] | None = None,
    gen_metadata: list[dict[str, Any]] | None = None,
    tags: dict[str, Any] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    job_id: str | None = None,
    started_unix_s: float = 1_700_000_000.0,
    gpu_time: bool = True,
) -> Run:
    spans: list[Span] = []
    ids = iter(range(1, 10**9))
    t = 0.0

    def mem(s: Span, alloc_start: int, alloc_end: int, peak: int) -> None:
        if not gpu:
            return
        s.device_index = 0
        s.allocated_start_bytes = alloc_start
        s.allocated_end_bytes = alloc_end
        s.peak_allocated_bytes = peak
        s.reserved_start_bytes = alloc_start + reserved_extra_bytes
        s.reserved_end_bytes = alloc_end + reserved_extra_bytes
        s.peak_reserved_bytes = peak + reserved_extra_bytes

    def energy(s: Span) -> None:
        if gpu and phase_energy_w is not None and s.duration_s is not None:
            s.energy_j = phase_energy_w * s.duration_s
            s.energy_reliable = True

    load = Span(id=next(ids), name="load", kind="phase", start_s=t, duration_s=load_s)
    mem(load, 0, weights_bytes, weights_bytes)
    energy(load)
    spans.append(load)
    t += load_s + 0.01
    times = list(step_times) if step_times is not None else [step_s] * steps
    step_windows: list[tuple[float, float]] = []
    for g in range(generations):
        gen = Span(id=next(ids), name="generation", kind="generation", start_s=t, index=g)
        spans.append(gen)
        g0 = t
        enc = Span(id=next(ids), name="text_encode", kind="phase", start_s=t, parent_id=gen.id, duration_s=encode_s)
        mem(enc, weights_bytes, weights_bytes, weights_bytes + GiB // 4)
        energy(enc)
        spans.append(enc)
        t += encode_s + 0.001
        den = Span(id=next(ids), name="denoise", kind="phase", start_s=t, parent_id=gen.id)
        spans.append(den)
        d0 = t
        alloc = weights_bytes
        for i, st in enumerate(times):
            s = Span(id=next(ids), name="step", kind="step", start_s=t, parent_id=den.id, index=i, duration_s=st)
            if gpu and gpu_time:
                s.gpu_time_s = st * 0.98
            elif gpu:
                s.gpu_time_reason = "gpu timing off"
            mem(s, alloc, alloc + step_alloc_growth_bytes, denoise_peak_bytes + alloc - weights_bytes)
            alloc += step_alloc_growth_bytes
            spans.append(s)
            t += st + 0.0005
        den.duration_s = t - d0
        step_windows.append((d0, t))
        mem(den, weights_bytes, alloc, denoise_peak_bytes + alloc - weights_bytes)
        energy(den)
        dec = Span(id=next(ids), name="decode", kind="phase", start_s=t, parent_id=gen.id, duration_s=decode_s)
        mem(dec, alloc, alloc, decode_peak_bytes)
        energy(dec)
        spans.append(dec)
        t += decode_s + 0.001
        gen.duration_s = t - g0
        mem(gen, weights_bytes, alloc, max(denoise_peak_bytes + alloc - weights_bytes, decode_peak_bytes))
        energy(gen)
        t += 0.002
    run = Run(
        name=name,
        run_id=run_id,
        started_at="2024-01-01T00:00:00+00:00",
        started_unix_s=started_unix_s,
        duration_s=t,
        tags=dict(tags or {}),
        host=HostInfo(hostname="host-a", cpu_count_logical=16),
        spans=spans,
    )
    run.end.status = "ok"
    run.end.at_s = t
    if gpu:
        run.gpus = [
            GpuInfo(index=0, name=gpu_name, uuid=uuid, total_memory_bytes=total_memory_bytes,
                    compute_capability="9.0", power_limit_w=700.0, bf16_supported=bf16)
        ]
        if phase_energy_w is not None:
            run.metadata["energy"] = {"total_j": phase_energy_w * t}
    else:
        run.unavailable["gpu"] = "no CUDA device"
        run.unavailable["gpu_memory"] = "no CUDA device"
        run.unavailable["gpu_energy"] = "no CUDA device"
    if gpu and utilization_pct is not None:
        ts: list[float] = []
        vs: list[float] = []
        utils = [utilization_pct] if isinstance(utilization_pct, (int, float)) else list(utilization_pct)
        k = 0
        x = 0.0
        while x <= t:
            ts.append(x)
            in_steps = any(a <= x <= b for a, b in step_windows)
            vs.append(float(utils[k % len(utils)]) if in_steps else 5.0)
            k += 1
            x += 0.05
        run.series.append(Series(name="utilization_pct", device="gpu0", t_s=ts, values=vs, source="nvml"))
    if gpu and clock_reasons is not None:
        run.series.append(
            Series(name="clocks_event_reasons", device="gpu0", kind="state",
                   t_s=[a for a, _ in clock_reasons], values=[float(b) for _, b in clock_reasons], source="nvml")
        )
    if gpu and temperatures is not None:
        n = len(temperatures)
        run.series.append(Series(name="temperature_c", device="gpu0",
                                 t_s=[t * i / max(1, n - 1) for i in range(n)], values=list(temperatures)))
    if pipeline is not None:
        run.metadata["pipeline"] = pipeline
    if gen_metadata is not None:
        run.metadata["generations"] = gen_metadata
    if rank is not None:
        run.distributed = DistributedInfo(rank=rank, world_size=world_size or 1, local_rank=rank, backend="nccl")
        run.metadata["distributed"] = {
            "rank": rank,
            "world_size": world_size or 1,
            "local_rank": rank,
            "job_id": job_id,
            "job_id_source": "test",
            "host": "host-a",
        }
    return run
