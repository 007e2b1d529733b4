"""Rules on time: the phase that dominates, warm-up steps, steps that slow down over the run."""

from __future__ import annotations

import re

from genprof.analysis.findings import Finding
from genprof.analysis.queries import phase_exclusive_times
from genprof.analysis.rules.common import gpu_series, median, step_runs
from genprof.analysis.stats import spearman
from genprof.model import Run
from genprof.units import format_bytes, format_seconds

DOMINANT_PHASE_SHARE = 0.5  # a phase holding more than half of the run's time
WARMUP_RATIO = 3.0  # first step(s) this many times the median of the rest
WARMUP_MIN_STEPS = 4
SLOWDOWN_RATIO = 1.15  # last quarter of the steps 15% slower than the first quarter
SLOWDOWN_MIN_STEPS = 8
SLOWDOWN_MIN_RANK_CORR = 0.5


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
    loops = step_runs(run)
    if not loops:
        return None
    phase, steps = loops[0]
    if len(steps) < WARMUP_MIN_STEPS:
        return None
    d = [s.duration_s or 0.0 for s in steps]
    rest = median(d[2:])
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


def rule_steps_slow_down(run: Run) -> Finding | None:
    """Steps get slower as the run goes on (heat, memory growth)."""
    best: Finding | None = None
    for phase, steps in step_runs(run):
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
        temps = [v for s in gpu_series(run, ("temperature_c",)) for v in s.values]
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
