"""write_reports: which files each report_format writes, and the JSON report's layout."""

from __future__ import annotations

import json

import pytest
from runs import make_run

from genprof.analysis.findings import Finding
from genprof.errors import UsageError
from genprof.model import Run
from genprof.render.reports import (
    REPORT_SCHEMA_VERSION,
    default_stem,
    report_dict,
    summary_figures,
    write_reports,
)


@pytest.mark.parametrize(
    ("fmt", "suffixes"),
    [("html", [".html"]), ("json", [".report.json"]), ("both", [".html", ".report.json"]), ("none", [])],
)
def test_formats_write_the_right_files(tmp_path, fmt, suffixes):
    paths = write_reports(make_run(), tmp_path, fmt, stem="r")
    assert [p.name for p in paths] == [f"r{s}" for s in suffixes]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"r{s}" for s in suffixes)


def test_unknown_format_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="allowed values: html, json, both, none"):
        write_reports(make_run(), tmp_path, "pdf")


def test_json_report_layout(tmp_path):
    f = Finding("r1", "t", "info", "e", "c", "s")
    (p,) = write_reports(make_run(), tmp_path, "json", findings=[f])
    text = p.read_text()
    d = json.loads(text)
    assert d["format"] == "genprof.report" and d["schema_version"] == REPORT_SCHEMA_VERSION
    assert set(d) >= {"run", "summary", "usage_statistics", "phases", "findings"}
    assert d["findings"][0]["rule_id"] == "r1"
    assert d["usage_statistics"]["generations"] == 2
    assert [r["path"] for r in d["phases"]][:2] == ["load", "load/load_text_encoder"]
    assert text == json.dumps(d, sort_keys=True, indent=2) + "\n"  # sorted keys, deterministic


def test_json_report_runs_the_rules():
    d = report_dict(make_run())
    assert isinstance(d["findings"], list) and d["findings_note"] is None


def test_summary_figures():
    run = make_run(generations=2, steps=8)
    fig = summary_figures(run)
    steps = [s for s in run.spans if s.kind == "step"]
    assert fig["steps"] == 16
    assert fig["steps_per_s"] == pytest.approx(16 / sum(s.duration_s for s in steps))
    assert fig["energy_j"] == run.metadata["energy"]["total_j"]
    assert fig["average_power_w"] == pytest.approx(fig["energy_j"] / run.duration_s)
    cpu = summary_figures(make_run(with_gpu=False))
    assert cpu["energy_j"] is None and cpu["average_power_w"] is None and cpu["peak_allocated_bytes"] is None


def test_default_stem_is_filesystem_safe():
    run = Run(name="a/b c:<d>", run_id="x/y", started_at="t", started_unix_s=0.0)
    assert default_stem(run) == "a_b_c_d-x_y"
