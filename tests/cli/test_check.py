from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from synth import make_run  # noqa: E402

from genprof.cli.main import main  # noqa: E402


@pytest.fixture()
def run_file(tmp_path: Path) -> Path:
    p = tmp_path / "run.json"
    make_run(steps=40, step_s=0.25).save(p)
    return p


def test_passing_targets_exit_0(run_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", str(run_file), "--target", "generation_time_s<=60", "-t", "peak_reserved_bytes<=16GiB"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "score: 100.0/100" in out


def test_failed_target_exit_1_with_diagnostics(run_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "rep.json"
    rc = main(["check", str(run_file), "--target", "generation_time_s<=5", "--json", str(out_json), "--findings"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAIL" in out and "generation/denoise" in out
    rep = json.loads(out_json.read_text())
    assert rep["all_hold"] is False and rep["results"][0]["phase"] == "generation/denoise"
    assert "dominant_phase" not in out  # findings print titles, not ids
    assert "takes" in out


def test_not_measured_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "cpu.json"
    make_run(gpu=False).save(p)
    assert main(["check", str(p), "--target", "peak_reserved_bytes<=1GiB"]) == 1
    assert "not measured: no CUDA device" in capsys.readouterr().out


@pytest.mark.parametrize("argv_tail", [["--target", "bogus<=1"], ["--target", "generation_time_s<=fast"], []])
def test_bad_input_exit_2(run_file: Path, argv_tail: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(run_file), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genprof: error:") and "Traceback" not in err


def test_missing_run_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope.json"), "--target", "generation_time_s<=5"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_targets_from_run_config(tmp_path: Path) -> None:
    r = make_run()
    r.config["targets"] = {"generation_time_s": 0.5}
    p = tmp_path / "r.json"
    r.save(p)
    assert main(["check", str(p)]) == 1


def test_block_loop_with_fps_is_measured_by_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from block_loop import block_loop_run

    # GIVEN a saved block loop (36 frames at 16 fps in 1.1 s of blocks), one block over its deadline
    p = tmp_path / "loop.json"
    block_loop_run(generation=False, block_s=(0.7, 0.2, 0.2, 0.2)).save(p)
    rep_path = tmp_path / "rep.json"
    rc = main(["check", str(p), "-t", "output_fps>=16", "-t", "real_time_factor>=1", "-t", "deadline_misses<=0",
               "-t", "time_to_first_frame_s<=1", "-t", "blocks_per_s>=2", "--json", str(rep_path)])
    capsys.readouterr()
    rep = json.loads(rep_path.read_text())
    by = {r["target"]["figure"]: r for r in rep["results"]}
    assert rc == 1  # the deadline miss fails
    assert by["output_fps"]["measured"] == pytest.approx(36 / 1.3) and by["output_fps"]["status"] == "pass"
    assert by["real_time_factor"]["measured"] == pytest.approx(2.25 / 1.3)
    assert by["deadline_misses"]["measured"] == 1 and by["deadline_misses"]["status"] == "fail"
    assert by["time_to_first_frame_s"]["measured"] == pytest.approx(0.7)
    assert by["blocks_per_s"]["status"] == "pass"


def test_check_tables_at_80_columns_cut_no_name(run_file: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    main(["check", str(run_file), "-t", "peak_gpu_memory_used_bytes<=1GiB", "-t", "energy_per_generation_j<=1"])
    main(["check", str(run_file), "--list-figures"])
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "\u2026" not in text
    flat = "".join(text.split())
    for name in ("peak_gpu_memory_used_bytes", "energy_per_generation_j", "time_to_first_frame_s", "deadline_misses"):
        assert name in flat
