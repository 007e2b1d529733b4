"""``genprof summary``: usage table then phase table on stdout; clear errors."""

from __future__ import annotations

from genprof.cli.main import main
from render.runs import make_run


def test_summary_prints_both_tables_to_stdout(tmp_path, capsys):
    p = make_run().save(tmp_path / "run.json")
    assert main(["summary", str(p), "--width", "160"]) == 0
    out = capsys.readouterr().out
    assert out.index("Usage statistics") < out.index("Phases")
    for s in ("Initialization time", "6.000 s", "Generations", "NVIDIA H100 80GB HBM3", "encode_prompt", "38.00 GiB"):
        assert s in out, s


def test_cpu_run_shows_na(tmp_path, capsys):
    p = make_run(with_gpu=False).save(tmp_path / "run.json")
    assert main(["summary", str(p), "--width", "160"]) == 0
    out = capsys.readouterr().out
    assert "n/a" in out and "cpu" in out


def test_bad_file_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["summary", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a genprof run file" in err and "Traceback" not in err


def test_narrow_width_is_a_usage_error(tmp_path, capsys):
    p = make_run().save(tmp_path / "run.json")
    assert main(["summary", str(p), "--width", "10"]) == 2
    assert "--width" in capsys.readouterr().err
