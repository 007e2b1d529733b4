"""Does the chosen plan fit the budget, and how close is it to the fastest plan that fits?

Run on a GPU machine with torch + diffusers + transformers (one call per model fits in about
9 minutes on an H100; see docs/planning.md, "Validating plans"):
    python bench/bench_plan.py --out plan_wan.json --models wan2.1-1.3b
    python bench/bench_plan.py --out plan_sdxl.json --models sdxl
CPU check of the same code path with tiny pipelines (no budget enforcement):
    python bench/bench_plan.py --out smoke.json --smoke

Per model (Wan 2.1 1.3B at 480x832, 81 frames; SDXL at 1024x1024):

1. The components are built ONCE on the CPU without initialisation (``_no_init`` from
   bench_estimate: random init of billions of parameters takes minutes on the lent CPU) and
   kept as a pristine copy. Each candidate gets a fresh pipeline from a structural copy that
   shares the pristine weight storages (new module and Parameter objects, no data copied;
   ``.to()``, offload hooks and fp8 casting replace ``param.data``, never write into it), and is
   torn down completely afterwards (hooks removed, references dropped, ``gc``, ``empty_cache``;
   what stays allocated is recorded as ``leftover_allocated_bytes``). Weight values are
   uninitialised memory: dense kernels do not run faster or slower for them.
2. Every candidate of the planner's exhaustive list (dtype x offload x VAE tiling x fp8) runs
   once without a budget after one untimed warm-up generation: peak reserved (peaks reset after
   ``apply``) and time of text encoding + ``--steps`` denoising steps + VAE decode. A candidate
   over ``--max-candidate-s`` is stopped (a global module forward pre-hook raises) and recorded
   as ``timed_out``; its siblings (same offload mode, with tiling and/or fp8, which only add
   time) are then skipped with that reason.
3. Per budget, ``plan()`` picks a candidate twice: with the time model's assumptions (only the
   measured host-to-device bandwidth) and with the measured step and VAE decode times of the
   no-offload candidate. For each: does its MEASURED peak fit the budget, the fastest candidate
   whose measured peak fits, the chosen/fastest time ratio (target <= 1.15); and the chosen plan
   runs once more with ``torch.cuda.set_per_process_memory_fraction(budget / total)`` enforced
   (an OOM is caught and recorded). Predicted vs measured peak per candidate is in the JSON.

Everything is written to --out after every candidate, so a timeout keeps what was measured.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_estimate import _no_init  # noqa: E402

from genprof.planning.plan import Plan, TimeModel, apply, plan  # noqa: E402

MODELS = {
    "wan2.1-1.3b": dict(height=480, width=832, num_frames=81),
    "sdxl": dict(height=1024, width=1024),
}
SMOKE_MODELS = ("wan", "sdxl")  # genprof.integrations.demo tiny pipelines
SLOWER_OPTIONS = ("vae_tiling", "layerwise_fp8", "vae_slicing")


class CandidateTimeout(Exception):
    """Raised by the forward pre-hook once a candidate has used its time."""


class Deadline:
    """A global module forward pre-hook that stops a candidate after ``limit_s`` seconds."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self._check)

    def _check(self, module: Any, args: Any) -> None:
        if self.at is not None and time.perf_counter() > self.at:
            self.at = None  # raise once; teardown may call modules
            raise CandidateTimeout(type(module).__name__)

    def arm(self, limit_s: float) -> None:
        self.at = time.perf_counter() + limit_s

    def disarm(self) -> None:
        self.at = None

    def close(self) -> None:
        self.handle.remove()


# ---------------------------------------------------------------- building


class Model:
    """Pristine CPU components, and a fresh pipeline from them on demand."""

    def __init__(self, name: str, smoke: bool) -> None:
        import diffusers

        self.name = name
        self.smoke = smoke
        if smoke:
            from genprof.integrations.demo import build_pipeline

            demo = build_pipeline(name, "tiny", device="cpu")
            self.pipe_cls = type(demo.pipe)
            self.components = dict(demo.pipe.components)
            self.extra: dict[str, Any] = {}
            self.generation = {k: demo.call_kwargs[k] for k in ("height", "width", "num_frames") if k in demo.call_kwargs}
            self.seq_len = 16
            self.plan_target: Any = demo.pipe
        else:
            from genprof.catalog import get_config
            from genprof.planning.build import build_component

            spec = get_config(name)
            comps: dict[str, Any] = {}
            for c in spec.components:
                with _no_init():  # bf16 like the plans (apply() casts the whole pipeline to their dtype)
                    comps[c.name] = build_component(c, device="cpu", dtype=torch.bfloat16)
                gc.collect()
            if name.startswith("wan"):
                comps["scheduler"] = diffusers.UniPCMultistepScheduler(
                    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
                comps["tokenizer"] = None
                self.pipe_cls = diffusers.WanPipeline
            else:
                comps["scheduler"] = diffusers.EulerDiscreteScheduler(steps_offset=1)
                comps["tokenizer"] = comps["tokenizer_2"] = None
                self.pipe_cls = diffusers.StableDiffusionXLPipeline
            self.components = comps
            self.extra = {}
            self.generation = dict(MODELS[name])
            self.seq_len = (spec.text_encoders[0].seq_len or 77) if name.startswith("wan") else 77
            self.plan_target = name

    def fresh(self) -> Any:
        comps = {}
        for k, v in self.components.items():
            if isinstance(v, torch.nn.Module):
                comps[k] = structural_copy(v)
            elif k == "scheduler":
                comps[k] = type(v).from_config(v.config)
            else:
                comps[k] = v
        pipe = self.pipe_cls(**comps, **self.extra)
        pipe.set_progress_bar_config(disable=True)
        return pipe


def structural_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A new module tree whose parameters and buffers share the original storages."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach()
    return copy.deepcopy(module, memo)


# ---------------------------------------------------------------- running


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def generate(pipe: Any, model: Model, steps: int, dev: str) -> dict[str, float]:
    """Text encoding (called directly, through any offload hooks), ``steps`` steps, VAE decode."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        ids = torch.zeros(1, model.seq_len, dtype=torch.long, device=dev)
        if model.pipe_cls.__name__.startswith("Wan"):
            emb = pipe.text_encoder(ids).last_hidden_state
            kw: dict[str, Any] = dict(prompt_embeds=emb, negative_prompt_embeds=emb.clone())
        else:
            h1 = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
            o2 = pipe.text_encoder_2(ids, output_hidden_states=True)
            emb = torch.cat([h1, o2.hidden_states[-2]], dim=-1)
            pooled = o2.text_embeds
            kw = dict(prompt_embeds=emb, negative_prompt_embeds=emb.clone(), pooled_prompt_embeds=pooled,
                      negative_pooled_prompt_embeds=pooled.clone())
        _sync(dev)
        marks["text_encode_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()

        def on_step(p: Any, i: int, t: Any, cb: dict[str, Any]) -> dict[str, Any]:
            if i == steps - 1:
                _sync(dev)  # once, at the last step: separates denoising from the VAE decode
                marks["denoise_s"] = time.perf_counter() - t1
            return cb

        out = pipe(num_inference_steps=steps, output_type="pt", guidance_scale=5.0, callback_on_step_end=on_step,
                   **kw, **model.generation)
        _sync(dev)
        del out
    t2 = time.perf_counter()
    marks["vae_decode_s"] = t2 - t1 - marks.get("denoise_s", 0.0)
    marks["time_s"] = t2 - t0
    return marks


def run_candidate(model: Model, settings: dict[str, Any], steps: int, dev: str, deadline: Deadline,
                  limit_s: float | None, budget: int | None = None) -> dict[str, Any]:
    """Build, apply, run once, tear down. Never raises for OOM, timeout or a failing candidate."""
    cuda = dev == "cuda"
    rec: dict[str, Any] = {}
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        if budget is not None:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total))
            rec["memory_fraction"] = min(1.0, budget / total)
    holder = [None]
    t0 = time.perf_counter()
    try:
        holder[0] = model.fresh()
        if limit_s is not None:
            deadline.arm(limit_s)
        rec["applied"] = apply(holder[0], settings, device=dev)
        rec["setup_s"] = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rec.update(generate(holder[0], model, steps, dev))
        rec["ok"] = True
        if cuda:
            rec["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
            rec["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    except CandidateTimeout as exc:
        rec.update(ok=False, timed_out=True, error=f"over {limit_s:g} s (stopped in {exc})")
    except torch.OutOfMemoryError as exc:
        rec.update(ok=False, oom=True, error=str(exc).splitlines()[0])
    except Exception as exc:  # noqa: BLE001 - one broken candidate must not lose the others
        rec.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        deadline.disarm()
        rec["wall_s"] = time.perf_counter() - t0
        pipe = holder[0]
        holder[0] = None
        if pipe is not None and hasattr(pipe, "remove_all_hooks"):
            try:
                pipe.remove_all_hooks()
            except Exception as exc:  # noqa: BLE001 - recorded; the copy is dropped anyway
                rec["teardown_error"] = f"{type(exc).__name__}: {exc}"
        del pipe
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            rec["leftover_allocated_bytes"] = torch.cuda.memory_allocated()
            torch.cuda.set_per_process_memory_fraction(1.0)
    return rec


def _key(settings: dict[str, Any]) -> str:
    s = settings
    parts = [s["dtype"], s["offload"]] + [o for o in SLOWER_OPTIONS if s.get(o)] + [s["attention_backend"]]
    return "/".join(parts)


def _base(settings: dict[str, Any]) -> tuple[Any, ...]:
    return (settings["dtype"], settings["offload"], settings["attention_backend"])


# ---------------------------------------------------------------- per budget


def judge(p: Plan, measured: dict[str, dict[str, Any]], budget: int, cuda: bool) -> dict[str, Any]:
    """Chosen plan vs the fastest candidate whose MEASURED peak fits ``budget``, and ``budget`` less the margin.

    ``fastest_fitting`` uses the raw budget (what the enforced run allows); ``fastest_fitting_margin``
    uses ``budget * (1 - p.safety_margin)``, the space the planner itself may fill, so the ratio to it
    says how far the choice is from the best the planner could have made with a perfect estimate.
    """
    out: dict[str, Any] = {"fits_predicted": p.fits, "needed": p.needed, "safety_margin": p.safety_margin}
    ok = {k: r for k, r in measured.items() if r.get("ok")}
    fitting = {k: r for k, r in ok.items() if not cuda or r["peak_reserved_bytes"] <= budget}
    fastest = min(fitting, key=lambda k: fitting[k]["time_s"]) if fitting else None
    out["fastest_fitting"] = fastest
    out["fastest_fitting_time_s"] = fitting[fastest]["time_s"] if fastest else None
    usable = budget * (1 - p.safety_margin)
    fit_m = {k: r for k, r in ok.items() if not cuda or r["peak_reserved_bytes"] <= usable}
    fastest_m = min(fit_m, key=lambda k: fit_m[k]["time_s"]) if fit_m else None
    out["fastest_fitting_margin"] = fastest_m
    out["fastest_fitting_margin_time_s"] = fit_m[fastest_m]["time_s"] if fastest_m else None
    if p.chosen is None:
        return out
    ck = _key(p.chosen.settings)
    r = measured.get(ck, {})
    out.update(chosen=ck, chosen_predicted_peak_reserved_bytes=p.chosen.peak_reserved_bytes,
               chosen_predicted_time_s=p.chosen.time_s, chosen_measured=bool(r.get("ok")))
    if r.get("ok"):
        out["chosen_time_s"] = r["time_s"]
        out["chosen_measured_peak_reserved_bytes"] = r.get("peak_reserved_bytes")
        out["chosen_fits_measured"] = (r["peak_reserved_bytes"] <= budget) if cuda else None
        if fastest:
            out["chosen_over_fastest"] = r["time_s"] / fitting[fastest]["time_s"]
        if fastest_m:
            out["chosen_over_fastest_margin"] = r["time_s"] / fit_m[fastest_m]["time_s"]
    elif r.get("timed_out") or r.get("skipped"):
        out["chosen_time_s_at_least"] = r.get("wall_s")
    return out


def retime(j: dict[str, Any], model: Model, measured: dict[str, dict[str, Any]], retimes: dict[str, list[float]],
           args: argparse.Namespace, dev: str, deadline: Deadline) -> None:
    """Time the chosen plan and the fastest fitting candidates again, alternately, and judge on medians.

    One measurement per candidate cannot tell apart two plans a few percent apart (SDXL with and
    without VAE tiling at 1024 differed by 27% in one run and by 2% in the next). When the chosen
    plan is not the fastest, each of them is run until it has ``1 + args.retime`` unconstrained
    times (shared across budgets and time models); the verdict keys gain ``_retimed`` twins.
    """
    ck = j.get("chosen")
    keys = [k for k in (ck, j.get("fastest_fitting"), j.get("fastest_fitting_margin")) if k]
    if ck is None or len(set(keys)) < 2 or not all(measured.get(k, {}).get("ok") for k in keys):
        return
    for k in keys:
        retimes.setdefault(k, [measured[k]["time_s"]])
    for _ in range(args.retime):
        for k in dict.fromkeys(keys):  # alternate, in a fixed order, until each has enough
            if len(retimes[k]) >= 1 + args.retime:
                continue
            r = run_candidate(model, measured[k]["settings"], args.steps, dev, deadline, 2 * args.max_candidate_s)
            if r.get("ok"):
                retimes[k].append(r["time_s"])
    med = {k: statistics.median(retimes[k]) for k in dict.fromkeys(keys)}
    j["retimed_s"] = {k: list(retimes[k]) for k in dict.fromkeys(keys)}
    for fk, rk in (("fastest_fitting", "chosen_over_fastest_retimed"),
                   ("fastest_fitting_margin", "chosen_over_fastest_margin_retimed")):
        f = j.get(fk)
        if f:
            j[rk] = med[ck] / med[f]


# ---------------------------------------------------------------- main


def _write(path: str, doc: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
    os.replace(tmp, path)


def _preimport(name: str) -> None:
    """Import, in this thread, every lazily imported class the build and the planner's thread use.

    diffusers and transformers import their modules lazily; the build (main thread) and the first
    ``plan()`` (warm thread) importing them at the same time failed on the H100 with
    ``ImportError: cannot import name 'AutoModel' from 'transformers'`` (a partially initialised
    module handed to one thread). Resolving the classes and building each component on ``meta``
    here, before the thread starts, leaves nothing of that for the two threads to import at once.
    """
    import diffusers
    import diffusers.hooks  # noqa: F401 - layerwise casting / group offloading (plan, apply)
    import transformers  # noqa: F401

    from genprof.catalog import get_config
    from genprof.planning.build import build_component

    for c in get_config(name).components:
        build_component(c, device="meta", dtype=torch.bfloat16)
    for cls in ("WanPipeline", "StableDiffusionXLPipeline", "UniPCMultistepScheduler", "EulerDiscreteScheduler"):
        getattr(diffusers, cls)


def bench_model(name: str, args: argparse.Namespace, doc: dict[str, Any], out: dict[str, Any], deadline: Deadline) -> None:
    dev = "cpu" if args.smoke else "cuda"
    cuda = dev == "cuda"
    bw = doc.get("h2d_bandwidth_bytes_per_s")
    budgets = [int(float(x) * 1e9) for x in args.budgets.split(",")]
    plan_kw = dict(allow_fp8=not args.no_fp8, num_inference_steps=args.steps)
    t0 = time.perf_counter()
    if args.smoke:
        model = Model(name, smoke=True)
    else:
        model = None  # built while the estimator's traces are warmed in a thread

    # warm the estimator's caches (the first plan of a model traces every candidate: ~50 s of CPU;
    # later plans of the same generation take ~1 s) while the components are built
    first: dict[str, Any] = {}
    target = model.plan_target if model is not None else name
    gen = model.generation if model is not None else MODELS[name]

    def warm() -> None:
        try:
            first["plan"] = plan(target, budgets[0], time_model=TimeModel(h2d_bandwidth_bytes_per_s=bw), **plan_kw, **gen)
        except Exception as exc:  # noqa: BLE001 - re-raised in the main thread
            first["error"] = exc

    if model is None:
        _preimport(name)
    th = threading.Thread(target=warm, daemon=True)
    th.start()
    if model is None:
        try:
            model = Model(name, smoke=False)
        except (ImportError, RuntimeError) as exc:  # the same race seen from this side: again, alone
            out["build_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            th.join()
            model = Model(name, smoke=False)
    out["build_s"] = time.perf_counter() - t0
    th.join()
    if "error" in first:  # once more, alone: a lazy import racing the build is not the planner's fault
        out["plan_warm_error"] = f"{type(first['error']).__name__}: {str(first['error'])[:300]}"
        warm()
        if "plan" not in first:
            raise first["error"]
    out["plan_warm_s"] = time.perf_counter() - t0
    candidates = first["plan"].candidates
    # the no-offload candidate first (its step and VAE times inform the measured time model),
    # then by offload mode with the options that only add time after their base
    order = sorted(candidates, key=lambda c: (c.settings["offload"] != "none", c.settings["offload"],
                                              [bool(c.settings.get(o)) for o in SLOWER_OPTIONS]))
    measured: dict[str, dict[str, Any]] = {}
    out["candidates"] = measured
    out["warmup"] = run_candidate(model, order[0].settings, 1, dev, deadline, args.max_candidate_s)
    timed_out: set[tuple[Any, ...]] = set()
    for c in order:
        k = _key(c.settings)
        if _base(c.settings) in timed_out:
            r: dict[str, Any] = {"ok": False, "skipped": True,
                                 "error": f"skipped: {'/'.join(map(str, _base(c.settings)))} without tiling/fp8 was over the time limit"}
        else:
            r = run_candidate(model, c.settings, args.steps, dev, deadline, args.max_candidate_s)
            if r.get("timed_out"):
                timed_out.add(_base(c.settings))
        r.update(settings=c.settings, predicted_peak_reserved_bytes=c.peak_reserved_bytes,
                 predicted_time_s_assumed=c.time_s)
        if r.get("peak_reserved_bytes"):
            r["peak_error_pct"] = 100.0 * (c.peak_reserved_bytes - r["peak_reserved_bytes"]) / r["peak_reserved_bytes"]
        measured[k] = r
        state = f"{r['time_s']:7.2f} s  peak {r.get('peak_reserved_bytes', 0) / 2**30:6.2f} GiB" if r.get("ok") else r.get("error", "")
        print(f"{name} {k:45s} {state}  pred {c.peak_reserved_bytes / 2**30:6.2f} GiB", flush=True)
        _write(args.out, doc)
    base = measured.get(_key(order[0].settings), {})
    tms = {"assumed": TimeModel(h2d_bandwidth_bytes_per_s=bw)}
    if base.get("ok") and base.get("denoise_s"):
        tms["measured"] = TimeModel(h2d_bandwidth_bytes_per_s=bw, step_time_s=base["denoise_s"] / args.steps,
                                    vae_decode_s=base["vae_decode_s"], text_encode_s=base.get("text_encode_s"))
    out["time_models"] = {k: v.to_dict() for k, v in tms.items()}
    out["budgets"] = []
    retimes: dict[str, list[float]] = {}  # candidate -> every unconstrained time measured for it
    for budget in budgets:
        entry: dict[str, Any] = {"budget_bytes": budget}
        enforced: dict[str, dict[str, Any]] = {}
        for tm_name, tm in tms.items():
            p = plan(model.plan_target, budget, time_model=tm, **plan_kw, **model.generation)
            j = judge(p, measured, budget, cuda)
            if args.retime > 0:
                retime(j, model, measured, retimes, args, dev, deadline)
            ck = j.get("chosen")
            if ck is not None and ck not in enforced:
                enforced[ck] = run_candidate(model, p.chosen.settings, args.steps, dev, deadline,
                                             2 * args.max_candidate_s, budget=budget if cuda else None)
            if ck is not None:
                e = enforced[ck]
                j["enforced_run"] = {k: e.get(k) for k in ("ok", "oom", "timed_out", "error", "time_s", "peak_reserved_bytes",
                                                            "memory_fraction", "leftover_allocated_bytes")}
            entry[tm_name] = j
        out["budgets"].append(entry)
        _write(args.out, doc)


def replan(path: str, out_path: str, budgets_arg: str | None) -> dict[str, Any]:
    """Re-judge the CURRENT planner's choices against the per-candidate measurements of an earlier run.

    No GPU: the candidates' measured times and peaks come from ``path`` (a ``bench_plan.py`` JSON);
    ``plan()`` runs again per budget with the same generation, steps and bandwidth, once with the
    assumed time model and once with the measured one (the no-offload candidate's step, VAE and
    text-encoding times). A choice the earlier run did not measure is reported as such.
    """
    with open(path) as fh:
        old = json.load(fh)
    steps = int(old.get("steps", 2))
    bw = old.get("h2d_bandwidth_bytes_per_s")
    cuda = not old.get("smoke", False)
    doc: dict[str, Any] = {"replan_of": path, "steps": steps, "h2d_bandwidth_bytes_per_s": bw, "models": {}}
    for name, m in old.get("models", {}).items():
        measured = m.get("candidates", {})
        gen = dict(MODELS.get(name, {}))
        budgets = ([int(float(x) * 1e9) for x in budgets_arg.split(",")] if budgets_arg
                   else [int(e["budget_bytes"]) for e in m.get("budgets", [])])
        any_fp8 = any(r.get("settings", {}).get("layerwise_fp8") for r in measured.values())
        plan_kw: dict[str, Any] = dict(allow_fp8=any_fp8, num_inference_steps=steps)
        base = next((r for r in measured.values() if r.get("ok") and r["settings"]["offload"] == "none"
                     and not r["settings"].get("vae_tiling") and not r["settings"].get("layerwise_fp8")), None)
        tms = {"assumed": TimeModel(h2d_bandwidth_bytes_per_s=bw)}
        if base is not None and base.get("denoise_s"):
            tms["measured"] = TimeModel(h2d_bandwidth_bytes_per_s=bw, step_time_s=base["denoise_s"] / steps,
                                        vae_decode_s=base["vae_decode_s"], text_encode_s=base.get("text_encode_s"))
        out: dict[str, Any] = {"time_models": {k: v.to_dict() for k, v in tms.items()}, "budgets": [], "candidates": {}}
        for budget in budgets:
            entry: dict[str, Any] = {"budget_bytes": budget}
            for tm_name, tm in tms.items():
                p = plan(name, budget, time_model=tm, **plan_kw, **gen)
                entry[tm_name] = judge(p, measured, budget, cuda)
                for c in p.candidates:
                    k = _key(c.settings)
                    r = measured.get(k, {})
                    row = out["candidates"].setdefault(k, {"measured_time_s": r.get("time_s"),
                                                           "measured_peak_reserved_bytes": r.get("peak_reserved_bytes"),
                                                           "predicted_peak_reserved_bytes": c.peak_reserved_bytes})
                    row[f"predicted_time_s_{tm_name}"] = c.time_s
            out["budgets"].append(entry)
        doc["models"][name] = out
    _write(out_path, doc)
    _print_verdicts(doc)
    return doc


def _print_verdicts(doc: dict[str, Any]) -> None:
    """One line per budget and time model; OOM is '-' where no enforced run was made (--replan)."""
    print(f"\n{'model':12s} {'budget':>7s} {'time model':10s} {'chosen':40s} {'fits':>5s} {'OOM':>4s} "
          f"{'/fastest':>8s} {'/margin':>8s}  fastest fitting | with margin")

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for name, m in doc["models"].items():
        for e in m.get("budgets", []):
            for tm_name in ("assumed", "measured"):
                j = e.get(tm_name)
                if j is None:
                    continue
                er = j.get("enforced_run")
                rt = j.get("chosen_over_fastest_retimed")
                print(f"{name:12s} {e['budget_bytes'] / 1e9:6.3g}G {tm_name:10s} {str(j.get('chosen', 'nothing fits')):40s} "
                      f"{str(j.get('chosen_fits_measured', '-')):>5s} {str(er.get('oom') or False) if er else '-':>4s} "
                      f"{num(j.get('chosen_over_fastest')):>8s} {num(j.get('chosen_over_fastest_margin')):>8s}  "
                      f"{j.get('fastest_fitting')} | {j.get('fastest_fitting_margin')}"
                      + ("" if rt is None else f"  (median of re-timed runs: {rt:.3f})"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=None, help=f"comma-separated; default {','.join(MODELS)} ({','.join(SMOKE_MODELS)} with --smoke)")
    ap.add_argument("--budgets", default=None, help="GB (10**9 bytes); default 8,12,16,24 (0.0002,0.001,1 with --smoke)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-candidate-s", type=float, default=60.0, help="per candidate; the enforced-budget rerun gets twice this")
    ap.add_argument("--no-fp8", action="store_true", help="leave layerwise fp8 out of the plans and the candidates")
    ap.add_argument("--retime", type=int, default=2,
                    help="extra unconstrained runs of the chosen and fastest candidates when they differ (0: none)")
    ap.add_argument("--smoke", action="store_true", help="tiny demo pipelines on the CPU, no budget enforcement")
    ap.add_argument("--replan", metavar="FILE", default=None,
                    help="no GPU: re-judge the current planner's choices against the candidates measured in FILE")
    args = ap.parse_args(argv)
    if args.replan:
        return replan(args.replan, args.out, args.budgets)
    if not args.smoke and not torch.cuda.is_available():
        ap.error("needs a CUDA GPU (use --smoke for the CPU check)")
    args.models = args.models or ",".join(SMOKE_MODELS if args.smoke else MODELS)
    args.budgets = args.budgets or ("0.0002,0.001,1" if args.smoke else "8,12,16,24")
    doc: dict[str, Any] = {"smoke": args.smoke, "torch": torch.__version__, "steps": args.steps,
                           "max_candidate_s": args.max_candidate_s, "models": {}}
    if not args.smoke:
        from genprof.planning.resources import measure_h2d_bandwidth

        doc["device"] = torch.cuda.get_device_name()
        doc["total_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        doc["h2d_bandwidth_bytes_per_s"] = measure_h2d_bandwidth(0)
    deadline = Deadline()
    try:
        for name in args.models.split(","):
            out: dict[str, Any] = {}
            doc["models"][name] = out
            bench_model(name, args, doc, out, deadline)
            _write(args.out, doc)
    finally:
        deadline.close()
    _print_verdicts(doc)
    return doc


if __name__ == "__main__":
    main()
