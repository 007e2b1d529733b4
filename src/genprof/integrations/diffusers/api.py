"""The public entry points: :func:`instrument`, :func:`uninstrument`, :func:`profile_pipeline`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genprof.errors import MissingDependencyError, UsageError
from genprof.integrations.diffusers import facts
from genprof.integrations.diffusers.handle import InstrumentHandle
from genprof.integrations.diffusers.hooks import _ATTR
from genprof.profiler import Profiler

log = logging.getLogger(__name__)


def instrument(pipe: Any, profiler: Profiler | None = None, *, fps: float | None = None,
               count_flops: bool = True, diagnose: bool | str = False) -> InstrumentHandle:
    """Make every call of ``pipe`` a profiled generation. Returns the handle (``.remove()`` undoes).

    ``profiler``: the :class:`genprof.Profiler` to record into; ``None`` uses whichever profiler
    is active when the pipeline is called (``genprof.current_profiler()``), so ``genprof run``
    and ``with Profiler():`` blocks work. Calls with no active profiler run unprofiled.
    ``fps``: frame rate of the output video for real-time figures (default: the pipeline's
    usual rate for known video pipelines). ``count_flops``: count denoiser FLOPs (meta device,
    after each call) for achieved TFLOP/s and MFU. ``diagnose``: record a diagnose window (a
    kernel trace, see docs/diagnose.md) over the first call's steps, ``True`` for the default
    window (two steps after the first) or a window such as ``"steps:2-3"``, with the denoiser's
    and the VAE's blocks scoped.

    Instrumenting again returns the same handle (with ``profiler``/``fps`` updated).
    """
    if pipe is None or not callable(pipe):
        raise UsageError("instrument() needs a diffusers pipeline object (got a non-callable)")
    if not hasattr(pipe, "components"):
        raise UsageError(
            f"instrument() expects a diffusers DiffusionPipeline; {type(pipe).__name__} has no .components"
        )
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("torch", "instrumenting a diffusers pipeline", "torch") from exc
    existing = pipe.__dict__.get(_ATTR)
    if diagnose:
        from genprof.diagnose import parse_window

        parse_window(diagnose)  # a bad window fails here, not inside the pipeline call
    if existing is not None:
        if diagnose:
            existing.diagnose = diagnose
        if profiler is not None:
            existing.profiler = profiler
        if fps is not None:
            existing.fps = fps
        existing.count_flops = count_flops
        return existing
    handle = InstrumentHandle(pipe, profiler, fps=fps, count_flops=count_flops, diagnose=diagnose)
    pipe.__dict__[_ATTR] = handle
    methods = {"__call__": "generation"}
    if callable(getattr(type(pipe), "encode_prompt", None)):
        methods["encode_prompt"] = "text_encode"
    handle._swap(pipe, methods)
    comps = facts.components_of(pipe)
    handle._ensure(pipe, comps)
    try:  # now rather than inside the first call: it walks every module of every component
        handle._facts(pipe, comps)
    except (RuntimeError, AttributeError, TypeError) as exc:
        log.warning("genprof: could not read pipeline facts: %s", exc)
    return handle


def uninstrument(pipe: Any) -> bool:
    """Undo :func:`instrument`: hooks removed, wrapped methods and the class restored. False if it was not instrumented."""
    handle = pipe.__dict__.get(_ATTR)
    if handle is None:
        return False
    handle.remove()
    return True


@contextlib.contextmanager
def profile_pipeline(pipe: Any, name: str | None = None, *, fps: float | None = None, count_flops: bool = True,
                     **profiler_kwargs: Any) -> Iterator[Profiler]:
    """``with profile_pipeline(pipe) as prof: pipe(...)``: a new Profiler, the pipeline instrumented into it.

    ``profiler_kwargs`` go to :class:`genprof.Profiler` (``tags``, ``config``, ``preset``, config
    keys such as ``output_dir``). The pipeline is uninstrumented on exit (unless it was
    instrumented before, in which case its handle is pointed back at its former profiler).
    With an ``output_dir``, the HTML report is written next to the run file
    (``<run file>.html``) unless the config's own report settings decide
    (``generate_final_report: true``; then ``report_format`` says which reports are written).
    """
    prof = Profiler(name or type(pipe).__name__, **profiler_kwargs)
    before = pipe.__dict__.get(_ATTR)
    prior_prof = None if before is None else before.profiler
    handle = instrument(pipe, prof, fps=fps, count_flops=count_flops)
    try:
        with prof:
            yield prof
    finally:
        if before is None:
            uninstrument(pipe)
        else:
            handle.profiler = prior_prof
        _html_next_to_run(prof)


def _html_next_to_run(prof: Profiler) -> Path | None:
    """The HTML report next to the run file, when one was written and the config leaves reports to us."""
    path = prof.run_path
    if path is None or prof.config.generate_final_report:
        return None
    return write_html_report(prof.run, Path(path).with_suffix(".html"))


def write_html_report(run: Any, path: Path) -> Path | None:
    """Write ``run``'s HTML report to ``path``; None, with one log line saying why, when it cannot.

    The one place this package renders HTML (through ``genprof.render.html.write_html``, as
    ``Run.to_html`` does), so that it can move to a top-level ``write_html`` in one edit.
    """
    try:
        from genprof.render.html import write_html

        written = write_html(run, path)
    except MissingDependencyError as exc:
        log.warning("genprof: HTML report not written: %s", exc)
        return None
    except ModuleNotFoundError as exc:  # jinja2 is a core dependency, but a broken install says so here
        log.warning("genprof: HTML report not written: module %s is missing", exc.name)
        return None
    except OSError as exc:
        log.warning("genprof: HTML report not written to %s: %s", path, exc)
        return None
    except Exception as exc:  # noqa: BLE001 - a failing renderer must not hide the user's error or lose the run file
        log.error("genprof: HTML report failed (%s: %s); the run file is intact", type(exc).__name__, exc)
        return None
    log.info("genprof HTML report written: %s", written)
    return written
