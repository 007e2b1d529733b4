"""Predicted vs measured peak GPU memory per phase, on real-size random-weight models.

Run on a GPU machine with torch + diffusers + transformers:
    python bench/bench_estimate.py --out est.json [--cases sd1.5-512,wan-480p-81]
Each case builds every component from genprof's configs with random weights on the CPU in the
run dtype and moves it with ``.to("cuda")``, tensor by tensor in module order, as
``from_pretrained`` + ``pipe.to("cuda")`` places loaded weights (``--build gpu``: the old way,
fp32 random init on the GPU then a cast, which leaves the weights' segments partly empty and
inflates reserved by up to 9 GiB; kept to reproduce estimate_h100_uncalibrated.json). All
components stay resident (offload "none"); then per phase: empty the cache, reset the peak counters, run
the module once (text encoder; one denoiser call per CFG pass as the pipeline runs it; the VAE
decode) and read max_memory_allocated / max_memory_reserved. ``--sequence`` then runs the
three phases again one after another as a pipeline call does (the cache emptied only before
the first), which is what the whole-call peaks carry. It calls the modules directly
(no tokenizer, no scheduler), so the estimator's "kept tensors" are allocated here the same
way (latents, embeddings). Writes every case, the error of every phase, and a refitted
calibration (``fit_calibration``) to --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from genprof.catalog import get_config
from genprof.planning.build import build_component
from genprof.planning.estimate import _denoiser_inputs, estimate, fit_calibration
from genprof.planning.estimate.phases import _VAE_5D
from genprof.planning.estimate.settings import _vae_decode_args

CASES = {
    "sd1.5-512": ("sd1.5", dict(height=512, width=512)),
    "sd1.5-768": ("sd1.5", dict(height=768, width=768)),
    "sdxl-1024": ("sdxl", dict(height=1024, width=1024)),
    "sdxl-1024-tiled": ("sdxl", dict(height=1024, width=1024, vae_tiling=True)),
    "flux-schnell-1024": ("flux.1-schnell", dict(height=1024, width=1024)),
    "wan1.3b-480p-33": ("wan2.1-1.3b", dict(height=480, width=832, num_frames=33)),
    "wan1.3b-480p-81": ("wan2.1-1.3b", dict(height=480, width=832, num_frames=81)),
    "wan1.3b-480p-81-tiled": ("wan2.1-1.3b", dict(height=480, width=832, num_frames=81, vae_tiling=True)),
    # genprof tune measured this one 8.5% over the estimate in a whole pipeline call
    "wan1.3b-480p-33-tiled": ("wan2.1-1.3b", dict(height=480, width=832, num_frames=33, vae_tiling=True)),
    "cogvideox2b-480p-49": ("cogvideox-2b", dict(height=480, width=720, num_frames=49)),
    "cogvideox2b-480p-49-tiled": ("cogvideox-2b", dict(height=480, width=720, num_frames=49, vae_tiling=True)),
    "wan2.2-5b-704p-49": ("wan2.2-5b", dict(height=704, width=1280, num_frames=49)),
    "hunyuan-320p-33-tiled": ("hunyuanvideo", dict(height=320, width=512, num_frames=33, vae_tiling=True)),
    # the widened set (issue 15): families and sizes the estimator was never checked on
    "cogvideox5b-480p-49": ("cogvideox-5b", dict(height=480, width=720, num_frames=49)),
    "cogvideox5b-480p-49-tiled": ("cogvideox-5b", dict(height=480, width=720, num_frames=49, vae_tiling=True)),
    "qwen-image-1024": ("qwen-image", dict(height=1024, width=1024)),
    "qwen-image-1328": ("qwen-image", dict(height=1328, width=1328)),
    "hunyuan-320p-33": ("hunyuanvideo", dict(height=320, width=512, num_frames=33)),
    "wan14b-480p-33": ("wan2.1-t2v-14b", dict(height=480, width=832, num_frames=33)),
    "wan2.2-5b-704p-49-tiled": ("wan2.2-5b", dict(height=704, width=1280, num_frames=49, vae_tiling=True)),
    "sdxl-768": ("sdxl", dict(height=768, width=768)),
    "flux-dev-768": ("flux.1-dev", dict(height=768, width=768)),
    # Stable Diffusion 3.5 and LTX-Video (not measured yet); LTX's VAE tiles above 512 px
    "sd3.5-large-1024": ("sd3.5-large", dict(height=1024, width=1024)),
    "sd3.5-medium-1024": ("sd3.5-medium", dict(height=1024, width=1024)),
    "ltx-video-512x768-97": ("ltx-video", dict(height=512, width=768, num_frames=97)),
    "ltx-video-512x768-97-tiled": ("ltx-video", dict(height=512, width=768, num_frames=97, vae_tiling=True)),
    "ltx-video-0.9.1-512x768-97": ("ltx-video-0.9.1", dict(height=512, width=768, num_frames=97)),
}


def _real(x, dev):
    if isinstance(x, torch.Tensor):
        if x.dtype in (torch.long, torch.int32):
            return torch.full(x.shape, 500, dtype=x.dtype, device=dev)
        if x.dtype == torch.bool:
            return torch.ones(x.shape, dtype=x.dtype, device=dev)
        return torch.randn(x.shape, dtype=x.dtype, device=dev)
    if isinstance(x, dict):
        return {k: _real(v, dev) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_real(v, dev) for v in x)
    return x


class _no_init:  # noqa: N801
    """Skip parameter initialisation on the CPU (values do not change memory; random init of
    billions of parameters takes minutes on the lent machine's CPU). Buffers are still computed."""

    NAMES = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "zeros_", "ones_", "constant_", "orthogonal_")

    def __enter__(self):
        import torch.nn.init as init

        self.saved = {n: getattr(init, n) for n in self.NAMES if hasattr(init, n)}
        for n in self.saved:
            setattr(init, n, lambda t, *a, **k: t)
        self.tf = None
        try:
            from transformers.modeling_utils import no_init_weights

            self.tf = no_init_weights()
            self.tf.__enter__()
        except ImportError:
            self.tf = None
        return self

    def __exit__(self, *exc):
        import torch.nn.init as init

        for n, f in self.saved.items():
            setattr(init, n, f)
        if self.tf is not None:
            self.tf.__exit__(*exc)


def _measure(fn):
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = fn()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    a, r = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    del out
    return a, r, dt


def _alloc_state():
    """The caching allocator's current figures: allocated, reserved, segments, inactive split bytes."""
    st = torch.cuda.memory_stats()
    return {k: st.get(f"{k}.all.current", 0) for k in ("allocated_bytes", "reserved_bytes", "segment", "inactive_split_bytes")}


def _sequence(mods, spec, calls, inputs, vae, z, dec_args=(), steps=2):
    """The phases one after another as a pipeline call runs them: no ``empty_cache`` between them.

    The cache is emptied once before text encoding; the prompt embeddings stay alive through
    denoising, and each phase's peak counters start from the memory the previous phase left.
    """
    out = {}
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    with torch.no_grad():
        torch.cuda.reset_peak_memory_stats()
        embeds = [mods[c.name](input_ids=torch.zeros(z.shape[0], c.seq_len or 77, dtype=torch.long, device=z.device),
                               output_hidden_states=c.output_hidden_states) for c in spec.text_encoders]
        torch.cuda.synchronize()
        out["text_encode"] = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), _alloc_state())
        torch.cuda.reset_peak_memory_stats()
        den = mods[spec.denoiser.name]
        for _ in range(steps):
            res = [den(**inputs) for _ in range(calls)]
            del res
        torch.cuda.synchronize()
        out["denoise"] = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), _alloc_state())
        torch.cuda.reset_peak_memory_stats()
        img = vae.decode(z, *dec_args, return_dict=False)[0]
        torch.cuda.synchronize()
        out["vae_decode"] = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), _alloc_state())
        del img, embeds
    return {ph: {"measured_allocated_bytes": a, "measured_reserved_bytes": r, "state_after": st}
            for ph, (a, r, st) in out.items()}


def run_case(name, model, kw, dev, build="cpu", sequence=False):
    # start from an empty cache, as a fresh process loading one pipeline does: segments cached by
    # the previous case would otherwise take this case's weights, split and partly free
    gc.collect()
    torch.cuda.empty_cache()
    start = _alloc_state()
    t_case = time.perf_counter()
    est = estimate(model, **kw)
    t_est = time.perf_counter() - t_case
    spec = get_config(model)
    s = est.settings
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    mods = {}
    packing = {}
    for c in spec.components:
        cdt = dt[s["vae_dtype"] if c.role == "vae" else s["dtype"]]
        if build == "gpu":
            with torch.device(dev):
                mods[c.name] = build_component(c, device=str(dev), dtype=cdt)
        elif build == "fast":
            with _no_init():
                m = build_component(c, device="cpu", dtype=cdt)
            m = m.to(dev)  # tensor by tensor, like loaded weights
            with torch.no_grad():
                for prm in m.parameters():
                    prm.normal_(0.0, 0.02)  # in place: no allocation
            mods[c.name] = m
            gc.collect()
        else:
            mods[c.name] = build_component(c, device="cpu", dtype=cdt).to(dev)
            gc.collect()
        packing[c.name] = _alloc_state()  # cumulative, after this component is on the GPU
    t_build = time.perf_counter() - t_case - t_est
    res = {"case": name, "model": model, "build": build, "settings": s, "predicted": est.to_dict(), "phases": {},
           "wall_s": {"estimate": round(t_est, 1), "build": round(t_build, 1)},
           "at_start": start, "after_build": packing}
    b = s["batch_size"]
    # kept tensors, as the pipeline holds them
    lat = torch.randn(s["latent_shape"], device=dev, dtype=torch.float32)
    meas = {}
    for c in spec.text_encoders:
        ids = torch.zeros(b, c.seq_len or 77, dtype=torch.long, device=dev)
        meas[c.name] = _measure(lambda c=c, ids=ids: mods[c.name](input_ids=ids, output_hidden_states=c.output_hidden_states))
    te = max(meas.values(), key=lambda m: m[1])
    call_batch = est.phase("denoise").detail["call_batch"]
    calls = est.phase("denoise").detail["calls_per_step"]
    inputs = _real(_denoiser_inputs(spec, _gen(est), call_batch), dev)
    den = mods[spec.denoiser.name]
    dn = _measure(lambda: [den(**inputs) for _ in range(calls)])
    vae = mods[spec.vae.name]
    if s["vae_tiling"]:
        vae.enable_tiling()
    z = lat.to(dt[s["vae_dtype"]])
    # the latent's rank as the pipeline passes it, by the estimator's own rule (Qwen-Image's image
    # VAE is a video VAE: one frame)
    five_d = spec.kind == "video" or spec.vae.class_name in _VAE_5D
    if z.dim() == 5 and not five_d:
        z = z[:, :, 0]
    elif z.dim() == 4 and five_d:
        z = z.unsqueeze(2)
    # what the pipeline passes after the latents (LTX 0.9.1's decode timestep)
    dec_args = _real(_vae_decode_args(spec, b, s["vae_dtype"]), dev)
    vd = _measure(lambda: vae.decode(z, *dec_args, return_dict=False)[0])
    if sequence:
        res["sequence"] = _sequence(mods, spec, calls, inputs, vae, z, dec_args)
    for phase, m in (("text_encode", te), ("denoise", dn), ("vae_decode", vd)):
        p = est.phase(phase).to_dict()
        res["phases"][phase] = {
            "predicted": p,
            "measured_allocated_bytes": m[0],
            "measured_reserved_bytes": m[1],
            "time_s": m[2],
            "error_reserved_pct": 100.0 * (p["peak_reserved_bytes"] - m[1]) / m[1],
            "error_allocated_pct": 100.0 * (p["peak_allocated_bytes"] - m[0]) / m[0],
        }
    mr = max(v["measured_reserved_bytes"] for v in res["phases"].values())
    ma = max(v["measured_allocated_bytes"] for v in res["phases"].values())
    res.update(measured_peak_reserved_bytes=mr, measured_peak_allocated_bytes=ma,
               error_reserved_pct=100.0 * (est.peak_reserved_bytes - mr) / mr,
               error_allocated_pct=100.0 * (est.peak_allocated_bytes - ma) / ma)
    gc.collect()
    torch.cuda.empty_cache()
    return res


def _gen(est):
    from genprof.planning.estimate import GenerationSettings

    s = est.settings
    return GenerationSettings(height=s["height"], width=s["width"], num_frames=s["num_frames"], batch_size=s["batch_size"],
                      num_inference_steps=1, guidance_scale=s["guidance_scale"], dtype=s["dtype"], offload="none",
                      vae_tiling=False, vae_slicing=False, attention_backend="flash", layerwise_fp8=False,
                      vae_dtype=s["vae_dtype"])


def rejudge(path: str, out: str) -> None:
    """Predict every stored case again with the current estimator and compare, without a GPU."""
    with open(path) as fh:
        stored = json.load(fh)
    rows = []
    for c in stored["cases"]:
        if "phases" not in c:
            continue
        model, kw = CASES[c["case"]]
        pred = estimate(model, **kw).peak_reserved_bytes
        phase_peak = max(v["measured_reserved_bytes"] for v in c["phases"].values())
        row = {"case": c["case"], "predicted_reserved_bytes": pred, "phase_by_phase_reserved_bytes": phase_peak,
               "error_phase_by_phase_pct": 100 * (pred - phase_peak) / phase_peak}
        if "sequence" in c:
            whole = max(v["measured_reserved_bytes"] for v in c["sequence"].values())
            row.update(whole_call_reserved_bytes=whole, error_whole_call_pct=100 * (pred - whole) / whole)
        rows.append(row)
        tail = "" if "sequence" not in c else (f"  whole call {row['whole_call_reserved_bytes'] / 2**30:6.2f} GiB "
                                               f"err {row['error_whole_call_pct']:+5.1f}%")
        print(f"{c['case']:28s} predicted {pred / 2**30:6.2f} GiB  phase by phase {phase_peak / 2**30:6.2f} GiB "
              f"err {row['error_phase_by_phase_pct']:+5.1f}%{tail}")
    with open(out, "w") as fh:
        json.dump({"measured": path, "device": stored.get("device"), "cases": rows}, fh, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--build", choices=("fast", "cpu", "gpu"), default="fast",
                    help="fast: parameters allocated on the CPU without initialisation, moved with .to('cuda') "
                         "like loaded weights, then filled in place on the GPU (default); cpu: random init on "
                         "the CPU, then .to('cuda') (slow); gpu: fp32 init on the GPU then cast (fragments)")
    ap.add_argument("--sequence", action="store_true",
                    help="also run the phases one after another without emptying the cache between them, "
                         "as a pipeline call does, and record each phase's peak (key 'sequence')")
    ap.add_argument("--rejudge", metavar="FILE", default=None,
                    help="no GPU: the current estimator's predictions against the measurements stored in FILE "
                         "(phase by phase, and whole calls where FILE has --sequence data); --out gets the table")
    args = ap.parse_args()
    if args.rejudge:
        rejudge(args.rejudge, args.out)
        return
    dev = torch.device("cuda")
    results = []
    for name in args.cases.split(","):
        model, kw = CASES[name]
        try:
            r = run_case(name, model, kw, dev, args.build, args.sequence)
        except torch.OutOfMemoryError as exc:
            r = {"case": name, "model": model, "error": f"OutOfMemoryError: {str(exc).splitlines()[0]}"}
            gc.collect()
            torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001 - one broken case must not lose the others
            import traceback

            r = {"case": name, "model": model, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                 "traceback": traceback.format_exc()[-1500:]}
            gc.collect()
            torch.cuda.empty_cache()
        results.append(r)
        if "error" in r:
            print(f"{name:28s} {r['error']}")
        else:
            print(f"{name:28s} reserved pred {r['predicted']['peak_reserved_bytes'] / 2**30:7.2f} GiB "
                  f"meas {r['measured_peak_reserved_bytes'] / 2**30:7.2f} GiB err {r['error_reserved_pct']:+6.1f}%  "
                  f"allocated err {r['error_allocated_pct']:+6.1f}%  (estimate {r['wall_s']['estimate']} s, build {r['wall_s']['build']} s)")
            for ph, v in r["phases"].items():
                seq = r.get("sequence", {}).get(ph)
                tail = "" if seq is None else f"  in sequence: reserved {seq['measured_reserved_bytes'] / 2**30:.2f} GiB"
                print(f"    {ph:12s} reserved err {v['error_reserved_pct']:+6.1f}%  allocated err {v['error_allocated_pct']:+6.1f}%"
                      f"  measured reserved {v['measured_reserved_bytes'] / 2**30:.2f} GiB{tail}")
            for comp, stt in r["after_build"].items():
                print(f"    after {comp:14s} allocated {stt['allocated_bytes'] / 2**30:6.2f} reserved {stt['reserved_bytes'] / 2**30:6.2f} GiB"
                      f"  segments {stt['segment']}  inactive split {stt['inactive_split_bytes'] / 2**20:.0f} MiB")
        with open(args.out, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "build": args.build, "cases": results,
                       "refit_calibration": fit_calibration([c for c in results if "phases" in c])}, fh, indent=1)


if __name__ == "__main__":
    main()
