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
