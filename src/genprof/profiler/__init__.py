"""The public profiler: spans (phases, steps, blocks, calls, generations), events, sampling.

Usage::

    with genprof.Profiler("wan-t2v", tags={"model": "wan2.1-1.3b"}) as prof:
        with prof.phase("load"):
            ...
        for t in prof.steps(timesteps, phase="denoise"):
            ...
    run = prof.run

Modules: :mod:`~genprof.profiler.core` (the ``Profiler``: lifecycle, span hot path methods,
memory folding, endings, output), :mod:`~genprof.profiler.spans` (the open-span object and
the no-op manager the hot path uses), :mod:`~genprof.profiler.energy` (energy windows),
:mod:`~genprof.profiler.facts` (machine facts), :mod:`~genprof.profiler.registry` (current and
active profilers), :mod:`~genprof.profiler.decorator` (``genprof.phase``). Start callbacks
(:func:`on_profiler_start`) live in :mod:`genprof.lifecycle`.
"""

from __future__ import annotations

from genprof.lifecycle import on_profiler_start
from genprof.profiler.core import Profiler
from genprof.profiler.decorator import phase
from genprof.profiler.registry import _active, active_profilers, current_profiler
from genprof.profiler.spans import _OpenSpan

__all__ = ["Profiler", "active_profilers", "current_profiler", "on_profiler_start", "phase"]
_ = (_active, _OpenSpan)  # kept importable for code that reads them
