"""``genprof diagnose script.py``: the script runs in a profiler with the window on (CPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

pytest.importorskip("torch")

from genprof.cli import diagnose  # noqa: E402
from genprof.errors import UsageError  # noqa: E402
from genprof.model import load_run  # noqa: E402

SCRIPT = """
import torch, genprof
p = genprof.current_profiler()
m = torch.nn.Linear(8, 8)
x = torch.ones(2, 8)
for _ in p.steps(range(5)):
    x = m(x)
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    diagnose.register(ap.add_subparsers())
    return ap


def test_diagnose_command_records_the_window_in_the_run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "gen.py"
    script.write_text(SCRIPT)
    args = _parser().parse_args(["diagnose", "--window", "steps:2-3", "--out", str(tmp_path / "runs"), str(script)])
    assert args.func(args) == 0
    runs = list((tmp_path / "runs").glob("*.json"))
    run = load_run(runs[0])
    d = run.metadata["diagnosis"]
    assert d["window"] == "steps:2-3" and d["steps"] == [2, 3] and d["cpu_ops"]
    assert "GPU figures not measured" in capsys.readouterr().err


def test_bad_window_is_refused_before_the_script_runs(tmp_path: Path) -> None:
    script = tmp_path / "gen.py"
    script.write_text("raise SystemExit('must not run')")
    args = _parser().parse_args(["diagnose", "--window", "2-3", str(script)])
    with pytest.raises(UsageError, match="steps:A-B"):
        args.func(args)
