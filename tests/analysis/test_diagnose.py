"""Analysis of diagnose windows on synthetic kernel, runtime and host records (no GPU)."""

from __future__ import annotations

from typing import Any

import pytest

from genprof.analysis import diagnose as dg
from genprof.analysis.rules import DIAGNOSE_RULES, RULES, run_rules
from genprof.diagnose.capture import parse_trace
from genprof.diagnosis import (
    CompileInfo,
    Diagnosis,
    GraphBreak,
    HostFrame,
    KernelInterval,
    Recompile,
    RuntimeCall,
    StepWindow,
)
from genprof.model import Run, Span


def _run(d: Diagnosis, spans: list[Span] | None = None) -> Run:
    return Run(name="t", run_id="r", started_at="", started_unix_s=0.0, spans=spans or [],
               metadata={"diagnosis": d.to_dict()})


def _k(name: str, s: float, e: float, step: int, scope: str | None = None, stream: int = 7) -> KernelInterval:
    return KernelInterval(name=name, start_us=s, end_us=e, stream=stream, device=0, step=step, scope=scope)


def _gpu(kernels: list[KernelInterval], runtime: list[RuntimeCall] | None = None, **kw: Any) -> Diagnosis:
    steps = sorted({k.step for k in kernels if k.step is not None})
    return Diagnosis(window="steps:1-2", steps=steps, device="cuda", device_name="NVIDIA H200", dtype="bfloat16",
                     step_windows=[StepWindow(i, 1000.0 * i, 1000.0 * (i + 1), span_id=10 + i) for i in steps],
                     kernels=kernels, runtime=runtime or [], **kw)


def _direct_idle(kernels: list[KernelInterval], lo: int, hi: int) -> float:
    """Idle share by brute force on a 1 us grid (independent of union_us)."""
    busy = sum(1 for t in range(lo, hi) if any(k.start_us <= t < k.end_us for k in kernels))
    return 1 - busy / (hi - lo)


def test_idle_share_equals_a_direct_computation_with_overlapping_streams() -> None:
    ks = [_k("gemm_a", 1000, 1300, 1), _k("gemm_b", 1200, 1400, 1, stream=9), _k("elementwise", 1600, 1700, 1),
          _k("gemm_a", 2000, 2500, 2), _k("norm", 2700, 2900, 2)]
    d = _gpu(ks)
    f = dg.idle(d)
    assert f["idle_share"] == pytest.approx(_direct_idle(ks, 1000, 2900))
    assert f["wall_us"] == 1900 and f["busy_us"] == pytest.approx(400 + 100 + 500 + 200)
    assert [g["gap_us"] for g in f["gaps"]][:2] == [300, 200]  # 1700->2000, then 1400->1600 / 2500->2700


def test_gap_names_the_host_code_that_ran_during_it() -> None:
    ks = [_k("gemm", 1000, 1100, 1), _k("gemm", 1900, 2000, 1)]
    frames = [HostFrame("pipeline_x.py:90 __call__", 900, 2100), HostFrame("scheduler.py:44 step", 1150, 1850)]
    f = dg.idle(_gpu(ks, host_frames=frames))
    assert f["gaps"][0]["gap_us"] == 800
    assert f["gaps"][0]["frames"][0] == "scheduler.py:44 step"  # the frame that covers the gap most tightly


def test_verdicts_gpu_bound_launch_bound_host_blocked() -> None:
    dense = [_k("gemm", 1000 + 100 * i, 1100 + 100 * i - 1, 1) for i in range(10)]
    assert dg.idle(_gpu(dense))["steps"][0]["verdict"] == "gpu-bound"
    short = [_k("elementwise", 1000 + 30 * i, 1010 + 30 * i, 1) for i in range(30)]
    f = dg.idle(_gpu(short))
    assert f["steps"][0]["verdict"] == "launch-bound" and f["cuda_graphs_max_saving"] == pytest.approx(f["idle_share"])
    blocked = [_k("gemm", 1000, 1200, 1), _k("gemm", 1800, 2000, 1)]
    sync = [RuntimeCall("cudaMemcpyAsync+cudaStreamSynchronize", 1210, 1790, "sync", op="aten::item",
                        site="pipeline_wan.py:512", function="__call__", step=1)]
    f = dg.idle(_gpu(blocked, sync))
    assert f["steps"][0]["verdict"] == "host-blocked" and f["cuda_graphs_max_saving"] is None
    long_gaps = [_k("gemm", 1000, 1200, 1), _k("gemm", 1800, 2000, 1)]
    assert dg.idle(_gpu(long_gaps))["steps"][0]["verdict"] == "host-bound"


def test_the_window_verdict_is_the_one_covering_most_device_time_with_a_fixed_tie_order() -> None:
    # step 1: 1000 us, half idle, no sync -> host-bound; step 2 (the last step: its extent ends at
    # its last kernel) is 500 us dense -> gpu-bound. One step each: time decides, not a vote.
    ks = [_k("gemm", 1000, 1500, 1), _k("gemm", 2000, 2500, 2)]
    f = dg.idle(_gpu(ks))
    assert [s["verdict"] for s in f["steps"]] == ["host-bound", "gpu-bound"]
    assert f["verdict"] == "host-bound"
    # equal device time on each side: the actionable verdict wins, whatever the step order
    ks = [_k("gemm", 1000, 1500, 1), _k("gemm", 2000, 2990, 2), _k("gemm", 2995, 3000, 2)]
    assert dg.idle(_gpu(ks))["verdict"] == "host-bound"
    ks = [_k("gemm", 1000, 1995, 1), _k("gemm", 1996, 2000, 1), _k("gemm", 2000, 2500, 2), _k("gemm", 2900, 3000, 2)]
    assert [s["verdict"] for s in dg.idle(_gpu(ks))["steps"]] == ["gpu-bound", "host-bound"]
    assert dg.idle(_gpu(ks))["verdict"] == "host-bound"


@pytest.mark.parametrize(("name", "cls"), [
    ("flash_fwd_kernel<...>", "attention"), ("fmha_cutlassF_bf16_aligned_64x128", "attention"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "gemm"), ("ampere_bf16_s16816gemm_bf16_128x128", "gemm"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
    ("void at::native::vectorized_elementwise_kernel<4, ...>", "elementwise/norm"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel", "elementwise/norm"),
    ("triton_poi_fused_add_mul_0", "elementwise/norm"), ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "communication"),
    ("Memcpy DtoH (Device -> Pinned)", "copy"), ("some_custom_kernel", "other"),
])
def test_op_classes_by_kernel_name(name: str, cls: str) -> None:
    assert dg.classify_kernel(name) == cls


def test_class_and_module_sums_add_up_to_the_kernel_time() -> None:
    ks = [_k("nvjet_gemm", 1000, 1400, 1, "blocks.0.attn1"), _k("flash_fwd", 1400, 1600, 1, "blocks.0.attn1"),
          _k("nvjet_gemm", 1600, 1800, 1, "blocks.0.ffn"), _k("nvjet_gemm", 1800, 2000, 1, "blocks.1.ffn"),
          _k("vectorized_elementwise_kernel", 2000, 2100, 1, "blocks.1"), _k("fill_kernel", 2100, 2150, 1, None)]
    d = _gpu(ks, scope_roots=["proj_in", "blocks.0", "blocks.1"])
    c = dg.by_class(d)
    total = sum(k.dur_us for k in ks)
    assert sum(r["gpu_us"] for r in c["classes"].values()) == total
    assert c["classes"]["gemm"]["gpu_us"] == 800 and c["classes"]["attention"]["gpu_us"] == 200
    m = dg.by_module(d)
    mods = {r["name"]: r["gpu_us"] for r in m["modules"]}
    assert mods == {"blocks.0": 800, "blocks.1": 300, "(no module)": 50}
    kids = {r["name"]: r["gpu_us"] for r in m["children"]}
    assert kids == {"attn1": 600, "ffn": 400, "(own ops)": 100}
    assert m["scoped_gpu_us"] == total - 50 and sum(r["share"] for r in m["modules"]) == pytest.approx(1.0)


def test_tflops_per_class_against_the_peak_table() -> None:
    ks = [_k("nvjet_gemm", 1000, 2000, 1)]  # 1 ms of GEMM
    d = _gpu(ks, flops_by_class={"gemm": 500e9}, flops_source="test")
    row = dg.by_class(d)["classes"]["gemm"]
    assert row["tflops"] == pytest.approx(500.0)
    assert row["peak_share"] == pytest.approx(500.0 / 989.5) and row["bound"] == "compute-bound"
    assert dg.by_class(_gpu(ks))["classes"]["gemm"]["tflops"] is None


def test_syncs_per_step_with_site_count_and_wait() -> None:
    ks = [_k("gemm", 1000, 1500, 1), _k("gemm", 2000, 2500, 2)]
    rt = [RuntimeCall("cudaMemcpyAsync+cudaStreamSynchronize", 1500 + 1000 * (s - 1) + j * 10, 1504 + 1000 * (s - 1) + j * 10,
                      "sync", op="aten::item", site="pipeline_wan.py:512", function="__call__", step=s)
          for s in (1, 2) for j in range(3)]
    s = dg.syncs(_gpu(ks, rt))
    top = s["sites"][0]
    assert top["site"] == "pipeline_wan.py:512" and top["per_step"] == 3 and top["wait_per_step_us"] == pytest.approx(12)
    assert top["share_of_step"] == pytest.approx(12 / 1000)
    f = {x.rule_id: x for x in run_rules(_run(_gpu(ks, rt)), DIAGNOSE_RULES)}
    assert "3 host syncs per step" in f["host_syncs"].evidence and "pipeline_wan.py:512" in f["host_syncs"].evidence
    assert "(`aten::item`)" in f["host_syncs"].evidence and f["host_syncs"].severity == "warning"


def test_a_sync_on_gpu_bound_steps_is_priced_at_the_idle_time_not_the_wait() -> None:
    # each step's kernels cover 98-99% of it; the host waits 400 us per step at an .item(),
    # while the GPU works through the queue
    ks = [_k("gemm", 1000, 1490, 1), _k("gemm", 1500, 1990, 1), _k("gemm", 2000, 2490, 2), _k("gemm", 2500, 2990, 2)]
    rt = [RuntimeCall("cudaMemcpyAsync+cudaStreamSynchronize", 1090 + 1000 * (s - 1), 1490 + 1000 * (s - 1), "sync",
                      op="aten::item", site="loop.py:7", function="step", step=s) for s in (1, 2)]
    f = {x.rule_id: x for x in run_rules(_run(_gpu(ks, rt)), DIAGNOSE_RULES)}["host_syncs"]
    assert f.numbers["share_of_step"] >= 0.3 and f.numbers["gpu_bound"] is True
    assert f.severity == "info"  # a large wait, but not a large cost
    assert "GPU-bound" in f.evidence and "0.01 ms per step" in f.evidence  # (20 + 10 us idle) / 2 steps
    assert f.numbers["idle_per_step_ms"] == pytest.approx(0.015)


def test_idle_rule_fires_with_the_graphs_bound_and_not_on_a_busy_gpu() -> None:
    short = [_k("elementwise", 1000 + 30 * i, 1010 + 30 * i, 1) for i in range(30)]
    f = {x.rule_id: x for x in run_rules(_run(_gpu(short)), DIAGNOSE_RULES)}
    idle = f["window_gpu_idle"]
    assert "launch-bound" in idle.title and "CUDA graphs would save at most" in idle.title
    assert idle.numbers["idle_share"] == pytest.approx(dg.idle(_gpu(short))["idle_share"])
    dense = [_k("gemm", 1000 + 100 * i, 1100 + 100 * i, 1) for i in range(10)]
    assert "window_gpu_idle" not in {x.rule_id for x in run_rules(_run(_gpu(dense)), DIAGNOSE_RULES)}


def test_cpu_diagnosis_gives_no_gpu_figure_and_no_gpu_finding() -> None:
    d = Diagnosis(window="steps:1-2", steps=[1, 2], device="cpu", gpu_reason="no CUDA device: a CPU run has no kernels",
                  step_windows=[StepWindow(1, 0, 10), StepWindow(2, 10, 20)])
    a = dg.analyze(_run(d))
    assert a is not None
    for key, field in (("idle", "idle_share"), ("syncs", "sites"), ("classes", "classes"), ("modules", "modules")):
        assert a[key][field] is None and a[key]["reason"]
    assert a["top_kernels"] is None
    assert run_rules(_run(d), DIAGNOSE_RULES) == []


def test_compile_rules_name_reason_location_and_guard() -> None:
    d = Diagnosis(window="steps:1-2", device="cpu", gpu_reason="cpu", compile=CompileInfo(
        frames_compiled=3, compile_time_s=1.5,
        graph_breaks=[GraphBreak("Failed to trace builtin operator: print", "/x/model.py", 42, "forward", 2)],
        recompiles=[Recompile("forward", "/x/model.py", 40, "tensor 'x' rank mismatch. expected 1, actual 2")]))
    f = {x.rule_id: x for x in run_rules(_run(d), DIAGNOSE_RULES)}
    assert "/x/model.py:42" in f["graph_breaks"].title and "print" in f["graph_breaks"].evidence
    assert "rank mismatch" in f["recompiles"].evidence and f["recompiles"].numbers["recompiles"] == 1
    assert all(r in RULES for r in DIAGNOSE_RULES)


def test_window_overhead_against_the_same_loops_other_steps() -> None:
    spans = [Span(name="step", kind="step", id=10 + i, parent_id=1, index=i, start_s=float(i),
                  duration_s=d) for i, d in enumerate([5.0, 1.0, 1.3, 1.2, 9.0, 1.0, 1.0, 1.0])]
    d = Diagnosis(window="steps:2-3", steps=[2, 3], step_windows=[StepWindow(2, 0, 1, 12), StepWindow(3, 0, 1, 13)],
                  start_cost_s=0.2, stop_cost_s=7.5)
    o = dg.window_overhead(_run(d, spans), d)
    # steps 0, 1 (warm-up before the window) and 4 (pays the stop) are left out: 9.0 s does not count
    assert o["slowdown"] == pytest.approx(1.25 / 1.0 - 1) and o["outside_steps"] == 3
    assert o["start_cost_s"] == 0.2 and o["stop_cost_s"] == 7.5


def test_diagnosis_round_trips_and_refuses_a_newer_schema() -> None:
    d = _gpu([_k("gemm", 1000, 1100, 1, "blocks.0")], compile=CompileInfo(graph_breaks=[GraphBreak("r", "f.py", 3)]))
    assert Diagnosis.from_dict(d.to_dict()) == d
    bad = d.to_dict() | {"schema_version": 99}
    with pytest.raises(ValueError, match="newer genprof"):
        Diagnosis.from_dict(bad)


# --------------------------------------------------------------------------- Kineto trace parsing
def _x(cat: str, name: str, ts: float, dur: float, tid: int = 1, **args: Any) -> dict[str, Any]:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def test_parse_trace_links_kernels_to_scopes_and_syncs_to_the_users_line() -> None:
    off = 5_000_000.0
    tr = {"traceEvents": [
        _x("python_function", "examples/run_wan.py(30): <module>", off + 900, 2000),
        _x("python_function", "site-packages/diffusers/pipelines/wan/pipeline_wan.py(512): __call__", off + 950, 1900),
        _x("python_function", "torch/_tensor.py(1100): item", off + 1500, 300),
        _x("user_annotation", "genprof.module:blocks.0.attn1", off + 1000, 200),
        _x("cpu_op", "aten::linear", off + 1010, 50),
        _x("cpu_op", "aten::mm", off + 1020, 30),
        _x("cuda_runtime", "cudaLaunchKernel", off + 1030, 5, correlation=11),
        _x("kernel", "nvjet_tst_gemm", off + 1040, 100, tid=7, stream=7, device=0, correlation=11),
        _x("cpu_op", "aten::item", off + 1510, 280),
        _x("cpu_op", "aten::_local_scalar_dense", off + 1520, 260),
        _x("cuda_runtime", "cudaMemcpyAsync", off + 1530, 10, correlation=12),
        _x("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", off + 1700, 2, tid=7, stream=7, device=0, correlation=12),
        _x("cuda_runtime", "cudaStreamSynchronize", off + 1545, 230, correlation=13),
        _x("gpu_user_annotation", "genprof.module:blocks.0.attn1", off + 1040, 100, tid=7),
    ]}
    cap = parse_trace(tr, offset_us=off, steps=[StepWindow(1, 900, 2900)])
    k = [x for x in cap.kernels if x.category == "kernel"]
    assert len(k) == 1 and k[0].scope == "blocks.0.attn1" and k[0].step == 1 and k[0].start_us == 1040
    assert len(cap.runtime) == 1  # the memcpy and the synchronize of one .item() are one sync
    r = cap.runtime[0]
    assert r.op == "aten::item" and r.site == "pipeline_wan.py:512" and r.function == "__call__"
    assert r.wait_us == pytest.approx(1775 - 1530) and r.kind == "sync"
    assert [o.name for o in cap.cpu_ops] == ["aten::linear", "aten::item"]
    assert cap.cpu_ops[0].scope == "blocks.0.attn1"


def test_reported_sync_site_gives_the_exact_line_and_the_stack() -> None:
    from genprof.diagnose.sites import SyncSite

    off = 1_000.0
    tr = {"traceEvents": [
        _x("python_function", "loop.py(10): run", off + 0, 5000),  # entered at its def line
        _x("cpu_op", "aten::item", off + 1000, 300),
        _x("cuda_runtime", "cudaStreamSynchronize", off + 1050, 200, correlation=1),
        _x("cpu_op", "aten::nonzero", off + 3000, 400),
        _x("cuda_runtime", "cudaStreamSynchronize", off + 3100, 250, correlation=2),
        _x("cuda_runtime", "cudaDeviceSynchronize", off + 4000, 100, correlation=3),  # explicit: not reported
    ]}
    # torch reports each sync as its op returns; thread id 1 as in the trace
    sites = [SyncSite(t_s=1305e-6, tid=1, stack=[("/src/loop.py", 17, "run"), ("/src/main.py", 4, "main")]),
             SyncSite(t_s=3410e-6, tid=1, stack=[("/src/loop.py", 21, "run")])]
    cap = parse_trace(tr, offset_us=off, steps=[StepWindow(0, 0, 5000)], sync_sites=sites)
    by_op = {r.op: r for r in cap.runtime}
    assert by_op["aten::item"].site == "loop.py:17" and by_op["aten::item"].site_source == "sync_debug_mode"
    assert by_op["aten::item"].stack == ["loop.py:17 run", "main.py:4 main"]
    assert by_op["aten::nonzero"].site == "loop.py:21"
    explicit = [r for r in cap.runtime if r.op is None]
    assert explicit and explicit[0].site == "loop.py:10" and explicit[0].site_source == "profiler_stack"


class _FakeCuda:
    def __init__(self, mode: int = 0) -> None:
        self.mode = mode

    def get_sync_debug_mode(self) -> int:
        return self.mode

    def set_sync_debug_mode(self, m: Any) -> None:
        self.mode = {"warn": 1, 0: 0}[m]


def test_sync_sites_take_torchs_warning_with_the_callers_line_and_hide_it() -> None:
    import inspect
    import types
    import warnings

    from genprof.diagnose.sites import SYNC_WARNING, SyncSites

    clock = iter([0.5, 0.75])
    cuda = _FakeCuda()
    ss = SyncSites(lambda: next(clock), types.SimpleNamespace(cuda=cuda))
    shown: list[str] = []
    prev = warnings.showwarning
    warnings.showwarning = lambda m, *a, **k: shown.append(str(m))  # type: ignore[assignment]
    try:
        assert ss.start() and cuda.mode == 1
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        warnings.warn(SYNC_WARNING, UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
        ss.stop()
        assert cuda.mode == 0
        warnings.warn(SYNC_WARNING + " after", UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = prev
    assert len(ss.sites) == 1 and ss.sites[0].t_s == 0.5
    f, ln, fn = ss.sites[0].stack[0]
    assert f.endswith("test_diagnose.py") and ln == line and fn.startswith("test_sync_sites")
    assert shown == ["something else", SYNC_WARNING + " after"]  # ours hidden only while on


def test_sync_sites_leave_a_mode_the_program_set() -> None:
    import types

    from genprof.diagnose.sites import SyncSites

    cuda = _FakeCuda(mode=2)
    ss = SyncSites(lambda: 0.0, types.SimpleNamespace(cuda=cuda))
    assert not ss.start() and cuda.mode == 2 and "already set" in (ss.reason or "")


def test_merged_trace_and_why_section_show_the_window() -> None:
    from genprof.render.trace_merge import KERNEL_PID_BASE, merged_trace
    from genprof.render.why import why_html

    ks = [_k("nvjet_gemm", 1000, 1400, 1, "blocks.0"), _k("flash_fwd", 1500, 1600, 1, "blocks.0")]
    run = _run(_gpu(ks, scope_roots=["blocks.0"]),
               [Span(name="step", kind="step", id=11, parent_id=None, index=1, start_s=0.001, duration_s=0.001)])
    tr = merged_trace(run)
    kern = [e for e in tr["traceEvents"] if e.get("pid") == KERNEL_PID_BASE and e.get("ph") == "X"]
    assert {e["name"] for e in kern} == {"nvjet_gemm", "flash_fwd", "step 1"}
    names = {e["args"]["name"] for e in tr["traceEvents"] if e.get("ph") == "M" and e["name"] == "thread_name"
             and e["pid"] == KERNEL_PID_BASE}
    assert names == {"steps", "stream 7"}
    html = why_html(run)
    assert html is not None and "GPU idle" in html and "blocks.0" in html and "nvjet_gemm" in html
    assert why_html(Run(name="t", run_id="r", started_at="", started_unix_s=0.0)) is None
    assert "profiler's own costs" not in html  # not measured: no line rather than zeros


def test_why_section_states_the_profilers_own_start_and_stop_costs() -> None:
    from genprof.render.why import why_html

    d = _gpu([_k("nvjet_gemm", 1000, 1400, 1, "blocks.0")], start_cost_s=0.0042, stop_cost_s=0.0317)
    run = _run(d, [Span(name="step", kind="step", id=11, parent_id=None, index=1, start_s=0.001, duration_s=0.001)])
    html = why_html(run) or ""
    assert "start 4.2 ms (in the step before the window)" in html
    assert "stop and trace flush 31.7 ms (in the step after it)" in html
