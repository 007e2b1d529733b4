"""On-disk cache of meta-trace results, so that ``genprof plan`` and ``estimate`` are interactive the second time.

A trace of a 14B denoiser or a tiled video VAE decode on the meta device takes seconds to tens of
seconds on a small CPU, and its result (a few integers) depends only on the model's spec, the traced
settings and the installed genprof / torch / diffusers / transformers versions. Each result is a small
JSON file under the user's cache folder (``$GENPROF_CACHE_DIR``, else ``$XDG_CACHE_HOME/genprof``,
else ``~/.cache/genprof``), in ``meta-trace/``, named by the SHA-256 of all of those inputs; a new
version of any of them is a new key, so nothing stale is read. ``GENPROF_NO_CACHE=1`` turns it off.
Only successful traces are stored.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_FORMAT = 1


def cache_dir() -> Path | None:
    """The folder of cached traces, or ``None`` when caching is off."""
    if os.environ.get("GENPROF_NO_CACHE", "").strip() not in ("", "0"):
        return None
    root = os.environ.get("GENPROF_CACHE_DIR")
    if root:
        return Path(root) / "meta-trace"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "genprof" / "meta-trace"


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    from importlib import metadata

    from genprof._version import __version__

    out: dict[str, str | None] = {"genprof": __version__, "format": str(_FORMAT)}
    for dist in ("torch", "diffusers", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def cache_key(kind: str, *parts: Any) -> str:
    blob = json.dumps({"kind": kind, "versions": _versions(), "parts": parts}, sort_keys=True, default=_plain)
    return hashlib.sha256(blob.encode()).hexdigest()


def load(key: str) -> Any | None:
    d = cache_dir()
    if d is None:
        return None
    path = d / f"{key}.json"
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable trace cache file %s (%s); it will be rewritten", path, exc)
        return None


def store(key: str, value: Any) -> None:
    d = cache_dir()
    if d is None:
        return
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh)
        os.replace(tmp, d / f"{key}.json")
    except OSError as exc:
        log.warning("could not write the trace cache in %s (%s); set GENPROF_CACHE_DIR or GENPROF_NO_CACHE=1", d, exc)
