"""Load recording: each component's load time and the memory after it is placed (``genprof.profile_load``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from genprof.integrations.diffusers import facts
from genprof.profiler import Profiler, current_profiler

log = logging.getLogger(__name__)


class LoadRecorder:
    """Records each component's load time and the memory after it is placed.

    Use inside :func:`profile_load`::

        with genprof.profile_load(prof) as load:
            with load.component("text_encoder") as slot:
                slot.module = UMT5EncoderModel.from_pretrained(...).to("cuda")
            with load.component("transformer") as slot:
                slot.module = WanTransformer3DModel.from_pretrained(...).to("cuda")
            pipe = WanPipeline(...)
            load.pipeline(pipe)
    """

    def __init__(self, prof: Profiler | None) -> None:
        self.prof = prof
        self.entries: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def component(self, name: str) -> Iterator[_Slot]:
        slot = _Slot(name)
        t0 = time.perf_counter()
        ctx = self.prof.phase(name) if self.prof is not None else contextlib.nullcontext()
        with ctx:
            yield slot
        self._add(name, time.perf_counter() - t0, slot.module)

    def placed(self, name: str, module: Any, duration_s: float | None = None) -> None:
        """Record a component loaded without :meth:`component` (memory read now)."""
        self._add(name, duration_s, module)

    def pipeline(self, pipe: Any) -> None:
        """Record the assembled pipeline's facts (``run.metadata["pipeline"]``) and memory."""
        self._add("assembled_pipeline", None, None)
        if self.prof is not None:
            self.prof.set_metadata("pipeline", facts.pipeline_facts(pipe))

    def _add(self, name: str, duration_s: float | None, module: Any) -> None:
        entry: dict[str, Any] = {"component": name, "duration_s": duration_s}
        entry.update(_memory_now())
        if module is not None and hasattr(module, "parameters"):
            entry.update(facts.module_facts(module))
        self.entries.append(entry)
        log.info("loaded %s: %s", name, {k: entry.get(k) for k in ("duration_s", "allocated_bytes", "rss_bytes")})
        if self.prof is not None:
            self.prof.run.metadata.setdefault("load", []).append(entry)
            self.prof.event("component_loaded", component=name, **{k: entry.get(k) for k in
                                                                     ("allocated_bytes", "reserved_bytes", "rss_bytes")})


@dataclass
class _Slot:
    name: str
    module: Any = None


def _memory_now() -> dict[str, Any]:
    out: dict[str, Any] = {"allocated_bytes": None, "reserved_bytes": None, "rss_bytes": None}
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["allocated_bytes"] = int(torch.cuda.memory_allocated())
            out["reserved_bytes"] = int(torch.cuda.memory_reserved())
    except ImportError:
        pass
    try:
        import psutil

        out["rss_bytes"] = int(psutil.Process().memory_info().rss)
    except (ImportError, OSError) as exc:
        log.debug("rss unreadable: %s", exc)
    return out


@contextlib.contextmanager
def profile_load(profiler: Profiler | None = None, name: str = "load") -> Iterator[LoadRecorder]:
    """A ``load`` phase in which :class:`LoadRecorder` records each component (see its example).

    ``profiler`` defaults to the active one; with none active, entries are still collected on
    the recorder (``.entries``) and logged.
    """
    prof = profiler if profiler is not None else current_profiler()
    rec = LoadRecorder(prof if prof is not None and prof.running else None)
    ctx = rec.prof.phase(name) if rec.prof is not None else contextlib.nullcontext()
    with ctx:
        yield rec
