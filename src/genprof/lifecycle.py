"""Callbacks run whenever a profiler starts: the seam that attaches outputs from above.

The profiler sits below the renderers in the layer list, so it never imports them. Whatever
must happen around a run (final reports, the console summary, the live view, a metrics
exporter) registers here with :func:`on_profiler_start`; the profiler calls every callback
once it has started, and the callback attaches through the listener seam
(``profiler.subscribe(..., kinds=("run_end",))``). This module imports nothing else from
genprof, so registering costs nothing at ``import genprof`` time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("genprof")

_start_callbacks: list[Callable[[Any], None]] = []


def on_profiler_start(callback: Callable[[Any], None]) -> Callable[[], None]:
    """Call ``callback(profiler)`` whenever a profiler starts. Returns a function that unregisters it."""
    _start_callbacks.append(callback)

    def unregister() -> None:
        with contextlib.suppress(ValueError):
            _start_callbacks.remove(callback)

    return unregister


def notify_started(profiler: Any) -> None:
    """Run every start callback, in registration order; a failing one is logged and skipped."""
    for cb in list(_start_callbacks):
        try:
            cb(profiler)
        except Exception as exc:  # noqa: BLE001 - a plug-in must not stop the run
            log.warning("profiler start callback %r failed: %s: %s", cb, type(exc).__name__, exc)
