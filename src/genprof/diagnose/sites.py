"""The exact Python line of each host-device sync in the window, from torch's sync debug mode.

torch.profiler's Python stack (``with_stack=True``) names each *function* on the stack by the
line it was entered at, not the line that is running: a ``.item()`` in a denoise loop shows up
as the loop's function, at the line the window opened. The line that issued a sync is known to
torch itself: with ``torch.cuda.set_sync_debug_mode("warn")``, every synchronizing CUDA
operation it knows (``.item()``, ``.cpu()``, ``.tolist()``, ``nonzero``, ``if tensor:``,
pageable device-to-host copies, stream synchronizes inside ops) raises a Python warning as the
op returns to Python, attributed to the Python line that called it.

:class:`SyncSites` turns that mode on for the window only (when no one else set it), takes those
warnings before they are shown (no user-visible warning, nothing else changes), and records for
each the genprof time, the thread and the Python stack outside torch and genprof. The trace
parser then gives each blocking runtime call the site of the warning its op raised.
``torch.cuda.synchronize()`` is deliberate and torch does not report it: such calls keep the
function-level site of the profiler's stack.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("genprof")

SYNC_WARNING = "called a synchronizing CUDA operation"
"""The text of torch's sync debug mode warning (c10/cuda ``warn_or_error_on_sync``)."""

MAX_SITES = 10_000
"""At most this many syncs are recorded per window (a loop syncing per element stays bounded)."""

STACK_DEPTH = 6

# frames that are not where the user's code issued the call
_SKIP_PARTS = ("/torch/", "/genprof/", "/warnings.py", "/_py_warnings.py", "<frozen", "/contextlib.py")


@dataclass
class SyncSite:
    """One sync torch reported: when (genprof clock, s), on which thread, from which stack."""

    t_s: float
    tid: int
    stack: list[tuple[str, int, str]] = field(default_factory=list)  # innermost first: (file, line, function)


def user_stack(frame: Any, depth: int = STACK_DEPTH) -> list[tuple[str, int, str]]:
    """The innermost ``depth`` frames from ``frame`` outwards that are outside torch and genprof."""
    out: list[tuple[str, int, str]] = []
    f = frame
    while f is not None and len(out) < depth:
        fn = f.f_code.co_filename.replace("\\", "/")
        if not any(p in fn for p in _SKIP_PARTS):
            out.append((fn, int(f.f_lineno or 0), f.f_code.co_name))
        f = f.f_back
    return out


def _issued_by_genprof(frame: Any) -> bool:
    """True when the first frame outside torch and warnings is genprof's own (its GPU timer, say)."""
    f = frame
    while f is not None:
        fn = f.f_code.co_filename.replace("\\", "/")
        if "/genprof/diagnose/sites.py" in fn or "warnings.py" in fn or "/torch/" in fn or "<frozen" in fn:
            f = f.f_back
            continue
        return "/genprof/" in fn
    return False


class SyncSites:
    """Records the Python stack of each sync torch reports while :meth:`start`-ed.

    ``now``: genprof's clock (seconds). ``torch``: the torch module (tests inject a fake with
    ``cuda.get_sync_debug_mode`` / ``cuda.set_sync_debug_mode``).
    """

    def __init__(self, now: Callable[[], float], torch: Any) -> None:
        self._now = now
        self._torch = torch
        self.sites: list[SyncSite] = []
        self.reason: str | None = None
        self._on = False
        self._prev_show: Any = None
        self._filter: tuple[Any, ...] | None = None
        self.dropped = 0

    def start(self) -> bool:
        """Turn torch's sync debug mode to "warn" and take its warnings; False (and ``reason``) if not."""
        cuda = getattr(self._torch, "cuda", None)
        get = getattr(cuda, "get_sync_debug_mode", None)
        set_ = getattr(cuda, "set_sync_debug_mode", None)
        if get is None or set_ is None:
            self.reason = "this torch has no sync debug mode: sync sites are function-level"
            return False
        try:
            mode = int(get())
        except (RuntimeError, TypeError, ValueError, AttributeError, AssertionError) as exc:
            self.reason = f"torch's sync debug mode could not be read ({exc}): sync sites are function-level"
            return False
        if mode != 0:
            self.reason = (f"torch's sync debug mode is already set ({mode}) by the program; genprof leaves it: "
                           "sync sites are function-level")
            return False
        warnings.filterwarnings("always", message=SYNC_WARNING)
        self._filter = warnings.filters[0]
        self._prev_show = warnings.showwarning
        warnings.showwarning = self._show
        try:
            set_("warn")
        except (RuntimeError, ValueError, AttributeError, AssertionError) as exc:
            self._restore_warnings()
            self.reason = f"torch's sync debug mode could not be set ({exc}): sync sites are function-level"
            return False
        self._on = True
        return True

    def stop(self) -> None:
        """Put the sync debug mode and the warning hooks back as they were."""
        if not self._on:
            return
        self._on = False
        try:
            self._torch.cuda.set_sync_debug_mode(0)
        except (RuntimeError, ValueError, AttributeError, AssertionError) as exc:
            log.warning("genprof diagnose: could not turn torch's sync debug mode off: %s", exc)
        self._restore_warnings()

    def _restore_warnings(self) -> None:
        if warnings.showwarning == self._show:
            warnings.showwarning = self._prev_show
        else:  # someone replaced it after us: keep theirs, and stop taking warnings through ours
            log.debug("warnings.showwarning was replaced during the diagnose window; leaving it")
        if self._filter is not None:
            try:
                warnings.filters.remove(self._filter)  # type: ignore[attr-defined]
            except ValueError:
                log.debug("genprof's sync-warning filter was already removed")
            mutated = getattr(warnings, "_filters_mutated", None) or getattr(warnings, "_filters_mutated_lock_held", None)
            if mutated is not None:
                mutated()  # the warnings module caches its filters; tell it they changed
            self._filter = None

    def _show(self, message: Any, category: Any, filename: str, lineno: int,
              file: Any = None, line: str | None = None) -> None:
        if not (self._on and SYNC_WARNING in str(message)):
            prev = self._prev_show or warnings._showwarning_orig  # type: ignore[attr-defined]
            prev(message, category, filename, lineno, file, line)
            return
        frame = sys._getframe(1)
        if _issued_by_genprof(frame):
            return
        if len(self.sites) >= MAX_SITES:
            self.dropped += 1
            return
        self.sites.append(SyncSite(t_s=float(self._now()), tid=threading.get_native_id(),
                                   stack=user_stack(frame) or [(filename, int(lineno), "")]))


__all__ = ["MAX_SITES", "SYNC_WARNING", "SyncSite", "SyncSites", "user_stack"]
