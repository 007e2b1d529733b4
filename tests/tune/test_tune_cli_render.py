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
