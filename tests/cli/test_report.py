"""``genprof report``: outputs, default path, clear errors for bad run files."""

from __future__ import annotations

import json

import pytest

from genprof.cli.main import main
from render.runs import make_run


@pytest.fixture
def run_file(tmp_path):
    return make_run().save(tmp_path / "run.json")


def test_default_writes_html_next_to_the_run(run_file, capsys):
    assert main(["report", str(run_file)]) == 0
    out = run_file.with_suffix(".html")
    assert out.exists() and out.read_text().startswith("<!DOCTYPE html>")
    assert capsys.readouterr().out.strip() == str(out)


def test_all_outputs(run_file, tmp_path):
    html, trace, rep = tmp_path / "o.html", tmp_path / "o.trace.json", tmp_path / "o.report.json"
    rc = main(["report", str(run_file), "--html", str(html), "--trace", str(trace), "--json", str(rep)])
    assert rc == 0
    assert "genprof-data" in html.read_text()
    assert json.loads(trace.read_text())["traceEvents"]
    assert json.loads(rep.read_text())["format"] == "genprof.report"
    assert not run_file.with_suffix(".html").exists()  # only what was asked for


def test_trace_only(run_file, tmp_path):
    assert main(["report", str(run_file), "--trace", str(tmp_path / "t.json")]) == 0
    assert not run_file.with_suffix(".html").exists()


def test_compare_adds_a_section(run_file, tmp_path):
    pytest.importorskip("genprof.analysis.compare")
    base = make_run(step_s=0.3, seed=5).save(tmp_path / "base.json")
    out = tmp_path / "c.html"
    assert main(["report", str(run_file), "--html", str(out), "--compare", str(base)]) == 0
    assert 'id="comparison"' in out.read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"x": 1}', "not a genprof run file"),
        ('{"format": "genprof.run", "schema_version": 1, "name": "a"', "truncated"),
        ("", "empty file"),
    ],
)
def test_bad_run_file_exit_2(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_run_file_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
