"""What a run produces besides its run file: final reports, the console summary, the live view.

``import genprof`` imports this module, which registers :func:`attach` with
:func:`genprof.lifecycle.on_profiler_start`. Every profiler, however it was imported
(``genprof.Profiler`` or ``from genprof.profiler import Profiler``: both import the package
``genprof`` first), therefore calls :func:`attach` when it starts. :func:`attach` reads the
profiler's config and

* starts the live view (``real_time_display``) and stops it at ``run_end``;
* writes the final reports at ``run_end`` (``generate_final_report`` with an ``output_dir``
  and a ``report_format`` other than ``none``), after the profiler wrote the run file;
* prints the console summary at ``run_end`` (``console_summary``).

It sits above ``genprof.render`` in the layer list, so the profiler never names a renderer.
Renderers are imported when first needed, which keeps ``import genprof`` light.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genprof.lifecycle import on_profiler_start

if TYPE_CHECKING:  # pragma: no cover
    from genprof.model import Run
    from genprof.profiler import Profiler

log = logging.getLogger("genprof")


def attach(prof: Profiler) -> None:
    """Attach the outputs that ``prof.config`` asks for (see the module docstring)."""
    cfg = prof.config
    if not cfg.enabled:
        return
    if cfg.real_time_display:
        _attach_live(prof)
    if cfg.output_dir and cfg.generate_final_report and cfg.report_format != "none":
        prof.subscribe(lambda kind, run: _write_reports(prof, run), kinds=("run_end",))
    if cfg.console_summary:
        prof.subscribe(lambda kind, run: _console_summary(run), kinds=("run_end",))
    elif cfg.end_summary != "none":
        prof.subscribe(lambda kind, run: _end_summary(prof, run), kinds=("run_end",))


def _attach_live(prof: Profiler) -> None:
    try:
        from genprof.render.live import LiveView  # the view only reads snapshots

        live = LiveView(prof.live_snapshot, prof.config.display_interval, force=prof.config.display_force)
        live.start()
    except Exception as exc:  # noqa: BLE001 - the display is optional; the run goes on
        prof.run.unavailable["live_view"] = f"{type(exc).__name__}: {exc}"
        log.warning("live view unavailable: %s", exc)
        return

    def stop_live(kind: str, run: Run) -> None:
        try:
            live.stop()
        except Exception as e:  # noqa: BLE001 - the display must not lose the run
            log.warning("live view failed to stop: %s", e)

    prof.subscribe(stop_live, kinds=("run_end",))


def _write_reports(prof: Profiler, run: Run) -> None:
    from genprof.render.reports import report_paths, write_reports

    out = Path(prof.config.output_dir or ".")
    stem = prof.default_run_path()
    planned = report_paths(run, out, prof.config.report_format, stem=stem.stem if stem else None)
    try:
        paths = write_reports(run, out, prof.config.report_format, stem=stem.stem if stem else None)
        for p in paths:
            log.info("genprof report written: %s", p)
    except Exception as exc:  # noqa: BLE001 - a failing renderer must not lose the run file
        _record_not_written(prof, run, planned, f"{type(exc).__name__}: {exc}")
    except (SystemExit, KeyboardInterrupt) as exc:  # a signal while writing: say so, then end as asked
        _record_not_written(prof, run, planned, f"{_signal_name(exc)} arrived while the reports were written")
        raise


def _signal_name(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    code = exc.code if isinstance(exc, SystemExit) else None
    if isinstance(code, int) and code > 128:
        try:
            return signal.Signals(code - 128).name
        except ValueError:
            pass  # not a signal number: fall through to the plain exit
    return f"SystemExit({code!r})"


def _record_not_written(prof: Profiler, run: Run, planned: list[Path], reason: str) -> None:
    """Name the reports that do not exist in the run file and on stderr; rewrite the run file."""
    missing = [p for p in planned if not p.exists()]
    if not missing:
        return
    run.metadata["outputs_not_written"] = [{"path": str(p), "reason": reason} for p in missing]
    log.error("genprof report(s) not written: %s (%s); the run file is intact",
              ", ".join(str(p) for p in missing), reason)
    if prof.run_path is not None:
        try:
            prof.save(prof.run_path)
        except OSError as e:
            log.error("could not record the missing reports in the run file %s: %s", prof.run_path, e)


def _console_summary(run: Run) -> None:
    try:
        from genprof.render.console import print_summary

        print_summary(run)
    except Exception as exc:  # noqa: BLE001 - the summary must not turn a good run into a failure
        log.error("console summary failed: %s: %s", type(exc).__name__, exc)


def _end_summary(prof: Profiler, run: Run) -> None:
    try:
        from genprof.render.console import print_short_summary

        path = prof.run_path
        print_short_summary(run, str(path) if path is not None else None, prod=prof.config.end_summary == "line")
    except Exception as exc:  # noqa: BLE001 - the summary must not turn a good run into a failure
        log.error("end-of-run summary failed: %s: %s", type(exc).__name__, exc)


def write_html(run: Run, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write ``run``'s self-contained HTML report to ``path`` (keywords: see ``genprof.render.html.write_html``)."""
    from genprof.render.html import write_html as _write_html

    return _write_html(run, path, **kwargs)


def write_trace(run: Run, path: str | os.PathLike[str]) -> Path:
    """Write ``run`` as a Chrome Trace Event / Perfetto JSON file (open it in ui.perfetto.dev)."""
    from genprof.render.trace import write_trace as _write_trace

    return _write_trace(run, path)


_unregister = on_profiler_start(attach)
