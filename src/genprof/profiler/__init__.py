"""The public profiler: spans (phases, steps, blocks, calls, generations), events, sampling.

Usage::

    with genprof.Profiler("wan-t2v", tags={"model": "wan2.1-1.3b"}) as prof:
        with prof.phase("load"):
            ...
        for t in prof.steps(timesteps, phase="denoise"):
            ...
    run = prof.run

One concern a module: :mod:`~genprof.profiler.core` (the ``Profiler``: its state, start and
stop, listeners, events), :mod:`~genprof.profiler.spans` (the span hot path: ``span``,
``next_span``, the open-span object, kept together), :mod:`~genprof.profiler.loops` (``steps``
and ``blocks``), :mod:`~genprof.profiler.device` (what the profiler asks of a GPU, and the null
device for none), :mod:`~genprof.profiler.facts` (machine facts, kept per process),
:mod:`~genprof.profiler.sources` (the sampler's sources), :mod:`~genprof.profiler.memory`
(per-span peaks: ``PeakTracker``), :mod:`~genprof.profiler.energy` (energy windows),
:mod:`~genprof.profiler.endings` (failures and SIGTERM), :mod:`~genprof.profiler.output` (run
and log files), :mod:`~genprof.profiler.progress` (live progress),
:mod:`~genprof.profiler.registry` (current and active profilers) and
:mod:`~genprof.profiler.decorator` (``genprof.phase``). Start callbacks
(:func:`on_profiler_start`) live in :mod:`genprof.lifecycle`.
"""

from __future__ import annotations

from genprof.lifecycle import on_profiler_start
from genprof.profiler.core import Profiler
from genprof.profiler.decorator import phase
from genprof.profiler.facts import forget_machine_facts
from genprof.profiler.registry import _active, active_profilers, current_profiler
from genprof.profiler.spans import _OpenSpan

__all__ = ["Profiler", "active_profilers", "current_profiler", "forget_machine_facts", "on_profiler_start", "phase"]
_ = (_active, _OpenSpan)  # kept importable for code that reads them
