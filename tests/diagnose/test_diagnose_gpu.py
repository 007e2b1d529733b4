"""The diagnose window on a real GPU (run on the lent GPU with: pytest -m gpu tests/diagnose)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")


def _model() -> Any:
    blocks = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(),
                                                      torch.nn.Linear(4096, 1024)) for _ in range(4)])

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = blocks

        def forward(self, x: Any) -> Any:
            for b in self.blocks:
                x = x + b(x)
            return x

    return M().cuda().half()


def _run_loop(plant: bool) -> tuple[Any, Any, int]:
    import genprof
    from genprof.diagnose import DiagnoseWindow

    m = _model()
    x = torch.randn(256, 1024, device="cuda", dtype=torch.half)
    line = 0
    with genprof.Profiler("diag-gpu") as p:
        w = DiagnoseWindow("steps:2-3", modules=m).attach(p)
        with torch.no_grad():
            for _ in p.steps(range(6)):
                x = m(x)
                if plant:
                    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
                    _ = x.float().mean().item()  # the planted sync
    return p.run, w, line


def test_planted_item_is_found_with_its_file_and_line() -> None:
    from genprof.analysis import diagnose as dg

    run, _, line = _run_loop(plant=True)
    s = dg.syncs(dg.diagnosis_of(run))  # type: ignore[arg-type]
    assert s["sites"], s
    top = [x for x in s["sites"] if x["site"] == f"test_diagnose_gpu.py:{line}"]
    assert run.metadata["diagnosis"]["sync_sites_reason"] is None
    assert top, s["sites"]
    assert top[0]["per_step"] == pytest.approx(1.0) and top[0]["op"] == "aten::item" and top[0]["wait_us"] > 0


def test_idle_share_within_two_points_of_a_direct_computation() -> None:
    from genprof.analysis import diagnose as dg

    run, w, _ = _run_loop(plant=True)
    d = dg.diagnosis_of(run)
    assert d is not None and d.gpu_reason is None
    share = dg.idle(d)["idle_share"]
    # device activity only: Kineto also puts each record_function scope (ProfilerStep#N, module
    # scopes) on the GPU timeline as a user annotation spanning its kernels and the gaps between
    ivs = sorted((e.time_range.start, e.time_range.end) for e in w.torch_profile.events()
                 if str(e.device_type).endswith("CUDA") and not getattr(e, "is_user_annotation", False)
                 and not e.name.startswith(("ProfilerStep#", "genprof.module:")))
    lo, hi = ivs[0][0], max(b for _, b in ivs)
    busy, cs, ce = 0.0, None, 0.0
    for a, b in ivs:
        if cs is None or a > ce:
            busy += 0.0 if cs is None else ce - cs
            cs, ce = a, b
        else:
            ce = max(ce, b)
    busy += ce - cs  # type: ignore[operator]
    direct = 1 - busy / (hi - lo)
    assert share is not None and abs(share - direct) <= 0.02, (share, direct)


def test_module_scopes_own_the_kernels_of_an_unplanted_loop() -> None:
    from genprof.analysis import diagnose as dg

    run, _, _ = _run_loop(plant=False)  # (the planted sync's cast and mean run outside every module)
    mods = dg.by_module(dg.diagnosis_of(run))  # type: ignore[arg-type]
    assert mods["scoped_share"] is not None and mods["scoped_share"] > 0.9, mods["modules"]
