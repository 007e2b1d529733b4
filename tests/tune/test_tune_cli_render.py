"""``genprof tune`` on a tiny demo pipeline, the console table at 80 columns, the HTML page."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest

pytest.importorskip("diffusers")


def test_cli_tune_demo_and_render(tmp_path: Any) -> None:
    from rich.console import Console

    from genprof.cli import tune as cli_tune
    from genprof.render.tune_html import console_table, render_tune
    from genprof.tune import load_tune

    p = argparse.ArgumentParser()
    cli_tune.register(p.add_subparsers())
    out = tmp_path / "tune.json"
    args = p.parse_args(["tune", "--demo", "sd", "--candidates", "vae_tiling,attention=fa3", "--repeats", "2",
                         "--out", str(out), "--no-progress", "--device", "cpu"])
    assert args.func(args) == 0
    r = load_tune(out)
    assert [c.name for c in r.candidates] == ["default", "vae_tiling"]
    assert r.isolation == "process"  # auto: the demo factory pickles, so each candidate had its own child
    assert [c.status for c in r.candidates] == ["ok", "ok"]
    q = r.candidates[1].quality or {}
    assert q.get("psnr") is not None and q.get("frames") == 1  # the child's decoded image came back and was compared
    assert r.skipped[0].name == "attention=fa3"
    buf = io.StringIO()
    console_table(r.to_dict(), Console(file=buf, width=80))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "vae_tiling" in text and "skipped attention=fa3: FA3" in text
    assert "isolation: process (auto: the pipeline can be rebuilt in a child process" in " ".join(text.split())
    page = render_tune(out, tmp_path / "tune.html").read_text()
    assert "<td>vae_tiling</td>" in page and "plotly" in page
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "genprof.run/1"}')
    with pytest.raises(Exception, match="not a genprof tune result"):
        render_tune(bad, tmp_path / "x.html")


def test_the_scatter_names_each_candidate_in_its_legend_not_beside_its_marker() -> None:
    # names printed beside the markers overlapped where candidates measured about the same
    pytest.importorskip("plotly")
    import json
    import re

    from genprof.render.tune_html import to_html

    def cand(name: str, s: float, psnr: float | None) -> dict[str, Any]:
        return {"recipe": {"name": name}, "status": "ok", "median_s": s, "peak_reserved_bytes": 14 * 2**30,
                "quality": {"psnr": psnr}}

    data = {"model": "sdxl", "gpu": "GPU", "candidates": [
        cand("default", 0.95, float("inf")), cand("vae_tiling", 0.951, float("inf")),
        cand("channels_last", 0.952, 63.5), cand("no_peak", 1.2, 28.0)]}
    data["candidates"][3]["peak_reserved_bytes"] = None
    page = to_html(data)
    spec = json.loads(re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', page, re.S).group(1))
    # a candidate without a measured peak is not put at 0 GiB on the memory axis: it is listed
    assert [t["name"] for t in spec] == ["default", "vae_tiling", "channels_last"]
    assert {t["mode"] for t in spec} == {"markers"} and len({t["marker"]["symbol"] for t in spec}) == 3
    assert "identical" in spec[0]["hovertemplate"] and "63.5 dB" in spec[2]["hovertemplate"]
    assert [t["y"] for t in spec] == [[14.0]] * 3
    assert "Not in the scatter (peak not measured): no_peak" in page
    from genprof.render.tune_html import rows

    data["candidates"][0]["quality"]["reason"] = "the baseline itself"
    assert [r[6] for r in rows(data)] == ["base", "same", "63.5", "28.0"]


def test_without_any_peak_the_scatter_is_by_name_and_the_page_says_why_figures_are_missing() -> None:
    pytest.importorskip("plotly")
    import json
    import re

    from genprof.render.tune_html import notes, to_html

    data = {"model": "wan", "gpu": "GPU", "candidates": [
        {"recipe": {"name": "default"}, "status": "oom", "median_s": None, "reason": "out of memory: 16 GiB allowed"},
        {"recipe": {"name": "offload=model"}, "status": "ok", "median_s": 12.0, "peak_reserved_bytes": None,
         "quality": {"psnr": None, "ssim": None, "reason": "the baseline did not produce an output"}}]}
    page = to_html(data)
    spec = json.loads(re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', page, re.S).group(1))
    assert [t["y"] for t in spec] == [["offload=model"]]
    assert "peak not measured" in spec[0]["hovertemplate"]
    assert notes(data) == ["default: out of memory: 16 GiB allowed",
                           "offload=model: no quality figure (the baseline did not produce an output)"]
    assert "<h2>Notes</h2>" in page and "the baseline did not produce an output" in page
    assert "0 = not measured" not in page
