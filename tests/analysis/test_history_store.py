from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
from synth import make_run

from genprof.analysis.history import HistoryStore, default_path, find_regressions, parse_tag_filters
from genprof.errors import UsageError


def _run(i: int, step_s: float = 0.1, name: str = "flux", **tags: str) -> object:
    return make_run(run_id=f"r{i}", name=name, step_s=step_s, started_unix_s=1_700_000_000 + 60 * i, tags=tags)


def test_add_list_filter_trend(tmp_path: Path) -> None:
    db = HistoryStore(tmp_path / "h.sqlite")
    for i in range(4):
        db.add(_run(i, gpu="h100" if i % 2 else "a100"))  # type: ignore[arg-type]
    pk = db.add(_run(0))  # type: ignore[arg-type]  # same run_id: kept once
    entries = db.runs()
    assert [e.run_id for e in entries] == ["r0", "r1", "r2", "r3"]
    assert pk == entries[0].pk
    h100 = db.runs(tags={"gpu": "h100"})
    assert [e.run_id for e in h100] == ["r1", "r3"]
    e = entries[0]
    assert e.figures["step_time_mean_s"] == pytest.approx(0.1)
    assert e.figures["output_fps"] is None  # not measured stays None, never 0
    tr = db.trend("generation_time_s")
    assert len(tr) == 4 and all(v is not None and v > 2.0 for _, v in tr)
    with pytest.raises(UsageError, match="unknown figure"):
        db.trend("nope")


def test_regression_beyond_noise_is_flagged(tmp_path: Path) -> None:
    db = HistoryStore(tmp_path / "h.sqlite")
    steps = [0.100, 0.101, 0.099, 0.100, 0.102, 0.130, 0.101]
    for i, s in enumerate(steps):
        db.add(_run(i, step_s=s))  # type: ignore[arg-type]
    regs = db.regressions(["step_time_mean_s"])
    assert [r.entry.run_id for r in regs] == ["r5"]
    assert regs[0].change_pct == pytest.approx(30.0, abs=1.0)


def test_noise_only_gives_no_regression() -> None:
    import random

    from genprof.analysis.history import HistoryEntry

    rnd = random.Random(7)
    entries = [
        HistoryEntry(i, f"r{i}", "x", "", float(i), None, "ok", None, {},
                     figures={"step_time_mean_s": 0.1 * (1 + 0.02 * rnd.uniform(-1, 1))})
        for i in range(20)
    ]
    assert find_regressions(entries, ["step_time_mean_s"]) == []


def test_higher_is_better_figures_regress_downwards() -> None:
    from genprof.analysis.history import HistoryEntry

    vals = [10.0, 10.1, 9.9, 10.0, 7.0]
    entries = [HistoryEntry(i, f"r{i}", "x", "", float(i), None, "ok", None, {}, figures={"output_fps": v})
               for i, v in enumerate(vals)]
    regs = find_regressions(entries, ["output_fps"])
    assert [r.entry.run_id for r in regs] == ["r4"]


def test_corrupt_store_gives_clear_error_and_keeps_run_files(tmp_path: Path) -> None:
    p = tmp_path / "h.sqlite"
    p.write_bytes(b"this is not sqlite at all" * 100)
    run_file = tmp_path / "run.json"
    make_run().save(run_file)
    before = run_file.read_bytes()
    with pytest.raises(UsageError) as ei:
        HistoryStore(p).runs()
    msg = str(ei.value)
    assert str(p) in msg and "move it aside" in msg
    assert run_file.read_bytes() == before


def test_default_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GENPROF_HISTORY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "genprof" / "history.sqlite"
    monkeypatch.setenv("GENPROF_HISTORY", str(tmp_path / "mine.db"))
    assert default_path() == tmp_path / "mine.db"


def test_tag_filters() -> None:
    assert parse_tag_filters(["a=b", "c = d=e"]) == {"a": "b", "c": "d=e"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_tag_filters(["oops"])


def _writer(path: str, offset: int, n: int) -> None:
    db = HistoryStore(path)
    for i in range(n):
        db.add(make_run(run_id=f"w{offset + i}", started_unix_s=1_700_000_000 + offset + i, steps=3))


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k * 1000, 25)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(HistoryStore(path).runs()) == 50


def _open_when_set(path: str, go: Any) -> None:
    go.wait()
    HistoryStore(path).runs()


def test_processes_that_open_a_new_store_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    # switching a new file to WAL needs it alone; before the retry, about one round in four of
    # three processes released together failed with "database is locked"
    ctx = mp.get_context("fork")
    for r in range(20):
        path = str(tmp_path / f"h{r}.sqlite")
        go = ctx.Event()
        procs = [ctx.Process(target=_open_when_set, args=(path, go)) for _ in range(3)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0], f"round {r}"
