"""Machine facts read once at start: package versions, the CUDA allocator's fast readers, distributed ranks."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from genprof.model import DistributedInfo

log = logging.getLogger("genprof")


_DIST_VERSIONS: dict[str, str | None] = {}

_ENERGY_COUNTER: dict[str, tuple[bool, str | None]] = {}
"""Per NVML device (UUID): whether its total-energy counter reads, and why not; found by the
process's first run on the device, so later runs take their start reading off the caller's thread."""


def forget_machine_facts() -> None:
    """Drop the facts kept for the process's life (host, CUDA device, package versions, energy
    counter support), so the next run reads them again: for tests, and after a GPU or driver change."""
    from genprof.probes import host, torch_cuda

    _DIST_VERSIONS.clear()
    _ENERGY_COUNTER.clear()
    host.forget_static_facts()
    torch_cuda.forget_device_facts()


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


def _allocator_fns(torch: Any) -> tuple[Callable[[int], tuple[int, int, int, int]], Callable[[int], Any]]:
    """Fast readers of (allocated, peak allocated, reserved, peak reserved) and the peak reset."""
    raw = getattr(torch._C, "_cuda_memoryStats", None)
    if raw is not None:

        def stats(idx: int) -> tuple[int, int, int, int]:
            s = raw(idx)
            a = s["allocated_bytes"]["all"]
            r = s["reserved_bytes"]["all"]
            return int(a["current"]), int(a["peak"]), int(r["current"]), int(r["peak"])
    else:  # pragma: no cover - older or future torch without the private accessor

        def stats(idx: int) -> tuple[int, int, int, int]:
            return (
                int(torch.cuda.memory_allocated(idx)), int(torch.cuda.max_memory_allocated(idx)),
                int(torch.cuda.memory_reserved(idx)), int(torch.cuda.max_memory_reserved(idx)),
            )

    reset = getattr(torch._C, "_cuda_resetPeakMemoryStats", None) or torch.cuda.reset_peak_memory_stats
    return stats, reset


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

