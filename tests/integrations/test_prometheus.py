"""The exporter scraped over HTTP on 127.0.0.1 and parsed with prometheus_client's parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from genprof.integrations.prometheus import serve_metrics  # noqa: E402
from genprof.model import GpuInfo, Run, Span  # noqa: E402


class FakeProfiler:
    """Stands in for genprof.Profiler: subscribe(callback) -> unsubscribe, and a run being recorded."""

    def __init__(self) -> None:
        self.run = Run(name="svc", run_id="x", started_at="", started_unix_s=0.0, tags={"model": "flux-dev"},
                       gpus=[GpuInfo(index=0, uuid="GPU-abc")])
        self.callbacks: list[Callable[[str, Any], None]] = []

    def subscribe(self, cb: Callable[[str, Any], None]) -> Callable[[], None]:
        self.callbacks.append(cb)
        return lambda: self.callbacks.remove(cb)

    def emit(self, kind: str, payload: Any) -> None:
        for cb in list(self.callbacks):
            cb(kind, payload)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_scrape_metrics_from_a_profiler() -> None:
    prof = FakeProfiler()
    with serve_metrics(port=0, profiler=prof, follow_new_profilers=False) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        phase = Span(id=1, name="denoise", kind="phase", start_s=0.0)
        # like genprof.Profiler, the parent phase is filed only when it ends, after its steps
        for i, d in enumerate([0.08, 0.12, 0.3]):
            prof.emit("span_end", Span(id=10 + i, name="step", kind="step", start_s=0.0, parent_id=1, duration_s=d))
        phase.duration_s, phase.energy_j, phase.peak_reserved_bytes = 0.5, 150.0, 12 * 2**30
        prof.emit("span_end", phase)
        prof.emit("span_end", Span(id=2, name="generation", kind="generation", start_s=0.0, duration_s=0.7))
        prof.emit("samples", {"gpu0.power_w": 412.5, "gpu0.utilization_pct": 97.0, "gpu0.reserved_bytes": 2.0**34,
                              "host.cpu_pct": 50.0, "gpu0.temperature_c": None})
        m = _scrape(srv.url)
        step = (("model", "flux-dev"), ("phase", "denoise"))
        assert m[("genprof_step_duration_seconds_count", step)] == 3
        assert m[("genprof_step_duration_seconds_sum", step)] == pytest.approx(0.5)
        assert m[("genprof_step_duration_seconds_bucket", (("le", "0.1"), *step))] == 1
        assert m[("genprof_generation_duration_seconds_count", (("model", "flux-dev"),))] == 1
        assert m[("genprof_phase_energy_joules_total", step)] == 150.0
        assert m[("genprof_phase_peak_reserved_bytes", step)] == 12 * 2**30
        gpu = (("gpu", "gpu0"), ("gpu_uuid", "GPU-abc"), ("model", "flux-dev"))
        assert m[("genprof_gpu_power_watts", gpu)] == 412.5
        assert m[("genprof_gpu_utilization_percent", gpu)] == 97.0
        assert m[("genprof_gpu_memory_reserved_bytes", gpu)] == 2.0**34
        assert not [k for k in m if k[0] == "genprof_gpu_temperature_celsius"]  # None is not exported as 0
        assert m[("genprof_profiler_active", (("model", "flux-dev"),))] == 1
        prof.run.end.status = "ok"
        prof.emit("run_end", prof.run)
        m = _scrape(srv.url)
        assert m[("genprof_profiler_active", (("model", "flux-dev"),))] == 0
        assert m[("genprof_runs_total", (("model", "flux-dev"), ("status", "ok")))] == 1
    assert prof.callbacks == []  # closing unsubscribes


def test_busy_port_is_a_clear_error() -> None:
    from genprof.errors import UsageError

    with serve_metrics(port=0, follow_new_profilers=False) as a:
        with pytest.raises(UsageError, match="choose another port"):
            serve_metrics(port=a.port, follow_new_profilers=False)


def test_two_servers_use_separate_registries() -> None:
    with serve_metrics(port=0, follow_new_profilers=False) as a, serve_metrics(port=0, follow_new_profilers=False) as b:
        assert a.registry is not b.registry


def test_follows_a_real_profiler_started_later() -> None:
    import genprof

    with serve_metrics(port=0) as srv:
        with genprof.Profiler(name="svc", tags={"model": "tiny"}, gpu_monitor_interval=0.05) as prof:
            for _ in prof.steps(range(4), phase="denoise"):
                pass
        m = _scrape(srv.url)
    assert m[("genprof_step_duration_seconds_count", (("model", "tiny"), ("phase", "denoise")))] == 4
    assert m[("genprof_runs_total", (("model", "tiny"), ("status", "ok")))] == 1
