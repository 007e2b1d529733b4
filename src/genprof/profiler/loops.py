"""Step and block loops: ``Profiler.steps`` and ``Profiler.blocks`` (mixed into the profiler).

A loop's consecutive items share one boundary (:meth:`Profiler.next_span`); a loop left early
(``break``, ``return``, an exception in its body) closes its open span as aborted and remembers
where it was, for the run's ending.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from genprof.errors import UsageError
from genprof.profiler.progress import Progress
from genprof.profiler.spans import SpanMethods, _OpenSpan, _stack_paths

log = logging.getLogger("genprof")


class LoopMethods(SpanMethods):
    """``steps`` and ``blocks``: one span per item of an iterable, inside a phase."""

    _prog: Progress
    _abort_path: list[str] | None
    _abort_mark: int | None

    def steps(self, iterable: Iterable[Any], phase: str | None = "denoise", *, total: int | None = None,
              name: str = "step", **attributes: Any) -> Iterator[Any]:
        """Iterate ``iterable`` with one ``step`` span per item, inside phase ``phase`` (None: no phase)."""
        if not self._on:
            return iter(iterable)
        return self._loop(iterable, phase, total, name, "step", attributes, self.config.profile_inference_steps)

    def blocks(self, iterable: Iterable[Any], phase: str | None = "blocks", *, total: int | None = None,
               steps_per_block: int | None = None, output_frames_per_block: int | None = None,
               latent_frames_per_block: int | None = None, vae_temporal_factor: int | None = None,
               fps: float | None = None, name: str = "block", frames_per_block: int | None = None,
               **attributes: Any) -> Iterator[Any]:
        """Like :meth:`steps` for block-diffusion loops: one ``block`` span per item.

        Each block span carries the attribute ``frames``: the output (decoded) frames it
        produces, which throughput analysis uses for blocks/s, latency and deadline misses.
        Give ``output_frames_per_block``, or ``latent_frames_per_block`` with the causal video
        VAE's ``vae_temporal_factor`` k: block 0 then decodes to ``1 + k * (n - 1)`` frames and
        every later block to ``k * n``. ``fps`` (the playback rate the output is meant for) is
        recorded as the attribute ``fps`` of the enclosing blocks phase span.
        ``frames_per_block`` is the old name of ``output_frames_per_block`` (deprecated).
        """
        if frames_per_block is not None:
            _warn_frames_per_block_once()
            if output_frames_per_block is None:
                output_frames_per_block = frames_per_block
        first_frames = later_frames = output_frames_per_block
        if latent_frames_per_block is not None:
            if output_frames_per_block is not None:
                raise UsageError("pass output_frames_per_block or latent_frames_per_block, not both")
            if vae_temporal_factor is None:
                raise UsageError("latent_frames_per_block needs the VAE's temporal compression: pass "
                                 "vae_temporal_factor= (4 for most causal video VAEs), or pass "
                                 "output_frames_per_block= instead")
            n, k = int(latent_frames_per_block), int(vae_temporal_factor)
            if n < 1 or k < 1:
                raise UsageError(f"latent_frames_per_block ({n}) and vae_temporal_factor ({k}) must be >= 1")
            first_frames, later_frames = 1 + k * (n - 1), k * n
        if steps_per_block is not None:
            attributes["steps"] = steps_per_block
        if not self._on:
            return iter(iterable)
        phase_attrs = {} if fps is None else {"fps": fps}
        if first_frames is not None and first_frames != later_frames:
            return self._loop(iterable, phase, total, name, "block", attributes, True, phase_attrs,
                              first_frames, later_frames)
        if first_frames is not None:
            attributes["frames"] = first_frames
        return self._loop(iterable, phase, total, name, "block", attributes, True, phase_attrs)

    def _loop(self, iterable: Iterable[Any], phase: str | None, total: int | None, name: str, kind: str,
              attributes: dict[str, Any], per_item: bool, phase_attrs: dict[str, Any] | None = None,
              first_frames: int | None = None, later_frames: int | None = None) -> Iterator[Any]:
        if total is None and hasattr(iterable, "__len__"):
            with contextlib.suppress(TypeError):
                total = len(iterable)  # type: ignore[arg-type]
        if kind == "step":
            self._prog.step_loop_started(total, self.now())
        outer = self.phase(phase, total=total, **(phase_attrs or {})) if phase else contextlib.nullcontext()
        with outer:
            o: _OpenSpan | None = None
            try:
                for i, item in enumerate(iterable):
                    if later_frames is not None:  # causal VAE: block 0 decodes to fewer frames
                        attributes = {**attributes, "frames": first_frames if i == 0 else later_frames}
                    if per_item:
                        # one boundary between consecutive items: the previous span ends where
                        # this one starts (producing the next item counts in the previous one)
                        o = self.open_span(name, kind, index=i, **attributes) if o is None else \
                            self.next_span(o, index=i, **attributes)
                    if kind == "step":
                        self._progress["step_index"] = i
                    try:
                        yield item
                    except GeneratorExit:
                        # the loop was left early: break, return, or an exception in its body
                        if o is not None and not self._failure_paths:
                            self._abort_path = _stack_paths(self._stack())
                            self._abort_mark = next(self._ids)  # spans opened later have larger ids
                        self.close_span(o, status="aborted")
                        o = None
                        raise
                    except BaseException as exc:
                        self.close_span(o, exc)
                        o = None
                        raise
            except BaseException as exc:
                if o is not None:  # the iterable itself failed while producing the next item
                    self.close_span(o, exc)
                    o = None
                raise
            self.close_span(o)


_frames_alias_warned = False


def _warn_frames_per_block_once() -> None:
    global _frames_alias_warned
    if not _frames_alias_warned:
        _frames_alias_warned = True
        log.warning("Profiler.blocks(frames_per_block=) is deprecated: use output_frames_per_block= "
                    "(or latent_frames_per_block= with vae_temporal_factor=)")
