from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from synth import make_run  # noqa: E402

from genprof.cli.main import main  # noqa: E402


def test_compare_prints_tables_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    make_run(run_id="a", step_times=[0.1, 0.11, 0.09] * 10, tags={"model": "m1"}).save(a)
    make_run(run_id="b", step_times=[0.08, 0.085, 0.075] * 10, tags={"model": "m2"}).save(b)
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--json", str(out), "--width", "220"]) == 0
    text = capsys.readouterr().out
    assert "warning: model differs" in text
    assert "step_time_mean_s" in text and "better" in text
    d = json.loads(out.read_text())
    step = next(c for c in d["overall"] if c["name"] == "step_time_mean_s")
    assert step["significant"] is True and step["change_pct"] < -15


def test_compare_bad_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.json"
    make_run().save(a)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "genprof.run", "schema_version": 1')
    assert main(["compare", str(a), str(bad)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_compare_at_80_columns_keeps_names_says_factor_direction_and_warns_on_noise(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN identical work whose steps are noisy (the same times shuffled, one outlier each)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    make_run(run_id="a", step_times=[0.1, 0.5, 0.1, 0.12, 0.09, 0.1]).save(a)
    make_run(run_id="b", step_times=[0.5, 0.1, 0.12, 0.1, 0.1, 0.09]).save(b)
    assert main(["compare", str(a), str(b), "--width", "80"]) == 0
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = "".join(text.split())
    # names fold inside their cells instead of being cut with an ellipsis
    assert "\u2026" not in text and "step_time_mean_s" in flat and "generation/denoise" in flat
    assert "factor:before/afterforfigureswherelowerisbetter" in flat and ">1=afterisbetter" in flat
    assert "run-to-runnoiseislargerthanthechange" in flat and "Repeateachrun" in flat
