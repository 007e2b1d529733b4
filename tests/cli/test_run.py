"""``genprof run script.py``: the script runs with a profiler active; the run file survives failures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from genprof.cli.main import main
from genprof.model import load_run

SCRIPT = """
import json, sys
import genprof
prof = genprof.current_profiler()
json.dump({"argv": sys.argv, "name": __name__, "active": prof is not None}, open(sys.argv[1], "w"))
with genprof.phase("work"):
    pass
mode = sys.argv[2]
if mode == "fail":
    raise ValueError("script failed on purpose")
if mode == "exit3":
    sys.exit(3)
"""


def _script(tmp_path: Path) -> Path:
    p = tmp_path / "user_script.py"
    p.write_text(SCRIPT, encoding="utf-8")
    return p


def test_run_sets_argv_and_profiler_and_writes_run_file(tmp_path: Path) -> None:
    script = _script(tmp_path)
    info = tmp_path / "info.json"
    out = tmp_path / "runs"
    argv_before = sys.argv[:]
    assert main(["run", "--out", str(out), "--name", "mine", str(script), str(info), "ok"]) == 0
    assert sys.argv == argv_before
    seen = json.loads(info.read_text())
    assert seen == {"argv": [str(script), str(info), "ok"], "name": "__main__", "active": True}
    (f,) = out.glob("mine-*.json")
    run = load_run(f)
    assert run.end.status == "ok" and [s.name for s in run.spans] == ["work"]


def test_failing_script_still_leaves_the_run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(tmp_path)
    out = tmp_path / "runs"
    assert main(["run", "--out", str(out), str(script), str(tmp_path / "i.json"), "fail"]) == 1
    assert "script failed on purpose" in capsys.readouterr().err
    (f,) = out.glob("user_script-*.json")
    run = load_run(f)
    assert run.end.status == "exception" and run.end.exception_type == "ValueError"


def test_exit_code_of_the_script_is_returned(tmp_path: Path) -> None:
    script = _script(tmp_path)
    out = tmp_path / "runs"
    assert main(["run", "--out", str(out), str(script), str(tmp_path / "i.json"), "exit3"]) == 3
    (f,) = out.glob("user_script-*.json")
    assert load_run(f).metadata["script_exit_code"] == 3


def test_missing_script_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_with_an_instrumented_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    script = tmp_path / "pipe_script.py"
    script.write_text(
        "import genprof\n"
        "from genprof.integrations.demo import build_pipeline\n"
        "d = build_pipeline('sd', device='cpu')\n"
        "genprof.instrument(d.pipe)\n"
        "d.pipe(**d.call_kwargs)\n",
        encoding="utf-8",
    )
    out = tmp_path / "runs"
    assert main(["run", "--out", str(out), str(script)]) == 0
    (f,) = out.glob("pipe_script-*.json")
    run = load_run(f)
    assert run.metadata["generations"][0]["steps"] == 3
