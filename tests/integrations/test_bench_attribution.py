"""The attribution used by bench/bench_pipeline_overhead.py: genprof's exclusive time by region."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_pipeline_overhead.py"


def _bench() -> Any:
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_pipeline_overhead", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_self_time_charges_only_genprof_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    st = _bench().SelfTime()

    def hook() -> None:  # genprof code called from the user's code (a forward pre-hook)
        clock[0] += 2.0

    def user_call(h: Any) -> str:  # the pipeline's own work
        clock[0] += 10.0
        h()
        clock[0] += 5.0
        return "out"

    def genprof_call(orig: Any) -> str:  # the instrumented __call__: work around the original
        clock[0] += 3.0
        out = orig(st.wrap(hook, True))
        clock[0] += 1.0
        return str(out)

    assert st.wrap(genprof_call, True)(st.wrap(user_call, False)) == "out"
    assert st.genprof_s == pytest.approx(3.0 + 2.0 + 1.0)
    assert st.by_entry == pytest.approx({genprof_call.__qualname__: 4.0, hook.__qualname__: 2.0})
    assert st.entries == 2 and st.stack == []


def test_self_time_region_survives_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    st = _bench().SelfTime()

    def fails() -> None:
        clock[0] += 4.0
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        st.wrap(fails, True)()
    clock[0] += 100.0  # after the region: not charged
    assert st.genprof_s == pytest.approx(4.0) and st.stack == []
