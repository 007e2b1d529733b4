"""Does the chosen plan fit the budget, and how close is it to the fastest plan that fits?

Run on a GPU machine with torch + diffusers + transformers:
    python bench/bench_plan.py --out plan.json [--budgets 8,12,16,24] [--steps 2]
For Wan 2.1 1.3B (480x832, 81 frames) and an SDXL-size UNet (1024x1024): for each budget
(GB, enforced with torch.cuda.set_per_process_memory_fraction), ask genprof.plan, then run the
chosen plan and the other candidates (offload modes x VAE tiling, bf16; fp8 with --fp8) on a
fresh pipeline built from genprof's configs with random weights: text encoding (the text
encoders called directly, through the offload hooks), ``--steps`` denoising steps and the VAE
decode. Records OOM or time for each, and the chosen plan's time over the fastest that fitted.
Prompt embeddings are passed in, so no tokenizer is needed.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from genprof.integrations.model_configs import build_component, get_config
from genprof.planning.plan import TimeModel, apply, plan

MODELS = {
    "wan2.1-1.3b": dict(height=480, width=832, num_frames=81),
    "sdxl": dict(height=1024, width=1024),
}


def _pipe(model):
    import diffusers

    spec = get_config(model)
    parts = {c.name: build_component(c, device="cpu", dtype=torch.bfloat16) for c in spec.components}
    if model.startswith("wan"):
        sched = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        return diffusers.WanPipeline(tokenizer=None, scheduler=sched, **parts)
    sched = diffusers.EulerDiscreteScheduler()
    return diffusers.StableDiffusionXLPipeline(tokenizer=None, tokenizer_2=None, scheduler=sched, **parts)


def _generate(pipe, model, kw, steps):
    dev = torch.device("cuda")
    with torch.no_grad():
        if model.startswith("wan"):
            ids = torch.zeros(1, 512, dtype=torch.long, device=dev)
            emb = pipe.text_encoder(ids).last_hidden_state
            return pipe(prompt_embeds=emb, negative_prompt_embeds=emb.clone(), num_inference_steps=steps,
                        output_type="pt", **kw)
        ids = torch.zeros(1, 77, dtype=torch.long, device=dev)
        h1 = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        o2 = pipe.text_encoder_2(ids, output_hidden_states=True)
        emb = torch.cat([h1, o2.hidden_states[-2]], dim=-1)
        pooled = o2.text_embeds
        return pipe(prompt_embeds=emb, negative_prompt_embeds=emb.clone(), pooled_prompt_embeds=pooled,
                    negative_pooled_prompt_embeds=pooled.clone(), num_inference_steps=steps, output_type="pt", **kw)


def run_one(model, kw, settings, budget, steps):
    gc.collect()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total))
    pipe = _pipe(model)
    rec = {"settings": settings}
    try:
        rec["applied"] = apply(pipe, settings)
        _generate(pipe, model, kw, 1)  # warm-up: kernels, cuBLAS workspaces
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        _generate(pipe, model, kw, steps)
        torch.cuda.synchronize()
        rec.update(ok=True, time_s=time.perf_counter() - t0, peak_reserved_bytes=torch.cuda.max_memory_reserved(),
                   peak_allocated_bytes=torch.cuda.max_memory_allocated())
    except torch.OutOfMemoryError as exc:
        rec.update(ok=False, oom=True, error=str(exc).splitlines()[0])
    finally:
        if hasattr(pipe, "remove_all_hooks"):
            pipe.remove_all_hooks()
        del pipe
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", default="8,12,16,24", help="GB (10**9 bytes)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--fp8", action="store_true", help="also try layerwise fp8 candidates")
    args = ap.parse_args()
    from genprof.planning.resources import measure_h2d_bandwidth

    bw = measure_h2d_bandwidth(0)
    results = []
    for model in args.models.split(","):
        kw = MODELS[model]
        for gb in [float(x) for x in args.budgets.split(",")]:
            budget = int(gb * 1e9)
            p = plan(model, budget, time_model=TimeModel(h2d_bandwidth_bytes_per_s=bw), allow_fp8=args.fp8,
                     num_inference_steps=args.steps, **kw)
            pd = p.to_dict()
            pd["estimate"] = None
            entry = {"model": model, "budget_bytes": budget, "plan": pd, "runs": []}
            if p.chosen is None:
                print(f"{model} {gb:g} GB: nothing fits: {p.needed}")
                results.append(entry)
                continue
            seen = set()
            for c in sorted(p.candidates, key=lambda c: c.time_s):
                key = (c.settings["offload"], c.settings["vae_tiling"], c.settings["layerwise_fp8"])
                if key in seen:
                    continue
                seen.add(key)
                r = run_one(model, kw, c.settings, budget, args.steps)
                r.update(predicted_time_s=c.time_s, predicted_peak_reserved_bytes=c.peak_reserved_bytes,
                         predicted_fits=c.fits, chosen=c is p.chosen)
                entry["runs"].append(r)
                status = f"ok {r['time_s']:.2f}s" if r.get("ok") else "OOM"
                print(f"{model} {gb:g} GB {key}: {status}{'  <- chosen' if c is p.chosen else ''}")
            ok = [r for r in entry["runs"] if r.get("ok")]
            chosen = next(r for r in entry["runs"] if r["chosen"])
            if ok and chosen.get("ok"):
                entry["chosen_over_fastest"] = chosen["time_s"] / min(r["time_s"] for r in ok)
            entry["chosen_oom"] = not chosen.get("ok")
            results.append(entry)
            with open(args.out, "w") as fh:
                json.dump({"device": torch.cuda.get_device_name(), "h2d_bandwidth_bytes_per_s": bw,
                           "results": results}, fh, indent=1)
    print("\nmodel          budget  chosen-OOM  chosen/fastest")
    for e in results:
        print(f"{e['model']:14s} {e['budget_bytes'] / 1e9:5.0f}GB  {e.get('chosen_oom')!s:10s}  {e.get('chosen_over_fastest')}")


if __name__ == "__main__":
    main()
