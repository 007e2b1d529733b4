"""The ``genprof`` command. Each subcommand is its own module in ``genprof.cli``.

A subcommand module defines ``register(subparsers)`` (adding its parser, with
``set_defaults(func=run)``) and ``run(args) -> int``. It imports heavy dependencies inside
``run`` so that ``genprof --help`` stays fast. Only this module turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from genprof._version import __version__
from genprof.cli import (
    aggregate,
    check,
    compare,
    demo,
    diagnose,
    doctor,
    estimate,
    history,
    plan,
    report,
    run,
    summary,
    tune,
)
from genprof.errors import GenprofError

# in the order ``genprof --help`` lists them
SUBCOMMANDS = (demo, run, diagnose, summary, report, doctor, check, compare, history, aggregate, estimate, plan, tune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genprof",
        description="Profile diffusion image and video generation: time, memory and energy by phase and step.",
    )
    parser.add_argument("--version", action="version", version=f"genprof {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in SUBCOMMANDS:
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GenprofError as exc:
        print(f"genprof: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("genprof: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
