"""Which profilers run: the context's current one, the process-wide list, and the exit hook."""

from __future__ import annotations

import atexit
import logging
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from genprof.profiler.core import Profiler

log = logging.getLogger("genprof")

_current: ContextVar[Profiler | None] = ContextVar("genprof_current_profiler", default=None)
_active: list[Profiler] = []  # started and not stopped, in start order (process-wide fallback)
_active_lock = threading.Lock()


def current_profiler() -> Profiler | None:
    """The profiler active in this context, else the most recently started one still running."""
    p = _current.get()
    if p is not None and p._running:
        return p
    with _active_lock:
        return _active[-1] if _active else None



def active_profilers() -> list[Profiler]:
    """The profilers started and not yet stopped in this process, in start order."""
    with _active_lock:
        return list(_active)



def _stop_all_at_exit() -> None:
    with _active_lock:
        left = list(_active)
    for p in reversed(left):
        try:
            p.stop(SystemExit("interpreter exited while the profiler was running"))
        except Exception as exc:  # noqa: BLE001 - best effort at interpreter exit
            log.error("could not finish genprof run %r at exit: %s", p.name, exc)


atexit.register(_stop_all_at_exit)
