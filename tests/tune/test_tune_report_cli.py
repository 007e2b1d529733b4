"""GIVEN a saved ``genprof tune`` result WHEN ``genprof report`` reads it THEN it prints the tune table,
or writes the tune page with --html, instead of refusing it as a damaged run file."""

from __future__ import annotations

from pathlib import Path

import pytest

from genprof.cli.main import main
from genprof.tune.recipes import parse_recipe
from genprof.tune.result import CandidateResult, TuneResult


def _saved(tmp_path: Path) -> Path:
    base = CandidateResult(parse_recipe("default"), status="ok", median_s=10.0, peak_reserved_bytes=110)
    fast = CandidateResult(parse_recipe("vae_tiling"), status="ok", median_s=8.0, peak_reserved_bytes=90)
    r = TuneResult(model="sdxl", gpu="NVIDIA H200", device="cuda", budget_bytes=None,
                   generation={"num_inference_steps": 4}, candidates=[base, fast])
    out = tmp_path / "tune.json"
    r.save(out)
    return out


def test_report_prints_the_tune_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(_saved(tmp_path))]) == 0
    assert "vae_tiling" in capsys.readouterr().out


def test_report_writes_the_tune_page(tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    page = tmp_path / "tune.html"
    assert main(["report", str(_saved(tmp_path)), "--html", str(page)]) == 0
    assert "<td>vae_tiling</td>" in page.read_text()


def test_the_page_has_a_row_for_the_second_baseline_and_no_empty_skipped_list(tmp_path: Path) -> None:
    from genprof.render.tune_html import rows, to_html

    base = CandidateResult(parse_recipe("default"), status="ok", median_s=10.0, peak_reserved_bytes=110)
    again = CandidateResult(parse_recipe("default"), status="ok", median_s=9.0, peak_reserved_bytes=110)
    r = TuneResult(model="sdxl", gpu="NVIDIA H200", device="cuda", budget_bytes=None,
                   generation={"num_inference_steps": 4}, candidates=[base], baseline_again=again)
    d = r.to_dict()
    assert [x[0] for x in rows(d)] == ["default", "default (measured again, last)"]
    assert rows(d)[1][2].startswith("9")
    page = to_html(d)
    assert "Skipped" not in page
    d["skipped"] = [{"name": "attention=fa3", "reason": "FA3 not installed"}]
    assert "<h2>Skipped</h2><ul><li>attention=fa3: FA3 not installed</li></ul>" in to_html(d)
