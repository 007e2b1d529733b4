"""Machine facts, kept for the process's life: software versions, the host, the device; distributed ranks.

What cannot change while a process lives (package versions, the OS, CPU and RAM, the GPU's
properties and NVML facts) is read by the process's first run and reused by every later one;
:func:`forget_machine_facts` drops it all, so the next run reads it again. What can change
(the hostname, torch.distributed's state, the job id) is read by every run.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from typing import Any

from genprof._version import __version__
from genprof.model import DistributedInfo, HostInfo, SoftwareInfo
from genprof.probes import host as host_probe
from genprof.probes import torch_cuda
from genprof.profiler.device import Device, forget_devices

log = logging.getLogger("genprof")


_DIST_VERSIONS: dict[str, str | None] = {}

_SOFTWARE: dict[tuple[int, int], dict[str, str | None]] = {}  # by (torch module, device)


def forget_machine_facts() -> None:
    """Drop the facts kept for the process's life, so that the next run reads them again.

    The software versions, the host's static facts, each CUDA device's properties, the NVML
    probe with its devices, and whether their energy counters read. For tests (each fake is a
    new machine), and after a package, GPU or driver change inside a long-lived process.
    """
    _DIST_VERSIONS.clear()
    _SOFTWARE.clear()
    host_probe.forget_static_facts()
    torch_cuda.forget_device_facts()
    forget_devices()


def software_info(torch: Any | None, device: Device) -> SoftwareInfo:
    """The versions of genprof, Python, diffusers, transformers, torch, CUDA, cuDNN, the driver and NVML."""
    key = (id(torch), id(device))
    facts = _SOFTWARE.get(key)
    if facts is None:
        sw = torch_cuda.software_versions(torch)
        dv = device.software()
        facts = {
            "genprof": __version__, "python": platform.python_version(),
            "diffusers": _module_version("diffusers"), "transformers": _module_version("transformers"),
            "torch": sw["torch"], "cuda": sw["cuda"], "cudnn": sw["cudnn"],
            "driver": dv["driver"], "nvml": dv["nvml"],
        }
        _SOFTWARE[key] = facts
    return SoftwareInfo(**facts)


def host_info() -> HostInfo:
    """The host's facts (static ones kept for the process; hostname and pid read each time)."""
    return HostInfo(**host_probe.host_facts())


def _module_version(name: str) -> str | None:
    """The imported module's ``__version__``, else the installed distribution's version.

    The distribution lookup scans site-packages (about a millisecond each), so its answer is
    kept for the process: a package installed or removed mid-process is not seen.
    """
    mod = sys.modules.get(name)
    if mod is not None:
        return str(getattr(mod, "__version__", None))
    if name not in _DIST_VERSIONS:
        from importlib import metadata

        try:
            _DIST_VERSIONS[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            _DIST_VERSIONS[name] = None
    return _DIST_VERSIONS[name]


def _detect_distributed(torch: Any | None) -> DistributedInfo | None:
    try:
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            lr = os.environ.get("LOCAL_RANK")
            return DistributedInfo(
                rank=int(torch.distributed.get_rank()), world_size=int(torch.distributed.get_world_size()),
                local_rank=int(lr) if lr and lr.isdigit() else None, backend=str(torch.distributed.get_backend()),
            )
    except (RuntimeError, ValueError) as exc:
        log.debug("torch.distributed state unreadable: %s", exc)
    r, w = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if r and w and r.isdigit() and w.isdigit():
        lr = os.environ.get("LOCAL_RANK")
        return DistributedInfo(rank=int(r), world_size=int(w), local_rank=int(lr) if lr and lr.isdigit() else None,
                               source="environment (RANK, WORLD_SIZE)")
    return None



def _job_id() -> tuple[str | None, str | None]:
    """An id shared by every rank of one distributed job, and where it came from (docs/analysis.md)."""
    env = os.environ
    rid = env.get("TORCHELASTIC_RUN_ID")
    if env.get("GENPROF_JOB_ID"):
        return env["GENPROF_JOB_ID"], "GENPROF_JOB_ID"
    if rid and rid.lower() != "none":
        return rid, "TORCHELASTIC_RUN_ID"
    if env.get("SLURM_JOB_ID"):
        step = f".{env['SLURM_STEP_ID']}" if env.get("SLURM_STEP_ID") else ""
        return env["SLURM_JOB_ID"] + step, "SLURM_JOB_ID"
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}", "MASTER_ADDR:MASTER_PORT"
    return None, None

