"""The sweep with fake pipelines and an injected clock: isolation, warm-up, OOM, quality floor, Ctrl-C."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes_tune import Clock, FakePipe, compile_cache_applier

from genprof.errors import UsageError
from genprof.tune import Recipe, TuneResult, load_tune, parse_recipe, tune
from genprof.tune.recipes import Machine

torch = pytest.importorskip("torch")

CPU = Machine(cuda=False, bf16=True, c_compiler="/usr/bin/cc", triton=False)


def _sweep(pipe_or_factory: Any, names: list[str], clock: Clock, **kw: Any) -> TuneResult:
    kw.setdefault("applier", lambda pipe, recipe, device="cpu": [recipe.name])
    kw.setdefault("quality_fn", lambda out, base: {"psnr": 40.0, "ssim": 0.99, "reason": None})
    kw.setdefault("machine", CPU)
    return tune(pipe_or_factory, candidates=names, device="cpu", clock=clock, progress=False, predict=False, **kw)


def test_later_candidate_not_sped_up_by_earlier_compile_cache_or_hooks() -> None:
    clock = Clock()
    live = FakePipe(clock)
    seen: list[dict[str, Any]] = []
    r = _sweep(live, ["compile", "compile+vae_slicing"], clock, applier=compile_cache_applier(seen), warmup=1, repeats=3)
    # the baseline runs again last (the drift check), as clean as the first time
    assert [s["name"] for s in seen] == ["default", "compile", "compile+vae_slicing", "default"]
    assert not any(s["saw_cache"] or s["saw_hook"] for s in seen)
    assert len({s["cache_dir"] for s in seen}) == 4
    a, b = r.candidates[1], r.candidates[2]
    assert a.warmup_s == b.warmup_s == [30.0]  # both paid the full compile: nothing carried over
    assert a.compile_s == b.compile_s == 29.0
    assert live.hooked is False and live.calls == 0  # the user's pipeline was copied, never touched


def test_isolation_test_detects_a_shared_pipeline() -> None:
    """The same fake, handed one shared object by a factory, is sped up: the check above can fail."""
    clock = Clock()
    shared = FakePipe(clock)
    seen: list[dict[str, Any]] = []
    r = _sweep(lambda: shared, ["compile", "compile+vae_slicing"], clock, applier=compile_cache_applier(seen))
    assert seen[2]["saw_hook"] is True
    assert r.candidates[2].warmup_s != [30.0]


def test_warmup_excluded_and_reported() -> None:
    clock = Clock()
    r = _sweep(lambda: FakePipe(clock, first_call_s=12.0, call_s=2.0), ["vae_tiling"], clock, warmup=1, repeats=5)
    for c in r.candidates:
        assert c.warmup_s == [12.0]
        assert c.times_s == [2.0] * 5
        assert c.median_s == 2.0 and c.ci_s == (2.0, 2.0)
        assert c.compile_s is None  # no compile in these recipes


def test_oom_recorded_and_sweep_continues() -> None:
    clock = Clock()

    def applier(pipe: FakePipe, recipe: Recipe, device: str = "cpu") -> list[str]:
        if recipe.name == "vae_tiling":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return []

    r = _sweep(lambda: FakePipe(clock), ["vae_tiling", "vae_slicing"], clock, applier=applier)
    oom = r.candidates[1]
    assert oom.status == "oom" and "out of memory" in (oom.reason or "")
    assert oom.oom is not None and oom.median_s is None
    assert r.candidates[2].status == "ok"
    assert r.best is not None and r.best.name != "vae_tiling"


def test_failure_recorded_with_reason() -> None:
    clock = Clock()

    def applier(pipe: FakePipe, recipe: Recipe, device: str = "cpu") -> list[str]:
        if recipe.name == "channels_last":
            raise ValueError("no such layout")
        return []

    r = _sweep(lambda: FakePipe(clock), ["channels_last"], clock, applier=applier)
    assert r.candidates[1].status == "failed" and "ValueError: no such layout" in (r.candidates[1].reason or "")


def test_quality_floor_excludes_faster_candidate() -> None:
    clock = Clock()
    speed = {"default": 3.0, "cache=first_block": 1.0, "vae_tiling": 2.0}
    psnr = {"cache=first_block": 22.0, "vae_tiling": 45.0}

    def applier(pipe: FakePipe, recipe: Recipe, device: str = "cpu") -> list[str]:
        pipe.first_call_s = pipe.call_s = speed[recipe.name]
        pipe.value = recipe.name
        return []

    r = _sweep(lambda: FakePipe(clock), ["cache=first_block", "vae_tiling"], clock, applier=applier, quality="psnr>=30",
               quality_fn=lambda out, base: {"psnr": psnr[out], "ssim": None, "reason": None},
               machine=Machine(cuda=False, bf16=True, c_compiler=None, triton=False))
    by = {c.name: c for c in r.candidates}
    assert by["cache=first_block"].status == "below_quality_floor"
    assert "22 below the floor psnr>=30" in (by["cache=first_block"].reason or "")
    assert r.best is not None and r.best.name == "vae_tiling"
    assert r.speedup() == pytest.approx(1.5)


def test_unmeasured_quality_cannot_pass_a_floor() -> None:
    clock = Clock()
    r = _sweep(lambda: FakePipe(clock), ["vae_tiling"], clock, quality="ssim>=0.9",
               quality_fn=lambda out, base: {"psnr": None, "ssim": None, "reason": "torchmetrics is not installed"})
    assert r.candidates[1].status == "below_quality_floor"
    assert "torchmetrics is not installed" in (r.candidates[1].reason or "")


def test_bad_floor_and_bad_candidate_are_clear_errors() -> None:
    clock = Clock()
    with pytest.raises(UsageError, match="METRIC>=NUMBER"):
        _sweep(lambda: FakePipe(clock), [], clock, quality="psnr>thirty")
    with pytest.raises(UsageError, match="unknown metric 'lpips'"):
        _sweep(lambda: FakePipe(clock), [], clock, quality="lpips>=0.1")
    with pytest.raises(UsageError, match="unknown tuning candidate 'turbo'"):
        parse_recipe("vae_tiling+turbo")


def test_ctrl_c_keeps_measured_and_writes_partial_result(tmp_path: Any) -> None:
    clock = Clock()

    def applier(pipe: FakePipe, recipe: Recipe, device: str = "cpu") -> list[str]:
        if recipe.name == "vae_slicing":
            raise KeyboardInterrupt
        return []

    out = tmp_path / "tune.json"
    r = _sweep(lambda: FakePipe(clock), ["vae_tiling", "vae_slicing", "channels_last"], clock, applier=applier, out=out)
    assert r.status == "interrupted"
    assert [c.status for c in r.candidates] == ["ok", "ok", "interrupted", "interrupted"]
    back = load_tune(out)
    assert back.status == "interrupted"
    assert back.candidates[1].median_s == 1.0 and back.best is not None
    assert (tmp_path / "tune-runs" / "01-vae_tiling.json").exists()


def test_result_round_trips(tmp_path: Any) -> None:
    clock = Clock()
    r = _sweep(lambda: FakePipe(clock), ["vae_tiling"], clock, out=tmp_path / "t.json", budget="4GiB")
    d = r.to_dict()
    back = TuneResult.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d
    assert d["schema"] == "genprof.tune/1" and d["budget_bytes"] == 4 * 2**30
    with pytest.raises(Exception, match="not a genprof tune result"):
        TuneResult.from_dict({"schema": "other"})


def _warming_gpu_applier(first_s: float, later_s: float, speed: dict[str, float]) -> Any:
    """Every candidate's calls take ``later_s`` (scaled by ``speed``), except the first candidate's: ``first_s``.

    A GPU that is cold for the sweep's first candidate (clocks ramping, first CUDA context) and
    warm after: identical work looks faster the later it runs.
    """
    built: list[str] = []

    def applier(pipe: FakePipe, recipe: Recipe, device: str = "cpu") -> list[str]:
        built.append(recipe.name)
        base = first_s if len(built) == 1 else later_s
        pipe.first_call_s = pipe.call_s = base * speed.get(recipe.name, 1.0)
        return []

    return applier


def test_a_candidate_only_as_fast_as_the_warm_baseline_is_not_chosen() -> None:
    clock = Clock()
    # vae_tiling changes nothing here: it is fast only because it ran after the cold first candidate
    r = _sweep(lambda: FakePipe(clock), ["vae_tiling"], clock, applier=_warming_gpu_applier(1.0, 0.8, {}), repeats=3)
    tiling = r.candidates[1]
    assert tiling.median_s == pytest.approx(0.8) and r.candidates[0].median_s == pytest.approx(1.0)
    assert r.baseline_again is not None and r.baseline_again.median_s == pytest.approx(0.8)
    assert r.baseline_drift() == pytest.approx(-0.2)
    assert r.best is r.baseline  # 0.8 s is within what the baseline itself measured
    assert r.speedup() == 1.0
    assert any("baseline measured again" in n and "-20.0%" in n for n in r.notes)


def test_a_candidate_faster_than_both_baseline_measurements_is_chosen() -> None:
    clock = Clock()
    r = _sweep(lambda: FakePipe(clock), ["vae_tiling"], clock,
               applier=_warming_gpu_applier(1.0, 0.8, {"vae_tiling": 0.5}), repeats=3)
    assert r.best is not None and r.best.name == "vae_tiling"
    # against the baseline's median over both measurements (1.0 s x3, 0.8 s x3): 0.9 / 0.4
    assert r.speedup() == pytest.approx(0.9 / 0.4)


def test_the_drift_check_is_saved_and_read_back(tmp_path: Any) -> None:
    clock = Clock()
    out = tmp_path / "tune.json"
    r = _sweep(lambda: FakePipe(clock), ["vae_tiling"], clock, applier=_warming_gpu_applier(1.0, 0.8, {}), out=out)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["baseline_drift"] == pytest.approx(-0.2) and data["best"] == "default"
    back = load_tune(out)
    assert back.baseline_again is not None and back.baseline_again.median_s == pytest.approx(0.8)
    assert back.best is not None and back.best.name == r.best.name == "default"  # type: ignore[union-attr]


def test_without_the_drift_check_the_baseline_runs_once() -> None:
    clock = Clock()
    r = _sweep(lambda: FakePipe(clock), ["vae_tiling"], clock, applier=_warming_gpu_applier(1.0, 0.8, {}),
               recheck_baseline=False)
    assert r.baseline_again is None and r.baseline_drift() is None
    assert r.best is not None and r.best.name == "vae_tiling"  # faster than every call of the one baseline
