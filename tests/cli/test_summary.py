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


def test_summary_at_columns_80_loses_nothing_silently(tmp_path, capsys, monkeypatch):
    """Every line fits 80 columns; every phase-table column is either shown or named in the caption."""
    from genprof.render.console import _PHASE_COLUMNS

    monkeypatch.setenv("COLUMNS", "80")
    for run in (make_run(), make_run(with_gpu=False), make_run(with_blocks=True)):
        p = run.save(tmp_path / "run.json")
        assert main(["summary", str(p)]) == 0
        out = capsys.readouterr().out
        assert max(len(line) for line in out.splitlines()) <= 80
        phases = out.split("Phases", 1)[1]
        header = next(line for line in phases.splitlines() if line.strip().startswith("path"))
        caption = " ".join(phases.split()).split("no values, left out:", 1)[-1]
        for col in _PHASE_COLUMNS:
            if col == "peak RSS" and any(sp.peak_allocated_bytes is not None for sp in run.spans):
                continue  # shown only when no GPU memory was measured
            assert col in header or col in caption, (col, header, caption)
        for name in ("encode_prompt", "denoise", "decode"):
            assert name in phases  # names wrap, never cut
