"""Throughput of generations and of block-diffusion loops, from a saved run (pure functions).

Definitions (also in ``docs/throughput.md``):

* **time per generation**: host time of a ``generation`` span (one pipeline call);
* **steps/s**: denoising steps in the generation divided by the host time of its ``denoise``
  phase(s) (the whole generation's time when there is no ``denoise`` phase);
* **output frames/s**: frames the VAE decoded (``output_frames`` in the generation's metadata,
  all videos of the batch together; each image counts as one frame) divided by the
  generation's host time. Latent frames are never counted, and never once per step;
* **real-time factor**: seconds of video produced per second of generation time,
  ``(output_frames / fps) / duration_s``; ``>= 1`` means faster than real time. ``None`` without
  an fps (images);
* **time to first frame**: from the generation's start to the end of its first ``vae_decode``
  phase (a non-streaming pipeline delivers every frame at once); for a block loop, from the
  start of the blocks' parent span to the end of the first block;
* **blocks/s**: blocks divided by the time from the first block's start to the last block's end;
* **per-block latency**: host (or GPU) time of each ``block`` span; **jitter**: its p95 - p50;
* **deadline miss**: a block whose latency exceeds ``frames / target_fps``, the time its own
  frames take to play at the target frame rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from genprof.analysis.queries import generations
from genprof.analysis.summary import Stats
from genprof.model import Run, Span


@dataclass
class GenerationThroughput:
    span_id: int
    duration_s: float | None
    steps: int
    denoise_s: float | None
    steps_per_s: float | None
    output_frames: int | None
    fps: float | None
    output_frames_per_s: float | None
    video_seconds: float | None
    real_time_factor: float | None
    time_to_first_frame_s: float | None
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BlockMiss:
    index: int | None
    latency_s: float
    budget_s: float


@dataclass
class BlockThroughput:
    blocks: int
    time_source: str
    total_s: float | None
    blocks_per_s: float | None
    latency: Stats
    jitter_s: float | None
    frames: int | None
    frames_per_s: float | None
    time_to_first_frame_s: float | None
    target_fps: float | None
    deadline_misses: int | None
    misses: list[BlockMiss] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency"] = self.latency.to_dict()
        return d


def _descendants(run: Run, root: Span) -> list[Span]:
    kids: dict[int | None, list[Span]] = {}
    for s in run.spans:
        kids.setdefault(s.parent_id, []).append(s)
    out: list[Span] = []
    stack = list(kids.get(root.id, []))
    seen = {root.id}
    while stack:
        s = stack.pop()
        if s.id in seen:
            continue
        seen.add(s.id)
        out.append(s)
        stack.extend(kids.get(s.id, []))
    return out


def _generation_meta(run: Run) -> dict[int, dict[str, Any]]:
    gens = run.metadata.get("generations", [])
    out: dict[int, dict[str, Any]] = {}
    if isinstance(gens, list):
        for g in gens:
            if isinstance(g, dict) and isinstance(g.get("span_id"), int):
                out[g["span_id"]] = g
    return out


def _pos_number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        return None
    return float(v)


def generation_throughput(run: Run) -> list[GenerationThroughput]:
    """One :class:`GenerationThroughput` per ``generation`` span, in start order."""
    meta = _generation_meta(run)
    out: list[GenerationThroughput] = []
    for g in sorted(run.iter_spans(kind="generation"), key=lambda s: s.start_s):
        reasons: dict[str, str] = {}
        desc = _descendants(run, g)
        steps = [s for s in desc if s.kind == "step"]
        denoise = [s for s in desc if s.kind == "phase" and s.name == "denoise" and s.duration_s is not None]
        denoise_s = sum(s.duration_s for s in denoise if s.duration_s is not None) if denoise else None
        loop_s = denoise_s if denoise_s else g.duration_s
        steps_per_s = (len(steps) / loop_s) if steps and loop_s else None
        if not steps:
            reasons["steps_per_s"] = "no step spans in this generation"
        m = meta.get(g.id, {})
        frames_v = m.get("output_frames")
        frames = int(frames_v) if isinstance(frames_v, int) and not isinstance(frames_v, bool) else None
        fps = _pos_number(m.get("fps"))
        dur = g.duration_s
        fps_out = (frames / dur) if frames is not None and dur else None
        if frames is None:
            reasons["output_frames_per_s"] = "the generation recorded no decoded output frames"
        video_s = (frames / fps) if frames is not None and fps else None
        rtf = (video_s / dur) if video_s is not None and dur else None
        if fps is None:
            reasons["real_time_factor"] = "no frame rate for this output (an image, or fps unknown)"
        decodes = sorted(
            (s for s in desc if s.kind == "phase" and s.name == "vae_decode" and s.end_s is not None),
            key=lambda s: s.start_s,
        )
        ttff = (decodes[0].end_s - g.start_s) if decodes and decodes[0].end_s is not None else None
        if ttff is None:
            reasons["time_to_first_frame_s"] = "no vae_decode phase in this generation (latent output?)"
        out.append(
            GenerationThroughput(
                span_id=g.id,
                duration_s=dur,
                steps=len(steps),
                denoise_s=denoise_s,
                steps_per_s=steps_per_s,
                output_frames=frames,
                fps=fps,
                output_frames_per_s=fps_out,
                video_seconds=video_s,
                real_time_factor=rtf,
                time_to_first_frame_s=ttff,
                reasons=reasons,
            )
        )
    return out


def block_throughput(
    run: Run, *, target_fps: float | None = None, phase: str | None = None, gpu: bool = False
) -> BlockThroughput:
    """Blocks/s, per-block latency and jitter, frames/s and deadline misses of ``block`` spans.

    ``phase`` keeps only blocks whose parent span has that name. ``gpu=True`` uses each block's
    GPU time for latency (blocks without it are left out and a reason is given).
    """
    if target_fps is not None and not target_fps > 0:
        from genprof.errors import UsageError

        raise UsageError(f"target fps must be > 0, got {target_fps!r}")
    by_id = {s.id: s for s in run.spans}
    blocks: list[Span] = []
    for s in run.iter_spans(kind="block"):
        if phase is not None:
            parent = by_id.get(s.parent_id) if s.parent_id is not None else None
            if parent is None or parent.name != phase:
                continue
        blocks.append(s)
    blocks.sort(key=lambda s: s.start_s)
    reasons: dict[str, str] = {}
    source = "gpu" if gpu else "host"
    lat_pairs: list[tuple[Span, float]] = []
    for b in blocks:
        v = b.gpu_time_s if gpu else b.duration_s
        if v is not None:
            lat_pairs.append((b, v))
    if gpu and len(lat_pairs) < len(blocks):
        reasons["latency"] = f"{len(blocks) - len(lat_pairs)} blocks have no GPU time"
    latency = Stats.of(v for _, v in lat_pairs)
    jitter = (latency.p95 - latency.p50) if latency.p95 is not None and latency.p50 is not None else None
    ends = [b.end_s for b in blocks if b.end_s is not None]
    total = (max(ends) - blocks[0].start_s) if blocks and ends else None
    bps = (len(blocks) / total) if blocks and total else None
    frame_counts = [_frames(b) for b in blocks]
    frames: int | None = None
    if blocks and all(f is not None for f in frame_counts):
        frames = sum(f for f in frame_counts if f is not None)
    elif blocks:
        reasons["frames"] = "some blocks carry no 'frames' attribute (prof.blocks(..., frames_per_block=N))"
    fps = (frames / total) if frames is not None and total else None
    ttff: float | None = None
    if blocks and blocks[0].end_s is not None:
        parent = by_id.get(blocks[0].parent_id) if blocks[0].parent_id is not None else None
        start = parent.start_s if parent is not None else blocks[0].start_s
        ttff = blocks[0].end_s - start
    misses: list[BlockMiss] = []
    n_miss: int | None = None
    if target_fps is not None:
        if any(_frames(b) is None for b, _ in lat_pairs):
            reasons["deadline_misses"] = "deadlines need each block's 'frames' attribute"
        else:
            for b, v in lat_pairs:
                budget = (_frames(b) or 0) / target_fps
                if v > budget:
                    misses.append(BlockMiss(index=b.index, latency_s=v, budget_s=budget))
            n_miss = len(misses)
    if not blocks:
        reasons["blocks"] = "no block spans in this run" + (f" under phase {phase!r}" if phase else "")
    return BlockThroughput(
        blocks=len(blocks),
        time_source=source,
        total_s=total,
        blocks_per_s=bps,
        latency=latency,
        jitter_s=jitter,
        frames=frames,
        frames_per_s=fps,
        time_to_first_frame_s=ttff,
        target_fps=target_fps,
        deadline_misses=n_miss,
        misses=misses,
        reasons=reasons,
    )


def _frames(span: Span) -> int | None:
    v = span.attributes.get("frames")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return None
    return v


def mean_of(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def pipeline_video(run: Run) -> dict[str | None, dict[str, float | None]]:
    """Output frames/s and real-time factor per pipeline: the mean over each pipeline's generations.

    Keyed by each generation's pipeline (its span's ``pipeline`` attribute, else the diffusers
    helper's pipeline class; ``None`` without either), from the same generations as the
    ``output_fps`` figure, so a run that mixes a video pipeline with an image one does not report
    one pooled frame rate only. A value is ``None`` when none of that pipeline's generations
    measured it (no output frame count; for the real-time factor, no playback frame rate).
    """
    groups: dict[str | None, list[tuple[float | None, float | None]]] = {}
    for g in generations(run)[0]:
        ok = g.output_frames is not None and g.duration_s > 0
        fps_out = (g.output_frames or 0) / g.duration_s if ok else None
        rtf = (g.output_frames or 0) / g.fps / g.duration_s if ok and g.fps else None
        groups.setdefault(g.pipeline, []).append((fps_out, rtf))
    return {pipe: {"output_frames_per_s": mean_of(v[0] for v in vals), "real_time_factor": mean_of(v[1] for v in vals)}
            for pipe, vals in groups.items()}


def throughput_summary(run: Run, *, target_fps: float | None = None) -> dict[str, Any]:
    """Both views as plain data: per-generation figures, their means, and the block view."""
    gens = generation_throughput(run)
    out: dict[str, Any] = {
        "generations": [g.to_dict() for g in gens],
        "mean_time_per_generation_s": mean_of(g.duration_s for g in gens),
        "mean_steps_per_s": mean_of(g.steps_per_s for g in gens),
        "mean_output_frames_per_s": mean_of(g.output_frames_per_s for g in gens),
        "mean_real_time_factor": mean_of(g.real_time_factor for g in gens),
    }
    if any(s.kind == "block" for s in run.spans):
        out["blocks"] = block_throughput(run, target_fps=target_fps).to_dict()
    return out
