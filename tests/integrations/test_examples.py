"""The example scripts run on CPU with their tiny default models and print their figures."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        ("text_to_image_diffusers.py", "steps/s"),
        ("text_to_video_diffusers.py", "real-time factor"),
        ("block_diffusion_loop.py", "deadline misses"),
    ],
)
def test_example_runs(script: str, expect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--out", str(tmp_path), "--device", "cpu"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert expect in out
    assert list(tmp_path.glob("*.json")) and list(tmp_path.glob("*.html"))
