"""genprof: profile diffusion image and video generation on NVIDIA GPUs.

``import genprof`` needs only the core dependencies; everything that needs torch,
diffusers, plotly or prometheus-client is imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from genprof import outputs as _outputs  # noqa: F401 - registers the report/summary/live-view attachment
from genprof._version import __version__

# public name -> module that defines it (imported on first access)
_EXPORTS: dict[str, str] = {
    "Profiler": "genprof.profiler",
    "phase": "genprof.profiler",
    "current_profiler": "genprof.profiler",
    "Run": "genprof.model",
    "Span": "genprof.model",
    "Event": "genprof.model",
    "Series": "genprof.model",
    "load_run": "genprof.model",
    "write_html": "genprof.outputs",
    "write_trace": "genprof.outputs",
    "ProfilerConfig": "genprof.config",
    "load_config": "genprof.config",
    "monitor_generation": "genprof.decorators",
    "GenprofError": "genprof.errors",
    "RunFileError": "genprof.errors",
    "ConfigError": "genprof.errors",
    "UsageError": "genprof.errors",
    "instrument": "genprof.integrations.diffusers",
    "uninstrument": "genprof.integrations.diffusers",
    "profile_pipeline": "genprof.integrations.diffusers",
    "profile_load": "genprof.integrations.diffusers",
    "compare": "genprof.analysis.compare",
    "run_rules": "genprof.analysis.rules",
    "HistoryStore": "genprof.analysis.history",
    "aggregate": "genprof.analysis.aggregate",
    "explain_oom": "genprof.planning.oom",
    "check_targets": "genprof.analysis.targets",
    "gather": "genprof.integrations.distributed",
    "serve_metrics": "genprof.integrations.prometheus",
    "resources": "genprof.planning.resources",
    "estimate": "genprof.planning.estimate",
    "plan": "genprof.planning.plan",
    "tune": "genprof.tune",
    "apply": "genprof.tune.applying",
    "ChunkedProcessor": "genprof.planning.chunked",
    "with_fallbacks": "genprof.planning.fallback",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'genprof' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from genprof.config import ProfilerConfig as ProfilerConfig
    from genprof.config import load_config as load_config
    from genprof.decorators import monitor_generation as monitor_generation
    from genprof.model import Event as Event
    from genprof.model import Run as Run
    from genprof.model import Series as Series
    from genprof.model import Span as Span
    from genprof.model import load_run as load_run
    from genprof.outputs import write_html as write_html
    from genprof.outputs import write_trace as write_trace
    from genprof.profiler import Profiler as Profiler
    from genprof.profiler import current_profiler as current_profiler
    from genprof.profiler import phase as phase
