"""Rules: small pure functions ``rule(run) -> Finding | None`` that turn a run into advice.

Each rule looks for one situation, states the evidence in numbers taken from the run, the
likely cause and a concrete change (with the diffusers call where one exists). A rule
returns ``None`` when the data it needs is missing: a CPU-only run gets no GPU advice, a run
without a utilisation series gets no host-bound verdict. Rules give inference advice only.

Thresholds are module constants, documented with each rule in ``docs/analysis.md``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from genprof.analysis.findings import Finding
from genprof.analysis.summary import peak_memory, percentile, step_loop
from genprof.analysis.targets import CONTAINER_KINDS, nearest_phase_name, phase_exclusive_times
from genprof.model import Run, Series, Span
from genprof.units import format_bytes, format_seconds

log = logging.getLogger(__name__)

Rule = Callable[[Run], "Finding | None"]

# Thresholds (see docs/analysis.md for the reasoning behind each).
DOMINANT_PHASE_SHARE = 0.5  # a phase holding more than half of the run's time
WARMUP_RATIO = 3.0  # first step(s) this many times the median of the rest
WARMUP_MIN_STEPS = 4
IDLE_UTIL_PCT = 60.0  # mean NVML utilisation below this while steps run
IDLE_MIN_SAMPLES = 5
NEAR_CAPACITY = 0.90  # peak reserved at or above 90% of device memory
NEAR_CAPACITY_CRITICAL = 0.97
FRAG_RATIO = 1.3  # reserved / allocated at the peak
FRAG_MIN_GAP_BYTES = 1024**3
THROTTLE_MIN_SHARE = 0.05  # a throttle reason active for 5% of the observed time
DECODE_MEM_RATIO = 1.2  # decode peak above the denoise peak by 20%
DECODE_MEM_MIN_GAP_BYTES = 512 * 1024**2
TEXT_ENCODER_MIN_BYTES = 1024**3
SLOWDOWN_RATIO = 1.15  # last quarter of the steps 15% slower than the first quarter
SLOWDOWN_MIN_STEPS = 8
SLOWDOWN_MIN_RANK_CORR = 0.5

GiB = 1024**3

# NVML clocks-event (throttle) reason bits, nvml.h
_POWER_BITS = {0x4: "software power cap", 0x80: "hardware power brake"}
_THERMAL_BITS = {0x20: "software thermal slowdown", 0x40: "hardware thermal slowdown", 0x8: "hardware slowdown"}


# --------------------------------------------------------------------------- helpers
def _dtype_name(v: Any) -> str:
    return str(v).replace("torch.", "").lower()


def _gpu_run(run: Run) -> bool:
    return bool(run.gpus)


def _is_decode(name: str) -> bool:
    n = name.lower()
    return "decode" in n or n.startswith("vae")


def _is_denoise(name: str) -> bool:
    n = name.lower()
    return "denoise" in n or "sampling" in n or n in ("transformer", "unet", "blocks", "diffusion")


def _innermost_peak_phase(run: Run, key: str) -> Span | None:
    cands = [s for s in run.spans if s.kind in CONTAINER_KINDS and getattr(s, key) is not None]
    if not cands:
        return None
    top = max(getattr(s, key) for s in cands)
    at_top = [s for s in cands if getattr(s, key) == top]
    return min(at_top, key=lambda s: s.duration_s if s.duration_s is not None else math.inf)


def _phase_peak(run: Run, pred: Callable[[str], bool], key: str = "peak_reserved_bytes") -> int | None:
    vals = [getattr(s, key) for s in run.spans if s.kind == "phase" and pred(s.name) and getattr(s, key) is not None]
    return max(vals) if vals else None


def _steps_by_phase(run: Run) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in sorted(run.spans, key=lambda s: s.start_s):
        if s.kind == "step" and s.duration_s is not None:
            out.setdefault(nearest_phase_name(run, s) or "steps", []).append(s)
    return out


def _step_runs(run: Run) -> list[tuple[str, list[Span]]]:
    """Consecutive step sequences: steps grouped by their direct parent span (one denoise loop).

    In a block loop the steps of every block form one sequence (grouped by the blocks' parent),
    so only the loop's first steps count as warm-up, not the first step of each block.
    """
    by_id = {s.id: s for s in run.spans}
    groups: dict[int | None, list[Span]] = {}
    for s in sorted(run.spans, key=lambda s: s.start_s):
        if s.kind == "step" and s.duration_s is not None:
            key = step_loop(by_id, s)[0]  # in a block loop: the blocks' parent, also through nested phases
            groups.setdefault(key, []).append(s)
    out = []
    for pid, steps in groups.items():
        parent = run.span_by_id(pid) if pid is not None else None
        out.append((parent.name if parent is not None else "steps", steps))
    return out


def _median(xs: list[float]) -> float:
    v = percentile(xs, 50)
    return 0.0 if v is None else v


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman rank correlation (``None`` if undefined)."""
    if len(xs) < 3 or len(xs) != len(ys):
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=False))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def _gpu_series(run: Run, names: tuple[str, ...]) -> list[Series]:
    return [s for s in run.series if s.name in names and s.device.startswith("gpu") and s.values]


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


def _components(run: Run) -> dict[str, dict[str, Any]]:
    """``run.metadata["pipeline"]["components"]`` as ``{name: info}`` (dict or list layouts)."""
    pipe = run.metadata.get("pipeline")
    if not isinstance(pipe, Mapping):
        return {}
    comps = pipe.get("components")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(comps, Mapping):
        for k, v in comps.items():
            if isinstance(v, Mapping):
                out[str(k)] = dict(v)
    elif isinstance(comps, list):
        for v in comps:
            if isinstance(v, Mapping) and isinstance(v.get("name"), str):
                out[v["name"]] = dict(v)
    return out


_DTYPE_BYTES = {"float64": 8, "float32": 4, "fp32": 4, "bfloat16": 2, "float16": 2, "fp16": 2, "int8": 1, "uint8": 1,
                "float8_e4m3fn": 1, "float8_e5m2": 1, "int32": 4, "int64": 8}


def _component_bytes(info: Mapping[str, Any]) -> int | None:
    """Weight bytes of a component: a recorded byte size, else parameters times the dtype's size.

    The diffusers helper records ``parameters`` (a count), ``dtype`` and, for mixed modules,
    ``dtypes`` (parameter count per dtype).
    """
    for k in ("parameters_bytes", "param_bytes", "size_bytes", "weights_bytes", "bytes"):
        v = info.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return int(v)
    mixed = info.get("dtypes")
    if isinstance(mixed, Mapping) and mixed:
        total = 0
        for dt, n in mixed.items():
            size = _DTYPE_BYTES.get(_dtype_name(dt))
            if size is None or not isinstance(n, (int, float)):
                return None
            total += int(n) * size
        return total
    n = info.get("parameters")
    size = _DTYPE_BYTES.get(_dtype_name(info.get("dtype")))
    if isinstance(n, (int, float)) and not isinstance(n, bool) and size is not None:
        return int(n) * size
    return None


def _offload_mode(run: Run) -> str | None:
    pipe = run.metadata.get("pipeline")
    if not isinstance(pipe, Mapping):
        return None
    v = pipe.get("offload")
    return v if isinstance(v, str) and v.lower() not in ("", "none", "false") else None


# --------------------------------------------------------------------------- rules
_PHASE_ADVICE: list[tuple[str, str, str | None]] = [
    (r"load|init", "Load the pipeline once and keep it for all generations; load from safetensors with "
     "low_cpu_mem_usage and the final dtype so no conversion runs at load time.",
     "DiffusionPipeline.from_pretrained(..., torch_dtype=torch.bfloat16, use_safetensors=True)"),
    (r"decode|vae", "Decoding dominates: decode once per generation, in bf16, and tile only if memory needs it "
     "(tiling trades time for memory).", None),
    (r"encode|text|prompt", "Prompt encoding dominates: encode each prompt once and reuse the embeddings "
     "(pass prompt_embeds to the pipeline).", "embeds = pipe.encode_prompt(prompt, ...); pipe(prompt_embeds=...)"),
    (r"denoise|step|sampl|transformer|unet|block", "Denoising dominates: fewer steps (a distilled or "
     "few-step scheduler), torch.compile of the denoiser, bf16 weights, and an efficient attention backend "
     "cut it most.", "pipe.transformer = torch.compile(pipe.transformer, mode='max-autotune-no-cudagraphs')"),
]


def rule_dominant_phase(run: Run) -> Finding | None:
    """One phase holds more than half of the run's time (time in nested phases counted once)."""
    gen_paths = {run.path_of(s) for s in run.spans if s.kind == "generation"}
    excl = {p: v for p, v in phase_exclusive_times(run).items() if p not in gen_paths}
    total = run.duration_s
    if not excl or not total or total <= 0 or len(excl) < 2:
        return None
    path, t = max(excl.items(), key=lambda kv: kv[1])
    share = t / total
    if share <= DOMINANT_PHASE_SHARE:
        return None
    name = path.rsplit("/", 1)[-1]
    advice, code = "Look at this phase first: it is where time can be won.", None
    for pat, text, c in _PHASE_ADVICE:
        if re.search(pat, name.lower()):
            advice, code = text, c
            break
    second = sorted(excl.values(), reverse=True)[1]
    return Finding(
        rule_id="dominant_phase",
        title=f"'{path}' takes {100 * share:.0f}% of the run",
        severity="info",
        evidence=f"'{path}' ran {format_seconds(t)} of {format_seconds(total)} ({100 * share:.1f}%, time not "
        f"inside nested phases); the next phase took {format_seconds(second)}.",
        cause="Most of the time is spent in one phase, so speeding up any other phase changes little.",
        suggestion=advice,
        phase=path,
        numbers={"phase_time_s": t, "run_time_s": total, "share_pct": 100 * share},
        code=code,
    )


def rule_warmup_steps(run: Run) -> Finding | None:
    """The first step(s) of the first denoising loop are far slower than the rest."""
    loops = _step_runs(run)
    if not loops:
        return None
    phase, steps = loops[0]
    if len(steps) < WARMUP_MIN_STEPS:
        return None
    d = [s.duration_s or 0.0 for s in steps]
    rest = _median(d[2:])
    if rest <= 0:
        return None
    slow = [i for i in range(min(2, len(d))) if d[i] >= WARMUP_RATIO * rest]
    if not slow or (1 in slow and 0 not in slow):
        return None
    extra = sum(d[i] - rest for i in slow)
    return Finding(
        rule_id="warmup_steps",
        title=f"first {'step is' if len(slow) == 1 else 'steps are'} {d[0] / rest:.1f}x slower than the rest",
        severity="info",
        evidence=f"in '{phase}', step 0 took {format_seconds(d[0])}"
        + (f" and step 1 {format_seconds(d[1])}" if 1 in slow else "")
        + f"; the median of steps 2..{len(d) - 1} is {format_seconds(rest)}; warm-up costs "
        f"{format_seconds(extra)}.",
        cause="One-time work in the first steps: torch.compile tracing, cuDNN/cuBLAS autotuning, CUDA context "
        "and kernel loading, or lazy allocation.",
        suggestion="Run one short warm-up generation (e.g. 2 steps) after loading and before serving or timing; "
        "keep compiled modules alive between calls. Exclude warm-up from benchmark figures.",
        phase=phase,
        numbers={"first_step_s": d[0], "median_rest_s": rest, "ratio": d[0] / rest, "warmup_extra_s": extra},
        code="pipe(prompt, num_inference_steps=2)  # warm-up before timing",
    )


def rule_gpu_idle_between_steps(run: Run) -> Finding | None:
    """NVML utilisation is low while the steps run: the loop is bound by the host."""
    if not _gpu_run(run):
        return None
    windows = [(steps[0].start_s, steps[-1].end_s or steps[-1].start_s) for _, steps in _step_runs(run) if steps]
    if not windows:
        return None
    sers = [s for s in _gpu_series(run, ("utilization_pct",))]
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
        phase=nearest_phase_name(run, _step_runs(run)[0][1][0]),
        numbers={"mean_utilization_pct": mean, "samples": len(vals), "threshold_pct": IDLE_UTIL_PCT},
        code="pipe.transformer = torch.compile(pipe.transformer, mode='reduce-overhead')",
    )


def rule_peak_near_capacity(run: Run) -> Finding | None:
    """Peak reserved memory is close to the device's memory: the next larger input runs out."""
    if not _gpu_run(run):
        return None
    total = run.gpus[0].total_memory_bytes
    peak = peak_memory(run).get("peak_reserved_bytes")
    if not total or peak is None:
        return None
    frac = peak / total
    if frac < NEAR_CAPACITY:
        return None
    ph = _innermost_peak_phase(run, "peak_reserved_bytes")
    path = run.path_of(ph) if ph is not None else None
    weights = ph.allocated_start_bytes if ph is not None else None
    code: str | None
    if ph is not None and _is_decode(ph.name):
        cause = "the peak is in VAE decoding, whose activations grow with resolution and frame count"
        suggestion = ("Decode in tiles (and one image at a time for batches); for video VAEs tiling also cuts "
                      "the temporal peak.")
        code = "pipe.vae.enable_tiling(); pipe.vae.enable_slicing()"
    elif weights is not None and weights >= 0.6 * peak:
        cause = (f"weights already held {format_bytes(weights)} when '{path}' started; the model itself fills "
                 "most of the GPU")
        suggestion = ("Offload components not in use to the CPU (model offload moves whole components; "
                      "sequential offload moves layers and saves more at a larger time cost), or load the "
                      "weights in a smaller dtype.")
        code = "pipe.enable_model_cpu_offload()"
    else:
        cause = f"activations in '{path or 'the run'}' on top of the weights fill the GPU"
        suggestion = ("Lower the resolution or frame count per call, process frames in chunks, or offload "
                      "idle components to make room.")
        code = "pipe.enable_model_cpu_offload()"
    return Finding(
        rule_id="peak_near_capacity",
        title=f"peak reserved memory is {100 * frac:.0f}% of the GPU",
        severity="critical" if frac >= NEAR_CAPACITY_CRITICAL else "warning",
        evidence=f"peak reserved {format_bytes(peak)} of {format_bytes(total)} on {run.gpus[0].name or 'gpu0'}"
        + (f", reached in '{path}'" if path else "") + ".",
        cause=f"Little headroom is left: {cause}; a larger input or another process will run out of memory.",
        suggestion=suggestion,
        phase=path,
        numbers={"peak_reserved_bytes": peak, "total_memory_bytes": total, "fraction": frac},
        code=code,
    )


def rule_fragmentation(run: Run) -> Finding | None:
    """The allocator reserves much more than tensors use (fragmentation)."""
    if not _gpu_run(run):
        return None
    worst: tuple[int, Span] | None = None
    for s in run.spans:
        if s.peak_reserved_bytes is None or s.peak_allocated_bytes is None:
            continue
        gap = s.peak_reserved_bytes - s.peak_allocated_bytes
        if worst is None or gap > worst[0]:
            worst = (gap, s)
    pk = peak_memory(run)
    res, alloc = pk.get("peak_reserved_bytes"), pk.get("peak_allocated_bytes")
    if res is None or not alloc:
        return None
    gap = res - alloc
    if gap < FRAG_MIN_GAP_BYTES or res / alloc < FRAG_RATIO:
        return None
    total = run.gpus[0].total_memory_bytes
    tight = bool(total) and res >= 0.8 * (total or 1)
    where = run.path_of(worst[1]) if worst is not None else None
    return Finding(
        rule_id="fragmentation",
        title=f"reserved memory is {res / alloc:.2f}x the allocated memory",
        severity="warning" if tight else "info",
        evidence=f"peak reserved {format_bytes(res)} against peak allocated {format_bytes(alloc)}: "
        f"{format_bytes(gap)} held by the caching allocator but not used by tensors"
        + (f"; the largest gap is in '{where}'" if where else "") + ".",
        cause="Tensors of changing sizes (varying resolution, frame count or batch) leave blocks that the "
        "caching allocator cannot reuse for the next request.",
        suggestion="Let the allocator grow segments instead of keeping fixed blocks: set "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True before the process starts.",
        phase=where,
        numbers={"peak_reserved_bytes": res, "peak_allocated_bytes": alloc, "gap_bytes": gap},
        code="export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
    )


def rule_throttling(run: Run) -> Finding | None:
    """Power or thermal throttling seen in NVML's clocks-event reasons."""
    if not _gpu_run(run):
        return None
    sers = _gpu_series(run, ("clocks_event_reasons", "clock_event_reasons"))
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


def rule_decode_memory(run: Run) -> Finding | None:
    """VAE decoding needs more memory than denoising: it sets the peak."""
    if not _gpu_run(run):
        return None
    dec = _phase_peak(run, _is_decode)
    den = _phase_peak(run, _is_denoise)
    if dec is None or den is None or den <= 0:
        return None
    if dec < DECODE_MEM_RATIO * den or dec - den < DECODE_MEM_MIN_GAP_BYTES:
        return None
    return Finding(
        rule_id="decode_memory",
        title=f"VAE decode peaks {dec / den:.2f}x higher than denoising",
        severity="warning",
        evidence=f"decode peak reserved {format_bytes(dec)} against denoise peak {format_bytes(den)} "
        f"({format_bytes(dec - den)} more).",
        cause="The VAE decodes the whole latent at once; its activations grow with resolution and frame count "
        "and set the memory peak of the run.",
        suggestion="Decode in tiles, and one image of a batch at a time; the peak then falls to about the "
        "denoising level at a small time cost.",
        phase=next((run.path_of(s) for s in run.spans if s.kind == "phase" and _is_decode(s.name)), None),
        numbers={"decode_peak_bytes": dec, "denoise_peak_bytes": den, "ratio": dec / den},
        code="pipe.vae.enable_tiling(); pipe.vae.enable_slicing()",
    )


def rule_fp32_weights(run: Run) -> Finding | None:
    """float32 weights on a GPU that supports bfloat16."""
    if not _gpu_run(run) or not any(g.bf16_supported is True for g in run.gpus):
        return None
    comps = _components(run)
    fp32 = {n: c for n, c in comps.items() if _dtype_name(c.get("dtype")) in ("float32", "fp32")}
    if not fp32:
        return None
    sizes = {n: _component_bytes(c) for n, c in fp32.items()}
    known = [b for b in sizes.values() if b is not None]
    saved = sum(known) // 2 if known else None
    names = ", ".join(f"{n} ({format_bytes(b)})" if b is not None else n for n, b in sizes.items())
    return Finding(
        rule_id="fp32_weights",
        title=f"{len(fp32)} component(s) in float32 on a bf16-capable GPU",
        severity="warning",
        evidence=f"float32 components: {names}; {run.gpus[0].name or 'the GPU'} supports bfloat16"
        + (f"; bf16 would free about {format_bytes(saved)} of weights" if saved else "") + ".",
        cause="float32 doubles weight memory and runs matrix multiplies far slower than bf16 tensor cores.",
        suggestion="Load the pipeline in bfloat16. Keep only the VAE in float32 if decoded images show artefacts "
        "(some VAEs overflow in float16; bf16 rarely does).",
        numbers={"components": sorted(fp32), "bytes_saved_estimate": saved},
        code="pipe = DiffusionPipeline.from_pretrained(model_id, torch_dtype=torch.bfloat16)",
    )


def rule_text_encoder_on_gpu(run: Run) -> Finding | None:
    """Text encoders stay on the GPU while the denoiser runs."""
    if not _gpu_run(run) or _offload_mode(run) is not None:
        return None
    if not any(s.kind == "phase" and _is_denoise(s.name) for s in run.spans):
        return None
    comps = _components(run)
    pipe = run.metadata.get("pipeline")
    listed = pipe.get("text_encoders") if isinstance(pipe, Mapping) else None
    te_names = {str(x) for x in listed} if isinstance(listed, list) else set()
    enc = {
        n: c for n, c in comps.items()
        if n in te_names or "text_encoder" in n.lower() or str(c.get("role", "")).lower() == "text_encoder"
    }
    on_gpu = {
        n: c for n, c in enc.items()
        if str(c.get("device_during_denoise", c.get("device", ""))).lower().startswith("cuda")
        and not c.get("offload")  # offload hooks move it off the GPU when not in use
    }
    sizes = {n: _component_bytes(c) for n, c in on_gpu.items()}
    total = sum(b for b in sizes.values() if b is not None)
    if not on_gpu or total < TEXT_ENCODER_MIN_BYTES:
        return None
    peak = peak_memory(run).get("peak_reserved_bytes")
    cap = run.gpus[0].total_memory_bytes
    tight = peak is not None and cap is not None and peak >= 0.8 * cap
    return Finding(
        rule_id="text_encoder_on_gpu",
        title=f"text encoder(s) hold {format_bytes(total)} on the GPU during denoising",
        severity="warning" if tight else "info",
        evidence=", ".join(f"{n} {format_bytes(b)}" for n, b in sizes.items() if b is not None)
        + " stayed on the GPU while the denoiser ran"
        + (f"; peak reserved was {format_bytes(peak)} of {format_bytes(cap)}" if peak and cap else "") + ".",
        cause="Text encoders are needed only once per prompt, before denoising, but keep their weights on "
        "the GPU for the whole generation.",
        suggestion="Encode prompts first, then move the text encoders to the CPU (or let model offload do it); "
        "this frees their memory for larger resolutions or frame counts.",
        phase="denoise",
        numbers={"text_encoder_bytes": total, "components": sorted(on_gpu)},
        code="embeds = pipe.encode_prompt(prompt, ...); pipe.text_encoder.to('cpu'); pipe(prompt_embeds=...)",
    )


def rule_steps_slow_down(run: Run) -> Finding | None:
    """Steps get slower as the run goes on (heat, memory growth)."""
    best: Finding | None = None
    for phase, steps in _step_runs(run):
        if len(steps) < SLOWDOWN_MIN_STEPS:
            continue
        d = [s.duration_s or 0.0 for s in steps][1:]  # the first step is warm-up's business
        q = max(2, len(d) // 4)
        first, last = sum(d[:q]) / q, sum(d[-q:]) / q
        if first <= 0 or last / first < SLOWDOWN_RATIO:
            continue
        rho = spearman([float(i) for i in range(len(d))], d)
        if rho is None or rho < SLOWDOWN_MIN_RANK_CORR:
            continue
        causes = []
        allocs = [s.allocated_end_bytes for s in steps if s.allocated_end_bytes is not None]
        growth = (allocs[-1] - allocs[0]) if len(allocs) >= 2 else None
        if growth is not None and growth > 64 * 1024**2:
            causes.append(f"allocated memory grew by {format_bytes(growth)} over the steps (tensors kept across steps)")
        temps = [v for s in _gpu_series(run, ("temperature_c",)) for v in s.values]
        if temps and max(temps) - min(temps) >= 10:
            causes.append(f"GPU temperature rose from {min(temps):.0f} to {max(temps):.0f} C")
        cause = ("; ".join(causes) + ".") if causes else (
            "No memory growth or heating was recorded; look for work that grows with the step index "
            "(caches, lists of latents kept by callbacks).")
        f = Finding(
            rule_id="steps_slow_down",
            title=f"steps get {100 * (last / first - 1):.0f}% slower over the run",
            severity="warning",
            evidence=f"in '{phase}', the mean of the first {q} steps (after step 0) is {format_seconds(first)} and "
            f"of the last {q} is {format_seconds(last)}; rank correlation with the step index {rho:.2f}.",
            cause=cause,
            suggestion="Do not keep per-step tensors on the GPU (move them to the CPU or drop them in "
            "callback_on_step_end); if the GPU heats up, improve cooling or check the throttle finding.",
            phase=phase,
            numbers={"first_mean_s": first, "last_mean_s": last, "ratio": last / first, "spearman": rho,
                     "alloc_growth_bytes": growth},
        )
        if best is None or f.numbers["ratio"] > best.numbers["ratio"]:
            best = f
    return best


RULES: list[Rule] = [
    rule_dominant_phase,
    rule_warmup_steps,
    rule_gpu_idle_between_steps,
    rule_peak_near_capacity,
    rule_fragmentation,
    rule_throttling,
    rule_decode_memory,
    rule_fp32_weights,
    rule_text_encoder_on_gpu,
    rule_steps_slow_down,
]

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def run_rules(run: Run, rules: list[Rule] | None = None) -> list[Finding]:
    """Apply rules (default :data:`RULES`) and return their findings, most severe first.

    A rule that fails on an unexpected run layout is skipped with a logged warning naming it,
    so one odd field never hides the other findings.
    """
    out: list[Finding] = []
    for rule in RULES if rules is None else rules:
        try:
            f = rule(run)
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError, IndexError) as exc:
            log.warning("rule %s skipped: %s: %s", getattr(rule, "__name__", rule), type(exc).__name__, exc)
            continue
        if f is not None:
            out.append(f)
    out.sort(key=lambda f: _SEVERITY_ORDER.get(f.severity, 3))
    return out


__all__ = ["RULES", "Rule", "run_rules", "spearman"] + [r.__name__ for r in RULES]


# --------------------------------------------------------------------------- diagnose window
# Rules on the diagnose window's records (genprof.analysis.diagnose): each returns None when the
# run has no diagnosis or its GPU figures are absent (a CPU run gets no GPU advice).
from genprof.analysis import diagnose as _dg  # noqa: E402 - this section is appended to the rule set

SYNC_MIN_SHARE = 0.005  # host waits at syncs of 0.5% of the step or more: a warning
WINDOW_IDLE_SHARE = 0.10  # GPU idle 10% of the window's device time or more
CLASS_LOW_PEAK_SHARE = 0.30  # a class with known FLOPs below 30% of the device peak


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def rule_host_syncs(run: Run) -> Finding | None:
    """Blocking host-device syncs inside the diagnosed steps, with the line that issued them."""
    d = _dg.diagnosis_of(run)
    if d is None:
        return None
    s = _dg.syncs(d)
    if not s.get("sites"):
        return None
    top = s["sites"][0]
    where = top["site"] or "an unknown line (no Python frame outside torch)"
    what = f" (`{top['op']}`)" if top["op"] else ""
    share = s["share_of_step"]
    ev = (f"{s['count_per_step']:.3g} host syncs per step; the largest: {top['per_step']:.3g} per step at {where}{what}, "
          f"{top['wait_per_step_us'] / 1e3:.2f} ms waited per step"
          + (f" = {_pct(top['share_of_step'])} of the step" if top["share_of_step"] is not None else "")
          + f"; all syncs: {s['wait_per_step_us'] / 1e3:.2f} ms per step"
          + (f" = {_pct(share)}" if share is not None else "") + f" over {s['steps']} diagnosed steps.")
    others = [f"{x['site'] or '?'} ({x['op'] or x['calls'][0]}, {x['per_step']:.3g}/step)" for x in s["sites"][1:4]]
    if others:
        ev += " Other sites: " + "; ".join(others) + "."
    return Finding(
        rule_id="host_syncs",
        title=f"{s['count_per_step']:.3g} host-device syncs per step (largest at {where})",
        severity="warning" if share is not None and share >= SYNC_MIN_SHARE else "info",
        evidence=ev,
        cause="A call that needs a value on the host (.item(), .cpu(), .tolist(), printing a tensor, nonzero or "
              "boolean masks, torch.cuda.synchronize) makes the host wait until the GPU has finished all queued "
              "work, so the queue runs empty and the GPU then waits for the next launches.",
        suggestion="Keep the value on the GPU (torch.where instead of Python branching, no .item() in callbacks), "
                   "move the read out of the step loop, or read it with non_blocking copies once per generation.",
        numbers={"syncs_per_step": s["count_per_step"], "wait_per_step_us": s["wait_per_step_us"],
                 "share_of_step": share, "top_site": top["site"], "top_op": top["op"],
                 "top_per_step": top["per_step"], "top_wait_per_step_us": top["wait_per_step_us"]},
    )


def rule_window_gpu_idle(run: Run) -> Finding | None:
    """The GPU is idle for a large share of the diagnosed steps: the verdict and what graphs can gain."""
    d = _dg.diagnosis_of(run)
    if d is None:
        return None
    f = _dg.idle(d)
    share = f["idle_share"]
    if share is None or share < WINDOW_IDLE_SHARE:
        return None
    verdict = f["verdict"]
    gap = f["gaps"][0] if f["gaps"] else None
    ev = (f"GPU idle {_pct(share)} of the {len(f['steps'])} diagnosed steps ({f['wall_us'] / 1e3:.2f} ms of device "
          f"time, {f['busy_us'] / 1e3:.2f} ms busy): {verdict}.")
    med = [s["median_kernel_us"] for s in f["steps"] if s["median_kernel_us"] is not None]
    if med:
        ev += f" Median kernel {_median(med):.1f} us."
    if gap is not None:
        host = ", ".join(gap["frames"][:2] or gap["ops"][:2]) or "no recorded host code"
        ev += f" Longest gap {gap['gap_us'] / 1e3:.2f} ms while the host ran {host}."
    bound = f["cuda_graphs_max_saving"]
    if verdict == "host-blocked":
        cause = "The host waits at synchronisations inside the step, so the GPU drains its queue and idles."
        suggestion = "Remove the syncs first (see the host syncs finding); CUDA graphs cannot capture a step that syncs."
        code = None
    else:
        cause = ("Kernels are short and the host cannot launch them as fast as the GPU runs them: the queue runs "
                 "empty between launches." if verdict == "launch-bound" else
                 "Host work between launches (Python, the scheduler on the CPU) leaves the GPU waiting.")
        suggestion = (f"Capture the denoiser with CUDA graphs (torch.compile mode='reduce-overhead'); it removes launch "
                      f"gaps, not GPU work, so it would save at most {_pct(bound or share)} of the step.")
        code = "pipe.transformer = torch.compile(pipe.transformer, mode='reduce-overhead')"
    return Finding(
        rule_id="window_gpu_idle",
        title=f"GPU idle {_pct(share)} of the step: {verdict}"
              + (f"; CUDA graphs would save at most {_pct(bound)}" if bound is not None else ""),
        severity="warning",
        evidence=ev, cause=cause, suggestion=suggestion, code=code,
        numbers={"idle_share": share, "verdict": verdict, "wall_us": f["wall_us"], "busy_us": f["busy_us"],
                 "cuda_graphs_max_saving": bound, "longest_gap_us": gap["gap_us"] if gap else None},
    )


def rule_window_time_breakdown(run: Run) -> Finding | None:
    """Where the step's GPU time goes: op classes, top-level modules and the top kernel."""
    d = _dg.diagnosis_of(run)
    if d is None:
        return None
    c = _dg.by_class(d)
    if not c.get("classes"):
        return None
    classes = c["classes"]
    parts = [f"{name} {_pct(row['share'])}" for name, row in list(classes.items())[:4] if row["share"] is not None]
    ev = f"Step GPU time {c['total_gpu_us_per_step'] / 1e3:.2f} ms: " + ", ".join(parts) + "."
    m = _dg.by_module(d)
    if m.get("modules"):
        top = [f"{r['name']} {_pct(r['share'])}" for r in m["modules"][:3]]
        ev += " By module: " + ", ".join(top) + "."
        if m.get("children"):
            ev += " By block part: " + ", ".join(f"{r['name']} {_pct(r['share'])}" for r in m["children"][:4]) + "."
    k = _dg.top_kernels(d, 1)
    if k:
        ev += f" Top kernel: {k[0]['name'][:80]} ({_pct(k[0]['share'])}, {k[0]['calls']} calls)."
    low = [(n, r) for n, r in classes.items() if r.get("peak_share") is not None and r["peak_share"] < CLASS_LOW_PEAK_SHARE]
    first = next(iter(classes))
    if low:
        n, r = low[0]
        ev += f" {n} reaches {r['tflops']:.0f} TFLOP/s = {_pct(r['peak_share'])} of the device's peak."
    return Finding(
        rule_id="window_time_breakdown",
        title=f"{first} kernels take {_pct(classes[first]['share'])} of the step's GPU time",
        severity="info",
        evidence=ev,
        cause="The op class and module with the largest share bound what any optimisation elsewhere can gain.",
        suggestion=("Optimise the largest class first: attention with a fused kernel (SDPA flash/cuDNN backends, "
                    "FlashAttention 3), GEMMs with bf16/fp8 and torch.compile, elementwise/norm work by fusing "
                    "(torch.compile), convolutions with channels_last."),
        numbers={"step_gpu_us": c["total_gpu_us_per_step"],
                 "class_shares": {n: r["share"] for n, r in classes.items()},
                 "top_module": m["modules"][0]["name"] if m.get("modules") else None},
    )


def rule_graph_breaks(run: Run) -> Finding | None:
    """torch.compile graph breaks seen during the run, with reason and location."""
    d = _dg.diagnosis_of(run)
    if d is None or d.compile is None or not d.compile.graph_breaks:
        return None
    gbs = d.compile.graph_breaks
    total = sum(g.count for g in gbs)
    first = gbs[0]
    loc = f"{first.file}:{first.line}" if first.file and first.line else (first.file or "an unknown location")
    ev = f"{total} graph break(s) at {len(gbs)} place(s); first at {loc}: {first.reason}"
    if d.compile.compile_time_s is not None:
        ev += f". Compilation took {d.compile.compile_time_s:.2f} s over {d.compile.frames_compiled} frames."
    return Finding(
        rule_id="graph_breaks",
        title=f"torch.compile: {total} graph break(s), first at {loc}",
        severity="warning",
        evidence=ev,
        cause="Dynamo cannot trace the code at that line, so the graph is split: each piece runs separately with "
              "Python in between, fusion stops at the break and CUDA graphs cannot cover the step.",
        suggestion="Rewrite the line the reason names (no print/.item()/data-dependent Python control flow inside the "
                   "compiled module), or move it out of the compiled region; check with torch._dynamo.explain.",
        numbers={"graph_breaks": total, "places": len(gbs), "first_file": first.file, "first_line": first.line,
                 "first_reason": first.reason, "compile_time_s": d.compile.compile_time_s},
    )


def rule_recompiles(run: Run) -> Finding | None:
    """torch.compile recompiled during the run: the guard that failed."""
    d = _dg.diagnosis_of(run)
    if d is None or d.compile is None or not d.compile.recompiles:
        return None
    rc = d.compile.recompiles
    first = rc[0]
    return Finding(
        rule_id="recompiles",
        title=f"torch.compile recompiled {len(rc)} time(s) ({first.function})",
        severity="warning",
        evidence=f"{len(rc)} recompilation(s); first of {first.function} ({first.file}:{first.line}) because the guard "
                 f"failed: {first.reason}"
                 + (f". Total compile time {d.compile.compile_time_s:.2f} s." if d.compile.compile_time_s is not None else ""),
        cause="A guard (tensor shape, dtype, a Python value) differed from the compiled version, so Dynamo compiled again.",
        suggestion="Keep shapes and Python arguments fixed between calls, or mark the varying dimension dynamic "
                   "(torch._dynamo.mark_dynamic) / compile with dynamic=True.",
        numbers={"recompiles": len(rc), "first_reason": first.reason, "compile_time_s": d.compile.compile_time_s},
    )


DIAGNOSE_RULES: list[Rule] = [rule_host_syncs, rule_window_gpu_idle, rule_window_time_breakdown, rule_graph_breaks,
                              rule_recompiles]
RULES.extend(DIAGNOSE_RULES)
__all__ += ["DIAGNOSE_RULES"] + [r.__name__ for r in DIAGNOSE_RULES]
