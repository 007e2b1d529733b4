"""PSNR and SSIM through torchmetrics, on inputs whose answer is known; the not-installed path."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from genprof.tune.quality import below_floor, parse_floor, torchmetrics_quality

pytest.importorskip("torch")


def _frames(n: int = 1, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, size=(n, h, w, 3)).astype(np.float32)


def test_identical_outputs_are_inf_and_one() -> None:
    pytest.importorskip("torchmetrics")
    a = _frames()
    q = torchmetrics_quality(a, a.copy())
    assert q["psnr"] == math.inf and q["psnr_min"] == math.inf
    assert q["ssim"] == pytest.approx(1.0) and q["identical"] is True and q["reason"] is None
    assert below_floor(q, parse_floor("psnr>=30,ssim>=0.99")) is None  # identical passes any floor


def test_psnr_of_a_known_noise_level() -> None:
    pytest.importorskip("torchmetrics")
    a = _frames()
    noise = np.random.default_rng(1).normal(0.0, 0.02, size=a.shape).astype(np.float32)
    b = a + noise  # stays inside [0, 1]: 0.2..0.8 plus a few sigma
    mse = float(np.mean((b.astype(np.float64) - a.astype(np.float64)) ** 2))
    q = torchmetrics_quality(b, a)
    assert q["psnr"] == pytest.approx(10 * math.log10(1.0 / mse), abs=1e-3)  # about 34 dB for sigma 0.02
    assert 33.0 < q["psnr"] < 35.0
    assert 0.0 < q["ssim"] < 1.0 and q["identical"] is False
    assert "below the floor psnr>=40" in (below_floor(q, parse_floor("psnr>=40")) or "")


def test_video_is_compared_per_frame() -> None:
    pytest.importorskip("torchmetrics")
    base = _frames(n=3)[None]  # (batch, frames, H, W, C) as a video pipeline returns with output_type="np"
    out = base.copy()
    out[0, 1] += 0.01  # only the middle frame differs: MSE 1e-4 there, 40 dB
    q = torchmetrics_quality(out, base)
    assert q["frames"] == 3
    assert q["psnr_per_frame"][0] == math.inf and q["psnr_per_frame"][2] == math.inf
    assert q["psnr_per_frame"][1] == pytest.approx(40.0, abs=1e-3) and q["psnr_min"] == q["psnr_per_frame"][1]
    assert q["psnr"] == pytest.approx(10 * math.log10(3 / 1e-4), abs=1e-3)  # pooled over the frames' mean MSE
    assert q["ssim_per_frame"][0] == pytest.approx(1.0) and q["ssim_min"] == q["ssim_per_frame"][1] < 1.0


def test_uint8_images_and_shape_mismatch() -> None:
    pytest.importorskip("torchmetrics")
    a = (np.full((1, 16, 16, 3), 100, dtype=np.uint8))
    b = a.copy()
    b[...] = 101  # one level in 255: PSNR 20*log10(255) = 48.13 dB
    assert torchmetrics_quality(b, a)["psnr"] == pytest.approx(20 * math.log10(255), abs=1e-3)
    q = torchmetrics_quality(_frames(h=16), _frames(h=32))
    assert q["psnr"] is None and "differs from the baseline" in q["reason"]


def test_without_torchmetrics_every_figure_is_none_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "torchmetrics" or m.startswith("torchmetrics.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import torchmetrics now raises ImportError
    q = torchmetrics_quality(_frames(), _frames())
    assert q["psnr"] is None and q["ssim"] is None
    assert "torchmetrics is not installed" in q["reason"] and "pip install genprof[quality]" in q["reason"]
    assert "cannot be checked" in (below_floor(q, parse_floor("psnr>=30")) or "")


def test_torchmetrics_is_imported_lazily() -> None:
    import subprocess

    code = "import genprof, genprof.tune, sys; print('torchmetrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
