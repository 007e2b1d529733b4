"""How a run ended: the failure's kind and open spans, out-of-memory forensics, SIGTERM as an ending."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from genprof.model import Run, Span

if TYPE_CHECKING:  # pragma: no cover
    from genprof.profiler.device import Device
    from genprof.profiler.spans import _OpenSpan

log = logging.getLogger("genprof")


def abort_path_if_last(path: list[str] | None, mark: int | None, spans: Sequence[Span],
                       stacks: Sequence[list[_OpenSpan]]) -> list[str]:
    """The open spans of the last loop left early (``path``), if no span was opened after it.

    ``mark`` is an id taken when the loop was left; a span opened later has a larger id.
    (Checked here, once, instead of clearing the path at every span open.)
    """
    if not path or mark is None:
        return []
    if any(sp.id is not None and sp.id > mark for sp in spans):
        return []
    if any(o.id is not None and o.id > mark for st in stacks for o in st[1:]):
        return []
    return list(path)


def record_failure(run: Run, exc: BaseException, open_spans: list[str], device: Device,
                   oom_state: dict[str, Any] | None) -> None:
    """Fill ``run.end`` for a run that ended with ``exc``: its status, message, open spans, OOM state.

    ``oom_state`` is the allocator's state taken when the failing span closed (closer to the
    failure than now), if it was.
    """
    end = run.end
    end.exception_type = type(exc).__name__
    end.message = str(exc)[:2000]
    end.open_spans = open_spans
    if device.is_oom(exc):
        end.status = "oom"
        state = oom_state if oom_state is not None else device.oom_state()
        state["phase"] = next((p for p in reversed(end.open_spans)), None)
        end.oom = state
    elif isinstance(exc, SystemExit) and exc.code in (0, None):
        end.status = "ok"  # sys.exit(0) inside the profiled block is a normal ending
        end.exception_type = end.message = None
    elif isinstance(exc, KeyboardInterrupt):
        end.status = "interrupted"
        end.message = end.message or "KeyboardInterrupt (Ctrl-C)"
    elif isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM:
        end.status = "interrupted"
        end.message = "SIGTERM"
    else:
        end.status = "exception"
    log.info("genprof run %r ended with %s: %s", run.name, end.status, end.message)


class SigtermGuard:
    """Turns SIGTERM into ``SystemExit(143)`` while a run goes on, so the run file says how it ended.

    Installed only on the main thread and only where the program has no SIGTERM handler of
    its own; :meth:`restore` puts the previous handler back.
    """

    def __init__(self) -> None:
        self._prev: Any = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            prev = signal.getsignal(signal.SIGTERM)
        except (ValueError, OSError):
            return
        if prev not in (signal.SIG_DFL, None):
            return  # the program handles SIGTERM itself; leave it alone

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        self._prev = prev

    def restore(self) -> None:
        if self._prev is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, self._prev)
            self._prev = None
