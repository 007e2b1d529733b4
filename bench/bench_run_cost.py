"""A whole profiled run's fixed cost: construct, enter, exit and save, and where that time goes.

genprof's span hot path is measured by ``bench_span_cost.py``; this script measures what a run
pays once, however short it is: building the ``Profiler`` (config, run record), ``__enter__``
(machine facts, NVML, the sampler thread, the SIGTERM handler, the outputs' listeners),
``__exit__`` (sampler stop, GPU-time resolution, energy reads, peaks, end summary) and
``prof.save(path)``. For a server that profiles each 1-3 s request, or ``genprof run`` around
one image, this is the overhead that counts.

Two measurements, each at the default config as a user writes it (``Profiler(name)``, a phase
with a few steps of trivial work inside, then ``prof.save``):

* ``first``: a fresh interpreter per run (``--first`` processes), timing ``import genprof``,
  construct, enter, exit and save of the process's first profiler: imports, NVML init, CUDA
  context queries and machine facts are all paid here.
* ``warm``: ``--warm`` runs in one process after one untimed run: the cost every later run
  pays. Medians and 90th percentiles.

Each run's loop lasts ``--work-ms`` (default 50 ms, a sleep standing in for GPU work): the
energy counter's start readings (about 2.5 ms each on an H100, taken on their own thread) are
then done before the exit, as in any real generation; ``--work-ms 0`` measures a run that ends
while they are still queued, which its exit then waits for.

Both print a per-part breakdown: each named step of enter and exit is wrapped in a timer
(a class-level patch adding well under a microsecond per call), so a regression shows up as a
row, not as a guess. The per-part figures are summed over all calls of a part in one run.

Usage::

    python bench/bench_run_cost.py --out run-cost.json            # CPU or GPU, about 20 s
    python bench/bench_run_cost.py --warm 50 --first 10 --out run-cost.json
"""

from __future__ import annotations

import argparse
import compileall
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (module, class, method): the parts of enter and exit that are timed one by one
PARTS: list[tuple[str, str, str]] = [
    ("genprof.profiler.core", "Profiler", "__init__"),
    ("genprof.profiler.output", "LogFile", "open"),
    ("genprof.profiler.core", "Profiler", "_collect_facts"),
    ("genprof.profiler.core", "", "open_device"),
    ("genprof.profiler.core", "", "software_info"),
    ("genprof.profiler.core", "", "build_sampler"),
    ("genprof.profiler.endings", "SigtermGuard", "install"),
    ("genprof.profiler.core", "Profiler", "_write_run_file"),
    ("genprof.profiler.core", "Profiler", "_close_left_open_spans"),
    ("genprof.profiler.energy", "EnergyWindows", "finish"),
    ("genprof.profiler.core", "Profiler", "_final_memory"),
    ("genprof.profiler.core", "", "fill_sampled_peaks"),
    ("genprof.profiler.endings", "SigtermGuard", "restore"),
    ("genprof.profiler.output", "", "log_usage"),
    ("genprof.profiler.output", "LogFile", "close"),
    ("genprof.profiler.core", "Profiler", "save"),
    ("genprof.probes.nvml", "NvmlProbe", "__init__"),
    ("genprof.probes.nvml", "NvmlProbe", "device_facts"),
    ("genprof.probes.nvml", "NvmlProbe", "device_by_uuid"),
    ("genprof.probes.nvml", "NvmlProbe", "visible_devices"),
    ("genprof.probes.nvml", "NvmlProbe", "energy_j"),
    ("genprof.probes.nvml", "NvmlProbe", "driver_version"),
    ("genprof.probes.nvml", "NvmlProbe", "reader"),
    ("genprof.profiler.device", "", "_allocator_fns"),
    ("genprof.profiler.core", "", "_detect_distributed"),
    ("genprof.profiler.core", "", "notify_started"),
    ("genprof.timing", "GpuTimer", "__init__"),
    ("genprof.timing", "Nvtx", "__init__"),
    ("genprof.probes.host", "HostProbe", "__init__"),
    ("genprof.probes.host", "HostProbe", "close"),
    ("genprof.probes.host", "RssReader", "close"),
    ("genprof.sampler", "Sampler", "start"),
    ("genprof.sampler", "Sampler", "request_stop"),
    ("genprof.sampler", "Sampler", "stop"),
    ("genprof.sampler", "Sampler", "tick"),
    ("genprof.timing", "GpuTimer", "resolve_all"),
    ("genprof.profiler.energy", "_EnergyReader", "drain"),
    ("genprof.outputs", "", "attach"),
    ("genprof.outputs", "", "_end_summary"),
]
_FUNCS = ("host_facts", "device_facts", "software_versions", "cuda_unavailable_reason")


class PartTimer:
    """Wraps the named methods with a perf_counter timer; ``take()`` returns and clears the sums."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.missing: list[str] = []

    def install(self) -> None:
        import importlib

        targets: list[tuple[Any, str, str]] = []
        for mod_name, cls_name, meth in PARTS:
            mod = importlib.import_module(mod_name)
            owner = getattr(mod, cls_name, None) if cls_name else mod
            label = f"{cls_name or mod_name.rsplit('.', 1)[-1]}.{meth}"
            if owner is None or not hasattr(owner, meth):
                self.missing.append(label)
                continue
            targets.append((owner, meth, label))
        for mod_name in ("genprof.probes.host", "genprof.probes.torch_cuda"):
            mod = importlib.import_module(mod_name)
            for fn in _FUNCS:
                if hasattr(mod, fn):
                    targets.append((mod, fn, f"{mod_name.rsplit('.', 1)[-1]}.{fn}"))
        for owner, meth, label in targets:
            setattr(owner, meth, self._wrap(getattr(owner, meth), label))
        # the profiler module imported the probe functions by module, so patching the module is enough

    def _wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        sums = self.sums
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                sums[label] += clock() - t

        return timed

    def take(self) -> dict[str, float]:
        out = dict(self.sums)
        self.sums.clear()
        return out


def one_run(tmp: Path, steps: int, timer: PartTimer | None, work_s: float = 0.0) -> dict[str, Any]:
    """One default-config run as a user writes it; seconds per stage and per part."""
    from genprof import Profiler

    clock = time.perf_counter
    t0 = clock()
    prof = Profiler("run-cost")
    t1 = clock()
    prof.__enter__()
    t2 = clock()
    if timer is not None:
        enter_parts = timer.take()
    for _ in prof.steps(range(steps)):
        if work_s:
            time.sleep(work_s / steps)
    t3 = clock()
    prof.__exit__(None, None, None)
    t4 = clock()
    exit_parts = timer.take() if timer is not None else {}
    prof.save(tmp / "run.json")
    t5 = clock()
    save_parts = timer.take() if timer is not None else {}
    res: dict[str, Any] = {"construct_s": t1 - t0, "enter_s": t2 - t1, "loop_s": t3 - t2, "exit_s": t4 - t3,
                           "save_s": t5 - t4}
    res["enter_exit_save_s"] = res["enter_s"] + res["exit_s"] + res["save_s"]
    if timer is not None:
        res["parts"] = {"construct+enter": enter_parts, "exit": exit_parts, "save": save_parts}
    return res


def _child(args: argparse.Namespace) -> None:
    # a diffusion script has imported torch (and initialised CUDA) before its first profiler:
    # that cost is the script's, not genprof's, and is reported apart
    t = time.perf_counter()
    try:
        import torch

        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")
    except ImportError:
        pass
    # importing torch leaves a full garbage collection due (~80 ms over its objects) that lands
    # in whichever allocation comes next; a script's model loading pays it long before its
    # first profiler, so it is taken here, with torch's import
    gc.collect()
    torch_s = time.perf_counter() - t
    t = time.perf_counter()
    from genprof import Profiler  # noqa: F401 - timed: the first import, with the profiler's modules

    import_s = time.perf_counter() - t
    if args.no_final_sample:
        from genprof.sampler import Sampler

        request_stop = Sampler.request_stop
        Sampler.request_stop = lambda self, *, final_sample=True: request_stop(self, final_sample=False)  # type: ignore[method-assign]
    timer = PartTimer()
    if not args.no_parts:
        timer.install()
    with tempfile.TemporaryDirectory() as d:
        res = one_run(Path(d), args.steps, None if args.no_parts else timer, args.work_ms / 1e3)
    res["import_s"] = import_s
    res["torch_import_and_cuda_init_s"] = torch_s
    res["first_construct_enter_s"] = res["construct_s"] + res["enter_s"]
    sys.stdout.write(json.dumps(res) + "\n")


def nvml_calls(n: int = 20) -> dict[str, Any]:
    """Median latency (ms) of each NVML read genprof makes, alone and two at once on two threads."""
    import threading

    from genprof.probes.nvml import NvmlProbe

    probe = NvmlProbe()
    vis = probe.visible_devices() if probe.available else []
    if not vis:
        return {"reason": probe.reason or "no NVML device"}
    dev = vis[0]
    read = probe.reader(dev, memory=True, utilization=True, temperature=True, power=True, clocks=True,
                        clock_events=True, key=lambda name: name)
    calls: dict[str, Callable[[], Any]] = {"energy_j": lambda: probe.energy_j(dev), "sampler_read": read,
                                           "device_facts": lambda: probe.device_facts(dev)}
    nvml = probe._nvml  # the same counter through the field-values call, for comparison
    if nvml is not None and hasattr(nvml, "nvmlDeviceGetFieldValues"):
        field = getattr(nvml, "NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 83)
        calls["energy_field_value"] = lambda: nvml.nvmlDeviceGetFieldValues(dev.handle, [field])
    out: dict[str, Any] = {}
    for name, fn in calls.items():
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[f"{name}_ms"] = 1e3 * statistics.median(ts)
    both = []
    for _ in range(n):
        th = threading.Thread(target=calls["energy_j"])
        t = time.perf_counter()
        th.start()
        read()
        th.join()
        both.append(time.perf_counter() - t)
    out["energy_j_and_sampler_read_on_two_threads_ms"] = 1e3 * statistics.median(both)
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _summary(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    return {k: {"median_ms": 1e3 * statistics.median(r[k] for r in rows), "p90_ms": 1e3 * _pct([r[k] for r in rows], 0.9)}
            for k in keys}


def _parts_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stage in ("construct+enter", "exit", "save"):
        labels = sorted({lab for r in rows for lab in r["parts"][stage]})
        out[stage] = {lab: 1e3 * statistics.median(r["parts"][stage].get(lab, 0.0) for r in rows) for lab in labels}
    return out


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        return f"CPU (no CUDA), torch {torch.__version__}, {os.cpu_count()} cores"
    except ImportError:
        return f"CPU, no torch, {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--warm", type=int, default=30, help="timed warm runs in one process (default 30)")
    ap.add_argument("--first", type=int, default=6, help="fresh processes for the first-profiler figure")
    ap.add_argument("--steps", type=int, default=4, help="steps in each run's phase (trivial work)")
    ap.add_argument("--work-ms", type=float, default=50.0,
                    help="how long each run's loop lasts, ms (default 50; 0: exit right after enter)")
    ap.add_argument("--no-parts", action="store_true", help="time the stages only, without the per-part wrappers")
    ap.add_argument("--no-final-sample", action="store_true",
                    help="an experiment: the sampler ends without its reading at the stop (warm runs only), "
                         "to see what that reading adds to the exit")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    if args.warm < 10:
        ap.error("--warm must be at least 10 (the figure is a median over at least 10 runs)")
    # an installed genprof has its bytecode compiled (pip does it at install): so here, else
    # the first-import figure is mostly the compiler's
    compileall.compile_dir(str(ROOT / "src" / "genprof"), quiet=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    firsts: list[dict[str, Any]] = []
    for _ in range(args.first):
        cmd = [sys.executable, __file__, "--child", "--out", "-", "--steps", str(args.steps),
               "--work-ms", str(args.work_ms)]
        if args.no_parts:
            cmd.append("--no-parts")
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        firsts.append(json.loads(p.stdout.strip().splitlines()[-1]))

    sys.path.insert(0, str(ROOT / "src"))
    try:
        import torch

        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")
    except ImportError:
        pass
    if args.no_final_sample:
        from genprof.sampler import Sampler

        request_stop = Sampler.request_stop
        Sampler.request_stop = lambda self, *, final_sample=True: request_stop(self, final_sample=False)  # type: ignore[method-assign]
    timer = PartTimer()
    if not args.no_parts:
        timer.install()
    warm: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        one_run(Path(d), args.steps, None)  # untimed: the process's first profiler
        timer.take()
        for _ in range(args.warm):
            warm.append(one_run(Path(d), args.steps, None if args.no_parts else timer, args.work_ms / 1e3))
    stages = ["construct_s", "enter_s", "exit_s", "save_s", "enter_exit_save_s"]
    result: dict[str, Any] = {
        "device": _device(), "python": sys.version.split()[0], "steps": args.steps, "work_ms": args.work_ms, "per_part_wrappers": not args.no_parts,
        "final_sample": not args.no_final_sample,
        "first": {"n": len(firsts),
                  **_summary(firsts, ["torch_import_and_cuda_init_s", "import_s", *stages, "first_construct_enter_s"])},
        "warm": {"n": len(warm), **_summary(warm, stages)},
    }
    result["nvml_calls"] = nvml_calls()
    if not args.no_parts:
        result["first"]["parts_ms"] = _parts_summary(firsts)
        result["warm"]["parts_ms"] = _parts_summary(warm)
        result["parts_not_found"] = timer.missing
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    w, f = result["warm"], result["first"]
    lines = [f"device: {result['device']}",
             f"warm ({w['n']} runs): enter+exit+save median {w['enter_exit_save_s']['median_ms']:.2f} ms "
             f"(enter {w['enter_s']['median_ms']:.2f}, exit {w['exit_s']['median_ms']:.2f}, "
             f"save {w['save_s']['median_ms']:.2f}); construct {w['construct_s']['median_ms']:.2f} ms",
             f"first ({f['n']} processes, torch imported and CUDA initialised before: "
             f"{f['torch_import_and_cuda_init_s']['median_ms']:.0f} ms): import genprof {f['import_s']['median_ms']:.1f} ms, construct+enter "
             f"{f['first_construct_enter_s']['median_ms']:.1f} ms, exit {f['exit_s']['median_ms']:.1f} ms"]
    lines.append("nvml: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in result["nvml_calls"].items()))
    if not args.no_parts:
        for which in ("first", "warm"):
            lines.append(f"{which}: median ms per part")
            for stage, parts in result[which]["parts_ms"].items():
                for lab, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
                    if ms >= 0.005:
                        lines.append(f"  {stage:<16} {lab:<40} {ms:8.3f}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
