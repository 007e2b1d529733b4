"""Why a step is slow: figures from a diagnose window (pure functions of the recorded data).

Input is a :class:`genprof.diagnosis.Diagnosis` (``run.metadata["diagnosis"]``), so this works
on run files from another machine. Every GPU figure is ``None`` with a reason on a CPU run, or
when the window recorded no kernel.

Definitions (docs/diagnose.md explains how to read them):

* **Step GPU extent**: from the first kernel launched by step k to the first kernel launched
  by step k+1 (for the window's last step: to its last kernel's end). The window's wall time
  on the device is the union of its steps' extents.
* **GPU busy**: the union of all kernel, memcpy and memset intervals (any stream) inside the
  extent; **idle share** = 1 - busy / extent.
* **Verdict per step**: ``gpu-bound`` when busy >= :data:`GPU_BOUND_BUSY` of the extent;
  otherwise ``host-blocked`` when blocking syncs' host wait covers at least
  :data:`HOST_BLOCKED_SHARE` of the idle time; otherwise ``launch-bound`` when the median
  kernel is shorter than :data:`LAUNCH_SHORT_US` (kernels short, the queue runs empty),
  else ``host-bound`` (long host work between launches). The window's verdict is the one
  whose steps cover the most device time (ties: host-blocked, launch-bound, host-bound,
  gpu-bound, in that order).
* **CUDA graphs / reduce-overhead bound**: graphs remove launch gaps, not GPU work, so the
  step cannot get faster by more than its idle share.
* **GPU time by op class and module**: the summed durations of the kernels (a kernel's
  module is the innermost module scope open when the host launched it); shares are of the
  window's total kernel time, so they add up to 1 with ``(no module)`` / ``other``.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from genprof.analysis.devices import peak_tflops
from genprof.diagnosis import Diagnosis, KernelInterval
from genprof.model import Run

METADATA_KEY = "diagnosis"
GPU_BOUND_BUSY = 0.90
HOST_BLOCKED_SHARE = 0.5
LAUNCH_SHORT_US = 20.0
MIN_GAP_US = 5.0
TOP_GAPS = 5
TOP_KERNELS = 10
COMPUTE_BOUND_SHARE = 0.5  # achieved / peak TFLOP/s at or above this: compute-bound

# Op classes by kernel name: (class, pattern), first match wins; memcpy/memset activities are
# "copy" whatever their name. The patterns cover cuBLAS/cuBLASLt (gemm, nvjet, cutlass, xmma),
# cuDNN convolutions (implicit gemm, fprop, winograd), flash/efficient/cuDNN attention, NCCL,
# and PyTorch/Triton pointwise and reduction kernels.
OP_CLASSES: tuple[tuple[str, str], ...] = (
    ("communication", r"nccl|all_?reduce|all_?gather|reduce_?scatter|alltoall|sendrecv"),
    ("copy", r"^memcpy|^memset|copy_kernel|copy_device_to_device|catarraybatchedcopy"),
    ("attention", r"flash|fmha|attention|sdpa|_efficient_attention|cudnn_?mha|softmax"),
    ("convolution", r"conv|fprop|dgrad|wgrad|winograd|implicit_gemm|implicit_convolve|nchwtonhwc|nhwctonchw"),
    ("gemm", r"gemm|gemv|nvjet|cutlass|xmma|cublas|s16816|s1688|splitk|matmul|\bmm_"),
    ("elementwise/norm", r"elementwise|vectorized|unrolled|reduce|norm|triton_|silu|gelu|softplus|index|"
                         r"scatter|gather|where|arange|fill|cat_|upsample|pad|cumsum|sort|topk|embedding"),
)
OP_CLASS_NAMES = tuple(c for c, _ in OP_CLASSES) + ("other",)
_OP_RE = tuple((c, re.compile(p, re.IGNORECASE)) for c, p in OP_CLASSES)

NO_MODULE = "(no module)"


def diagnosis_of(run: Run) -> Diagnosis | None:
    """The run's diagnosis (``run.metadata["diagnosis"]``), or None when the run has none."""
    d = run.metadata.get(METADATA_KEY)
    if d is None:
        return None
    if isinstance(d, Diagnosis):
        return d
    return Diagnosis.from_dict(d)


def classify_kernel(name: str, category: str = "kernel") -> str:
    """The op class of a kernel (see :data:`OP_CLASSES`)."""
    if category in ("memcpy", "memset"):
        return "copy"
    for cls, rx in _OP_RE:
        if rx.search(name):
            return cls
    return "other"


# --------------------------------------------------------------------------- interval maths
def union_us(ivs: Iterable[tuple[float, float]], lo: float | None = None, hi: float | None = None) -> float:
    """Total length of the union of ``(start, end)`` intervals, clipped to ``[lo, hi]``."""
    total = 0.0
    cur_s: float | None = None
    cur_e = 0.0
    for s, e in sorted(ivs):
        if lo is not None:
            s = max(s, lo)
        if hi is not None:
            e = min(e, hi)
        if e <= s:
            continue
        if cur_s is None or s > cur_e:
            if cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_s is not None:
        total += cur_e - cur_s
    return total


def merged(ivs: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(ivs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def step_extents(d: Diagnosis) -> dict[int, tuple[float, float]]:
    """Each window step's GPU extent (see the module docstring), by step index."""
    firsts: dict[int, float] = {}
    lasts: dict[int, float] = {}
    for k in d.kernels:
        if k.step is None:
            continue
        firsts[k.step] = min(firsts.get(k.step, k.start_us), k.start_us)
        lasts[k.step] = max(lasts.get(k.step, k.end_us), k.end_us)
    order = sorted(firsts)
    out: dict[int, tuple[float, float]] = {}
    for i, s in enumerate(order):
        end = firsts[order[i + 1]] if i + 1 < len(order) else lasts[s]
        out[s] = (firsts[s], max(end, firsts[s]))
    return out


def _gpu_reason(d: Diagnosis) -> str | None:
    if d.gpu_reason:
        return d.gpu_reason
    if not d.kernels:
        return "the window recorded no kernel"
    return None


# --------------------------------------------------------------------------- figures
def _step_host_us(d: Diagnosis) -> float | None:
    durs = [s.end_us - s.start_us for s in d.step_windows]
    return statistics.mean(durs) if durs else None


def syncs(d: Diagnosis) -> dict[str, Any]:
    """Blocking host-device syncs grouped by the code that issued them, per step."""
    n = max(1, len(d.step_windows))
    step_us = _step_host_us(d)
    if d.device != "cuda":
        return {"sites": None, "reason": "a CPU run has no host-device synchronisations"}
    if _gpu_reason(d):
        return {"sites": None, "reason": _gpu_reason(d)}
    in_window = [r for r in d.runtime if r.step is not None]
    groups: dict[tuple[str | None, str | None], list[Any]] = {}
    for r in in_window:
        groups.setdefault((r.site, r.op), []).append(r)
    sites = []
    for (site, op), rs in groups.items():
        wait = sum(r.wait_us for r in rs)
        sites.append({
            "site": site, "op": op, "function": rs[0].function, "calls": sorted({r.name for r in rs}),
            "count": len(rs), "per_step": len(rs) / n, "wait_us": wait, "wait_per_step_us": wait / n,
            "share_of_step": (wait / n / step_us) if step_us else None,
        })
    sites.sort(key=lambda s: -s["wait_us"])
    total = sum(s["wait_us"] for s in sites)
    return {"sites": sites, "reason": None, "count_per_step": len(in_window) / n, "wait_per_step_us": total / n,
            "share_of_step": (total / n / step_us) if step_us else None, "steps": len(d.step_windows)}


def _host_during(d: Diagnosis, a: float, b: float) -> dict[str, Any]:
    frames = [(min(b, f.end_us) - max(a, f.start_us), f.end_us - f.start_us, f.name) for f in d.host_frames
              if f.start_us < b and f.end_us > a]
    # innermost first: the shortest frame covering at least half of the gap, then the others by overlap
    frames.sort(key=lambda x: (x[0] < 0.5 * (b - a), x[1] if x[0] >= 0.5 * (b - a) else -x[0]))
    ops = [o.name for o in d.cpu_ops if o.start_us < b and o.end_us > a]
    sync = [r.name for r in d.runtime if r.start_us < b and r.end_us > a]
    return {"frames": [f[2] for f in frames[:3]], "ops": list(dict.fromkeys(ops))[:5], "syncs": sync[:3]}


def idle(d: Diagnosis) -> dict[str, Any]:
    """GPU idle share of the window, the longest gaps with the host code of their time, verdicts."""
    reason = _gpu_reason(d)
    if reason:
        return {"idle_share": None, "reason": reason, "steps": [], "gaps": []}
    ext = step_extents(d)
    if not ext:
        return {"idle_share": None, "reason": "no kernel was launched inside the window's steps", "steps": [], "gaps": []}
    ivs = [(k.start_us, k.end_us) for k in d.kernels]
    wall = union_us(ext.values())
    busy = sum(union_us(ivs, a, b) for a, b in ext.values())
    by_step_sync: dict[int, float] = {}
    for r in d.runtime:
        if r.step is not None:
            by_step_sync[r.step] = by_step_sync.get(r.step, 0.0) + r.wait_us
    steps = []
    for idx, (a, b) in sorted(ext.items()):
        w = b - a
        bz = union_us(ivs, a, b)
        idle_us = max(0.0, w - bz)
        durs = [k.dur_us for k in d.kernels if k.step == idx]
        med = statistics.median(durs) if durs else None
        sync_us = by_step_sync.get(idx, 0.0)
        busy_share = bz / w if w > 0 else None
        if busy_share is not None and busy_share >= GPU_BOUND_BUSY:
            verdict = "gpu-bound"
        elif idle_us > 0 and sync_us >= HOST_BLOCKED_SHARE * idle_us:
            verdict = "host-blocked"
        elif med is not None and med < LAUNCH_SHORT_US:
            verdict = "launch-bound"
        else:
            verdict = "host-bound"
        steps.append({"index": idx, "extent_us": w, "busy_us": bz, "idle_share": (idle_us / w) if w > 0 else None,
                      "kernels": len(durs), "median_kernel_us": med, "sync_wait_us": sync_us, "verdict": verdict})
    # gaps: between merged busy intervals, inside the extents
    gaps = []
    lo = min(a for a, _ in ext.values())
    hi = max(b for _, b in ext.values())
    m = merged((max(s, lo), min(e, hi)) for s, e in ivs if e > lo and s < hi)
    for (_, e0), (s1, _) in zip(m, m[1:], strict=False):
        if s1 - e0 >= MIN_GAP_US:
            gaps.append((s1 - e0, e0, s1))
    gaps.sort(key=lambda g: -g[0])
    top = [{"start_us": a, "end_us": b, "gap_us": g, **_host_during(d, a, b)} for g, a, b in gaps[:TOP_GAPS]]
    share = 1.0 - busy / wall if wall > 0 else None
    overall = _overall_verdict(steps)
    return {"idle_share": share, "reason": None, "wall_us": wall, "busy_us": busy, "steps": steps, "gaps": top,
            "gaps_over_min": len(gaps), "verdict": overall,
            "cuda_graphs_max_saving": share if overall in ("launch-bound", "host-bound") else None}


#: order among verdicts that cover the same device time: the one a user can act on comes first
_VERDICT_ORDER = ("host-blocked", "launch-bound", "host-bound", "gpu-bound")


def _overall_verdict(steps: Sequence[Mapping[str, Any]]) -> str | None:
    """The verdict of the steps that cover the most device time; ties go by ``_VERDICT_ORDER``.

    Weighting by time, not by step count, keeps a short last step (its extent ends at its last
    kernel) from outvoting a long one, and the fixed tie order makes the answer independent of
    hash seeds and step order.
    """
    time: dict[str, float] = {}
    for s in steps:
        time[s["verdict"]] = time.get(s["verdict"], 0.0) + float(s["extent_us"])
    if not time:
        return None
    return min(time, key=lambda v: (-time[v], _VERDICT_ORDER.index(v)))


def _kernels_in_window(d: Diagnosis) -> list[KernelInterval]:
    return [k for k in d.kernels if k.step is not None]


def by_class(d: Diagnosis) -> dict[str, Any]:
    """GPU time per op class (summed kernel durations), share, count, and TFLOP/s where FLOPs are known."""
    reason = _gpu_reason(d)
    if reason:
        return {"classes": None, "reason": reason}
    ks = _kernels_in_window(d)
    total = sum(k.dur_us for k in ks)
    n = max(1, len(d.step_windows))
    out: dict[str, dict[str, Any]] = {}
    for k in ks:
        c = classify_kernel(k.name, k.category)
        row = out.setdefault(c, {"gpu_us": 0.0, "kernels": 0})
        row["gpu_us"] += k.dur_us
        row["kernels"] += 1
    peak, peak_src = peak_tflops(d.device_name, d.dtype) if d.device_name else (None, "no device name recorded")
    for c, row in out.items():
        row["share"] = row["gpu_us"] / total if total else None
        row["gpu_us_per_step"] = row["gpu_us"] / n
        flops = (d.flops_by_class or {}).get(c)
        if flops is not None and row["gpu_us"] > 0:
            achieved = flops * n / (row["gpu_us"] * 1e-6) / 1e12
            row["tflops"] = achieved
            row["peak_tflops"] = peak
            row["peak_share"] = achieved / peak if peak else None
            row["bound"] = None if not peak else ("compute-bound" if achieved / peak >= COMPUTE_BOUND_SHARE
                                                  else "below the compute roof (memory- or latency-bound)")
            row["tflops_reason"] = None if peak else peak_src
        else:
            row["tflops"] = None
            row["tflops_reason"] = ("no FLOP count for this class" if d.flops_by_class is not None
                                    else "FLOPs of the step were not counted")
    ordered = dict(sorted(out.items(), key=lambda kv: -kv[1]["gpu_us"]))
    return {"classes": ordered, "reason": None, "total_gpu_us": total, "total_gpu_us_per_step": total / n,
            "flops_source": d.flops_source}


def _root_of(scope: str, roots: Sequence[str]) -> str:
    best = ""
    for r in roots:
        if (scope == r or scope.startswith(r + ".")) and len(r) > len(best):
            best = r
    return best or scope.split(".", 1)[0]


def by_module(d: Diagnosis) -> dict[str, Any]:
    """GPU time per top-level module scope (``blocks.3``) and per child name across them (``attn1``)."""
    reason = _gpu_reason(d)
    if reason:
        return {"modules": None, "children": None, "reason": reason}
    if d.scopes_reason and not any(k.scope for k in d.kernels):
        return {"modules": None, "children": None, "reason": d.scopes_reason}
    ks = _kernels_in_window(d)
    total = sum(k.dur_us for k in ks)
    roots = list(d.scope_roots)
    mods: dict[str, float] = {}
    kids: dict[str, float] = {}
    for k in ks:
        if not k.scope:
            mods[NO_MODULE] = mods.get(NO_MODULE, 0.0) + k.dur_us
            continue
        r = _root_of(k.scope, roots)
        mods[r] = mods.get(r, 0.0) + k.dur_us
        rest = k.scope[len(r) + 1:] if k.scope.startswith(r + ".") else ""
        child = rest.split(".", 1)[0] if rest else "(own ops)"
        kids[child] = kids.get(child, 0.0) + k.dur_us
    n = max(1, len(d.step_windows))

    def rows(x: Mapping[str, float]) -> list[dict[str, Any]]:
        return [{"name": k, "gpu_us": v, "gpu_us_per_step": v / n, "share": v / total if total else None}
                for k, v in sorted(x.items(), key=lambda kv: -kv[1])]

    scoped = total - mods.get(NO_MODULE, 0.0)
    return {"modules": rows(mods), "children": rows(kids), "reason": None, "total_gpu_us": total,
            "scoped_gpu_us": scoped, "scoped_share": scoped / total if total else None}


def top_kernels(d: Diagnosis, n: int = TOP_KERNELS) -> list[dict[str, Any]] | None:
    if _gpu_reason(d):
        return None
    ks = _kernels_in_window(d)
    total = sum(k.dur_us for k in ks)
    agg: dict[str, list[float]] = {}
    for k in ks:
        agg.setdefault(k.name, []).append(k.dur_us)
    rows: list[dict[str, Any]] = [{"name": name, "class": classify_kernel(name), "calls": len(v), "gpu_us": sum(v),
             "mean_us": sum(v) / len(v), "share": sum(v) / total if total else None} for name, v in agg.items()]
    rows.sort(key=lambda r: -r["gpu_us"])
    return rows[:n]


def window_overhead(run: Run, d: Diagnosis) -> dict[str, Any]:
    """The window's cost: its steps' host time against comparable steps outside it.

    Comparable steps: the same step indices in other step loops of the run when there are any
    (a second generation), else the same loop's other steps, leaving out step 0 (warm-up,
    compilation), the warm-up step just before the window (it pays torch.profiler's start) and
    the step just after it (it pays the profiler's stop and trace flush, reported on their own
    as ``start_cost_s`` and ``stop_cost_s``).
    """
    costs = {"start_cost_s": d.start_cost_s, "stop_cost_s": d.stop_cost_s}
    ids = {s.span_id for s in d.step_windows if s.span_id is not None}
    spans = [s for s in run.spans if s.kind == "step" and s.duration_s is not None]
    inside = [s for s in spans if s.id in ids]
    if not inside:
        return {"slowdown": None, "reason": "the window's steps are not in the run's spans", **costs}
    idx = {s.index for s in inside if s.index is not None}
    parents = {s.parent_id for s in inside}
    same_idx_other = [s for s in spans if s.id not in ids and s.index in idx and s.parent_id not in parents]
    if same_idx_other:
        outside, method = same_idx_other, "the same step indices in the run's other step loops"
    else:
        first = min(idx) if idx else 0
        after = max(idx) + 1 if idx else 0
        outside = [s for s in spans
                   if s.id not in ids and s.parent_id in parents and s.index not in (0, first - 1, after)]
        method = ("the same loop's other steps, without step 0, the warm-up step before the window and the "
                  "step after it")
    if not outside:
        return {"slowdown": None, "reason": "no comparable step outside the window (the loop has too few steps)",
                **costs}
    med_in = statistics.median(float(s.duration_s or 0.0) for s in inside)
    med_out = statistics.median(float(s.duration_s or 0.0) for s in outside)
    return {"slowdown": med_in / med_out - 1.0 if med_out > 0 else None, "inside_median_s": med_in,
            "outside_median_s": med_out, "outside_steps": len(outside), "method": method, "reason": None, **costs}


def compile_summary(d: Diagnosis) -> dict[str, Any]:
    c = d.compile
    if c is None:
        return {"compiled": None, "reason": "torch.compile was not watched"}
    if c.reason:
        return {"compiled": None, "reason": c.reason}
    return {"compiled": c.frames_compiled > 0, "frames_compiled": c.frames_compiled, "compile_time_s": c.compile_time_s,
            "graph_breaks": [gb.__dict__ for gb in c.graph_breaks], "recompiles": [r.__dict__ for r in c.recompiles],
            "reason": None}


def analyze(run: Run) -> dict[str, Any] | None:
    """Every figure of the run's diagnose window (None when the run has no diagnosis)."""
    d = diagnosis_of(run)
    if d is None:
        return None
    return {
        "window": d.window, "status": d.status, "status_reason": d.status_reason, "steps": d.steps,
        "device": d.device, "device_name": d.device_name, "gpu_reason": _gpu_reason(d),
        "cpu_ops": len(d.cpu_ops), "syncs": syncs(d), "idle": idle(d), "classes": by_class(d),
        "modules": by_module(d), "top_kernels": top_kernels(d), "overhead": window_overhead(run, d),
        "compile": compile_summary(d), "collector_overhead_s": d.collector_overhead_s,
    }


__all__ = ["OP_CLASSES", "OP_CLASS_NAMES", "analyze", "by_class", "by_module", "classify_kernel", "compile_summary",
           "diagnosis_of", "idle", "merged", "step_extents", "syncs", "top_kernels", "union_us", "window_overhead"]
