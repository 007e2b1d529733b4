"""``genprof run script.py [args...]``: run a Python script with a profiler active."""

from __future__ import annotations

import argparse
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run a Python script with a profiler active and write its run file",
        description="Run SCRIPT (as python would, with sys.argv set to SCRIPT ARGS...) inside an active "
        "genprof Profiler: genprof.instrument(pipe), decorators and genprof.phase() in the script record into it. "
        "The run file is written even when the script fails; the exit code is the script's.",
    )
    p.add_argument("--name", default=None, help="run name (default: the script's file name)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the run file and reports (default: output_dir of the config, else ./genprof-runs)")
    p.add_argument("--config", default=None, metavar="FILE", help="profiler config (YAML)")
    p.add_argument("--preset", choices=("dev", "prod"), default=None, help="config preset")
    p.add_argument("--diagnose", nargs="?", const=True, default=None, metavar="WINDOW",
                   help="record a kernel-trace window of a few denoise steps (default: steps 1-2, "
                        "or e.g. steps:2-3); see docs/diagnose.md")
    p.add_argument("script", help="the Python script to run")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genprof.config import load_config
    from genprof.errors import UsageError
    from genprof.profiler import Profiler

    script = Path(args.script)
    if not script.is_file():
        raise UsageError(f"script {script} does not exist (usage: genprof run [options] script.py [args...])")
    cfg = load_config(args.config, preset=args.preset)
    if args.out:
        cfg = cfg.replace(output_dir=args.out)
    elif not cfg.output_dir:
        cfg = cfg.replace(output_dir="genprof-runs")
    if cfg.end_summary == "short":  # genprof run prints the ending and the run file itself, below
        cfg = cfg.replace(end_summary="none")
    if getattr(args, "diagnose", None) is not None:  # genprof diagnose attaches its own window instead
        cfg = cfg.replace(diagnose=args.diagnose)
    prof = Profiler(args.name or script.stem, config=cfg, tags={"script": str(script)})
    old_argv, old_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args.args]
    sys.path.insert(0, str(script.resolve().parent))
    code = 0
    interrupted = False
    try:
        # the script's ending passes through ``with prof:`` so that the profiler records it
        # (SIGTERM's SystemExit(143), sys.exit(n), an exception, Ctrl-C) with the open spans
        with prof:
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as exc:
                code = _exit_code(exc)
                if code != 0:
                    prof.run.metadata["script_exit_code"] = code
                    raise
    except SystemExit:
        pass  # code set above; the profiler saw it and recorded the ending
    except KeyboardInterrupt:
        interrupted = True
        code = 130
    except Exception:  # noqa: BLE001 - the script's own error: print it as python would, keep the run file
        traceback.print_exc()
        code = 1
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    path = prof.run_path
    if path is None:
        path = prof.save(Path(cfg.output_dir or ".") / f"{script.stem}.json")
    print(f"genprof: run file: {path}", file=sys.stderr)
    print(f"genprof: {_ending(prof.run)}; see it with: genprof summary {path}", file=sys.stderr)
    if interrupted:
        print("genprof: interrupted", file=sys.stderr)
    return code


def _ending(run: Any) -> str:
    """One line on how the run ended: status, what ended it, the spans left open."""
    end = run.end
    text = f"run ended {end.status}"
    if end.status != "ok":
        what = end.message if end.status == "interrupted" else \
            ": ".join(x for x in (end.exception_type, end.message) if x)
        if what:
            text += f" ({what})"
        if end.open_spans:
            text += f" with open spans {', '.join(end.open_spans)}"
    return text


def _exit_code(exc: SystemExit) -> int:
    c = exc.code
    if c is None:
        return 0
    if isinstance(c, int):
        return c
    print(c, file=sys.stderr)
    return 1



