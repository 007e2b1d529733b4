"""Distributed runs for real: torchrun with 2 CPU processes (gloo), rank files, gather, aggregate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genprof.analysis.aggregate import aggregate, load_rank_files
from genprof.integrations import distributed as D

ANALYSIS_TESTS = Path(__file__).resolve().parents[1] / "analysis"

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[2])
    import torch
    import torch.distributed as dist
    from synth import make_run
    from genprof.integrations.distributed import detect, gather, stamp

    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    info = detect()
    assert info is not None and info["source"] == "torch.distributed" and info["backend"] == "gloo", info
    x = torch.ones(4) * (rank + 1)
    dist.all_reduce(x)
    run = make_run(run_id=f"r{rank}", uuid=f"GPU-{rank}", step_s=0.1 * (rank + 1))
    stamp(run, info)
    runs = gather(run)
    run.save(f"{out}/rank{rank}.json")
    if rank == 0:
        assert runs is not None and [r.distributed.rank for r in runs] == [0, 1]
        json.dump({"gathered": [r.run_id for r in runs], "sum": float(x[0])}, open(f"{out}/gathered.json", "w"))
    else:
        assert runs is None
    dist.destroy_process_group()
    """
)


def _env_without_dist() -> dict[str, str]:
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID",
            "GENPROF_JOB_ID"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_detect_without_torchrun_is_none_and_does_not_import_torch() -> None:
    code = "import sys, genprof.integrations.distributed as d; print(d.detect(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=_env_without_dist(), capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["None", "False"]


def test_detect_from_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "0",
                 "TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("GENPROF_JOB_ID", raising=False)
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_initialized():  # pragma: no cover
            pytest.skip("a process group is initialised in this test process")
    d = D.detect()
    assert d is not None
    assert (d["rank"], d["world_size"], d["local_rank"], d["job_id"], d["job_id_source"]) == (3, 8, 1, "abc",
                                                                                              "TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert D.job_id_from_env() == ("h:29500", "MASTER_ADDR:MASTER_PORT")
    monkeypatch.setenv("GENPROF_JOB_ID", "mine")
    assert D.job_id_from_env() == ("mine", "GENPROF_JOB_ID")
    info = D.distributed_info(d)
    assert info is not None and info.rank == 3 and info.world_size == 8


def test_gather_without_process_group_says_how_to_fix() -> None:
    pytest.importorskip("torch")
    from genprof.errors import UsageError
    from genprof.model import Run

    with pytest.raises(UsageError, match="init_process_group"):
        D.gather(Run(name="x", run_id="x", started_at="", started_unix_s=0.0))


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_gather_and_aggregate(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = _env_without_dist()
    env["PYTHONPATH"] = os.pathsep.join([str(ANALYSIS_TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(script), str(out),
         str(ANALYSIS_TESTS)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    g = json.loads((out / "gathered.json").read_text())
    assert g == {"gathered": ["r0", "r1"], "sum": 3.0}
    (out / "gathered.json").unlink()
    ranks = load_rank_files([out])
    agg = aggregate(ranks)
    assert agg["ranks"] == [0, 1] and agg["world_size"] == 2
    assert agg["job_id"] == "r0" and agg["job_id_source"] == "gather"
    assert agg["steps"]["slowest_rank"] == 1
    assert agg["steps"]["mean_skew"] == pytest.approx(2.0)
    assert {r["local_rank"] for r in agg["rank_files"]} == {0, 1}


NCCL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    import genprof
    from genprof.integrations.distributed import detect, gather, stamp

    out = sys.argv[1]
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    x = torch.randn(2048, 2048, device="cuda")
    with genprof.Profiler(name="nccl-job", tags={"model": "matmul"}) as prof:
        with prof.generation():
            for _ in prof.steps(range(10), phase="denoise"):
                for _ in range(4 * (rank + 1)):
                    x = (x @ x).tanh()
                dist.all_reduce(x)
    run = prof.run
    stamp(run)
    runs = gather(run)
    run.save(f"{out}/rank{rank}.json")
    if rank == 0:
        assert runs is not None and len(runs) == 2
    dist.destroy_process_group()
    """
)


@pytest.mark.gpu
@pytest.mark.slow
def test_torchrun_two_gpus_nccl(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    script = tmp_path / "job.py"
    script.write_text(NCCL_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = _env_without_dist()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(script), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    agg = aggregate(load_rank_files([out]))
    assert agg["ranks"] == [0, 1] and agg["job_id_source"] == "gather"
    uuids = {r["gpu_uuid"] for r in agg["rank_files"]}
    assert len(uuids) == 2 and None not in uuids  # each rank sampled its own GPU
    assert agg["figures"]["peak_reserved_bytes"]["min"] is not None
    if agg["energy"]["total_j"] is not None:
        assert len(agg["energy"]["gpus"]) == 2
