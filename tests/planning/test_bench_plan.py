"""The plan validation bench (bench/bench_plan.py) on tiny pipelines, on the CPU (--smoke)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_plan.py"


def _bench():
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_plan", BENCH)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH.parent))


def test_structural_copy_shares_storage_and_leaves_the_original_alone():
    import torch

    b = _bench()
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    c = b.structural_copy(m)
    assert c[0].weight is not m[0].weight
    assert c[0].weight.data_ptr() == m[0].weight.data_ptr()  # no data copied
    assert c[1].running_mean.data_ptr() == m[1].running_mean.data_ptr()
    before = m[0].weight.detach().clone()
    c.to(torch.float16)  # what apply() does to a candidate's pipeline
    assert c[0].weight.dtype == torch.float16
    assert m[0].weight.dtype == torch.float32 and torch.equal(m[0].weight, before)


@pytest.mark.slow
def test_smoke_runs_every_candidate_and_judges_every_budget(tmp_path):
    b = _bench()
    out = tmp_path / "plan.json"
    doc = b.main(["--smoke", "--out", str(out), "--models", "sdxl", "--budgets", "0.0002,1", "--no-fp8"])
    saved = json.loads(out.read_text())
    assert saved["models"].keys() == {"sdxl"}
    m = doc["models"]["sdxl"]
    cands = m["candidates"]
    assert len(cands) == 14  # 7 offload modes x VAE tiling, fp8 left out
    assert all(not c["settings"]["layerwise_fp8"] for c in cands.values())
    base = cands["bf16/none/flash"]
    assert base["ok"] and base["time_s"] > 0 and base["denoise_s"] > 0
    assert all("predicted_peak_reserved_bytes" in c for c in cands.values())
    assert all(c.get("ok") or c.get("error") for c in cands.values())  # failures say why
    assert "measured" in m["time_models"]
    assert m["time_models"]["measured"]["step_time_s"] == pytest.approx(base["denoise_s"] / 2)
    small, big = m["budgets"]
    assert small["measured"]["fits_predicted"] is False and "chosen" not in small["measured"]
    j = big["measured"]
    assert j["chosen"] in cands and j["enforced_run"]["ok"]
    assert j["fastest_fitting"] in cands
    assert j["chosen_over_fastest"] == pytest.approx(cands[j["chosen"]]["time_s"] / cands[j["fastest_fitting"]]["time_s"])


@pytest.mark.slow
def test_time_limit_stops_candidates_and_skips_their_siblings(tmp_path):
    b = _bench()
    doc = b.main(["--smoke", "--out", str(tmp_path / "p.json"), "--models", "sdxl", "--budgets", "1",
                  "--no-fp8", "--max-candidate-s", "0"])
    cands = doc["models"]["sdxl"]["candidates"]
    base = cands["bf16/none/flash"]
    assert base.get("timed_out") and "over 0 s" in base["error"]
    sib = cands["bf16/none/vae_tiling/flash"]
    assert sib.get("skipped") and "time limit" in sib["error"]
    assert not any(c.get("ok") for c in cands.values())
    j = doc["models"]["sdxl"]["budgets"][0]["assumed"]
    assert j["fastest_fitting"] is None and "chosen_over_fastest" not in j


def test_replan_rejudges_with_margin_from_stored_measurements(tmp_path):
    """--replan: no GPU; the verdicts come from the stored per-candidate measurements."""
    src = Path(__file__).resolve().parents[2] / "bench" / "results" / "plan_sdxl_h100.json"
    old = json.loads(src.read_text())
    measured = old["models"]["sdxl"]["candidates"]
    out = tmp_path / "replan.json"
    bench_plan = _bench()
    doc = bench_plan.main(["--replan", str(src), "--out", str(out), "--budgets", "8,24"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc, default=str))
    budgets = doc["models"]["sdxl"]["budgets"]
    assert [b["budget_bytes"] for b in budgets] == [8_000_000_000, 24_000_000_000]
    for b in budgets:
        for tm in ("assumed", "measured"):
            j = b[tm]
            usable = b["budget_bytes"] * (1 - j["safety_margin"])
            fit_m = {k: r["time_s"] for k, r in measured.items() if r.get("ok") and r["peak_reserved_bytes"] <= usable}
            best = min(fit_m, key=fit_m.__getitem__)
            assert j["fastest_fitting_margin"] == best
            chosen_t = measured[j["chosen"]]["time_s"]
            assert j["chosen_over_fastest_margin"] == pytest.approx(chosen_t / fit_m[best])
            assert j["chosen_over_fastest"] <= j["chosen_over_fastest_margin"] + 1e-12
    # at 24 GB no offload (12.22e9 bytes measured) fits even with the margin and is the fastest measured
    assert budgets[1]["measured"]["fastest_fitting_margin"] == "bf16/none/flash"


@pytest.mark.slow
def test_retime_judges_chosen_against_fastest_on_medians(tmp_path):
    b = _bench()
    doc = b.main(["--smoke", "--out", str(tmp_path / "p.json"), "--models", "sdxl", "--budgets", "1",
                  "--no-fp8", "--retime", "2"])
    judged = [j for e in doc["models"]["sdxl"]["budgets"] for j in (e.get("assumed"), e.get("measured")) if j]
    retimed = [j for j in judged if "retimed_s" in j]
    for j in judged:
        differ = len({j.get("chosen"), j.get("fastest_fitting"), j.get("fastest_fitting_margin")} - {None}) > 1
        assert ("retimed_s" in j) == differ
    for j in retimed:
        times = j["retimed_s"]
        assert all(len(v) == 3 for v in times.values())  # the first run and two more
        med = {k: sorted(v)[1] for k, v in times.items()}
        assert j["chosen_over_fastest_retimed"] == pytest.approx(med[j["chosen"]] / med[j["fastest_fitting"]])
