"""The allocator settings that change where blocks go, read the way torch 2.13 reads them.

:func:`parse_alloc_conf` parses a ``PYTORCH_CUDA_ALLOC_CONF`` string with torch's syntax and validity
rules (:class:`AllocatorConfigError` names the key, the value and the fix);
:meth:`AllocatorConfig.from_env` reads the environment; :func:`round_size` and
:func:`allocation_size` are the request and segment size rules that depend on the settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB

MIN_BLOCK_SIZE = 512
SMALL_SIZE = 1 * MiB
SMALL_BUFFER = 2 * MiB
MIN_LARGE_ALLOC = 10 * MiB
ROUND_LARGE = 2 * MiB
DEFAULT_LARGE_SEGMENT = 20 * MiB
_INTERVALS = 16  # roundup_power2_divisions ranges: 1 MiB .. 64 GiB, one per power of two
_UNLIMITED = (1 << 64) - 1

ENV_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")

# keys torch accepts but that do not change block placement (checked, then ignored here)
_BOOL_KEYS = ("release_lock_on_cudamalloc", "release_lock_on_hipmalloc", "pinned_use_cuda_host_register",
              "pinned_use_hip_host_register", "pinned_use_background_threads", "graph_capture_record_stream_reuse",
              "pinned_free_catch_all", "throw_on_cudamalloc_oom")
_INT_KEYS = ("pinned_num_register_threads", "pinned_reserve_segment_size_mb", "pinned_max_round_threshold",
             "pinned_max_cached_size")


class AllocatorConfigError(ValueError):
    """A ``PYTORCH_CUDA_ALLOC_CONF`` string torch would reject (or one this model cannot honour)."""



# ------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class AllocatorConfig:
    """The allocator settings that change where blocks go (defaults are torch's)."""

    max_split_size: int = _UNLIMITED
    max_non_split_rounding_size: int = DEFAULT_LARGE_SEGMENT
    roundup_power2_divisions: tuple[int, ...] = (0,) * _INTERVALS
    garbage_collection_threshold: float = 0.0
    expandable_segments: bool = False
    large_segment_size: int = DEFAULT_LARGE_SEGMENT
    per_process_memory_fraction: float | None = None
    source: str = ""

    @property
    def max_split_set(self) -> bool:
        return self.max_split_size != _UNLIMITED

    def divisions_for(self, size: int) -> int:
        """``roundup_power2_divisions`` that applies to a request of ``size`` bytes."""
        log_size = max(size, 1).bit_length() - 1
        index = min(max(0, log_size - 20), _INTERVALS - 1)
        return self.roundup_power2_divisions[index]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AllocatorConfig:
        """The configuration torch would read from the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        for name in ENV_VARS:
            if name in env:
                return parse_alloc_conf(env[name], source=name)
        return cls()


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    buf: list[str] = []
    for ch in text:
        if ch in ",:[]":
            if buf:
                tokens.append("".join(buf))
                buf = []
            tokens.append(ch)
        elif not ch.isspace():
            buf.append(ch)
    if buf:
        tokens.append("".join(buf))
    return tokens


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _stoull(tok: str, key: str, where: str) -> int:
    """C++ ``std::stoull``: optional sign, leading digits; '-5' wraps around (torch then clamps it)."""
    s = tok.strip()
    sign = 1
    if s.startswith(("+", "-")):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    if not digits:
        raise AllocatorConfigError(f"{where}: {key} needs a whole number, got {tok!r}. Fix: e.g. {key}:512")
    v = int(digits)
    if v >= 1 << 64:
        raise AllocatorConfigError(f"{where}: {key} value {tok!r} is out of range. Fix: use a smaller number")
    return v if sign > 0 else (-v) % (1 << 64)


def _stod(tok: str, key: str, where: str) -> float:
    try:
        return float(tok)
    except ValueError:
        raise AllocatorConfigError(f"{where}: {key} needs a number, got {tok!r}. Fix: e.g. {key}:0.6") from None


def parse_alloc_conf(text: str, *, source: str = "PYTORCH_CUDA_ALLOC_CONF") -> AllocatorConfig:
    """Parse an allocator configuration string the way torch 2.13's CUDA build does.

    Raises :class:`AllocatorConfigError` for what torch rejects: an unknown key, a key without a
    value, ``max_split_size_mb`` or ``max_non_split_rounding_mb`` below 20 (or below
    ``large_segment_size_mb``), ``large_segment_size_mb`` not above 10, a
    ``garbage_collection_threshold`` outside (0, 1), divisions or intervals that are not powers of
    two, booleans other than ``True``/``False``; and for ``backend:cudaMallocAsync``, which this
    model does not cover.
    """
    where = f"{source}={text!r}"
    tok = _tokenize(text)
    n = len(tok)
    vals: dict[str, Any] = {}
    divisions = [0] * _INTERVALS

    def need(i: int, what: str) -> str:
        if i >= n:
            raise AllocatorConfigError(f"{where}: expected {what} at the end. Fix: write key:value pairs, e.g. "
                                       "expandable_segments:True,max_split_size_mb:128")
        return tok[i]

    def colon(i: int, key: str) -> None:
        if need(i, f"':' after {key}") != ":":
            raise AllocatorConfigError(f"{where}: expected ':' after {key}, got {tok[i]!r}. Fix: {key}:<value>")

    def boolean(i: int, key: str) -> bool:
        v = need(i, f"True or False for {key}")
        if v not in ("True", "False"):
            raise AllocatorConfigError(f"{where}: {key} takes True or False (capitalised), got {v!r}. "
                                       f"Fix: {key}:True")
        return v == "True"

    i = 0
    while i < n:
        key = tok[i]
        if key in ("max_split_size_mb", "max_non_split_rounding_mb", "large_segment_size_mb"):
            colon(i + 1, key)
            i += 2
            mb = min(_stoull(need(i, f"a value for {key}"), key, where), _UNLIMITED // MiB)
            vals[key] = mb
        elif key == "garbage_collection_threshold":
            colon(i + 1, key)
            i += 2
            v = _stod(need(i, f"a value for {key}"), key, where)
            if not 0.0 < v < 1.0:
                raise AllocatorConfigError(f"{where}: garbage_collection_threshold must be in (0.0, 1.0), got {v}. "
                                           "Fix: e.g. garbage_collection_threshold:0.6")
            vals[key] = v
        elif key == "roundup_power2_divisions":
            colon(i + 1, key)
            i += 2
            v0 = need(i, f"a value for {key}")
            if v0 == "[":
                first = True
                last = 0
                i += 1
                while need(i, "']' closing the roundup_power2_divisions list") != "]":
                    interval = tok[i]
                    colon(i + 1, f"{key} interval {interval}")
                    i += 2
                    d = _stoull(need(i, f"a division count in {key}"), key, where)
                    if not (d == 0 or _is_pow2(d)):
                        raise AllocatorConfigError(f"{where}: {key} divisions must be a power of 2 or 0, got {d}. "
                                                   f"Fix: e.g. {key}:[256:4,>:1]")
                    if interval == ">":
                        for j in range(last + 1, _INTERVALS):
                            divisions[j] = d
                    else:
                        mb = _stoull(interval, f"{key} interval", where)
                        if not _is_pow2(mb):
                            raise AllocatorConfigError(f"{where}: {key} intervals must be powers of 2 (in MB), got "
                                                       f"{interval!r}. Fix: e.g. {key}:[64:8,256:4,>:1]")
                        idx = min(mb.bit_length() - 1, _INTERVALS - 1)
                        if first:
                            for j in range(idx):
                                divisions[j] = d
                            first = False
                        divisions[idx] = d
                        last = idx
                    i += 1
                    if need(i, "']' closing the roundup_power2_divisions list") == ",":
                        i += 1
            else:
                d = _stoull(v0, key, where)
                if not _is_pow2(d):
                    raise AllocatorConfigError(f"{where}: {key} must be a power of 2, got {d}. Fix: e.g. {key}:4")
                divisions = [d] * _INTERVALS
            vals[key] = tuple(divisions)
        elif key == "expandable_segments":
            colon(i + 1, key)
            i += 2
            vals[key] = boolean(i, key)
        elif key == "backend":
            colon(i + 1, key)
            i += 2
            backend = need(i, "a value for backend")
            if backend not in ("native", "cudaMallocAsync"):
                raise AllocatorConfigError(f"{where}: unknown allocator backend {backend!r}; options are native "
                                           "and cudaMallocAsync. Fix: backend:native")
            if backend == "cudaMallocAsync":
                raise AllocatorConfigError(f"{where}: backend:cudaMallocAsync hands memory to the CUDA driver's "
                                           "pool, which this model does not cover. Fix: drop backend:cudaMallocAsync "
                                           "to model the native caching allocator")
        elif key == "per_process_memory_fraction":
            colon(i + 1, key)
            i += 2
            v = _stod(need(i, f"a value for {key}"), key, where)
            if not 0.0 <= v <= 1.0:
                raise AllocatorConfigError(f"{where}: per_process_memory_fraction must be in [0.0, 1.0], got {v}. "
                                           "Fix: e.g. per_process_memory_fraction:0.9")
            vals[key] = v
        elif key in _BOOL_KEYS:
            colon(i + 1, key)
            i += 2
            boolean(i, key)
        elif key in _INT_KEYS:
            colon(i + 1, key)
            i += 2
            _stoull(need(i, f"a value for {key}"), key, where)
        else:
            known = sorted(("max_split_size_mb", "max_non_split_rounding_mb", "large_segment_size_mb",
                            "garbage_collection_threshold", "roundup_power2_divisions", "expandable_segments",
                            "backend", "per_process_memory_fraction", *_BOOL_KEYS, *_INT_KEYS))
            raise AllocatorConfigError(f"{where}: unrecognized allocator option {key!r}. Fix: use one of "
                                       f"{', '.join(known)}")
        i += 1
        if i < n:
            if tok[i] != ",":
                raise AllocatorConfigError(f"{where}: expected ',' between options, got {tok[i]!r}. "
                                           "Fix: separate options with commas, e.g. a:1,b:2")
            i += 1

    large = vals.get("large_segment_size_mb")
    if large is not None and large <= 10:
        raise AllocatorConfigError(f"{where}: large_segment_size_mb must be > 10, got {large}. "
                                   "Fix: e.g. large_segment_size_mb:20")
    large_size = (large or DEFAULT_LARGE_SEGMENT // MiB) * MiB
    floor_mb = max(DEFAULT_LARGE_SEGMENT, large_size) // MiB
    for key in ("max_split_size_mb", "max_non_split_rounding_mb"):
        if key in vals and vals[key] < floor_mb:
            raise AllocatorConfigError(f"{where}: {key} too small, must be >= {floor_mb}, got {vals[key]}. "
                                       f"Fix: e.g. {key}:{max(128, floor_mb)}")
    return AllocatorConfig(
        max_split_size=vals["max_split_size_mb"] * MiB if "max_split_size_mb" in vals else _UNLIMITED,
        max_non_split_rounding_size=vals.get("max_non_split_rounding_mb", DEFAULT_LARGE_SEGMENT // MiB) * MiB,
        roundup_power2_divisions=vals.get("roundup_power2_divisions", (0,) * _INTERVALS),
        garbage_collection_threshold=vals.get("garbage_collection_threshold", 0.0),
        expandable_segments=vals.get("expandable_segments", False),
        large_segment_size=large_size,
        per_process_memory_fraction=vals.get("per_process_memory_fraction"),
        source=text,
    )


# ------------------------------------------------------------------ size rules
def _next_division(size: int, divisions: int) -> int:
    if _is_pow2(size):
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor >> (divisions.bit_length() - 1)
    if step == 0:
        return floor << 1
    low = size & ~(step - 1)
    return size if low == size else low + step


def round_size(size: int, config: AllocatorConfig | None = None) -> int:
    """The block size a request of ``size`` bytes asks for (``round_size`` in torch)."""
    if size < MIN_BLOCK_SIZE:
        return MIN_BLOCK_SIZE
    div = (config or _DEFAULT).divisions_for(size)
    if div > 1 and size > MIN_BLOCK_SIZE * div:
        return _next_division(size, div)
    return MIN_BLOCK_SIZE * ((size + MIN_BLOCK_SIZE - 1) // MIN_BLOCK_SIZE)


def allocation_size(rounded: int, config: AllocatorConfig | None = None) -> int:
    """Bytes of the new segment a rounded request would get (``get_allocation_size``)."""
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return (config or _DEFAULT).large_segment_size
    return ROUND_LARGE * ((rounded + ROUND_LARGE - 1) // ROUND_LARGE)


_DEFAULT = AllocatorConfig()
