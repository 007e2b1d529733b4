"""Rules on the device: a host-bound step loop (low NVML utilisation) and clock throttling."""

from __future__ import annotations

from genprof.analysis.findings import Finding
from genprof.analysis.queries import nearest_phase_name
from genprof.analysis.rules.common import gpu_run, gpu_series, step_runs
from genprof.model import Run, Series
from genprof.units import format_seconds

IDLE_UTIL_PCT = 60.0  # mean NVML utilisation below this while steps run
IDLE_MIN_SAMPLES = 5
THROTTLE_MIN_SHARE = 0.05  # a throttle reason active for 5% of the observed time

# NVML clocks-event (throttle) reason bits, nvml.h
_POWER_BITS = {0x4: "software power cap", 0x80: "hardware power brake"}
_THERMAL_BITS = {0x20: "software thermal slowdown", 0x40: "hardware thermal slowdown", 0x8: "hardware slowdown"}


def _state_durations(ser: Series, end_s: float) -> tuple[dict[int, float], float]:
    """Time each bit of a state series was set, and the time observed (first change to ``end_s``)."""
    per_bit: dict[int, float] = {}
    if not ser.t_s:
        return per_bit, 0.0
    pts = sorted(zip(ser.t_s, ser.values, strict=False))
    stop = max(end_s, pts[-1][0])
    for (t0, v), nxt in zip(pts, pts[1:] + [(stop, 0.0)], strict=False):
        dt = max(0.0, nxt[0] - t0)
        mask = int(v)
        bit = 1
        while bit <= mask:
            if mask & bit:
                per_bit[bit] = per_bit.get(bit, 0.0) + dt
            bit <<= 1
    return per_bit, max(0.0, stop - pts[0][0])


def rule_gpu_idle_between_steps(run: Run) -> Finding | None:
    """NVML utilisation is low while the steps run: the loop is bound by the host."""
    if not gpu_run(run):
        return None
    windows = [(steps[0].start_s, steps[-1].end_s or steps[-1].start_s) for _, steps in step_runs(run) if steps]
    if not windows:
        return None
    sers = [s for s in gpu_series(run, ("utilization_pct",))]
    if not sers:
        return None
    devs = {s.device_index for s in run.spans if s.kind == "step" and s.device_index is not None}
    wanted = {f"gpu{i}" for i in devs}
    chosen = [s for s in sers if s.device in wanted] or sers[:1]
    vals = [v for ser in chosen for t, v in zip(ser.t_s, ser.values, strict=False) if any(a <= t <= b for a, b in windows)]
    if len(vals) < IDLE_MIN_SAMPLES:
        return None
    mean = sum(vals) / len(vals)
    if mean >= IDLE_UTIL_PCT:
        return None
    step_t = sum(b - a for a, b in windows)
    return Finding(
        rule_id="gpu_idle_between_steps",
        title=f"GPU busy only {mean:.0f}% of the time while steps run (host-bound loop)",
        severity="warning",
        evidence=f"{len(vals)} NVML utilisation samples on {chosen[0].device} during {format_seconds(step_t)} of "
        f"steps average {mean:.1f}% (minimum {min(vals):.0f}%); below {IDLE_UTIL_PCT:.0f}% the GPU waits for the host.",
        cause="The Python loop cannot queue work fast enough: per-step host work (scheduler on CPU, .item()/.cpu() "
        "synchronisations in callbacks, small kernels with launch overhead, data moved between CPU and GPU).",
        suggestion="Remove synchronising calls from the step loop and callbacks (.item(), .cpu(), printing tensors); "
        "keep scheduler tensors on the GPU; compile the denoiser with CUDA graphs to cut launch overhead; batch "
        "several prompts per call when serving.",
        phase=nearest_phase_name(run, step_runs(run)[0][1][0]),
        numbers={"mean_utilization_pct": mean, "samples": len(vals), "threshold_pct": IDLE_UTIL_PCT},
        code="pipe.transformer = torch.compile(pipe.transformer, mode='reduce-overhead')",
    )


def rule_throttling(run: Run) -> Finding | None:
    """Power or thermal throttling seen in NVML's clocks-event reasons."""
    if not gpu_run(run):
        return None
    sers = gpu_series(run, ("clocks_event_reasons", "clock_event_reasons"))
    if not sers:
        return None
    end = run.duration_s if run.duration_s is not None else max(max(s.t_s) for s in sers)
    hits: list[tuple[str, str, float, float, str]] = []
    for ser in sers:
        per_bit, observed = _state_durations(ser, end)
        if observed <= 0:
            continue
        for table, kind in ((_POWER_BITS, "power"), (_THERMAL_BITS, "thermal")):
            for bit, label in table.items():
                t = per_bit.get(bit, 0.0)
                if t / observed >= THROTTLE_MIN_SHARE:
                    hits.append((kind, label, t, t / observed, ser.device))
    if not hits:
        return None
    kinds = sorted({h[0] for h in hits})
    parts = [f"{label} on {dev} for {format_seconds(t)} ({100 * share:.0f}% of the run)" for _, label, t, share, dev
             in hits]
    limit = run.gpus[0].power_limit_w
    suggestion = []
    if "power" in kinds:
        suggestion.append(
            "Power capping lowers clocks: compare runs only at the same power limit"
            + (f" (this GPU's limit was {limit:.0f} W)" if limit else "")
            + "; check it with nvidia-smi -q -d POWER, and expect energy-per-generation to improve at a lower cap."
        )
    if "thermal" in kinds:
        suggestion.append("Thermal slowdown: check cooling and airflow, and let the GPU cool between benchmark "
                          "runs; figures from a hot GPU are not comparable with a cold one.")
    return Finding(
        rule_id="throttling",
        title=f"GPU clocks throttled ({' and '.join(kinds)})",
        severity="warning",
        evidence="; ".join(parts) + ".",
        cause="The GPU lowered its clocks because it hit its power limit or temperature limit, so steps ran "
        "slower than the hardware allows.",
        suggestion=" ".join(suggestion),
        numbers={"reasons": [{"kind": k, "reason": label, "seconds": t, "share": s, "device": d}
                             for k, label, t, s, d in hits]},
        code="nvidia-smi -q -d PERFORMANCE,POWER,TEMPERATURE",
    )
