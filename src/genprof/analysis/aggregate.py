"""Aggregate the run files of the ranks of one distributed job.

Each rank of a ``torchrun`` job profiles only its own GPU and writes its own run file, with
``run.distributed`` (rank, world size, local rank, backend) and ``run.metadata["distributed"]``
(written by :func:`genprof.integrations.distributed.detect`):

``job_id``
    The identity of the job, shared by all its ranks: ``$GENPROF_JOB_ID`` if set, else
    torchrun's ``$TORCHELASTIC_RUN_ID`` (unless it is the default ``none``), else
    ``$SLURM_JOB_ID[.$SLURM_STEP_ID]``, else ``MASTER_ADDR:MASTER_PORT`` (weak: two jobs on the same
    port look alike). :func:`genprof.gather` replaces it with rank 0's run id on every rank.
``job_id_source``
    Which of those it came from.

:func:`aggregate` refuses files of different jobs (different ``job_id``, different world
sizes, two files for one rank) with a :class:`genprof.errors.UsageError` that names them, and
then computes, across ranks: per phase path and per figure the min, max, mean and p95; the
slowest rank of each phase (stragglers); the skew (max/min) of step times; and the total
energy over GPUs, counting a GPU that two ranks share (same UUID) once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprof.analysis.figures import FIGURES, compute_figures
from genprof.analysis.summary import energy_total, percentile, phase_table
from genprof.errors import RunFileError, UsageError
from genprof.model import Run, atomic_write_text, load_run

log = logging.getLogger(__name__)

FORMAT_NAME = "genprof.aggregate"
SCHEMA_VERSION = 1
AGGREGATED_FIGURES = (
    "generation_time_s",
    "step_time_mean_s",
    "step_time_p95_s",
    "peak_reserved_bytes",
    "peak_allocated_bytes",
    "energy_j",
    "run_time_s",
    "load_time_s",
)
STRAGGLER_SKEW = 1.10  # a phase's slowest rank 10% above its fastest is named a straggler


@dataclass
class RankRun:
    rank: int
    run: Run
    source: str


def dist_meta(run: Run) -> dict[str, Any]:
    md = run.metadata.get("distributed")
    return dict(md) if isinstance(md, Mapping) else {}


def rank_of(run: Run) -> int | None:
    if run.distributed is not None:
        return run.distributed.rank
    r = dist_meta(run).get("rank")
    return r if isinstance(r, int) and not isinstance(r, bool) else None


def world_size_of(run: Run) -> int | None:
    if run.distributed is not None:
        return run.distributed.world_size
    w = dist_meta(run).get("world_size")
    return w if isinstance(w, int) and not isinstance(w, bool) else None


def job_id_of(run: Run) -> str | None:
    j = dist_meta(run).get("job_id")
    return str(j) if j not in (None, "") else None


def load_rank_files(items: Sequence[str | os.PathLike[str]]) -> list[RankRun]:
    """Load rank files from files and folders.

    A folder contributes every ``*.json`` file in it that is a genprof run file (other JSON,
    such as an earlier ``merged.json``, is skipped with a log line); a file named directly
    must be a run file. A damaged run file is an error, never skipped.
    """
    loaded: list[tuple[Run, str]] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(x for x in p.glob("*.json") if x.is_file())
            before = len(loaded)
            for x in found:
                try:
                    loaded.append((load_run(x), str(x)))
                except RunFileError as exc:
                    if "not a genprof run file" in str(exc):
                        log.info("skipping %s: %s", x, exc)
                        continue
                    raise
            if len(loaded) == before:
                raise UsageError(f"{p}: no genprof run files (*.json) in this folder")
        elif p.exists():
            loaded.append((load_run(p), str(p)))
        else:
            raise UsageError(f"{p}: no such file or folder")
    out: list[RankRun] = []
    for run, src in loaded:
        r = rank_of(run)
        if r is None:
            raise UsageError(
                f"{src}: not a rank file of a distributed run (no rank recorded); aggregate only files written by "
                "the ranks of one torchrun job"
            )
        out.append(RankRun(r, run, src))
    return out


def check_same_job(ranks: Sequence[RankRun]) -> tuple[str | None, str | None, int]:
    """Refuse files of different jobs; return (job id, its source, world size)."""
    if not ranks:
        raise UsageError("no rank files to aggregate")
    jobs: dict[str | None, list[RankRun]] = {}
    for rr in ranks:
        jobs.setdefault(job_id_of(rr.run), []).append(rr)
    if len(jobs) > 1:
        desc = "; ".join(
            f"job {j!r}: {', '.join(os.path.basename(r.source) for r in rs[:4])}{' ...' if len(rs) > 4 else ''}"
            for j, rs in jobs.items()
        )
        raise UsageError(
            f"rank files from different runs: {desc}. Aggregate the files of one job only (they share "
            "metadata.distributed.job_id)"
        )
    worlds = {world_size_of(rr.run) for rr in ranks}
    if len(worlds) > 1:
        raise UsageError(f"rank files disagree on the world size ({sorted(w or 0 for w in worlds)}): files from "
                         "different runs; aggregate the files of one job only")
    seen: dict[int, str] = {}
    for rr in ranks:
        if rr.rank in seen:
            raise UsageError(
                f"two files for rank {rr.rank}: {seen[rr.rank]} and {rr.source}; files from different runs of the "
                "same job id? Keep one file per rank"
            )
        seen[rr.rank] = rr.source
    job = next(iter(jobs))
    src = dist_meta(ranks[0].run).get("job_id_source")
    world = worlds.pop() or len(ranks)
    if job is None and len(ranks) > 1:
        # no job id anywhere: accept only files of one run name that started close together
        names = {rr.run.name for rr in ranks}
        starts = [rr.run.started_unix_s for rr in ranks]
        if len(names) > 1 or max(starts) - min(starts) > 600:
            raise UsageError(
                "rank files carry no job id and differ in name or start time by more than 10 minutes: files from "
                "different runs. Record a job id (GENPROF_JOB_ID, or torchrun --rdzv-id) or call genprof.gather"
            )
    return job, (str(src) if src is not None else None), world


def _stats(values: Mapping[int, float]) -> dict[str, Any]:
    xs = list(values.values())
    if not xs:
        return {"min": None, "max": None, "mean": None, "p95": None, "skew": None}
    lo, hi = min(xs), max(xs)
    return {
        "min": lo,
        "max": hi,
        "mean": sum(xs) / len(xs),
        "p95": percentile(xs, 95),
        "skew": (hi / lo) if lo > 0 else None,
    }


def aggregate(runs: Sequence[Run | RankRun]) -> dict[str, Any]:
    """Aggregate the runs of the ranks of one job into a JSON-ready dict (``format: genprof.aggregate``)."""
    ranks: list[RankRun] = []
    for i, r in enumerate(runs):
        if isinstance(r, RankRun):
            ranks.append(r)
        else:
            rk = rank_of(r)
            if rk is None:
                raise UsageError(f"run {r.run_id} ({r.name}) has no rank: not a rank file of a distributed run")
            ranks.append(RankRun(rk, r, f"<run {i}: {r.run_id}>"))
    job, job_src, world = check_same_job(ranks)
    ranks.sort(key=lambda rr: rr.rank)

    # per phase: total host time per rank
    phase_rank: dict[str, dict[int, float]] = {}
    for rr in ranks:
        for row in phase_table(rr.run, kinds=("phase", "generation")):
            if row.host.total is not None:
                phase_rank.setdefault(row.path, {})[rr.rank] = row.host.total
    phases: list[dict[str, Any]] = []
    stragglers: list[dict[str, Any]] = []
    for path, per in phase_rank.items():
        st = _stats(per)
        slow = max(per, key=lambda k: per[k])
        fast = min(per, key=lambda k: per[k])
        phases.append({"path": path, "per_rank_s": {str(k): v for k, v in sorted(per.items())}, **st,
                       "slowest_rank": slow, "fastest_rank": fast})
        if len(per) > 1 and st["skew"] is not None and st["skew"] >= STRAGGLER_SKEW:
            stragglers.append({"phase": path, "rank": slow, "seconds": per[slow], "behind_s": per[slow] - per[fast],
                               "behind_pct": 100.0 * (per[slow] / per[fast] - 1.0), "fastest_rank": fast})
    stragglers.sort(key=lambda s: -s["behind_s"])

    # per figure
    figures: dict[str, Any] = {}
    fig_by_rank = {rr.rank: compute_figures(rr.run, AGGREGATED_FIGURES) for rr in ranks}
    for name in AGGREGATED_FIGURES:
        fper: dict[int, float] = {}
        for rk, m in fig_by_rank.items():
            v = m[name].value
            if v is not None:
                fper[rk] = v
        missing = sorted(rk for rk, m in fig_by_rank.items() if m[name].value is None)
        entry: dict[str, Any] = {"unit": FIGURES[name].unit, "per_rank": {str(k): v for k, v in sorted(fper.items())},
                                 **_stats(fper)}
        if missing:
            entry["not_measured_ranks"] = missing
            reasons = {fig_by_rank[rk][name].reason for rk in missing}
            entry["reasons"] = sorted(r for r in reasons if r)
        if fper:
            entry["slowest_rank" if FIGURES[name].unit == "s" else "max_rank"] = max(fper, key=lambda k: fper[k])
        figures[name] = entry

    # steps: per-rank mean and per-index skew
    step_lists: dict[int, list[float]] = {}
    for rr in ranks:
        steps = sorted((s for s in rr.run.spans if s.kind == "step" and s.duration_s is not None),
                       key=lambda s: s.start_s)
        step_lists[rr.rank] = [s.duration_s or 0.0 for s in steps]
    means = {rk: sum(v) / len(v) for rk, v in step_lists.items() if v}
    n_common = min((len(v) for v in step_lists.values()), default=0)
    worst_idx, worst_skew = None, None
    for i in range(n_common):
        col = [step_lists[rk][i] for rk in step_lists]
        lo = min(col)
        if lo > 0:
            sk = max(col) / lo
            if worst_skew is None or sk > worst_skew:
                worst_idx, worst_skew = i, sk
    ms = _stats(means)
    steps_out = {
        "per_rank_mean_s": {str(k): v for k, v in sorted(means.items())},
        "mean_skew": ms["skew"],
        "slowest_rank": max(means, key=lambda k: means[k]) if means else None,
        "fastest_rank": min(means, key=lambda k: means[k]) if means else None,
        "worst_step_index": worst_idx,
        "worst_step_skew": worst_skew,
        "steps_compared": n_common,
    }

    # energy without double counting a shared GPU
    by_gpu: dict[str, list[tuple[int, float | None, str]]] = {}
    no_energy: list[int] = []
    for rr in ranks:
        e, how = energy_total(rr.run)
        uuids = [g.uuid for g in rr.run.gpus if g.uuid]
        if not rr.run.gpus:
            no_energy.append(rr.rank)
            continue
        key = ",".join(sorted(uuids)) if uuids else f"{rr.run.host.hostname or '?'}:rank{rr.rank}"
        by_gpu.setdefault(key, []).append((rr.rank, e, how))
    gpus: list[dict[str, Any]] = []
    total = 0.0
    any_energy = False
    for key, items in by_gpu.items():
        vals = [(rk, e) for rk, e, _ in items if e is not None]
        if not vals:
            gpus.append({"gpu": key, "ranks": [rk for rk, _, _ in items], "energy_j": None,
                         "reason": items[0][2]})
            continue
        rk, e = max(vals, key=lambda p: p[1] or 0.0)
        total += e or 0.0
        any_energy = True
        gpus.append({"gpu": key, "ranks": [r for r, _, _ in items], "energy_j": e, "counted_from_rank": rk,
                     "shared": len(items) > 1})
    energy = {
        "total_j": total if any_energy else None,
        "gpus": gpus,
        "ranks_without_gpu": no_energy,
        "method": "sum over distinct GPUs (by UUID); a GPU shared by several ranks is counted once, with the "
                  "largest of their counter differences",
    }
    present = sorted(rr.rank for rr in ranks)
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "job_id": job,
        "job_id_source": job_src,
        "world_size": world,
        "ranks": present,
        "missing_ranks": [r for r in range(world) if r not in present],
        "rank_files": [
            {"rank": rr.rank, "run_id": rr.run.run_id, "source": rr.source, "host": rr.run.host.hostname,
             "gpu_uuid": rr.run.gpus[0].uuid if rr.run.gpus else None,
             "local_rank": rr.run.distributed.local_rank if rr.run.distributed else dist_meta(rr.run).get("local_rank"),
             "end_status": rr.run.end.status}
            for rr in ranks
        ],
        "phases": phases,
        "stragglers": stragglers,
        "figures": figures,
        "steps": steps_out,
        "energy": energy,
    }


def write_aggregate(result: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    import json

    p = Path(path)
    atomic_write_text(p, json.dumps(result, indent=1, sort_keys=True, allow_nan=False))
    return p


__all__ = ["RankRun", "aggregate", "check_same_job", "job_id_of", "load_rank_files", "rank_of", "write_aggregate"]
