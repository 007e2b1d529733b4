"""Try strategies in order (direct, tiled, CPU, ...) and fall back only on out-of-memory errors.

A fallback chain that never invents output (no "emergency dummy latents"): when every strategy fails,
:class:`AllStrategiesFailedError` is raised with why each failed; no data is ever made up.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from genprof.errors import GenprofError

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    strategy: str
    ok: bool
    duration_s: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FallbackResult:
    """The value of the strategy that succeeded, which one it was, and every attempt."""

    value: Any
    strategy: str
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "attempts": [a.to_dict() for a in self.attempts]}


class AllStrategiesFailedError(GenprofError):
    """Every strategy ran out of memory."""

    def __init__(self, attempts: list[Attempt]) -> None:
        why = "; ".join(f"{a.strategy}: {a.error}" for a in attempts)
        super().__init__(f"all {len(attempts)} strategies ran out of memory ({why})")
        self.attempts = attempts


def is_oom(exc: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` (and the CUDA one) and RuntimeErrors that say out of memory."""
    try:
        import torch

        oom_types: tuple[type[BaseException], ...] = tuple(
            t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t
        )
    except ImportError:
        oom_types = ()
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_cache() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_fallbacks(
    strategies: Sequence[tuple[str, Callable[[], Any]]],
    *,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> FallbackResult:
    """Run ``strategies`` (``[(name, fn), ...]``, e.g. direct, tiled, CPU) until one succeeds.

    Only out-of-memory errors (see :func:`is_oom`) move on to the next strategy; anything else
    propagates at once. The CUDA cache is emptied between tries. ``on_attempt`` is called
    after each try (a profiler can record it as an event).
    """
    if not strategies:
        raise GenprofError("with_fallbacks needs at least one (name, function) strategy")
    attempts: list[Attempt] = []
    for name, fn in strategies:
        t0 = time.perf_counter()
        try:
            value = fn()
        except BaseException as exc:
            if not is_oom(exc):
                raise
            a = Attempt(name, False, time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            attempts.append(a)
            log.warning("strategy %s ran out of memory after %.3f s; trying the next", name, a.duration_s)
            if on_attempt:
                on_attempt(a)
            del exc
            _free_cache()
            continue
        a = Attempt(name, True, time.perf_counter() - t0)
        attempts.append(a)
        if on_attempt:
            on_attempt(a)
        return FallbackResult(value=value, strategy=name, attempts=attempts)
    raise AllStrategiesFailedError(attempts)


def vae_decode_strategies(vae: Any, latents: Any, order: Sequence[str] = ("direct", "tiled", "cpu")) -> list[tuple[str, Callable[[], Any]]]:
    """Ready-made strategies for ``vae.decode(latents)``: direct, tiled (``enable_tiling``) and on the CPU in fp32."""

    def direct() -> Any:
        return vae.decode(latents, return_dict=False)[0]

    def tiled() -> Any:
        vae.enable_tiling()
        try:
            return vae.decode(latents, return_dict=False)[0]
        finally:
            vae.disable_tiling()

    def cpu() -> Any:
        import torch

        dev, dt = latents.device, latents.dtype
        vae.to("cpu", dtype=torch.float32)
        try:
            return vae.decode(latents.to("cpu", torch.float32), return_dict=False)[0]
        finally:
            vae.to(dev, dtype=dt)

    table = {"direct": direct, "tiled": tiled, "cpu": cpu}
    unknown = [o for o in order if o not in table]
    if unknown:
        raise GenprofError(f"unknown strategy {unknown[0]!r}; known: direct, tiled, cpu")
    return [(o, table[o]) for o in order]
