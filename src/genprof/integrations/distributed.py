"""torch.distributed: who this rank is, and gathering the ranks' runs on rank 0.

:func:`detect` tells the profiler the rank, world size, local rank, backend, host and the
job id that ties the rank files of one job together (see :mod:`genprof.analysis.aggregate`).
It never imports torch: it reads ``torch.distributed`` only if the program already
imported it, and otherwise the environment variables that ``torchrun`` sets.

:func:`gather` collects every rank's :class:`~genprof.model.Run` on one rank through the
process group already initialised (gloo or NCCL). With NCCL, object collectives travel
through the current CUDA device: call ``torch.cuda.set_device(local_rank)`` first, as
torchrun programs normally do.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from genprof.errors import UsageError
from genprof.model import DistributedInfo, Run

log = logging.getLogger(__name__)


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or not v.strip().lstrip("-").isdigit():
        return None
    return int(v)


def job_id_from_env() -> tuple[str | None, str | None]:
    """The job id and where it came from (see :mod:`genprof.analysis.aggregate`)."""
    env = os.environ
    if env.get("GENPROF_JOB_ID"):
        return env["GENPROF_JOB_ID"], "GENPROF_JOB_ID"
    rid = env.get("TORCHELASTIC_RUN_ID")
    if rid and rid.lower() != "none":
        return rid, "TORCHELASTIC_RUN_ID"
    if env.get("SLURM_JOB_ID"):
        step = env.get("SLURM_STEP_ID")
        return env["SLURM_JOB_ID"] + (f".{step}" if step else ""), "SLURM_JOB_ID"
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}", "MASTER_ADDR:MASTER_PORT"
    return None, None


def detect() -> dict[str, Any] | None:
    """This process's place in a distributed job, or ``None`` when it is not part of one.

    Returns ``{"rank", "world_size", "local_rank", "local_world_size", "node_rank", "backend",
    "source", "job_id", "job_id_source", "host"}``. ``source`` is ``"torch.distributed"`` when a
    process group is initialised (already imported by the program), else ``"env"`` (torchrun's
    ``RANK``/``WORLD_SIZE``). Does not import torch.
    """
    rank = world = None
    backend = None
    source = None
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                rank, world = int(dist.get_rank()), int(dist.get_world_size())
                backend = str(dist.get_backend())
                source = "torch.distributed"
        except (RuntimeError, ValueError, AttributeError) as exc:
            log.debug("torch.distributed present but not usable: %s", exc)
    if rank is None:
        rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
        if rank is None or world is None:
            return None
        source = "env"
    job_id, job_src = job_id_from_env()
    return {
        "rank": rank,
        "world_size": world,
        "local_rank": _env_int("LOCAL_RANK"),
        "local_world_size": _env_int("LOCAL_WORLD_SIZE"),
        "node_rank": _env_int("GROUP_RANK"),
        "backend": backend,
        "source": source,
        "job_id": job_id,
        "job_id_source": job_src,
        "host": socket.gethostname(),
    }


def distributed_info(d: dict[str, Any] | None = None) -> DistributedInfo | None:
    """:class:`~genprof.model.DistributedInfo` from :func:`detect`'s dict (detected now if not given)."""
    d = detect() if d is None else d
    if d is None:
        return None
    return DistributedInfo(rank=int(d["rank"]), world_size=int(d["world_size"]), local_rank=d.get("local_rank"),
                           backend=d.get("backend"), source=str(d.get("source") or "env"))


def stamp(run: Run, d: dict[str, Any] | None = None) -> Run:
    """Record :func:`detect`'s result in ``run.distributed`` and ``run.metadata["distributed"]``."""
    d = detect() if d is None else d
    if d is not None:
        run.metadata["distributed"] = dict(d)
        run.distributed = distributed_info(d)
    return run


def gather(run: Run, dst: int = 0) -> list[Run] | None:
    """Collect every rank's run on rank ``dst`` (default 0); other ranks get ``None``.

    Collective: every rank must call it. Before gathering, rank ``dst``'s run id is broadcast
    and recorded as ``run.metadata["distributed"]["job_id"]`` on every rank (source
    ``"gather"``), so rank files saved after this call always match each other. Raises
    :class:`~genprof.errors.UsageError` if no process group is initialised.
    """
    try:
        import torch.distributed as dist
    except ImportError as exc:
        from genprof.errors import MissingDependencyError

        raise MissingDependencyError("torch", "genprof.gather", "torch") from exc
    if not (dist.is_available() and dist.is_initialized()):
        raise UsageError(
            "genprof.gather needs an initialised process group: call torch.distributed.init_process_group() "
            "first, or write one run file per rank and merge them with `genprof aggregate`"
        )
    rank = dist.get_rank()
    box: list[Any] = [run.run_id if rank == dst else None]
    dist.broadcast_object_list(box, src=dst)
    md = run.metadata.get("distributed")
    md = dict(md) if isinstance(md, dict) else (detect() or {})
    md["job_id"] = str(box[0])
    md["job_id_source"] = "gather"
    run.metadata["distributed"] = md
    if run.distributed is None:
        run.distributed = DistributedInfo(rank=rank, world_size=dist.get_world_size(), local_rank=md.get("local_rank"),
                                          backend=str(dist.get_backend()))
    payload = run.to_dict()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == dst else None
    dist.gather_object(payload, out, dst=dst)
    if rank != dst or out is None:
        return None
    return [Run.from_dict(d, source=f"rank {i}") for i, d in enumerate(out)]


__all__ = ["detect", "distributed_info", "gather", "job_id_from_env", "stamp"]
