"""Parsing and formatting of sizes and durations, used by the config, the CLI and renderers."""

from __future__ import annotations

import math
import re

from genprof.errors import UsageError

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int | float) -> int:
    """Parse ``"16GiB"``, ``"8 GB"``, ``"512MiB"`` or a plain number of bytes.

    GB is 10**9 bytes and GiB is 2**30, as their names say.
    """
    if isinstance(text, bool):
        raise UsageError(f"not a size: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0 or not math.isfinite(text):
            raise UsageError(f"a size must be a finite number >= 0, got {text!r}")
        return int(text)
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"not a size: {text!r} (write it like 16GiB, 8GB, 512MiB or 1024)")
    value = float(m.group(1))
    unit = m.group(2).lower()
    if unit not in _SIZE_UNITS:
        allowed = ", ".join(u for u in _SIZE_UNITS if u)
        raise UsageError(f"unknown size unit {m.group(2)!r} in {text!r}; allowed: {allowed}")
    return int(round(value * _SIZE_UNITS[unit]))


def format_bytes(n: float | None, *, binary: bool = True) -> str:
    """Human-readable size: ``format_bytes(3 * 2**30) == '3.00 GiB'``. ``None`` gives ``'n/a'``."""
    if n is None:
        return "n/a"
    base = 1024.0 if binary else 1000.0
    names = ["B", "KiB", "MiB", "GiB", "TiB"] if binary else ["B", "kB", "MB", "GB", "TB"]
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    i = 0
    while value >= base and i < len(names) - 1:
        value /= base
        i += 1
    if i == 0:
        return f"{sign}{int(value)} B"
    return f"{sign}{value:.2f} {names[i]}"


def format_seconds(s: float | None) -> str:
    """Human-readable duration: ``us``, ``ms``, ``s`` or ``min``. ``None`` gives ``'n/a'``."""
    if s is None:
        return "n/a"
    a = abs(s)
    if a < 1e-3:
        return f"{s * 1e6:.1f} us"
    if a < 1.0:
        return f"{s * 1e3:.2f} ms"
    if a < 120.0:
        return f"{s:.3f} s"
    return f"{s / 60.0:.2f} min"
