"""isolation="process": each candidate in its own spawned child; crashes and timeouts recorded, the sweep goes on.

Each child costs a second or two (spawn and imports), so these tests keep the number of children small.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fakes_tune import (
    Clock,
    FakePipe,
    cached_factory,
    crash_applier,
    hang_applier,
    offset_applier,
    process_clock,
)

from genprof.errors import UsageError
from genprof.tune import TuneResult, load_tune, tune
from genprof.tune.recipes import Machine

pytest.importorskip("torch")

CPU = Machine(cuda=False, bf16=True, c_compiler=None, triton=False)


def _sweep(source: Any, names: list[str], **kw: Any) -> TuneResult:
    kw.setdefault("clock", process_clock)
    kw.setdefault("machine", CPU)
    return tune(source, candidates=names, device="cpu", progress=False, predict=False, warmup=1, repeats=2, **kw)


def test_process_isolation_a_later_candidate_is_not_sped_up(tmp_path: Path) -> None:
    r = _sweep(cached_factory, ["vae_tiling", "vae_slicing"], isolation="process", applier=offset_applier,
               out=tmp_path / "tune.json")
    assert r.isolation == "process" and r.isolation_reason == "asked for: each candidate ran in its own process"
    assert [c.status for c in r.candidates] == ["ok", "ok", "ok"]
    for c in r.candidates:
        assert c.warmup_s == [30.0]  # every child built the pipeline cold: the module cache did not carry over
        assert c.times_s == [1.0, 1.0] and c.median_s == 1.0
    pids = [c.observations["pid"] for c in r.candidates]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    tiling = r.candidates[1]
    assert tiling.applied == ["fake vae_tiling"]
    assert tiling.quality is not None and tiling.quality["psnr"] == pytest.approx(40.0, abs=1e-3)  # the child's output came back
    assert r.candidates[2].quality is not None and r.candidates[2].quality["identical"] is True
    back = load_tune(tmp_path / "tune.json")
    assert back.isolation == "process" and back.candidates[1].median_s == 1.0
    files = [c.run_file for c in r.candidates]
    assert all(f is not None and Path(f).exists() for f in files)
    from genprof.cli.main import main

    assert main(["compare", str(files[0]), str(files[1])]) == 0  # run files written by two children compare


def test_the_same_factory_in_one_process_is_sped_up() -> None:
    """The check above can fail: in one process the module-level cache makes every later build warm."""
    r = _sweep(cached_factory, ["vae_tiling", "vae_slicing"], isolation="reset", applier=offset_applier)
    assert r.isolation == "reset"
    assert [c.warmup_s for c in r.candidates[1:]] == [[1.0], [1.0]]


def test_auto_picks_process_and_a_crashing_child_is_a_failed_candidate() -> None:
    r = _sweep("fakes_tune:cached_factory", ["vae_tiling", "vae_slicing"], applier=crash_applier)
    assert r.isolation == "process" and (r.isolation_reason or "").startswith("auto:")
    by = {c.name: c for c in r.candidates}
    assert by["vae_tiling"].status == "failed"
    assert "exited with code 7 before writing its result" in (by["vae_tiling"].reason or "")
    assert by["default"].status == by["vae_slicing"].status == "ok"  # the sweep went on
    assert r.best is not None and r.best.name != "vae_tiling"


def test_a_child_past_its_timeout_is_stopped_and_recorded() -> None:
    r = _sweep(cached_factory, ["default"], isolation="process", applier=hang_applier, timeout_s=5)
    c = r.candidates[0]
    assert c.status == "failed" and c.reason == "timed out after 5 s: the child process was stopped"
    assert r.best is None


def test_auto_falls_back_to_reset_and_says_why() -> None:
    clock = Clock()
    r = tune(lambda: FakePipe(clock), candidates=["vae_tiling"], device="cpu", clock=clock, progress=False,
             predict=False, machine=CPU, applier=lambda pipe, recipe, device="cpu": [], timeout_s=10)
    assert r.isolation == "reset"
    assert "pipeline factory cannot be sent to a child process" in (r.isolation_reason or "")
    assert any("timeout_s=10 not enforced" in n for n in r.notes)
    live = tune(FakePipe(clock), candidates=["vae_tiling"], device="cpu", clock=clock, progress=False, predict=False,
                machine=CPU, applier=lambda pipe, recipe, device="cpu": [])
    assert "a live pipeline cannot be rebuilt in a child process" in (live.isolation_reason or "")


def test_process_isolation_that_cannot_work_is_a_clear_error() -> None:
    clock = Clock()
    with pytest.raises(UsageError, match="isolation='process' is not possible here: a live pipeline"):
        tune(FakePipe(clock), isolation="process", device="cpu", progress=False, predict=False, machine=CPU)
    with pytest.raises(UsageError, match="the applier cannot be sent to a child process"):
        tune(cached_factory, isolation="process", device="cpu", progress=False, predict=False, machine=CPU,
             applier=lambda pipe, recipe, device="cpu": [])
    with pytest.raises(UsageError, match="has no 'no_such_fn'"):
        tune("fakes_tune:no_such_fn", device="cpu", progress=False, predict=False, machine=CPU)
    with pytest.raises(UsageError, match="isolation must be auto, reset or process"):
        tune(cached_factory, isolation="fork", device="cpu", progress=False, predict=False, machine=CPU)


@pytest.mark.gpu
def test_process_isolation_on_cuda_with_a_budget(tmp_path: Path) -> None:
    """On the lent GPU: children enforce the budget themselves; their peaks come back; run files are kept."""
    import functools

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("diffusers")
    from genprof.integrations.demo import build_pipeline

    demo = build_pipeline("sd", device="cpu")
    r = tune(functools.partial(build_pipeline, "sd", "tiny", device="cpu"), budget="2GiB", isolation="process",
             candidates=["vae_tiling", "attention=efficient"], device="cuda", warmup=1, repeats=3, model="sd1.5",
             out=tmp_path / "t.json", progress=False, **demo.call_kwargs)
    assert r.isolation == "process"
    assert all(c.status in ("ok", "below_quality_floor") for c in r.candidates), [c.reason for c in r.candidates]
    assert all(c.peak_reserved_bytes and c.peak_reserved_bytes <= 2 * 2**30 for c in r.candidates)
    assert len({c.observations["pid"] for c in r.candidates}) == len(r.candidates)
    assert all(c.run_file and Path(c.run_file).exists() for c in r.candidates)
    assert r.candidates[1].quality is not None and r.candidates[1].quality["psnr"] is not None
