from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from synth import make_run  # noqa: E402

from genprof.cli.main import main  # noqa: E402


def _write(folder: Path, job: str, n: int, slow: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(n):
        make_run(run_id=f"{job}{r}", rank=r, world_size=n, job_id=job, uuid=f"GPU-{r}",
                 step_s=0.15 if r == slow else 0.1).save(folder / f"rank{r}.json")


def test_aggregate_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path / "job", "j", 4, slow=3)
    out = tmp_path / "merged.json"
    assert main(["aggregate", str(tmp_path / "job"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 of 4 ranks" in text and "straggler: rank 3" in text
    d = json.loads(out.read_text())
    assert d["steps"]["slowest_rank"] == 3


def test_aggregate_refuses_mixed_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path / "a", "a", 2)
    _write(tmp_path / "b", "b", 2)
    assert main(["aggregate", str(tmp_path / "a" / "rank0.json"), str(tmp_path / "b" / "rank1.json")]) == 2
    assert "different runs" in capsys.readouterr().err
