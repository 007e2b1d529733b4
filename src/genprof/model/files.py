"""Run files on disk: the atomic write, and the strict JSON reading that refuses what genprof never
writes (NaN, Infinity, out-of-range floats) and keeps lone surrogates readable."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any

from genprof.errors import RunFileError


def _json_default(o: Any) -> Any:
    # numpy scalars, tuples in attributes, paths: written as plain JSON values.
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return repr(o)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``.

    The temporary file is created with ``os.open(..., 0o666)``, so the kernel gives it the
    mode a plain ``open()`` would (the umask and any default ACL applied): the process umask
    is never read or changed (changing it, even briefly, races with other threads creating files).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def parse_run_json(data: bytes | str, *, source: str) -> Any:
    """The JSON object in ``data`` (UTF-8 bytes or text), read strictly; :class:`RunFileError` naming
    ``source`` for text that is not JSON genprof could have written."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunFileError(f"{source}: not a genprof run file (not UTF-8 text: {exc.reason})") from exc
    else:
        text = data
    if not text.strip():
        raise RunFileError(f"{source}: empty file, not a genprof run file")
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except _NonFinite as exc:
        raise RunFileError(f"{source}: holds {exc.args[0]}, which genprof never writes: not a genprof run file") from None
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        hint = " (the file looks truncated: was the run still being written?)" if truncated else ""
        raise RunFileError(f"{source}: not valid JSON at line {exc.lineno} column {exc.colno}{hint}") from exc
    except RecursionError as exc:
        raise RunFileError(f"{source}: JSON nested too deeply to be a genprof run file") from exc
    except ValueError as exc:  # Python's limit on integer literals (4,300 digits)
        raise RunFileError(f"{source}: holds a number genprof cannot read ({exc}); not a genprof run file") from None
    if _SURROGATE_ESCAPE.search(text):
        obj = _escape_lone_surrogates(obj)
    return obj


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    """Python's JSON parser accepts NaN and Infinity, which are not JSON and never in a run file."""
    raise _NonFinite(name)


def _parse_float(text: str) -> float:
    """A JSON number such as ``1e400`` reads as infinity: refused like ``Infinity``."""
    v = float(text)
    if not math.isfinite(v):
        raise _NonFinite(f"the number {text[:40]} (out of the range of a float)")
    return v


# a \uD800-\uDFFF escape in the JSON text: the only way a lone surrogate gets into a run file's
# strings (raw surrogates are not valid UTF-8 and are refused when the bytes are decoded)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _escape_lone_surrogates(obj: Any) -> Any:
    """Replace lone surrogates in every string and key by their ``\\udxxx`` text.

    JSON joins a valid surrogate pair into one character; a lone one cannot be encoded as UTF-8,
    so reports and the console would fail on it. It is kept, visibly, as the six characters of its
    escape (a string that genprof wrote from a file name with undecodable bytes stays readable).
    """
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, list):
        return [_escape_lone_surrogates(x) for x in obj]
    if isinstance(obj, dict):
        return {_escape_lone_surrogates(k): _escape_lone_surrogates(v) for k, v in obj.items()}
    return obj
