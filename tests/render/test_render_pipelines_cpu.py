"""Runs of several pipelines are grouped by pipeline, and CPU runs show their memory: in the
analysis, the console summary and the HTML report."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from runs import GIB, make_run

from genprof.analysis.summary import pipeline_stats, span_pipelines
from genprof.model import Series
from genprof.render.console import pipeline_table, print_summary
from genprof.render.html import render_html, report_data

WAN, SD = "WanPipeline", "StableDiffusionPipeline"


def two_pipelines(**kw: object):
    # GIVEN generations alternating between a slow video pipeline (0.5 s steps) and a fast image one (0.05 s)
    return make_run(generations=4, steps=6, pipelines=((WAN, 0.5), (SD, 0.05)), **kw)  # type: ignore[arg-type]


def _blob(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="genprof-data">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def _text(page: str) -> str:
    return re.sub(r"<script\b.*?</script>", "", page, flags=re.S)


def test_pipeline_stats_keep_each_pipelines_generations_and_steps_apart():
    run = two_pipelines()
    stats = pipeline_stats(run)
    # THEN one entry per pipeline in the order they first ran, each with its own generations and steps
    assert [p.pipeline for p in stats] == [WAN, SD]
    assert [p.generations for p in stats] == [2, 2] and [p.steps_per_generation for p in stats] == [6, 6]
    gens = {p: [s.duration_s for s in run.iter_spans(kind="generation") if s.attributes["pipeline"] == p]
            for p in (WAN, SD)}
    pipes = span_pipelines(run)
    steps = {p: [s.duration_s for s in run.iter_spans(kind="step") if pipes[s.id] == p] for p in (WAN, SD)}
    for p in stats:
        assert p.generation.mean == pytest.approx(sum(gens[p.pipeline]) / 2)
        assert p.step.count == 12 and p.step.mean == pytest.approx(sum(steps[p.pipeline]) / 12)
    assert stats[0].step.mean > 5 * stats[1].step.mean  # the pooled mean would hide this


def test_one_pipeline_and_no_attribute_give_one_entry_and_spans_outside_generations_none():
    run = make_run(generations=2)
    (only,) = pipeline_stats(run)
    assert only.pipeline is None and only.generations == 2
    load = next(s for s in run.spans if s.name == "load")
    assert span_pipelines(run)[load.id] is None
    assert pipeline_table(run) is None  # nothing to split: the usage statistics say it all


def test_console_summary_has_a_row_per_pipeline_that_fits_80_columns():
    buf = io.StringIO()
    print_summary(two_pipelines(with_gpu=False), console=Console(file=buf, width=80, color_system=None))
    out = buf.getvalue()
    assert "Per pipeline" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    table = out.split("Per pipeline", 1)[1].split("Phases", 1)[0]
    assert WAN in table
    assert SD in "".join(line.strip().split("  ")[0] for line in table.splitlines())  # folded, not cut


def test_summary_cli_prints_per_pipeline_rows(tmp_path, capsys):
    from genprof.cli.main import main

    path = tmp_path / "run.json"
    two_pipelines().save(path)
    assert main(["summary", str(path), "--width", "120"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith((WAN, SD))]
    assert len(rows) == 2 and all(" 2 " in r for r in rows)


def test_html_groups_generation_time_and_steps_by_pipeline():
    run = two_pipelines()
    page = render_html(run, findings=[])
    text = _text(page)
    stats = {p.pipeline: p for p in pipeline_stats(run)}
    # THEN a generation-time card per pipeline, never one pooled card
    for name in (WAN, SD):
        assert f"Time per generation: {name}" in text
    assert ">Time per generation<" not in text
    assert 'id="pipeline-table"' in text
    # AND the step data names each step's pipeline, which the chart splits on
    steps = _blob(page)["steps"]
    assert steps["pipeline"].count(WAN) == 12 and steps["pipeline"].count(SD) == 12
    assert [p["pipeline"] for p in _blob(page)["pipelines"]] == [WAN, SD]
    assert stats[WAN].generations == 2


def test_html_single_pipeline_keeps_one_generation_card():
    text = _text(render_html(make_run(generations=2), findings=[]))
    assert ">Time per generation<" in text and 'id="pipeline-table"' not in text


def cpu_run():
    run = make_run(with_gpu=False)
    ts = run.series[0].t_s
    run.series.append(Series("ram_used_bytes", "host", ts, [float(6 * GIB)] * len(ts), source="psutil"))
    run.series.append(Series("ram_total_bytes", "host", ts, [float(24 * GIB)] * len(ts), source="psutil"))
    return run


def test_cpu_memory_chart_gives_rss_its_own_axis_and_notes_the_flat_host_total():
    data = report_data(cpu_run(), findings=[])
    panels = {s["name"]: s for s in data["series"]}
    # THEN RSS is on a panel of its own, host RAM used on another, and the constant total is not drawn
    assert panels["rss_bytes"]["panel"] == "process_memory"
    assert panels["ram_used_bytes"]["panel"] == "host_memory"
    assert "ram_total_bytes" not in panels
    assert "24.00 GiB" in panels["ram_used_bytes"]["panel_note"]


def test_a_changing_host_total_is_still_drawn():
    run = cpu_run()
    total = next(s for s in run.series if s.name == "ram_total_bytes")
    total.values[-1] += GIB
    assert "ram_total_bytes" in {s["name"] for s in report_data(run, findings=[])["series"]}


def test_gpu_memory_stays_on_the_gpu_panel():
    data = report_data(make_run(), findings=[])
    panels = {s["name"]: s["panel"] for s in data["series"]}
    assert panels["allocated_bytes"] == panels["reserved_bytes"] == "memory"
    assert panels["rss_bytes"] == "process_memory"


def _phase_headers(page: str) -> list[str]:
    table = page.split('id="phase-table"', 1)[1].split("</thead>", 1)[0]
    return re.findall(r"<th[^>]*>([^<]*)</th>", table)


def test_cpu_phase_table_drops_all_na_columns_saying_why_and_shows_peak_rss():
    page = render_html(cpu_run(), findings=[])
    headers = _phase_headers(page)
    for gone in ("GPU total", "peak allocated", "peak reserved", "energy"):
        assert gone not in headers
    assert "peak RSS" in headers and "total" in headers and "p95" in headers
    note = re.search(r'<p class="note" id="phase-note">(.*?)</p>', page, re.S)
    assert note and "GPU total" in note.group(1) and "no CUDA device visible" in note.group(1)
    body = page.split('id="phase-table"', 1)[1].split("</table>", 1)[0]
    assert "3.00 GiB" in body  # the spans' peak RSS, per phase
    assert "n/a" not in body


def test_gpu_phase_table_keeps_its_columns_and_says_nothing():
    page = render_html(make_run(), findings=[])
    headers = _phase_headers(page)
    assert {"GPU total", "peak allocated", "peak reserved", "energy"} <= set(headers)
    assert "peak RSS" not in headers and 'id="phase-note"' not in page


def _with_frames():
    # GIVEN the video pipeline's generations decode 33 frames at 16 fps, the image pipeline's 1 image
    run = two_pipelines(with_gpu=False)
    for g in run.iter_spans(kind="generation"):
        if g.attributes["pipeline"] == WAN:
            g.attributes.update(output_frames=33, fps=16.0)
        else:
            g.attributes.update(output_frames=1)
    return run


def test_video_figures_are_given_per_pipeline_and_the_pooled_one_says_it_pools():
    from genprof.analysis.targets import compute_figures
    from genprof.analysis.throughput import pipeline_video

    run = _with_frames()
    video = pipeline_video(run)
    wan = [g for g in run.iter_spans(kind="generation") if g.attributes["pipeline"] == WAN]
    sd = [g for g in run.iter_spans(kind="generation") if g.attributes["pipeline"] == SD]
    # THEN each pipeline's frame rate is its own generations' mean, and only the video one has a real-time factor
    assert video[WAN]["output_frames_per_s"] == pytest.approx(sum(33 / g.duration_s for g in wan) / len(wan))
    assert video[SD]["output_frames_per_s"] == pytest.approx(sum(1 / g.duration_s for g in sd) / len(sd))
    assert video[WAN]["real_time_factor"] is not None and video[SD]["real_time_factor"] is None
    fig = compute_figures(run, ("output_fps",))["output_fps"]
    assert fig.value is not None and "pooled over 2 pipelines" in (fig.source or "")
    one = make_run(generations=2)
    for g in one.iter_spans(kind="generation"):
        g.attributes["output_frames"] = 33
    assert "pooled" not in (compute_figures(one, ("output_fps",))["output_fps"].source or "")


def test_per_pipeline_tables_show_output_fps_at_80_columns_and_in_html():
    run = _with_frames()
    buf = io.StringIO()
    print_summary(run, console=Console(file=buf, width=80, color_system=None))
    out = buf.getvalue()
    table = out.split("Per pipeline", 1)[1].split("Phases", 1)[0]
    header = next(line for line in table.splitlines() if "pipeline" in line and "gens" in line)
    assert header.split()[-1] == "fps" and max(len(line) for line in out.splitlines()) <= 80
    assert "5.77" in table  # 33 frames over the video pipeline's generations, not cut at 80 columns
    page = render_html(run)
    rows = _blob(page)  # the page renders; the table is server-side
    assert rows is not None
    assert "output frames/s" in _text(page) and "real-time factor" in _text(page)
    assert pipeline_table(two_pipelines(with_gpu=False)) is not None
    no_fps = io.StringIO()
    print_summary(two_pipelines(with_gpu=False), console=Console(file=no_fps, width=80, color_system=None))
    plain = no_fps.getvalue().split("Per pipeline", 1)[1].split("Phases", 1)[0]
    assert " fps" not in plain  # no frames measured: the column drops out


def test_phase_table_gives_each_pipeline_its_own_rows_in_console_and_html():
    from genprof.analysis.summary import phase_table

    run = two_pipelines(with_gpu=False)
    # THEN by pipeline: a generation row per pipeline, each with its own steps; pooled by default
    rows = {r.path: r for r in phase_table(run, by_pipeline=True)}
    wan, sd = rows[f"generation [{WAN}]/denoise/step"], rows[f"generation [{SD}]/denoise/step"]
    assert wan.host.count == 12 and sd.host.count == 12 and wan.host.mean > 5 * sd.host.mean
    assert "generation/denoise/step" in {r.path for r in phase_table(run)}
    one = make_run(generations=2)
    assert [r.path for r in phase_table(one, by_pipeline=True)] == [r.path for r in phase_table(one)]
    buf = io.StringIO()
    print_summary(run, console=Console(file=buf, width=80, color_system=None))
    out = buf.getvalue().split("Phases", 1)[1]
    assert WAN[:8] in out and SD[:8] in out  # pipeline names in the phase rows (folded at 80 columns)
    page = _text(render_html(run))
    assert f"generation [{WAN}]" in page and f"generation [{SD}]" in page
