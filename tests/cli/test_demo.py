"""``genprof demo`` on CPU: builds tiny pipelines, writes a loadable run file and the HTML report."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from genprof.cli.main import main  # noqa: E402
from genprof.model import load_run  # noqa: E402


def test_demo_all_writes_run_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu", "--steps", "2"]) == 0
    text = capsys.readouterr().out
    runs = list(out.glob("genprof-demo-*.json"))
    assert len(runs) == 1 and f"run file: {runs[0]}" in text
    run = load_run(runs[0])
    assert run.end.status == "ok"
    gens = run.metadata["generations"]
    assert [g["pipeline_class"] for g in gens] == ["WanPipeline", "StableDiffusionPipeline"]
    assert [g["steps"] for g in gens] == [2, 2]
    assert gens[0]["output_frames"] == 9 and gens[0]["fps"] == 16
    html = runs[0].with_suffix(".html")
    assert html.is_file() and f"report:   {html}" in text
    assert "<html" in html.read_text(encoding="utf-8").lower()


def test_demo_full_needs_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size", "full", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "needs --device cuda" in capsys.readouterr().err


def test_demo_rejects_bad_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "--steps" in capsys.readouterr().err
