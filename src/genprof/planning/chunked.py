"""Process a video latent in temporal chunks with overlap and linear blending.

Where chunking changes the output: causal video VAEs (Wan, HunyuanVideo, CogVideoX) carry a
feature cache from frame to frame; a chunk starts with an empty cache, so its first frames
differ from a full decode. Overlapping chunks and cross-fading the overlap hides most of it;
the difference is measured as PSNR against a full decode in
``tests/planning/test_chunked.py``. The temporal compression also means a chunk of ``n``
latent frames decodes to ``1 + (n - 1) * k`` frames for the first chunk of a causal VAE;
pass ``out_frames=lambda n: 1 + (n - 1) * k`` so the overlap is found in output frames.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from genprof.errors import UsageError

log = logging.getLogger(__name__)


class ChunkedProcessor:
    """``process(latents, fn)`` runs ``fn`` on chunks of ``chunk_size`` latent frames along ``dim``.

    Chunks overlap by ``overlap`` latent frames; ``fn``'s outputs are stitched along the same
    dim, the overlapping output frames cross-faded linearly. ``cleanup`` frees the CUDA cache
    between chunks. ``progress`` shows a rich progress bar.
    """

    def __init__(
        self,
        chunk_size: int,
        overlap: int = 1,
        cleanup: bool = True,
        *,
        dim: int = 2,
        progress: bool = False,
        out_frames: Callable[[int], int] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")
        if overlap < 0 or overlap >= chunk_size:
            raise UsageError(f"overlap must be in [0, chunk_size), got {overlap} with chunk_size {chunk_size}")
        self.chunk_size = chunk_size
        self.overlap = overlap
        self.cleanup = cleanup
        self.dim = dim
        self.progress = progress
        self.chunks_done = 0
        # latent frames -> output frames of a full pass; causal video VAEs: 1 + (n - 1) * k
        self.out_frames = out_frames or (lambda n: n)

    def bounds(self, n: int) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` latent-frame ranges covering ``0..n``."""
        if n <= self.chunk_size:
            return [(0, n)]
        step = self.chunk_size - self.overlap
        out: list[tuple[int, int]] = []
        s = 0
        while True:
            e = min(s + self.chunk_size, n)
            out.append((s, e))
            if e == n:
                break
            s += step
        return out

    def process(self, latents: Any, fn: Callable[[Any], Any]) -> Any:
        import torch

        n = int(latents.shape[self.dim])
        bounds = self.bounds(n)
        result: Any = None
        bar_ctx: Any = None
        task = None
        if self.progress:
            from rich.progress import Progress

            bar_ctx = Progress(transient=True)
            bar_ctx.start()
            task = bar_ctx.add_task("chunks", total=len(bounds))
        try:
            for s, e in bounds:
                piece = fn(latents.narrow(self.dim, s, e - s))
                if result is None:
                    result = piece
                else:
                    # output frames that the new piece shares with what is already there
                    ov = result.shape[self.dim] + piece.shape[self.dim] - self.out_frames(e)
                    if ov < 0 or ov > min(piece.shape[self.dim], result.shape[self.dim]):
                        raise UsageError(
                            f"chunk {s}:{e} gave {piece.shape[self.dim]} frames, which does not line up with "
                            f"out_frames({e}) = {self.out_frames(e)}; pass out_frames= for this VAE"
                        )
                    if ov > 0:
                        w = torch.linspace(0, 1, ov + 2, device=piece.device, dtype=piece.dtype)[1:-1]
                        shape = [1] * piece.dim()
                        shape[self.dim] = ov
                        w = w.view(shape)
                        tail = result.narrow(self.dim, result.shape[self.dim] - ov, ov)
                        head = piece.narrow(self.dim, 0, ov)
                        blended = tail * (1 - w) + head * w
                        keep = result.narrow(self.dim, 0, result.shape[self.dim] - ov)
                        rest = piece.narrow(self.dim, ov, piece.shape[self.dim] - ov)
                        result = torch.cat([keep, blended, rest], dim=self.dim)
                    else:
                        result = torch.cat([result, piece], dim=self.dim)
                self.chunks_done += 1
                del piece
                if self.cleanup:
                    gc.collect()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                if bar_ctx is not None:
                    bar_ctx.advance(task)
        finally:
            if bar_ctx is not None:
                bar_ctx.stop()
        return result


def psnr(a: Any, b: Any, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB of ``a`` against ``b`` (``data_range`` 2 for [-1, 1] images)."""
    import math

    mse = float(((a.float() - b.float()) ** 2).mean())
    if mse == 0:
        return math.inf
    return 10 * math.log10(data_range**2 / mse)
