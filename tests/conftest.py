"""Shared test set-up: the gpu marker, and a guard that no profiler leaks between tests."""

from __future__ import annotations

import importlib.util

import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the lent GPU with: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_machine_facts():
    """Each test's fakes (NVML, CUDA) are a new machine: no facts kept from an earlier test."""
    from genprof.profiler.facts import forget_machine_facts

    forget_machine_facts()
    yield


@pytest.fixture(autouse=True)
def _no_profiler_leaks():
    """Every test must stop the profilers it starts (pyinstrument's habit)."""
    from genprof.profiler import active_profilers

    before = active_profilers()
    yield
    leaked = [x for x in active_profilers() if x not in before]
    for x in leaked:
        x.stop()
    assert not leaked, f"test left profilers running: {[x.name for x in leaked]}"
