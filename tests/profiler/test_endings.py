"""Every ending of a run, under ``genprof run`` and the direct API, leaves a valid run file.

Each case runs a child Python process that opens ``generation`` > ``denoise`` > ``step[1]``,
then writes ``ready`` on stdout and blocks reading stdin. The parent waits for ``ready`` (no
sleeps), then sends the signal, or closes stdin to let the child raise. The run file must load
and say how the run ended and which spans were open.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genprof.model import load_run

SRC = str(Path(__file__).resolve().parents[1] / "src")

# the body both modes run; ``prof`` is the active profiler
BODY = textwrap.dedent("""
    import sys

    def body(prof, ending, wrapped):
        if wrapped:
            with prof.generation():
                loop(prof, ending)
        else:
            loop(prof, ending)

    def loop(prof, ending):
            for i in prof.steps(range(3)):
                if i == 1:
                    print("ready", flush=True)
                    sys.stdin.readline()  # the parent signals here, or closes stdin
                    if ending == "exception":
                        raise ValueError("failed on purpose")
                    if ending == "oom":
                        # torch's CUDA OOM is a RuntimeError saying so; no GPU needed
                        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
                    if ending == "memoryerror":
                        raise MemoryError("host out of memory")
                    if ending == "exit0":
                        sys.exit(0)
                    if ending == "exit4":
                        sys.exit(4)
""")

API_SCRIPT = BODY + textwrap.dedent("""
    from genprof import Profiler
    ending, wrapped, out = sys.argv[1], sys.argv[2] == "wrapped", sys.argv[3]
    with Profiler("endings", output_dir=out) as prof:
        body(prof, ending, wrapped)
""")

CLI_SCRIPT = BODY + textwrap.dedent("""
    import genprof
    body(genprof.current_profiler(), sys.argv[1], sys.argv[2] == "wrapped")
""")

SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}


def _run_child(tmp_path: Path, mode: str, ending: str, wrapped: bool = False) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "runs"
    shape = "wrapped" if wrapped else "bare"
    script = tmp_path / "endings_script.py"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if mode == "api":
        script.write_text(API_SCRIPT, encoding="utf-8")
        cmd = [sys.executable, str(script), ending, shape, str(out)]
    else:
        script.write_text(CLI_SCRIPT, encoding="utf-8")
        cmd = [sys.executable, "-m", "genprof", "run", "--out", str(out), str(script), ending, shape]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
    if ending in SIGNALS:
        proc.send_signal(SIGNALS[ending])
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, (files, stderr)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), files[0]


OPEN = ["denoise", "denoise/step[1]"]
OPEN_WRAPPED = ["generation", "generation/denoise", "generation/denoise/step[1]"]

# ending -> (status, exception_type, message substring, exit code under genprof run)
EXPECTED = {
    "exception": ("exception", "ValueError", "failed on purpose", 1),
    "oom": ("oom", "RuntimeError", "out of memory", 1),
    "memoryerror": ("exception", "MemoryError", "host out of memory", 1),
    "sigint": ("interrupted", "KeyboardInterrupt", "", 130),
    "sigterm": ("interrupted", "SystemExit", "SIGTERM", 143),
    "exit4": ("exception", "SystemExit", "4", 4),
}


def _check(res: subprocess.CompletedProcess[str], path: Path, mode: str, ending: str, open_spans: list[str]) -> None:
    run = load_run(path)
    status, etype, msg, code = EXPECTED[ending]
    assert run.end.status == status, res.stderr
    assert run.end.exception_type == etype
    assert msg in (run.end.message or "")
    assert run.end.open_spans == open_spans, res.stderr
    assert any(s.name == "denoise" for s in run.spans)  # the open phase is kept, with its time so far
    steps = sorted((s.index, s.status) for s in run.spans if s.kind == "step")
    assert steps[0] == (0, "ok") and steps[1][0] == 1 and steps[1][1] != "ok"
    if mode == "cli":
        assert res.returncode == code, res.stderr
        assert f"genprof: run file: {path}" in res.stderr
        assert f"run ended {status}" in res.stderr
        assert open_spans[-1] in res.stderr
        if ending == "exit4":
            assert run.metadata["script_exit_code"] == 4
        if ending == "sigint":
            assert "genprof: interrupted" in res.stderr


@pytest.mark.parametrize("mode", ["cli", "api"])
@pytest.mark.parametrize("ending", sorted(EXPECTED))
def test_each_ending_is_recorded_with_its_open_spans(tmp_path: Path, mode: str, ending: str) -> None:
    res, path = _run_child(tmp_path, mode, ending)
    _check(res, path, mode, ending, OPEN)


@pytest.mark.parametrize("mode", ["cli", "api"])
@pytest.mark.parametrize("ending", ["exception", "sigterm"])
def test_the_open_step_is_listed_inside_an_outer_span(tmp_path: Path, mode: str, ending: str) -> None:
    res, path = _run_child(tmp_path, mode, ending, wrapped=True)
    _check(res, path, mode, ending, OPEN_WRAPPED)


@pytest.mark.parametrize("mode", ["cli", "api"])
def test_sys_exit_0_is_an_ok_ending(tmp_path: Path, mode: str) -> None:
    res, path = _run_child(tmp_path, mode, "exit0")
    run = load_run(path)
    assert run.end.status == "ok" and run.end.exception_type is None, res.stderr
    assert "script_exit_code" not in run.metadata
    if mode == "cli":
        assert res.returncode == 0 and "run ended ok" in res.stderr


@pytest.mark.parametrize("mode", ["cli", "api"])
def test_sigkill_leaves_the_partial_file_readable(tmp_path: Path, mode: str) -> None:
    res, path = _run_child(tmp_path, mode, "sigkill")
    assert res.returncode == -signal.SIGKILL
    run = load_run(path)  # the file written when the run started: valid, and says it never finished
    assert run.end.status == "running"
    json.loads(path.read_text(encoding="utf-8"))


STOP_SCRIPT = textwrap.dedent("""
    import sys
    import genprof.render.reports as reports
    from genprof import Profiler

    original = reports.write_reports

    def blocking_write_reports(*args, **kwargs):
        print("ready", flush=True)  # inside Profiler.stop(), after the run file, before the reports
        sys.stdin.readline()
        return original(*args, **kwargs)

    reports.write_reports = blocking_write_reports
    with Profiler("endings", output_dir=sys.argv[1], generate_final_report=True, report_format="html") as prof:
        with prof.phase("work"):
            pass
""")


def test_sigterm_while_writing_reports_says_which_outputs_were_not_written(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    script = tmp_path / "stop_script.py"
    script.write_text(STOP_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    (path,) = out.glob("*.json")
    run = load_run(path)
    assert run.end.status == "ok"  # the run itself had ended normally
    missing = run.metadata["outputs_not_written"]
    assert any("html" in str(k) for k in missing), missing
    assert "SIGTERM" in json.dumps(missing)
    assert "not written" in stderr and ".html" in stderr


def test_a_sampler_that_dies_is_recorded_in_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from genprof import Profiler
    from genprof.probes import host

    died = threading.Event()

    def garbage_read(self: object, *, cpu: bool = True, memory: bool = True) -> dict[str, object]:
        died.set()
        return {"cpu_pct": "not a number"}  # the sampler's float() fails: its thread ends

    monkeypatch.setattr(host.HostProbe, "read", garbage_read)
    with Profiler("sampler-dies", monitor_cpu_usage=True, cpu_monitor_interval=0.01) as prof:
        assert died.wait(10.0)
        with prof.phase("work"):
            pass
    run = prof.run
    fail = run.metadata["sampler_failure"]
    assert 0 <= fail["at_s"] <= run.duration_s
    assert "ValueError" in fail["reason"] and "not a number" in fail["reason"]
    assert "not a number" in run.unavailable["sampler"]
    (ev,) = [e for e in run.events if e.name == "sampler_failed"]
    assert ev.t_s == pytest.approx(fail["at_s"]) and ev.attributes["reason"] == fail["reason"]
    assert run.end.status == "ok"  # the run itself went on; the file says what was lost


def test_a_failing_report_writer_is_named_in_the_run_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genprof import Profiler
    from genprof.render import html as html_mod

    def broken(*args: object, **kwargs: object) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(html_mod, "write_html", broken)
    with Profiler("broken-report", output_dir=str(tmp_path), generate_final_report=True,
                  report_format="both") as prof:
        with prof.phase("work"):
            pass
    assert prof.run_path is not None
    run = load_run(prof.run_path)  # rewritten after the failure: it says what is missing
    missing = run.metadata["outputs_not_written"]
    # the HTML failed first, so the JSON report after it was never written either
    assert sorted(Path(e["path"]).name.split(".", 1)[1] for e in missing) == ["html", "report.json"]
    assert all(e["reason"] == "OSError: disk full" for e in missing)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".html" or p.name.endswith(".report.json")]
