import pytest

from genprof.errors import UsageError
from genprof.model import EndState, Run
from genprof.planning.oom import explain_oom
from genprof.planning.plan import TimeModel, plan
from genprof.planning.resources import fp8_supported, resources

pytest.importorskip("torch")
GiB = 2**30


@pytest.mark.slow
def test_plan_picks_fastest_that_fits_and_tighter_budgets_offload():
    roomy = plan("sd1.5", 40 * GiB, time_model=TimeModel(step_time_s=0.05, vae_decode_s=0.1))
    assert roomy.fits and roomy.chosen.settings["offload"] == "none"
    assert roomy.chosen.time_s == min(c.time_s for c in roomy.candidates if c.fits)
    tight = plan("sd1.5", int(roomy.chosen.peak_reserved_bytes * 0.8), time_model=TimeModel(step_time_s=0.05))
    assert tight.fits and tight.chosen.settings != roomy.chosen.settings
    usable = tight.budget_bytes * (1 - tight.safety_margin)
    assert tight.chosen.peak_reserved_bytes <= usable
    assert any(c.fits is False for c in tight.candidates)


@pytest.mark.slow
def test_nothing_fits_says_what_is_needed():
    p = plan("sd1.5", 200 * 2**20)
    assert not p.fits and p.chosen is None
    assert "smallest predicted peak" in p.needed and p.smallest_peak_bytes > 0
    with pytest.raises(UsageError):
        _ = p.settings


@pytest.mark.slow
def test_streamed_group_offload_needs_pinned_host_ram():
    p = plan("sd1.5", 40 * GiB, offload_modes=("group_block_stream",), allow_fp8=False)
    c = p.candidates[0]
    total = sum(x.weight_bytes for x in p.estimate.components)
    assert c.pinned_host_ram_bytes == total and c.host_ram_bytes == 2 * total
    none = plan("sd1.5", 40 * GiB, offload_modes=("group_block_stream",), allow_fp8=False, host_ram_bytes=total)
    assert not none.fits


def test_plan_rejects_bad_input():
    with pytest.raises(UsageError):
        plan("sd1.5", 0)
    with pytest.raises(UsageError, match="unknown generation"):
        plan("sd1.5", GiB, frames=3)


def test_resources_without_gpu_still_reports_host():
    r = resources()
    d = r.to_dict()
    assert d["host_ram_total_bytes"] > 0 and d["cpu_cores_logical"] >= 1
    if not d["gpus"]:
        assert "gpu" in d["unavailable"]
    assert fp8_supported(9, 0) and fp8_supported(8, 9) and not fp8_supported(8, 6)


def _oom_run(**meta):
    run = Run(name="x", run_id="1", started_at="2025-01-01T00:00:00Z", started_unix_s=0.0)
    run.end = EndState(status="oom", message="CUDA out of memory", oom={
        "allocated_bytes": 7 * GiB, "reserved_bytes": 8 * GiB, "largest_free_block_bytes": 10 * 2**20,
        "device_total_bytes": 8 * GiB, "phase": "vae_decode", "step": None})
    run.metadata.update(meta)
    return run


def test_explain_oom_none_for_ok_runs_and_reason_without_pipeline():
    ok = Run(name="x", run_id="1", started_at="t", started_unix_s=0.0)
    ok.end = EndState(status="ok")
    assert explain_oom(ok) is None
    out = explain_oom(_oom_run())
    assert out["phase"] == "vae_decode" and out["what_would_fit"] is None and "names no model" in out["reason"]
    assert out["fragmentation"]["reserved_minus_allocated_bytes"] == GiB


@pytest.mark.slow
def test_explain_oom_proposes_a_plan_for_the_device():
    out = explain_oom(_oom_run(pipeline={"model": "sd1.5"}, generations=[{"height": 512, "width": 512}]))
    fit = out["what_would_fit"]
    assert fit["fits"] and fit["predicted_peak_reserved_bytes"] <= 8 * GiB


def test_match_model_from_recorded_classes_and_parameter_counts():
    from genprof.planning.oom import match_model

    assert match_model({"components": {"unet": {"class": "UNet2DConditionModel", "parameters": 859_520_964}}}) == "sd1.5"
    assert match_model({"components": {"unet": {"class": "UNet2DConditionModel", "parameters": 18_464}}}) is None
    assert match_model({"class": "StableDiffusionPipeline"}) is None


@pytest.mark.slow
def test_report_and_summary_of_an_oom_run_say_what_would_fit(tmp_path, capsys):
    from genprof.cli.main import main

    run = _oom_run(pipeline={"class": "StableDiffusionPipeline",
                             "components": {"unet": {"class": "UNet2DConditionModel", "parameters": 859_520_964}}},
                   generations=[{"height": 512, "width": 512}])
    run.end.oom["largest_tensors"] = [{"shape": [1, 4, 64, 64], "dtype": "float16", "bytes": 32768}]
    path = run.save(tmp_path / "oom.json")
    assert main(["report", str(path), "--html", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert 'id="oom-advice"' in html and "What would have fit" in html
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "What would have fit" in out and "expandable_segments" in out
