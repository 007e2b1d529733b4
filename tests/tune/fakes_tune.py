"""Fake pipelines and an injected clock for the tuning tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def __deepcopy__(self, memo: dict[int, Any]) -> Clock:
        return self  # one clock for the whole test, like time itself


class FakeVAE:
    def enable_tiling(self) -> None:
        pass

    def enable_slicing(self) -> None:
        pass


class FakeDenoiser:
    def enable_cache(self, config: Any) -> None:
        pass

    def set_attention_backend(self, name: str) -> None:
        pass

    def enable_layerwise_casting(self, **kw: Any) -> None:
        pass


class FakePipe:
    """Callable like a pipeline; each call advances the clock by ``cost(self)`` and returns ``self.value``."""

    unet = FakeDenoiser()
    vae = FakeVAE()

    def __init__(self, clock: Clock, first_call_s: float = 1.0, call_s: float = 1.0) -> None:
        self.clock = clock
        self.first_call_s = first_call_s
        self.call_s = call_s
        self.calls = 0
        self.value = 1.0
        self.hooked = False

    def __call__(self, **kw: Any) -> Any:
        self.calls += 1
        self.clock.t += self.first_call_s if self.calls == 1 else self.call_s
        return self.value


def compile_cache_applier(log: list[dict[str, Any]]) -> Any:
    """An applier whose 'compile' recipe is slow unless a compile cache (a file in the inductor dir) or a hook survives."""

    def applier(pipe: FakePipe, recipe: Any, device: str = "cpu") -> list[str]:
        cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        warm = cache.exists() and any(cache.iterdir())
        log.append({"name": recipe.name, "saw_cache": warm, "saw_hook": pipe.hooked, "cache_dir": str(cache)})
        if recipe.settings.get("compile"):
            pipe.first_call_s = 1.0 if warm or pipe.hooked else 30.0  # a warm cache would skip compilation
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "graph.bin").write_text("compiled")
        pipe.hooked = True
        return [f"fake {recipe.name}"]

    return applier


# --- for isolation="process": everything a child needs is module-level, so it pickles by reference ---

_NOW = [0.0]  # this process's fake time: a child starts at 0 with its own copy of the module
_BUILT: list[int] = []  # a module-level cache: filled by the first build in this process


def process_clock() -> float:
    """An injected clock that works across processes: it reads this module's time, which the fake pipeline advances."""
    return _NOW[0]


class CachedBuildPipe:
    """A pipeline whose first call costs 30 s, or 1 s when this process built one before (a warm module-level cache)."""

    unet = FakeDenoiser()
    vae = FakeVAE()

    def __init__(self, warm: bool) -> None:
        self.first_call_s = 1.0 if warm else 30.0
        self.calls = 0
        self.value = 0.5

    def __call__(self, **kw: Any) -> Any:
        import numpy as np

        self.calls += 1
        _NOW[0] += self.first_call_s if self.calls == 1 else 1.0
        return np.full((1, 16, 16, 3), self.value, dtype=np.float32)  # one decoded frame, as output_type="np"


def cached_factory() -> CachedBuildPipe:
    warm = bool(_BUILT)
    _BUILT.append(os.getpid())
    return CachedBuildPipe(warm)


def offset_applier(pipe: CachedBuildPipe, recipe: Any, device: str = "cpu") -> list[str]:
    """vae_tiling shifts the output by 0.01 (a PSNR of exactly 40 dB against the baseline); the rest change nothing."""
    if recipe.name == "vae_tiling":
        pipe.value = 0.51
    return [f"fake {recipe.name}"]


def crash_applier(pipe: CachedBuildPipe, recipe: Any, device: str = "cpu") -> list[str]:
    """The child dies at once (no exception, no cleanup) on vae_tiling, like a segfault in a native kernel."""
    if recipe.name == "vae_tiling":
        os._exit(7)
    return []


def hang_applier(pipe: CachedBuildPipe, recipe: Any, device: str = "cpu") -> list[str]:
    """The child never finishes (a deadlock); only the parent's timeout ends it."""
    import threading

    threading.Event().wait()
    return []
