"""Saved calibrations: what ``genprof tune --calibrate`` measured for a model on a GPU, read by the planner.

A calibration file lives in the user cache directory (``$GENPROF_CACHE_DIR``, else
``$XDG_CACHE_HOME/genprof``, else ``~/.cache/genprof``) under ``calibration/<model>__<gpu>.json``.
``["time_model"]`` holds keyword arguments of the planner's ``TimeModel``; ``["peak_scale"]`` the
median measured/predicted peak; ``["measured"]`` every measured candidate.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

SCHEMA = "genprof.calibration/1"


def cache_dir() -> Path:
    base = os.environ.get("GENPROF_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "genprof"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "unknown"


def calibration_path(model: str, gpu: str) -> Path:
    return cache_dir() / "calibration" / f"{_slug(model)}__{_slug(gpu)}.json"


def load_calibration(model: str, gpu: str) -> dict[str, Any] | None:
    """The saved calibration for ``model`` on ``gpu`` (the CUDA device name), or ``None``."""
    p = calibration_path(model, gpu)
    if not p.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        from genprof.errors import UsageError

        raise UsageError(f"calibration file {p} is damaged ({exc}); delete it or run genprof tune --calibrate again") from exc
    if data.get("schema") != SCHEMA:
        return None
    return data
