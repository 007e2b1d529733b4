import pytest


@pytest.fixture(autouse=True)
def _trace_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Keep the meta-trace cache out of the user's home during tests (one folder for the session's tests)."""
    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "genprof-cache"))
    # the estimator is tested by tracing: genprof's shipped results are off unless a test turns them on
    monkeypatch.setenv("GENPROF_SHIPPED_TRACES", "0")
