"""On-disk cache of meta-trace results, so that ``genprof plan`` and ``estimate`` are interactive the second time.

A trace of a 14B denoiser or a tiled video VAE decode on the meta device takes seconds to tens of
seconds on a small CPU, and its result (a few integers) depends only on the model's spec, the traced
settings and the installed genprof / torch / diffusers / transformers versions. Each result is a small
JSON file under the user's cache folder (``$GENPROF_CACHE_DIR``, else ``$XDG_CACHE_HOME/genprof``,
else ``~/.cache/genprof``), in ``meta-trace/``, named by the SHA-256 of all of those inputs; a new
version of any of them is a new key, so nothing stale is read. The key also holds a hash of the
estimator's own source (this package, the component builder and the allocator model), so a fix to
the estimator is a new key even within one genprof version.

genprof ships the results for its catalogue's models at their default settings
(``shipped_traces.json`` beside this module, written by ``bench/ship_traces.py``): a lookup that
misses the user's folder is answered from it when the key matches exactly (same genprof source,
torch, diffusers and transformers versions), so a first ``genprof plan`` need not trace. Any other
version traces as before. ``GENPROF_SHIPPED_TRACES=0`` turns the shipped results off (trace with
this install), ``GENPROF_NO_CACHE=1`` turns both off. Only successful traces are stored.
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


SHIPPED = Path(__file__).with_name("shipped_traces.json")


def estimator_source_hash() -> str:
    """SHA-256 of the estimator's source files: what a trace result depends on besides its inputs."""
    here = Path(__file__).resolve().parent
    planning = here.parent
    files = (sorted(here.glob("*.py")) + [planning / "build.py", planning / "alloc_trace.py"]
             + sorted((planning / "allocator").glob("*.py")))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    """The shipped results, by key (empty when the file is absent or unreadable)."""
    try:
        data = json.loads(SHIPPED.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the shipped trace results %s (%s)", SHIPPED, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    from importlib import metadata

    from genprof._version import __version__

    out: dict[str, str | None] = {"genprof": __version__, "format": str(_FORMAT), "estimator": estimator_source_hash()}
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
        if os.environ.get("GENPROF_SHIPPED_TRACES", "").strip() == "0":
            return None
        return _shipped().get(key)
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
