"""The README's block-diffusion example, run as a user copies it: it must count output frames,
not latent frames (Self-Forcing's 3 latent frames per block decode to 9, then 12, frames)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def block_example() -> str:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [b for b in blocks if "prof.blocks(" in b]
    assert len(found) == 1, "the README should hold exactly one python block with prof.blocks()"
    return found[0]


def test_readme_block_example_counts_output_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the README's block example, copied literally (its "..." are the user's work)
    code = block_example()
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {}
    out = io.StringIO()
    # WHEN it runs
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - the README's own code
    run = ns["prof"].run
    blocks = sorted(run.iter_spans(kind="block"), key=lambda s: s.index)
    # THEN 4 blocks of 3 latent frames decode to 9 + 3 * 12 = 45 output frames, as its comment says
    assert [b.attributes["frames"] for b in blocks] == [9, 12, 12, 12]
    assert out.getvalue().strip() == "45"
    assert "45 output frames" in code
    assert len(list(run.iter_spans(kind="step"))) == 16
    # AND a video user's figures are measured from it, not NOT MEASURED
    from genprof.analysis.targets import compute_figures

    figs = compute_figures(run, ("output_fps", "real_time_factor", "time_to_first_frame_s", "deadline_misses"))
    for name, m in figs.items():
        assert m.value is not None, (name, m.reason)
    (gen,) = run.iter_spans(kind="generation")
    assert figs["output_fps"].value == pytest.approx(45 / gen.duration_s)
    assert figs["real_time_factor"].value == pytest.approx((45 / 16) / gen.duration_s)
    assert figs["deadline_misses"].value == 0
