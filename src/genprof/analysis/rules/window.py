"""Rules on the diagnose window's records (genprof.analysis.diagnose): host syncs, GPU idle,
where the step's GPU time goes, torch.compile graph breaks and recompiles.

Each returns None when the run has no diagnosis or its GPU figures are absent (a CPU run gets
no GPU advice).
"""

from __future__ import annotations

from genprof.analysis import diagnose as _dg
from genprof.analysis.findings import Finding
from genprof.analysis.rules.common import Rule, median
from genprof.model import Run

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
    # a wait on a GPU-bound step is the queued work finishing: the GPU stays busy through it, and
    # what removing the sync can save is the idle time it leaves, not the wait
    idle = _dg.idle(d)
    gpu_bound = idle.get("verdict") == "gpu-bound" and idle.get("idle_share") is not None
    idle_ms = None
    if gpu_bound:
        steps = idle.get("steps") or []
        idle_ms = sum(x["extent_us"] - x["busy_us"] for x in steps) / len(steps) / 1e3 if steps else None
        ev += (f" The steps are GPU-bound (GPU idle {_pct(idle['idle_share'])}): the GPU kept working through these "
               "waits, so removing the syncs saves at most the idle time"
               + (f", {idle_ms:.2f} ms per step," if idle_ms is not None else "") + " not the wait.")
    return Finding(
        rule_id="host_syncs",
        title=f"{s['count_per_step']:.3g} host-device syncs per step (largest at {where})",
        severity="warning" if share is not None and share >= SYNC_MIN_SHARE and not gpu_bound else "info",
        evidence=ev,
        cause="A call that needs a value on the host (.item(), .cpu(), .tolist(), printing a tensor, nonzero or "
              "boolean masks, torch.cuda.synchronize) makes the host wait until the GPU has finished all queued "
              "work, so the queue runs empty and the GPU then waits for the next launches.",
        suggestion="Keep the value on the GPU (torch.where instead of Python branching, no .item() in callbacks), "
                   "move the read out of the step loop, or read it with non_blocking copies once per generation.",
        numbers={"syncs_per_step": s["count_per_step"], "wait_per_step_us": s["wait_per_step_us"],
                 "share_of_step": share, "top_site": top["site"], "top_op": top["op"],
                 "top_per_step": top["per_step"], "top_wait_per_step_us": top["wait_per_step_us"],
                 "gpu_bound": gpu_bound, "idle_per_step_ms": idle_ms},
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
        ev += f" Median kernel {median(med):.1f} us."
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
