"""``genprof doctor``: what this machine lets genprof measure, and why not where it cannot.

Interactive (well under a second on a CPU machine): package versions come from their metadata,
never from importing them, and torch is imported only when its build can use a GPU (its
``torch/version.py`` names a CUDA or ROCm version), since only then can importing it tell more.
What was not checked that way is listed (``not_checked``), and ``--import-torch`` checks it.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor",
        help="show what genprof can measure on this machine (NVML, energy, MIG, torch/CUDA, GPUs, host)",
        description="Check what genprof can measure here: NVML and each reading it offers, the energy counter, "
        "MIG, torch and CUDA, the GPUs this process sees (after CUDA_VISIBLE_DEVICES), host resources and "
        "optional packages. Readings that are unavailable say why.",
    )
    p.add_argument("--bandwidth", action="store_true", help="also measure pinned host-to-device bandwidth (GPU)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON instead of tables")
    p.add_argument("--import-torch", action="store_true",
                   help="import torch even when its build metadata says it has no GPU support (slower; checks that "
                   "torch loads and asks it about CUDA itself)")
    p.set_defaults(func=run)


def _package(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    from importlib import metadata

    dist = {"prometheus_client": "prometheus-client", "pynvml": "nvidia-ml-py"}.get(name, name)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "installed (version unknown)"


def torch_build() -> dict[str, Any]:
    """What the installed torch was built for, read from its files without importing it.

    ``{"installed", "version", "cuda", "hip", "read"}``: ``cuda`` and ``hip`` are the versions
    in ``torch/version.py`` (``None`` for a CPU-only build); ``read`` is False when that file
    could not be read, and then nothing is known about the build.
    """
    out: dict[str, Any] = {"installed": False, "version": None, "cuda": None, "hip": None, "read": False}
    spec = importlib.util.find_spec("torch")
    if spec is None:
        return out
    out["installed"] = True
    out["version"] = _package("torch")
    for loc in spec.submodule_search_locations or ():
        try:
            tree = ast.parse((Path(loc) / "version.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
                node.target if isinstance(node, ast.AnnAssign) else None)
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(target, ast.Name) and target.id in ("cuda", "hip", "__version__") \
                    and isinstance(value, ast.Constant) and (value.value is None or isinstance(value.value, str)):
                out["version" if target.id == "__version__" else target.id] = value.value
                out["read"] = True
        break
    return out


def _host_resources() -> Any:
    """Host facts only (``planning.resources.resources`` without its torch import)."""
    from genprof.planning.resources import host_resources

    return host_resources()


def collect(measure_bandwidth: bool = False, import_torch: bool = False) -> dict[str, Any]:
    """Everything doctor reports, as plain data.

    torch is imported only when it is already imported, when ``import_torch`` is set, or when
    its build can use a GPU (see :func:`torch_build`); otherwise the CUDA answer comes from the
    build metadata and ``not_checked`` says what importing torch would have checked.
    """
    from genprof._version import __version__
    from genprof.probes import torch_cuda
    from genprof.probes.nvml import NvmlProbe

    out: dict[str, Any] = {
        "genprof": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "packages": {n: _package(n) for n in ("torch", "diffusers", "transformers", "pynvml", "plotly",
                                              "prometheus_client", "psutil", "rich")},
    }
    build = torch_build()
    out["torch_build"] = build
    not_checked: list[str] = []
    torch = torch_cuda.get_torch(import_if_needed=False)  # already imported (by the caller, or a fake)
    gpu_build = build["cuda"] is not None or build["hip"] is not None or not build["read"]
    if torch is None and build["installed"] and (import_torch or gpu_build):
        torch = torch_cuda.get_torch()
    if torch is not None:
        from genprof.planning.resources import resources

        res = resources(measure_bandwidth=measure_bandwidth)
        reason = torch_cuda.cuda_unavailable_reason(torch)
    else:
        res = _host_resources()
        if build["installed"]:
            reason = f"this torch build ({build['version']}) has no CUDA support"
            res.torch_version = build["version"]
            res.unavailable["gpu"] = f"{reason} (read from torch/version.py; torch not imported)"
            not_checked.append("torch was not imported (its build has no GPU support, so importing it could not "
                               "find a GPU); genprof doctor --import-torch checks that it loads")
        else:
            reason = "torch is not installed"
            res.unavailable["gpu"] = reason
    out["resources"] = res.to_dict()
    out["torch_imported"] = torch is not None
    out["cuda"] = {"usable": reason is None, "reason": reason}
    nv = NvmlProbe()
    nvml: dict[str, Any] = {"available": nv.available, "reason": nv.reason}
    if nv.available:
        nvml["driver"] = nv.driver_version()
        nvml["nvml_version"] = nv.nvml_version()
    gpus: list[dict[str, Any]] = []
    if torch is not None and out["cuda"]["usable"]:
        for i in range(torch.cuda.device_count()):
            facts = torch_cuda.device_facts(torch, i)
            g: dict[str, Any] = {"torch_index": i, **facts}
            dev = nv.device_by_uuid(facts["uuid"]) if (nv.available and facts.get("uuid")) else None
            if dev is None:
                g["nvml"] = {"matched": False, "reason": nv.reason or "no NVML device with this UUID"}
            else:
                before = dict(nv.unavailable)
                reading = nv.read(dev)
                energy = nv.energy_j(dev)
                fa = nv.device_facts(dev)
                new_reasons = {k: v for k, v in nv.unavailable.items() if k not in before}
                g["nvml"] = {
                    "matched": True,
                    "nvml_index": dev.nvml_index,
                    "mig_mode": fa["mig_mode"],
                    "power_limit_w": fa["power_limit_w"],
                    "power_source": nv.power_source(dev) if reading.get("power_w") is not None else None,
                    "readings": reading,
                    "energy_counter_j": energy,
                    "unavailable": new_reasons,
                }
            gpus.append(g)
    elif nv.available:
        nvml["note"] = "NVML sees GPUs but torch cannot use CUDA: genprof samples a GPU only for a process that uses it"
        nvml["devices"] = [{"nvml_index": d.nvml_index, "uuid": d.uuid, "name": d.name} for d in nv.visible_devices()]
    out["nvml"] = nvml
    out["gpus"] = gpus
    if measure_bandwidth and not gpus:
        not_checked.append("pinned host-to-device bandwidth: no usable GPU")
    out["not_checked"] = not_checked
    nv.shutdown()
    return out


def run(args: argparse.Namespace) -> int:
    data = collect(measure_bandwidth=args.bandwidth, import_torch=args.import_torch)
    if args.json:
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    from genprof.units import format_bytes

    con = Console()

    def yes(v: bool) -> str:
        return "yes" if v else "NO"

    t = Table(title=f"genprof {data['genprof']} doctor", show_header=True)
    t.add_column("what")
    t.add_column("status")
    t.add_column("detail", overflow="fold")
    pk = data["packages"]
    t.add_row("python", data["python"], data["platform"])
    t.add_row("torch", pk["torch"] or "not installed",
              ("imported" if data["torch_imported"] else "version from its metadata, not imported") if pk["torch"]
              else "GPU time and allocator figures need torch")
    t.add_row("CUDA", yes(data["cuda"]["usable"]), data["cuda"]["reason"] or "")
    t.add_row("CUDA_VISIBLE_DEVICES", str(data["cuda_visible_devices"]), "")
    nv = data["nvml"]
    t.add_row("NVML", yes(nv["available"]), nv.get("reason") or f"driver {nv.get('driver')}")
    for name in ("diffusers", "transformers", "plotly", "prometheus_client"):
        t.add_row(name, pk[name] or "not installed", "")
    r = data["resources"]
    t.add_row("host RAM", format_bytes(r["host_ram_total_bytes"]),
              f"{format_bytes(r['host_ram_available_bytes'])} available")
    t.add_row("CPU cores", f"{r['cpu_cores_logical']} logical", f"{r['cpu_cores_physical']} physical")
    con.print(t, highlight=False)
    for g in data["gpus"]:
        gt = Table(title=f"GPU {g['torch_index']}: {g['name']} ({g['uuid']})")
        gt.add_column("what")
        gt.add_column("value")
        gt.add_column("detail", overflow="fold")
        gt.add_row("memory", format_bytes(g["total_memory_bytes"]), f"compute capability {g['compute_capability']}")
        rg: dict[str, Any] = next((x for x in r["gpus"] if x["index"] == g["torch_index"]), {})
        if rg:
            gt.add_row("free now", format_bytes(rg.get("free_memory_bytes")),
                       f"bf16 {rg.get('bf16_supported')}, fp8 {rg.get('fp8_supported')}")
            bw = rg.get("h2d_pinned_bandwidth_bytes_per_s")
            if bw:
                gt.add_row("pinned H2D", f"{bw / 1e9:.1f} GB/s", "measured now")
        n = g["nvml"]
        if not n["matched"]:
            gt.add_row("NVML", "NO", n["reason"])
        else:
            rd = n["readings"]
            un = n["unavailable"]
            gt.add_row("MIG", str(n["mig_mode"]), "per-GPU NVML figures include other instances" if n["mig_mode"] else "")
            for key, label in (("utilization_pct", "utilization (NVML busy time)"), ("power_w", "power"),
                               ("temperature_c", "temperature"), ("sm_clock_mhz", "SM clock"),
                               ("memory_used_bytes", "memory used"), ("clock_event_reasons", "throttle reasons")):
                v = rd.get(key)
                reason = next((x for k, x in un.items() if k in key or key.startswith(k)), "")
                detail = n["power_source"] if key == "power_w" and v is not None else reason
                gt.add_row(label, "n/a" if v is None else str(v), detail or "")
            e = n["energy_counter_j"]
            gt.add_row("energy counter", "yes" if e is not None else "NO",
                       f"{e:.0f} J since driver load" if e is not None else un.get("gpu_energy", ""))
        con.print(gt, highlight=False)
    for line in data["not_checked"]:
        con.print(f"Not checked: {line}.", highlight=False)
    if not data["gpus"]:
        con.print("No GPU is usable by this process: genprof records host time, RSS, CPU and RAM; GPU figures "
                  "are recorded as unavailable with the reason above.", highlight=False)
    return 0
