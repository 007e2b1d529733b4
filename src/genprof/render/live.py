"""The live terminal view: a rich panel on stderr refreshed every ``interval_s``.

The profiler gives a ``snapshot()`` callable that returns a plain dict (see :class:`LiveView`);
this module only draws it. The panel is off when stderr is not a terminal unless
``force=True``. It never takes the user's standard output away from where it goes: the
program's ``print`` output is routed above the panel only when stdout is the same terminal,
and left alone when stdout goes to a file or a pipe.

Diffusers' own tqdm progress bar also draws on stderr; with the live view on, turn it off
(``pipe.set_progress_bar_config(disable=True)``) so the two do not fight.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from genprof.units import format_bytes, format_seconds

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console, RenderableType
    from rich.live import Live

log = logging.getLogger(__name__)

Snapshot = Mapping[str, Any]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}%"


def _with_unit(x: float | None, unit: str, nd: int = 0) -> str:
    return "n/a" if x is None else f"{x:.{nd}f} {unit}"


def _mem_pair(used: int | None, total: int | None) -> str:
    if used is None:
        return "n/a"
    if total:
        return f"{format_bytes(used)} / {format_bytes(total)} ({100.0 * used / total:.0f}%)"
    return format_bytes(used)


_LABEL_W = 10
_VALUE_W = 26


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _bar(done: int, total: int, width: int = 20) -> str:
    frac = min(1.0, max(0.0, done / total)) if total else 0.0
    filled = int(round(frac * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {100.0 * frac:.0f}%"


def render_snapshot(snap: Snapshot) -> RenderableType:
    """The panel for one snapshot dict (missing keys and ``None`` values show as ``n/a``).

    Plain aligned text in a panel: drawing a rich ``Table`` costs about 5 ms a frame, this
    about 1 ms, which is what the profiled loop pays (through the GIL) at each refresh.
    """
    from rich.panel import Panel
    from rich.text import Text

    done = int(snap.get("steps_done") or 0)
    total = snap.get("steps_total")
    rate = snap.get("step_rate_per_s")
    phase = snap.get("phase")
    step_index = snap.get("step_index")
    gpu = snap.get("gpu") or None
    rows: list[tuple[str, str, str, str]] = [
        ("phase", "n/a" if phase is None else str(phase), "step", "n/a" if step_index is None else str(step_index)),
        ("steps", f"{done}/{total}" if total else str(done), "rate", _with_unit(rate, "steps/s", 2)),
        (
            "elapsed",
            format_seconds(snap.get("elapsed_s")),
            "ETA",
            format_seconds(snap.get("eta_s")) if total else "n/a (step count unknown)",
        ),
    ]
    if gpu is not None:
        rows.append(
            ("GPU", str(gpu.get("name") or "GPU"), "memory",
             _mem_pair(gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")))
        )
        rows.append(("util", _pct(gpu.get("utilization_pct")), "power", _with_unit(gpu.get("power_w"), "W")))
        rows.append(("temp", _with_unit(gpu.get("temperature_c"), "C"), "", ""))
    else:
        rows.append(("GPU", "n/a", "", ""))
    rows.append(("allocated", format_bytes(snap.get("allocated_bytes")), "reserved", format_bytes(snap.get("reserved_bytes"))))
    rows.append(("CPU", _pct(snap.get("cpu_pct")), "RSS", format_bytes(snap.get("rss_bytes"))))

    text = Text(no_wrap=True, overflow="ellipsis")
    if total:
        text.append(_bar(done, int(total)) + "\n")
    for i, (l1, v1, l2, v2) in enumerate(rows):
        text.append(l1.ljust(_LABEL_W), style="bold")
        text.append(_cell(v1, _VALUE_W).ljust(_VALUE_W + 2))
        text.append(l2.ljust(_LABEL_W), style="bold")
        text.append(v2)
        if i < len(rows) - 1:
            text.append("\n")
    return Panel(text, title=Text(f"genprof: {snap.get('name', '')}"), title_align="left", expand=False)


class LiveView:
    """A rich ``Live`` panel refreshed every ``interval_s`` from ``snapshot()``.

    ``snapshot()`` is called from rich's refresh thread and returns::

        {"name": str, "elapsed_s": float, "phase": str | None, "step_index": int | None,
         "steps_done": int, "steps_total": int | None, "step_rate_per_s": float | None,
         "eta_s": float | None,
         "gpu": {"name": str, "memory_used_bytes": int | None, "memory_total_bytes": int | None,
                 "utilization_pct": float | None, "power_w": float | None,
                 "temperature_c": float | None} | None,
         "allocated_bytes": int | None, "reserved_bytes": int | None,
         "cpu_pct": float | None, "rss_bytes": int | None}

    It must be cheap and must not block (read cached sampler values, not NVML). When it
    raises, the panel shows the error and the failure is logged once with its traceback.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        interval_s: float,
        console: Console | None = None,
        force: bool = False,
    ) -> None:
        if not interval_s > 0:
            from genprof.errors import UsageError

            raise UsageError(f"display interval must be > 0 seconds, got {interval_s!r}")
        self._snapshot = snapshot
        self.interval_s = float(interval_s)
        self._console = console
        self.force = force
        self._live: Live | None = None
        self._failed = False
        self.refreshes = 0

    @property
    def active(self) -> bool:
        return self._live is not None

    def _get_console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # force=True draws even when stderr is not a terminal (CI logs, pipes)
            self._console = Console(stderr=True, force_terminal=True if self.force else None)
        return self._console

    def _renderable(self) -> RenderableType:
        self.refreshes += 1
        try:
            snap = self._snapshot()
        except Exception as exc:  # shown in the panel and logged once with its traceback
            if not self._failed:
                self._failed = True
                log.warning("live view: snapshot() failed; showing the error in the panel", exc_info=True)
            from rich.text import Text

            return Text(f"genprof live view: snapshot failed: {type(exc).__name__}: {exc}")
        return render_snapshot(snap)

    def start(self) -> None:
        """Show the panel; a no-op when stderr (the console) is not a terminal, unless forced."""
        if self._live is not None:
            return
        console = self._get_console()
        if not (console.is_terminal or self.force):
            log.debug("live view off: the console is not a terminal (pass force=True to show it anyway)")
            return
        from rich.live import Live

        # print() output goes above the panel only when stdout is this terminal too; when
        # stdout is a file or a pipe, leave it alone (rich would send it to stderr otherwise).
        stdout_is_tty = _isatty(sys.stdout)
        stderr_is_console = _same_stream(console.file, sys.stderr)
        self._live = Live(
            console=console,
            get_renderable=self._renderable,
            refresh_per_second=1.0 / self.interval_s,
            transient=False,
            redirect_stdout=stdout_is_tty and console.is_terminal,
            redirect_stderr=stderr_is_console and console.is_terminal,
        )
        self._live.start(refresh=True)

    def stop(self) -> None:
        """Draw a last frame and stop refreshing. Safe to call twice."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _same_stream(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a.fileno() == b.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def render_cost(snapshot: Callable[[], Snapshot], *, repeats: int = 200, width: int = 100) -> dict[str, float]:
    """Time one refresh of the panel (``snapshot()`` plus drawing it) without a terminal.

    Returns ``{"per_refresh_s": ..., "repeats": ...}``. The live view's share of a profiled
    loop is at most ``per_refresh_s / interval_s`` (it runs on rich's refresh thread and
    competes for the GIL only while it draws); the end-to-end figure is the profiler
    benchmark run with the display on (``force=True``) and off.
    """
    import io

    from rich.console import Console

    con = Console(file=io.StringIO(), width=width, force_terminal=True, color_system="truecolor")
    t0 = time.perf_counter()
    for _ in range(repeats):
        con.print(render_snapshot(snapshot()))
        con.file.seek(0)
        con.file.truncate()
    per = (time.perf_counter() - t0) / repeats
    return {"per_refresh_s": per, "repeats": float(repeats)}
