"""genprof's shipped meta-trace results: read when the user's cache misses, current with the estimator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from genprof.planning.estimate import cache


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A shipped file of our own in place of genprof's, and the user's cache in an empty folder."""
    f = tmp_path / "shipped_traces.json"
    monkeypatch.setattr(cache, "SHIPPED", f)
    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path / "user"))
    monkeypatch.delenv("GENPROF_SHIPPED_TRACES", raising=False)
    cache._shipped.cache_clear()
    yield f
    cache._shipped.cache_clear()


def test_a_miss_in_the_users_cache_is_answered_from_the_shipped_results(shipped: Path) -> None:
    key = cache.cache_key("weights", "some-model", "bf16")
    shipped.write_text(json.dumps({"versions": {}, "entries": {key: {"weight_bytes": 7}}}), encoding="utf-8")
    assert cache.load(key) == {"weight_bytes": 7}
    assert cache.load(cache.cache_key("weights", "other-model", "bf16")) is None


def test_the_users_own_result_wins_and_both_can_be_turned_off(shipped: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache.cache_key("weights", "some-model", "bf16")
    shipped.write_text(json.dumps({"versions": {}, "entries": {key: {"weight_bytes": 7}}}), encoding="utf-8")
    cache.store(key, {"weight_bytes": 9})
    assert cache.load(key) == {"weight_bytes": 9}
    other = cache.cache_key("weights", "m2", "bf16")
    shipped.write_text(json.dumps({"versions": {}, "entries": {key: 1, other: {"weight_bytes": 3}}}), encoding="utf-8")
    cache._shipped.cache_clear()
    monkeypatch.setenv("GENPROF_SHIPPED_TRACES", "0")
    assert cache.load(other) is None  # trace with this install
    monkeypatch.setenv("GENPROF_SHIPPED_TRACES", "1")
    assert cache.load(other) == {"weight_bytes": 3}
    monkeypatch.setenv("GENPROF_NO_CACHE", "1")
    assert cache.load(other) is None and cache.load(key) is None


def test_an_unreadable_shipped_file_is_ignored_with_a_warning(shipped: Path, caplog: pytest.LogCaptureFixture) -> None:
    shipped.write_text("{not json", encoding="utf-8")
    assert cache.load(cache.cache_key("weights", "m", "bf16")) is None
    assert "ignoring the shipped trace results" in caplog.text


def test_a_change_to_the_estimators_source_is_a_new_key(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cache.estimator_source_hash
    before = cache.cache_key("weights", "m", "bf16")
    monkeypatch.setattr(cache, "estimator_source_hash", lambda: "another source")
    cache._versions.cache_clear()
    changed = cache.cache_key("weights", "m", "bf16")
    monkeypatch.setattr(cache, "estimator_source_hash", real)
    cache._versions.cache_clear()
    assert changed != before and cache.cache_key("weights", "m", "bf16") == before


def test_the_shipped_results_were_made_from_this_estimator() -> None:
    data = json.loads(cache.SHIPPED.read_text(encoding="utf-8"))
    assert data["entries"], "no shipped results"
    assert data["versions"]["estimator"] == cache.estimator_source_hash(), (
        "the estimator changed since the shipped trace results were made: run python bench/ship_traces.py")
