"""What an instrumented call leaves in the run once it returned: the generation dict and FLOPs.

:func:`record_generation` turns a finished call state (:mod:`.state`) into one entry of
``run.metadata["generations"]`` (layout in ``docs/diffusers.md``): latents and output frames
from the VAE shapes, denoiser forwards and guidance mode from the recorded inputs, offload time,
frame rate. FLOPs are counted later, when the run stops (:func:`flop_work` keeps what that
needs without a reference to the modules; :func:`count_generation_flops` counts it), and
:func:`refresh_utilization` fills TFLOP/s and MFU once GPU times are resolved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from genprof.analysis.latents import compression, describe_latent, encode_rate
from genprof.integrations import flops as flops_mod
from genprof.integrations.diffusers import facts
from genprof.integrations.diffusers.state import _CallState
from genprof.profiler import Profiler

log = logging.getLogger(__name__)


def phase_facts(st: _CallState, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                dt: float, span: Any) -> None:
    """Input and output shapes of a ``vae_decode`` / ``vae_encode`` call, kept on ``st`` for the record."""
    import torch

    if name == "vae_decode":
        z = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("z")
        y = facts.output_tensor(out)
        if isinstance(z, torch.Tensor):
            st.decodes.append({"in": (list(z.shape), str(z.dtype), str(z.device)),
                               "out": None if y is None else (list(y.shape), str(y.dtype)),
                               "duration_s": dt, "span_id": None if span is None else span.id})
    elif name == "vae_encode":
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("x")
        y = facts.output_tensor(out)
        if isinstance(x, torch.Tensor):
            st.encodes.append({"in": (list(x.shape), str(x.dtype)),
                               "out": None if y is None else (list(y.shape), str(y.dtype), str(y.device)),
                               "duration_s": dt, "span_id": None if span is None else span.id})


def record_generation(pipe: Any, st: _CallState, gen_span: Any, kwargs: dict[str, Any], error: BaseException | None,
                      *, cls_name: str, fps: float | None) -> tuple[dict[str, Any], list[tuple[Any, Any]]]:
    """The ``run.metadata["generations"]`` entry of one finished call (without ``flops``), and the
    call's distinct denoiser inputs in ``tensor_spec`` form (for :func:`flop_work`).

    ``cls_name``: the pipeline's own class name; ``fps``: the rate given to ``instrument``, or
    None for the default of known video pipelines.
    """
    decode_facts: dict[str, Any] | None = None
    output_frames: int | None = None
    out_h = out_w = None
    is_video = False
    vae = getattr(pipe, "vae", None)
    vae_cfg = getattr(vae, "config", None)
    channels = None
    if vae_cfg is not None:
        channels = getattr(vae_cfg, "latent_channels", None) or getattr(vae_cfg, "z_dim", None)
    for d in st.decodes:
        shape, dtype, device = d["in"]
        lat = describe_latent(shape, dtype, device, channels=channels)
        entry = lat.to_dict()
        if d["out"] is not None:
            oshape = d["out"][0]
            olayout = "BCTHW" if len(oshape) == 5 else "BCHW"
            if len(oshape) in (4, 5):
                comp = compression(lat, oshape, olayout)
                entry["compression"] = comp.to_dict()
                frames = oshape[0] * (oshape[2] if len(oshape) == 5 else 1)
                output_frames = (output_frames or 0) + frames
                out_h, out_w = oshape[-2], oshape[-1]
                is_video = is_video or len(oshape) == 5
            entry["output_shape"] = oshape
        entry["duration_s"] = d["duration_s"]
        decode_facts = entry
    encode_facts = None
    if st.encodes:
        e = st.encodes[-1]
        layout = "BCTHW" if len(e["in"][0]) == 5 else "BCHW"
        encode_facts = encode_rate(e["in"][0], e["in"][1], e["duration_s"], input_layout=layout)
        if e["out"] is not None:
            encode_facts["latent"] = describe_latent(e["out"][0], e["out"][1], e["out"][2],
                                                     channels=channels).to_dict()
    num_frames = kwargs.get("num_frames")
    fps_source = "instrument(fps=...)" if fps is not None else None
    if fps is None and (is_video or num_frames):
        fps = facts.VIDEO_FPS.get(cls_name)
        fps_source = f"default frame rate of {cls_name} in diffusers' examples" if fps else None
    norm_specs, spec_batches = st.finish_specs()
    per_step = [s.forwards for s in st.steps]
    batches = [spec_batches[i] for s in st.steps for _, i in s.specs]
    by_module: dict[str, int] = {}
    for s in st.steps:
        for name, _ in s.specs:
            by_module[name] = by_module.get(name, 0) + 1
    for name, _ in st.unscoped:
        by_module[name] = by_module.get(name, 0) + 1
    latent_b = decode_facts["dims"].get("B") if decode_facts and decode_facts.get("dims") else None
    cfg = _cfg_mode(per_step, batches, latent_b)
    gen: dict[str, Any] = {
        "span_id": None if gen_span is None else gen_span.id,
        "pipeline_class": cls_name,
        "status": "ok" if error is None else "error",
        "duration_s": None if gen_span is None else gen_span.duration_s,
        "num_inference_steps": kwargs.get("num_inference_steps"),
        "steps": len(st.steps),
        "step_mode": st.step_mode,
        "height": kwargs.get("height") or out_h,
        "width": kwargs.get("width") or out_w,
        "num_frames": num_frames,
        "output_frames": output_frames,
        "fps": fps,
        "fps_source": fps_source,
        "latents": {"decode": decode_facts, "encode": encode_facts},
        "denoiser_forwards": {
            "total": sum(by_module.values()),
            "per_step": per_step,
            "by_module": by_module,
            "batch_per_forward": batches,
            "cfg": cfg,
        },
        "text_encoder_forwards": dict(st.te_forwards),
        "offload": None if not st.offload_calls else {
            "transfer_s_by_phase": dict(st.offload_s),
            "hook_calls": dict(st.offload_calls),
            "method": "host time around the offload hooks' pre_forward (weights moved to the GPU)",
        },
    }
    return gen, norm_specs


@dataclass
class FlopWork:
    """One call's FLOP-counting work, kept until the run stops (no reference to the modules)."""

    steps: list[tuple[int | None, list[tuple[str, int]]]]  # (step span id, (denoiser, spec index) per forward)
    specs: list[tuple[Any, Any]]  # distinct forward inputs, tensor_spec form
    recipes: dict[str, Any]  # denoiser name -> flops.ModuleRecipe, or why there is none
    dtype: str | None
    device_name: str | None


def flop_work(st: _CallState, norm_specs: list[tuple[Any, Any]], prof: Profiler) -> FlopWork:
    """What counting this call's FLOPs needs, with no reference to the modules themselves."""
    recipes: dict[str, Any] = {}
    dtype = None
    for name, module in st.modules.items():
        try:
            recipes[name] = flops_mod.recipe_of(module)
        except TypeError as exc:
            recipes[name] = f"FLOPs not counted: {exc}"
        if dtype is None:
            p = next(module.parameters(), None)
            dtype = None if p is None else str(p.dtype).replace("torch.", "")
    return FlopWork(
        steps=[(None if s.span is None else s.span.id, s.specs) for s in st.steps],
        specs=norm_specs,
        recipes=recipes,
        dtype=dtype,
        device_name=prof.run.gpus[0].name if prof.run.gpus else None,
    )


def count_generation_flops(work: FlopWork, prof: Profiler) -> dict[str, Any]:
    """The ``flops`` entry of a generation: FLOPs per forward and per step, TFLOP/s and MFU."""
    per_spec: dict[tuple[str, int], tuple[int | None, str | None]] = {}
    per_spec_class: dict[tuple[str, int], dict[str, int] | None] = {}
    for _, specs in work.steps:
        for key in specs:
            if key not in per_spec:
                name, idx = key
                recipe = work.recipes.get(name)
                per_spec_class[key] = None
                if recipe is None:
                    per_spec[key] = (None, f"denoiser {name} not seen")
                elif isinstance(recipe, str):
                    per_spec[key] = (None, recipe)
                else:
                    a, k = work.specs[idx]
                    per_spec[key] = flops_mod.count_forward_flops(recipe, a, k)
                    per_spec_class[key] = flops_mod.forward_flops_by_class(recipe, a, k)
    reasons = sorted({r for _, r in per_spec.values() if r})
    steps: list[dict[str, Any]] = []
    for span_id, specs in work.steps:
        vals = [per_spec[key][0] for key in specs]
        f = None if any(v is None for v in vals) else sum(v for v in vals if v is not None)
        steps.append({"span_id": span_id, "flops": f, "flops_by_class": _sum_classes(per_spec_class, specs)})
    out = {
        "status": "counted",
        "method": "torch.utils.flop_counter.FlopCounterMode on a meta-device copy built from the config",
        "class_method": flops_mod.CLASS_METHOD,
        "per_forward": sorted({v for v, _ in per_spec.values() if v is not None}),
        "total_flops": None if any(x["flops"] is None for x in steps) else sum(x["flops"] for x in steps),
        "dtype": work.dtype,
        "device_name": work.device_name,
        "steps": steps,
        "reason": "; ".join(reasons) if reasons else None,
    }
    _fill_utilization(out, {s.id: s for s in prof.run.spans})
    return out


def _sum_classes(per_spec: dict[tuple[str, int], dict[str, int] | None],
                 specs: list[tuple[str, int]]) -> dict[str, int] | None:
    """A step's FLOPs by op class: the sum over its forwards, or None if one was not countable."""
    out: dict[str, int] = {}
    for key in specs:
        c = per_spec.get(key)
        if c is None:
            return None
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out or None


def step_flops_by_class(run: Any, span_ids: list[int]) -> dict[str, float] | None:
    """FLOPs of one step by op class, averaged over the steps ``span_ids`` (the diagnose window's).

    None unless every one of those steps has a by-class count in the run's generations.
    """
    by_span = {s.get("span_id"): s.get("flops_by_class") for g in run.metadata.get("generations", [])
               for s in (g.get("flops") or {}).get("steps", [])}
    rows = [by_span.get(i) for i in span_ids]
    if not rows or any(r is None for r in rows):
        return None
    out: dict[str, float] = {}
    for r in rows:
        for k, v in r.items():  # type: ignore[union-attr]
            out[k] = out.get(k, 0.0) + v / len(rows)
    return out


def _cfg_mode(per_step: list[int], batches: list[int | None], latent_b: int | None) -> str | None:
    if not per_step:
        return None
    n = max(sorted(set(per_step)), key=per_step.count)  # ties: the smallest count
    if n >= 2:
        return f"{n} denoiser calls per step (guidance run as separate calls)"
    b = max((x for x in batches if x is not None), default=None)
    if b is not None and latent_b and b == 2 * latent_b:
        return "one call per step with the batch doubled (guidance batched)"
    return "one call per step (no classifier-free guidance, or guidance-distilled)"


def _fill_utilization(fl: dict[str, Any], spans: dict[int, Any]) -> None:
    for s in fl.get("steps", []):
        span = spans.get(s.get("span_id")) if s.get("span_id") is not None else None
        u = flops_mod.step_utilization(
            s.get("flops"),
            None if span is None else span.gpu_time_s,
            None if span is None else span.duration_s,
            fl.get("device_name"),
            fl.get("dtype"),
        )
        s.update({k: v for k, v in u.items() if k != "flops"})
    ach = [s["achieved_tflops"] for s in fl.get("steps", []) if s.get("achieved_tflops") is not None]
    mfus = [s["mfu"] for s in fl.get("steps", []) if s.get("mfu") is not None]
    fl["mean_achieved_tflops"] = sum(ach) / len(ach) if ach else None
    fl["mean_mfu"] = sum(mfus) / len(mfus) if mfus else None


def refresh_utilization(run: Any) -> None:
    """Recompute per-step TFLOP/s and MFU of every generation once GPU times are resolved (run end)."""
    spans = {s.id: s for s in run.spans}
    for g in run.metadata.get("generations", []) or []:
        fl = g.get("flops") if isinstance(g, dict) else None
        if isinstance(fl, dict) and fl.get("steps"):
            _fill_utilization(fl, spans)
