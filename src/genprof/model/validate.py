"""Checks applied when a run file is read: field types, finite numbers within range, the shape of
the metadata genprof writes. Every failure is a TypeError/ValueError naming the field, which
:meth:`genprof.model.Run.from_dict` turns into a :class:`genprof.errors.RunFileError`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

_METADATA_SHAPES: dict[str, tuple[type, tuple[str, ...]]] = {
    "energy": (dict, ("total_j", "average_power_w")),
    "final_memory": (dict, ("allocated_bytes", "reserved_bytes")),
    "generations": (list, ()),
    "sampler_missed_ticks": (dict, ()),
}


def _check_metadata(md: dict[str, Any]) -> dict[str, Any]:
    """The shape of the metadata entries genprof itself writes; free-form entries are kept as they are."""
    for key, (typ, numeric) in _METADATA_SHAPES.items():
        if key not in md or md[key] is None:
            continue
        if not isinstance(md[key], typ):
            raise TypeError(f"metadata.{key} must be {'an object' if typ is dict else 'a list'}, "
                            f"got {type(md[key]).__name__}")
        v: Any = md[key]
        for sub in numeric:
            x = v.get(sub)
            if x is not None:
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    raise TypeError(f"metadata.{key}.{sub} must be a number or null, got {type(x).__name__}")
                _check_float(x, f"metadata.{key}.{sub}", sub)
        if typ is list and any(not isinstance(x, dict) for x in v):
            raise TypeError(f"metadata.{key} must be a list of objects")
    share = md.get("sampler_cpu_share")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))):
        raise TypeError(f"metadata.sampler_cpu_share must be a number or null, got {type(share).__name__}")
    return md


def _int_or_none(v: Any) -> int | None:
    """A byte count read from free-form metadata: an int, else None (a damaged value is not shown)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_INT else None


def _req(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise KeyError(f"missing key {key!r}")
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool):
        raise TypeError(f"{key!r} has type {type(v).__name__}")
    return v


def _opt_num(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name!r} must be a number or null, got {type(v).__name__}")
    return _check_float(v, repr(name), name)


_MAX_UNIX_S = 32503680000.0  # 3000-01-01: a start time past it is a damaged file, not a date to print


def _unix_time(v: int | float) -> float:
    x = _check_float(v, "'started_unix_s'", "started_unix")
    if not 0 <= x < _MAX_UNIX_S:
        raise ValueError(f"'started_unix_s' is {x:g}, not a time between 1970 and 3000")
    return x


def _dict(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"{what!r} must be an object, got {type(v).__name__}")
    return v


def _finite_tree(v: Any, what: str) -> Any:
    """``v`` if no number in it (at any depth) is infinite or NaN; a run file holds finite numbers only
    (it is saved as strict JSON), so a damaged free-form section is refused on load, not on save."""
    stack: list[tuple[Any, str]] = [(v, what)]
    while stack:
        x, where = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"{where} is {x!r}; run files hold finite numbers only")
        if isinstance(x, dict):
            stack.extend((y, f"{where}[{k!r}]") for k, y in x.items())
        elif isinstance(x, list):
            stack.extend((y, f"{where}[{i}]") for i, y in enumerate(x))
    return v


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise TypeError(f"{what!r} must be a list, got {type(v).__name__}")
    return v


_NUMERIC = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,)}

MAX_SECONDS = 1e9
"""Largest time or duration (seconds, about 31 years) a run file may hold; more is a damaged file."""

_MAX_INT = 2**63 - 1  # every integer genprof writes (ids, indexes, byte counts) fits in 64 bits
_NON_NEGATIVE_S = frozenset({"duration_s", "gpu_time_s"})


def _check_float(v: int | float, where: str, name: str) -> float:
    """``v`` as a finite float within the range its field allows, else ValueError naming the field."""
    try:
        x = float(v)
    except OverflowError:
        raise ValueError(f"{where} is an integer of {len(str(abs(int(v))))} digits, out of the range of a float") \
            from None
    if not math.isfinite(x):
        raise ValueError(f"{where} is {x}, not a finite number")
    if name.endswith("_s"):
        if abs(x) > MAX_SECONDS:
            raise ValueError(f"{where} is {x:g} s, beyond {MAX_SECONDS:g} s: not a time genprof records")
        if name in _NON_NEGATIVE_S and x < 0:
            raise ValueError(f"{where} is {x:g} s; a duration is never negative")
    return x


def _check_int(v: int, where: str, name: str) -> int:
    if abs(v) > _MAX_INT:
        raise ValueError(f"{where} is an integer of {len(str(abs(v)))} digits, beyond 64 bits")
    if name.endswith("_bytes") and v < 0:
        raise ValueError(f"{where} is {v}; a byte count is never negative")
    return v


def _build(cls: Any, d: Any, what: str) -> Any:
    """Build dataclass ``cls`` from mapping ``d``, checking scalar field types and numeric ranges."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be an object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        f = known.get(k)
        if f is None:
            continue  # fields added by a later minor version are ignored
        t = str(f.type)
        if v is not None:
            base = t.split("|")[0].strip()
            if base in _NUMERIC:
                ok = isinstance(v, _NUMERIC[base]) and (base == "bool" or not isinstance(v, bool))
                if not ok:
                    raise TypeError(f"{what}.{k} must be {base}, got {type(v).__name__}")
                if base == "float":
                    v = _check_float(v, f"{what}.{k}", k)
                elif base == "int":
                    v = _check_int(v, f"{what}.{k}", k)
            elif base.startswith("dict") and not isinstance(v, dict):
                raise TypeError(f"{what}.{k} must be an object, got {type(v).__name__}")
            elif base.startswith("list"):
                if not isinstance(v, list):
                    raise TypeError(f"{what}.{k} must be a list, got {type(v).__name__}")
                if base == "list[float]":
                    bad = [x for x in v if isinstance(x, bool) or not isinstance(x, (int, float))]
                    if bad:
                        raise TypeError(f"{what}.{k} holds a non-number: {bad[0]!r}")
                    v = [_check_float(x, f"{what}.{k}[{n}]", k) for n, x in enumerate(v)]
                elif base == "list[str]":
                    v = [str(x) for x in v]
        elif "None" not in t and k in known and f.default is not None:
            # a required or non-optional field given as null
            if t.split("|")[0].strip() in _NUMERIC or t.startswith(("dict", "list")):
                raise TypeError(f"{what}.{k} must not be null")
        kwargs[k] = v
    return cls(**kwargs)
