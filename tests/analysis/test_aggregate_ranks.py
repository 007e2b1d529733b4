from __future__ import annotations

import json
from pathlib import Path

import pytest
from synth import make_run

from genprof.analysis.aggregate import aggregate, load_rank_files, write_aggregate
from genprof.errors import UsageError


def _ranks(n: int = 4, job: str = "job-1", shared_gpu: bool = False, slow_rank: int | None = None) -> list:
    runs = []
    for r in range(n):
        runs.append(
            make_run(run_id=f"{job}-r{r}", rank=r, world_size=n, job_id=job,
                     uuid="GPU-shared" if shared_gpu else f"GPU-{r}",
                     step_s=0.2 if r == slow_rank else 0.1, phase_energy_w=100.0 + r)
        )
    return runs


def test_per_phase_stats_and_straggler() -> None:
    agg = aggregate(_ranks(4, slow_rank=2))
    assert agg["ranks"] == [0, 1, 2, 3] and agg["missing_ranks"] == []
    den = next(p for p in agg["phases"] if p["path"] == "generation/denoise")
    assert den["slowest_rank"] == 2
    assert den["skew"] == pytest.approx(2.0, rel=0.01)
    assert den["min"] < den["mean"] < den["max"]
    assert agg["stragglers"][0]["rank"] == 2
    assert agg["steps"]["mean_skew"] == pytest.approx(2.0)
    assert agg["steps"]["slowest_rank"] == 2
    fig = agg["figures"]["step_time_mean_s"]
    assert fig["max"] == pytest.approx(0.2) and fig["min"] == pytest.approx(0.1)


def test_energy_sums_distinct_gpus() -> None:
    runs = _ranks(2)
    agg = aggregate(runs)
    expect = sum(r.metadata["energy"]["total_j"] for r in runs)
    assert agg["energy"]["total_j"] == pytest.approx(expect)


def test_shared_gpu_energy_counted_once() -> None:
    runs = _ranks(2, shared_gpu=True)
    agg = aggregate(runs)
    assert agg["energy"]["total_j"] == pytest.approx(max(r.metadata["energy"]["total_j"] for r in runs))
    assert agg["energy"]["gpus"][0]["shared"] is True


def test_refuses_different_jobs() -> None:
    runs = _ranks(2, job="a") + _ranks(2, job="b")[1:]
    with pytest.raises(UsageError, match="different runs"):
        aggregate(runs)


def test_refuses_duplicate_rank_and_non_rank_files() -> None:
    a = _ranks(2)
    dup = make_run(run_id="other", rank=1, world_size=2, job_id="job-1")
    with pytest.raises(UsageError, match="two files for rank 1"):
        aggregate([*a, dup])
    with pytest.raises(UsageError, match="no rank"):
        aggregate([make_run()])


def test_missing_figures_are_listed_not_zero() -> None:
    runs = _ranks(2)
    runs[1] = make_run(run_id="cpu", rank=1, world_size=2, job_id="job-1", gpu=False)
    agg = aggregate(runs)
    pk = agg["figures"]["peak_reserved_bytes"]
    assert pk["not_measured_ranks"] == [1]
    assert list(pk["per_rank"]) == ["0"]
    assert agg["energy"]["ranks_without_gpu"] == [1]


def test_files_and_folders(tmp_path: Path) -> None:
    for r in _ranks(3):
        r.save(tmp_path / f"rank{r.distributed.rank}.json")
    out = tmp_path / "merged.json"
    write_aggregate(aggregate(load_rank_files([tmp_path])), out)
    # the merged file in the same folder is skipped on the next pass
    again = aggregate(load_rank_files([tmp_path]))
    assert again["ranks"] == [0, 1, 2]
    assert json.loads(out.read_text())["format"] == "genprof.aggregate"
    (tmp_path / "rank9.json").write_text("{broken")
    with pytest.raises(UsageError, match="rank9.json"):
        load_rank_files([tmp_path])
    with pytest.raises(UsageError, match="no such file"):
        load_rank_files([tmp_path / "nope"])
