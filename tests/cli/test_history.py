from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from synth import make_run  # noqa: E402

from genprof.cli.main import main  # noqa: E402


def _files(tmp_path: Path) -> list[str]:
    out = []
    for i, s in enumerate([0.1, 0.101, 0.099, 0.1, 0.14]):
        p = tmp_path / f"r{i}.json"
        make_run(run_id=f"r{i}", step_s=s, started_unix_s=1e9 + i, tags={"gpu": "h100" if i else "a100"}).save(p)
        out.append(str(p))
    return out


def test_add_list_trend_regressions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "h.sqlite")
    assert main(["history", "--db", db, "add", *_files(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["history", "--db", db, "--json", "--tag", "gpu=h100"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == ["r1", "r2", "r3", "r4"]
    assert main(["history", "--db", db, "--figure", "step_time_mean_s"]) == 0
    assert "+40.0%" in capsys.readouterr().out
    assert main(["history", "--db", db, "--regressions", "--figure", "step_time_mean_s", "--json"]) == 0
    regs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in regs] == ["r4"]


def test_env_var_selects_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GENPROF_HISTORY", str(tmp_path / "env.sqlite"))
    assert main(["history", "add", _files(tmp_path)[0]]) == 0
    assert (tmp_path / "env.sqlite").exists()
    assert "env.sqlite" in capsys.readouterr().out


def test_corrupt_store_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.sqlite"
    db.write_bytes(b"\x00garbage" * 500)
    assert main(["history", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "Traceback" not in err


def test_add_without_files_or_bad_tag_exit_2(tmp_path: Path) -> None:
    assert main(["history", "--db", str(tmp_path / "h"), "add"]) == 2
    assert main(["history", "--db", str(tmp_path / "h"), "--tag", "nokey"]) == 2


def test_options_go_before_or_after_the_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _files(tmp_path)
    db_after, db_before = tmp_path / "after.sqlite", tmp_path / "before.sqlite"
    assert main(["history", "add", "--db", str(db_after), files[0], files[1]]) == 0
    assert main(["history", "add", files[2], "--db", str(db_after)]) == 0
    assert main(["history", "--db", str(db_before), "add", files[3]]) == 0
    capsys.readouterr()
    assert main(["history", "list", "--db", str(db_after), "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r0", "r1", "r2"]
    assert main(["history", "--json", "--db", str(db_before)]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r3"]
    # an option after the action does not reset one given before it
    assert main(["history", "--db", str(db_after), "list", "--json", "--tag", "gpu=h100"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r1", "r2"]


def test_run_files_without_add_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["history", "--db", str(tmp_path / "h"), _files(tmp_path)[0]])
    assert exc.value.code == 2
