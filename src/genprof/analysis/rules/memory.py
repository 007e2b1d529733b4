"""Rules on memory: the peak near capacity, fragmentation, decode peaks, weights in float32,
text encoders kept on the GPU."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from genprof.analysis.findings import Finding
from genprof.analysis.latents import dtype_bytes, dtype_name
from genprof.analysis.queries import innermost_peak_phase
from genprof.analysis.rules.common import gpu_run, is_decode, is_denoise
from genprof.analysis.summary import peak_memory
from genprof.model import Run, Span
from genprof.units import format_bytes

NEAR_CAPACITY = 0.90  # peak reserved at or above 90% of device memory
NEAR_CAPACITY_CRITICAL = 0.97
FRAG_RATIO = 1.3  # reserved / allocated at the peak
FRAG_MIN_GAP_BYTES = 1024**3
DECODE_MEM_RATIO = 1.2  # decode peak above the denoise peak by 20%
DECODE_MEM_MIN_GAP_BYTES = 512 * 1024**2
TEXT_ENCODER_MIN_BYTES = 1024**3


def _phase_peak(run: Run, pred: Callable[[str], bool], key: str = "peak_reserved_bytes") -> int | None:
    vals = [getattr(s, key) for s in run.spans if s.kind == "phase" and pred(s.name) and getattr(s, key) is not None]
    return max(vals) if vals else None


def _components(run: Run) -> dict[str, dict[str, Any]]:
    """``run.metadata["pipeline"]["components"]`` as ``{name: info}`` (dict or list layouts)."""
    pipe = run.metadata.get("pipeline")
    if not isinstance(pipe, Mapping):
        return {}
    comps = pipe.get("components")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(comps, Mapping):
        for k, v in comps.items():
            if isinstance(v, Mapping):
                out[str(k)] = dict(v)
    elif isinstance(comps, list):
        for v in comps:
            if isinstance(v, Mapping) and isinstance(v.get("name"), str):
                out[v["name"]] = dict(v)
    return out


def _dtype(v: Any) -> str:
    """``"float32"`` for ``torch.float32``, ``"float32"`` or ``"Float32"``; short names (``fp32``) kept."""
    return dtype_name(v).lower()


def _element_bytes(v: Any) -> float | None:
    """Bytes per element of a dtype, from the one table :mod:`genprof.analysis.latents` keeps."""
    return dtype_bytes(_dtype(v))


def _component_bytes(info: Mapping[str, Any]) -> int | None:
    """Weight bytes of a component: a recorded byte size, else parameters times the dtype's size.

    The diffusers helper records ``parameters`` (a count), ``dtype`` and, for mixed modules,
    ``dtypes`` (parameter count per dtype).
    """
    for k in ("parameters_bytes", "param_bytes", "size_bytes", "weights_bytes", "bytes"):
        v = info.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return int(v)
    mixed = info.get("dtypes")
    if isinstance(mixed, Mapping) and mixed:
        total = 0
        for dt, n in mixed.items():
            size = _element_bytes(dt)
            if size is None or not isinstance(n, (int, float)):
                return None
            total += int(int(n) * size)
        return total
    n = info.get("parameters")
    size = _element_bytes(info.get("dtype"))
    if isinstance(n, (int, float)) and not isinstance(n, bool) and size is not None:
        return int(int(n) * size)
    return None


def _offload_mode(run: Run) -> str | None:
    pipe = run.metadata.get("pipeline")
    if not isinstance(pipe, Mapping):
        return None
    v = pipe.get("offload")
    return v if isinstance(v, str) and v.lower() not in ("", "none", "false") else None


def rule_peak_near_capacity(run: Run) -> Finding | None:
    """Peak reserved memory is close to the device's memory: the next larger input runs out."""
    if not gpu_run(run):
        return None
    total = run.gpus[0].total_memory_bytes
    peak = peak_memory(run).get("peak_reserved_bytes")
    if not total or peak is None:
        return None
    frac = peak / total
    if frac < NEAR_CAPACITY:
        return None
    ph = innermost_peak_phase(run, "peak_reserved_bytes")
    path = run.path_of(ph) if ph is not None else None
    weights = ph.allocated_start_bytes if ph is not None else None
    code: str | None
    if ph is not None and is_decode(ph.name):
        cause = "the peak is in VAE decoding, whose activations grow with resolution and frame count"
        suggestion = ("Decode in tiles (and one image at a time for batches); for video VAEs tiling also cuts "
                      "the temporal peak.")
        code = "pipe.vae.enable_tiling(); pipe.vae.enable_slicing()"
    elif weights is not None and weights >= 0.6 * peak:
        cause = (f"weights already held {format_bytes(weights)} when '{path}' started; the model itself fills "
                 "most of the GPU")
        suggestion = ("Offload components not in use to the CPU (model offload moves whole components; "
                      "sequential offload moves layers and saves more at a larger time cost), or load the "
                      "weights in a smaller dtype.")
        code = "pipe.enable_model_cpu_offload()"
    else:
        cause = f"activations in '{path or 'the run'}' on top of the weights fill the GPU"
        suggestion = ("Lower the resolution or frame count per call, process frames in chunks, or offload "
                      "idle components to make room.")
        code = "pipe.enable_model_cpu_offload()"
    return Finding(
        rule_id="peak_near_capacity",
        title=f"peak reserved memory is {100 * frac:.0f}% of the GPU",
        severity="critical" if frac >= NEAR_CAPACITY_CRITICAL else "warning",
        evidence=f"peak reserved {format_bytes(peak)} of {format_bytes(total)} on {run.gpus[0].name or 'gpu0'}"
        + (f", reached in '{path}'" if path else "") + ".",
        cause=f"Little headroom is left: {cause}; a larger input or another process will run out of memory.",
        suggestion=suggestion,
        phase=path,
        numbers={"peak_reserved_bytes": peak, "total_memory_bytes": total, "fraction": frac},
        code=code,
    )


def rule_fragmentation(run: Run) -> Finding | None:
    """The allocator reserves much more than tensors use (fragmentation)."""
    if not gpu_run(run):
        return None
    worst: tuple[int, Span] | None = None
    for s in run.spans:
        if s.peak_reserved_bytes is None or s.peak_allocated_bytes is None:
            continue
        gap = s.peak_reserved_bytes - s.peak_allocated_bytes
        if worst is None or gap > worst[0]:
            worst = (gap, s)
    pk = peak_memory(run)
    res, alloc = pk.get("peak_reserved_bytes"), pk.get("peak_allocated_bytes")
    if res is None or not alloc:
        return None
    gap = res - alloc
    if gap < FRAG_MIN_GAP_BYTES or res / alloc < FRAG_RATIO:
        return None
    total = run.gpus[0].total_memory_bytes
    tight = bool(total) and res >= 0.8 * (total or 1)
    where = run.path_of(worst[1]) if worst is not None else None
    return Finding(
        rule_id="fragmentation",
        title=f"reserved memory is {res / alloc:.2f}x the allocated memory",
        severity="warning" if tight else "info",
        evidence=f"peak reserved {format_bytes(res)} against peak allocated {format_bytes(alloc)}: "
        f"{format_bytes(gap)} held by the caching allocator but not used by tensors"
        + (f"; the largest gap is in '{where}'" if where else "") + ".",
        cause="Tensors of changing sizes (varying resolution, frame count or batch) leave blocks that the "
        "caching allocator cannot reuse for the next request.",
        suggestion="Let the allocator grow segments instead of keeping fixed blocks: set "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True before the process starts.",
        phase=where,
        numbers={"peak_reserved_bytes": res, "peak_allocated_bytes": alloc, "gap_bytes": gap},
        code="export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
    )


def rule_decode_memory(run: Run) -> Finding | None:
    """VAE decoding needs more memory than denoising: it sets the peak."""
    if not gpu_run(run):
        return None
    dec = _phase_peak(run, is_decode)
    den = _phase_peak(run, is_denoise)
    if dec is None or den is None or den <= 0:
        return None
    if dec < DECODE_MEM_RATIO * den or dec - den < DECODE_MEM_MIN_GAP_BYTES:
        return None
    return Finding(
        rule_id="decode_memory",
        title=f"VAE decode peaks {dec / den:.2f}x higher than denoising",
        severity="warning",
        evidence=f"decode peak reserved {format_bytes(dec)} against denoise peak {format_bytes(den)} "
        f"({format_bytes(dec - den)} more).",
        cause="The VAE decodes the whole latent at once; its activations grow with resolution and frame count "
        "and set the memory peak of the run.",
        suggestion="Decode in tiles, and one image of a batch at a time; the peak then falls to about the "
        "denoising level at a small time cost.",
        phase=next((run.path_of(s) for s in run.spans if s.kind == "phase" and is_decode(s.name)), None),
        numbers={"decode_peak_bytes": dec, "denoise_peak_bytes": den, "ratio": dec / den},
        code="pipe.vae.enable_tiling(); pipe.vae.enable_slicing()",
    )


def rule_fp32_weights(run: Run) -> Finding | None:
    """float32 weights on a GPU that supports bfloat16."""
    if not gpu_run(run) or not any(g.bf16_supported is True for g in run.gpus):
        return None
    comps = _components(run)
    fp32 = {n: c for n, c in comps.items() if _dtype(c.get("dtype")) in ("float32", "fp32")}
    if not fp32:
        return None
    sizes = {n: _component_bytes(c) for n, c in fp32.items()}
    known = [b for b in sizes.values() if b is not None]
    saved = sum(known) // 2 if known else None
    names = ", ".join(f"{n} ({format_bytes(b)})" if b is not None else n for n, b in sizes.items())
    return Finding(
        rule_id="fp32_weights",
        title=f"{len(fp32)} component(s) in float32 on a bf16-capable GPU",
        severity="warning",
        evidence=f"float32 components: {names}; {run.gpus[0].name or 'the GPU'} supports bfloat16"
        + (f"; bf16 would free about {format_bytes(saved)} of weights" if saved else "") + ".",
        cause="float32 doubles weight memory and runs matrix multiplies far slower than bf16 tensor cores.",
        suggestion="Load the pipeline in bfloat16. Keep only the VAE in float32 if decoded images show artefacts "
        "(some VAEs overflow in float16; bf16 rarely does).",
        numbers={"components": sorted(fp32), "bytes_saved_estimate": saved},
        code="pipe = DiffusionPipeline.from_pretrained(model_id, torch_dtype=torch.bfloat16)",
    )


def rule_text_encoder_on_gpu(run: Run) -> Finding | None:
    """Text encoders stay on the GPU while the denoiser runs."""
    if not gpu_run(run) or _offload_mode(run) is not None:
        return None
    if not any(s.kind == "phase" and is_denoise(s.name) for s in run.spans):
        return None
    comps = _components(run)
    pipe = run.metadata.get("pipeline")
    listed = pipe.get("text_encoders") if isinstance(pipe, Mapping) else None
    te_names = {str(x) for x in listed} if isinstance(listed, list) else set()
    enc = {
        n: c for n, c in comps.items()
        if n in te_names or "text_encoder" in n.lower() or str(c.get("role", "")).lower() == "text_encoder"
    }
    on_gpu = {
        n: c for n, c in enc.items()
        if str(c.get("device_during_denoise", c.get("device", ""))).lower().startswith("cuda")
        and not c.get("offload")  # offload hooks move it off the GPU when not in use
    }
    sizes = {n: _component_bytes(c) for n, c in on_gpu.items()}
    total = sum(b for b in sizes.values() if b is not None)
    if not on_gpu or total < TEXT_ENCODER_MIN_BYTES:
        return None
    peak = peak_memory(run).get("peak_reserved_bytes")
    cap = run.gpus[0].total_memory_bytes
    tight = peak is not None and cap is not None and peak >= 0.8 * cap
    return Finding(
        rule_id="text_encoder_on_gpu",
        title=f"text encoder(s) hold {format_bytes(total)} on the GPU during denoising",
        severity="warning" if tight else "info",
        evidence=", ".join(f"{n} {format_bytes(b)}" for n, b in sizes.items() if b is not None)
        + " stayed on the GPU while the denoiser ran"
        + (f"; peak reserved was {format_bytes(peak)} of {format_bytes(cap)}" if peak and cap else "") + ".",
        cause="Text encoders are needed only once per prompt, before denoising, but keep their weights on "
        "the GPU for the whole generation.",
        suggestion="Encode prompts first, then move the text encoders to the CPU (or let model offload do it); "
        "this frees their memory for larger resolutions or frame counts.",
        phase="denoise",
        numbers={"text_encoder_bytes": total, "components": sorted(on_gpu)},
        code="embeds = pipe.encode_prompt(prompt, ...); pipe.text_encoder.to('cpu'); pipe(prompt_embeds=...)",
    )
