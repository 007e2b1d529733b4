"""The sweep: every candidate in a fresh state, warm-up excluded, timed repeats, quality against the baseline.

Isolation. Each candidate gets a fresh pipeline and a fresh runtime:

* ``isolation="process"``: the pipeline is built in a child process (a factory that can be
  pickled, or a model folder / Hub name loaded with ``DiffusionPipeline.from_pretrained``), so
  nothing (hooks, compile caches, allocator state, CUDA context) survives from one candidate
  to the next.
* ``isolation="reset"`` (a factory called in this process, or a live pipeline): a new pipeline
  per candidate (the factory's, or a structural copy of the live pipeline: new modules and
  Parameters over the pristine weights, so hooks, dtype casts and offloading never touch the
  original), and before each candidate ``torch._dynamo.reset()``, a fresh inductor cache dir
  (``TORCHINDUCTOR_CACHE_DIR``), diffusers hooks of the previous copy removed, ``gc``,
  ``empty_cache`` and the allocator's peaks reset.

Per candidate: apply the recipe, ``warmup`` untimed calls (reported; with ``torch.compile`` the
first call's excess over the timed median is ``compile_s``), ``repeats`` timed calls (median and
a bootstrap 95% interval of the median), peak reserved memory over the timed calls, the run
file of the whole candidate (``genprof compare`` works on any two), and quality against the
baseline's output (same seed and inputs). A budget is enforced with
``torch.cuda.set_per_process_memory_fraction``; running out of memory ends that candidate with
status ``oom`` and the profiler's forensics, never the sweep. Ctrl-C returns (and writes) what
was measured, status ``interrupted``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import gc
import inspect
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from genprof.errors import UsageError
from genprof.tune import _planning
from genprof.tune.quality import QualityFn, below_floor, parse_floor, torchmetrics_quality
from genprof.tune.recipes import Machine, Recipe, apply_recipe, discover, parse_recipe
from genprof.tune.result import CandidateResult, TuneResult, spearman

log = logging.getLogger(__name__)

Applier = Callable[..., list[str]]
_GEN_KEYS = ("height", "width", "num_frames", "batch_size", "num_inference_steps", "guidance_scale")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _is_pipeline(obj: Any) -> bool:
    return hasattr(obj, "components") or (callable(obj) and any(hasattr(obj, a) for a in ("unet", "transformer", "vae")))


def _structural_copy(pipe: Any) -> Any:
    """A copy of ``pipe`` whose modules and Parameters are new objects over the same storages.

    Recipes replace tensors (``.to``, offloading, fp8 casting assign new data to the copy's
    Parameters), so the original's weights are never written; hooks land on the copy's modules.
    """
    torch = _torch()
    memo: dict[int, Any] = {}
    if torch is not None:
        for comp in getattr(pipe, "components", {}).values():
            if isinstance(comp, torch.nn.Module):
                for p in comp.parameters():
                    memo[id(p)] = torch.nn.Parameter(p.data, requires_grad=p.requires_grad)
                for b in comp.buffers():
                    memo[id(b)] = b.detach()
    return copy.deepcopy(pipe, memo)


def remove_hooks(pipe: Any) -> None:
    """Remove accelerate's offload hooks and every diffusers hook (group offload, layerwise casting, caches)."""
    fn = getattr(pipe, "remove_all_hooks", None)
    if callable(fn):
        with contextlib.suppress(Exception):  # accelerate absent or no hooks: nothing to remove
            fn()
    torch = _torch()
    if torch is None:
        return
    for comp in getattr(pipe, "components", {}).values():
        if not isinstance(comp, torch.nn.Module):
            continue
        for m in comp.modules():
            reg = getattr(m, "_diffusers_hook", None)
            if reg is not None:
                for name in list(getattr(reg, "hooks", {})):
                    reg.remove_hook(name, recurse=False)


def reset_runtime(inductor_dir: str | None, *, device: str) -> None:
    """Forget compiled graphs, point inductor at a fresh cache dir, free and reset the allocator."""
    if inductor_dir is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_dir
        os.environ["TRITON_CACHE_DIR"] = os.path.join(inductor_dir, "triton")
    torch = _torch()
    gc.collect()
    if torch is None:
        return
    dyn = getattr(torch, "_dynamo", None)
    if dyn is not None and hasattr(dyn, "reset"):
        dyn.reset()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class _Source:
    """Where each candidate's fresh pipeline comes from."""

    def __init__(self, obj: Any, dtype: Any) -> None:
        self.live: Any = None
        self.factory: Callable[[], Any] | None = None
        self.model_path: str | None = None
        if isinstance(obj, (str, os.PathLike)):
            self.model_path = str(obj)
            self.factory = self._from_pretrained
        elif _is_pipeline(obj):
            self.live = obj
        elif callable(obj):
            self.factory = obj
        else:
            raise UsageError("tune() needs a diffusers pipeline, a function that builds one, or a model folder / Hub name")
        self.dtype = dtype

    def _from_pretrained(self) -> Any:
        import diffusers

        return diffusers.DiffusionPipeline.from_pretrained(self.model_path, torch_dtype=self.dtype)

    def fresh(self) -> Any:
        if self.live is not None:
            return _structural_copy(self.live)
        assert self.factory is not None
        pipe = self.factory()
        if hasattr(pipe, "pipe") and not _is_pipeline(pipe):  # a DemoPipeline-like wrapper
            pipe = pipe.pipe
        return pipe

    def done_with(self, pipe: Any) -> None:
        remove_hooks(pipe)


def _call_kwargs(pipe: Any, call_kwargs: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    kw = dict(call_kwargs)
    torch = _torch()
    if "generator" not in kw and torch is not None:
        kw["generator"] = torch.Generator(device="cpu").manual_seed(seed)
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        params = {}
    if "output_type" not in kw and "output_type" in params:
        kw["output_type"] = "np"
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) or not params:
        return kw
    return {k: v for k, v in kw.items() if k in params}


def _sync(device: str) -> None:
    torch = _torch()
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _phase_medians(run: Any, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("text_encode", "denoise", "vae_decode"):
        ds = [s.duration_s for s in run.spans if s.name == name and s.kind == "phase" and s.duration_s is not None]
        if ds:
            out[name] = statistics.median(ds[-n:])
    return out


def _measure(pipe: Any, recipe: Recipe, res: CandidateResult, *, index: int, device: str, call_kwargs: Mapping[str, Any],
             seed: int, warmup: int, repeats: int, clock: Callable[[], float], applier: Applier, runs_dir: Path | None,
             budget_bytes: int | None, tick: Callable[[], None]) -> Any:
    """Run one candidate on a fresh pipeline, filling ``res``; returns the last output."""
    from genprof.analysis.summary import bootstrap_median_ci
    from genprof.profiler import Profiler

    torch = _torch()
    cuda = device.startswith("cuda") and torch is not None and torch.cuda.is_available()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in recipe.name)
    prof = Profiler(f"tune-{index:02d}-{safe}", tags={"tune_candidate": recipe.name})
    handle = None
    output: Any = None
    try:
        with prof:
            t0 = clock()
            res.applied = applier(pipe, recipe, device=device)
            res.setup_s = clock() - t0
            if hasattr(pipe, "components"):
                from genprof.integrations.diffusers import instrument

                try:
                    handle = instrument(pipe, prof, count_flops=False)
                except UsageError as e:
                    log.info("not instrumenting %s: %s", recipe.name, e)
            for _ in range(warmup):
                _sync(device)
                t0 = clock()
                pipe(**_call_kwargs(pipe, call_kwargs, seed, device))
                _sync(device)
                res.warmup_s.append(clock() - t0)
                tick()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for _ in range(repeats):
                _sync(device)
                t0 = clock()
                output = pipe(**_call_kwargs(pipe, call_kwargs, seed, device))
                _sync(device)
                res.times_s.append(clock() - t0)
                tick()
            if cuda:
                res.peak_reserved_bytes = int(torch.cuda.max_memory_reserved())
                res.peak_allocated_bytes = int(torch.cuda.max_memory_allocated())
    except KeyboardInterrupt:
        res.status, res.reason = "interrupted", "stopped by Ctrl-C"
        raise
    except Exception as e:  # noqa: BLE001 - one candidate's failure must not end the sweep; recorded below
        if _planning.is_oom_error(e):
            res.status, res.reason = "oom", f"out of memory: {str(e).splitlines()[0][:300]}"
            res.oom = _planning.explain_oom(prof.run, budget_bytes)
        else:
            res.status, res.reason = "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log.warning("candidate %s failed: %s", recipe.name, res.reason)
    finally:
        if handle is not None:
            with contextlib.suppress(Exception):  # the pipeline may be half torn down after an error
                handle.remove()
        if runs_dir is not None:
            try:
                res.run_file = str(prof.save(runs_dir / f"{index:02d}-{safe}.json"))
            except Exception as e:  # noqa: BLE001 - a run file that cannot be written must not lose the sweep
                log.warning("could not save the run file of %s: %s", recipe.name, e)
        res.observations["phase_s"] = _phase_medians(prof.run, repeats)
    if res.times_s and res.status == "pending":
        res.median_s = statistics.median(res.times_s)
        ci = bootstrap_median_ci(res.times_s)
        res.ci_s = None if ci is None else (float(ci[0]), float(ci[1]))
        if recipe.settings.get("compile") and res.warmup_s:
            res.compile_s = max(0.0, res.warmup_s[0] - res.median_s)
        res.status = "ok"
    return output


@contextlib.contextmanager
def _budget(budget_bytes: int | None, device: str) -> Iterator[float | None]:
    torch = _torch()
    if budget_bytes is None or torch is None or not device.startswith("cuda") or not torch.cuda.is_available():
        yield None
        return
    idx = torch.device(device).index or 0
    total = torch.cuda.get_device_properties(idx).total_memory
    frac = min(1.0, budget_bytes / total)
    torch.cuda.set_per_process_memory_fraction(frac, idx)
    try:
        yield frac
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, idx)


def _gpu_name(device: str) -> str | None:
    torch = _torch()
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(torch.device(device).index or 0))
    return None


def _predict(result: TuneResult, model: Any, budget: int | None, gen: Mapping[str, Any], time_model: Any) -> None:
    """Fill each candidate's planner prediction; Spearman of predicted vs measured times."""
    try:
        total = budget
        if total is None:
            torch = _torch()
            total = torch.cuda.get_device_properties(0).total_memory if (torch is not None and torch.cuda.is_available()) else 80 * 2**30
        offload = tuple(sorted({c.recipe.plan_settings["offload"] for c in result.candidates}))
        known = _planning.attention_backends()
        attention = tuple(sorted({c.recipe.plan_settings["attention_backend"] or "flash" for c in result.candidates}
                                 & set(known))) or ("flash",)
        p = _planning.plan(model, int(total), time_model=time_model, offload=offload, attention=attention, dtypes=("bf16",),
                           **{k: v for k, v in gen.items() if k in _GEN_KEYS})
    except Exception as e:  # noqa: BLE001 - the planner cannot model every pipeline; the sweep still stands
        result.planner = {"error": f"{type(e).__name__}: {e}"}
        for c in result.candidates:
            c.predicted_note = f"no prediction: the planner failed ({type(e).__name__})"
        result.spearman_note = "no planner predictions"
        return
    table = _planning.plan_candidates(p)
    result.planner = {"model": _planning.plan_model_name(p), "chosen": _planning.plan_chosen(p),
                      "time_model": getattr(time_model, "to_dict", dict)() if time_model is not None else None}
    if result.model is None:
        result.model = _planning.plan_model_name(p)
    for c in result.candidates:
        if not c.recipe.planner_models_it:
            c.predicted_note = "the planner does not model compile, channels-last or step caches"
            continue
        want = dict(c.recipe.plan_settings)
        want["dtype"] = want["dtype"] or "bf16"
        want["attention_backend"] = want["attention_backend"] or "flash"
        hit = next(((t, pk) for s, t, pk in table if s == want), None)
        if hit is None and want["vae_slicing"]:
            c.predicted_note = "the planner offers VAE slicing only for batch_size > 1"
            continue
        if hit is None:
            c.predicted_note = "not in the planner's candidate space"
            continue
        c.predicted_time_s, c.predicted_peak_reserved_bytes = hit
        if c.recipe.plan_settings["dtype"] is None:
            c.predicted_note = "predicted for bf16 (the pipeline's dtype was left as loaded)"
    pairs = [(c.predicted_time_s, c.median_s) for c in result.candidates
             if c.predicted_time_s is not None and c.median_s is not None]
    result.spearman = spearman([a for a, _ in pairs], [b for _, b in pairs])
    result.spearman_n = len(pairs)
    if result.spearman is None:
        result.spearman_note = f"{len(pairs)} candidate(s) with both a prediction and a measurement (needs >= 3, not all tied)"


def tune(
    pipe_or_factory: Any,
    *,
    budget: str | int | None = None,
    candidates: Sequence[str | Recipe] | None = None,
    quality: str | None = None,
    warmup: int = 1,
    repeats: int = 5,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    model: str | None = None,
    out: str | os.PathLike[str] | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
    isolation: str = "auto",
    progress: bool = True,
    predict: bool = True,
    calibrate: bool = False,
    use_calibration: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    applier: Applier = apply_recipe,
    quality_fn: QualityFn | None = None,
    machine: Machine | None = None,
    **call_kwargs: Any,
) -> TuneResult:
    """Measure the candidates on this pipeline and GPU; the fastest above the quality floor is ``result.best``.

    ``pipe_or_factory``: a loaded pipeline (copied per candidate; moved to the CPU first when it is
    on the GPU, so the pristine weights take no GPU memory), a function returning a fresh pipeline,
    or a model folder / Hub name. ``budget``: bytes or ``"16GiB"`` (enforced on CUDA).
    ``candidates``: recipe names (``"vae_tiling"``, ``"offload=model+compile"``; see
    :mod:`genprof.tune.recipes`) or :class:`Recipe` objects; default: every supported single
    recipe. ``quality``: a floor such as ``"psnr>=30"`` or ``"psnr>=30,ssim>=0.9"``.
    ``call_kwargs``: the pipeline call (``prompt``, ``num_inference_steps``, ``height``, ...),
    the same for every candidate, with a fresh ``torch.Generator`` seeded ``seed`` per call.
    ``out``: write ``tune.json`` there (after every candidate); run files go to ``runs_dir``
    (default: ``<out's folder>/tune-runs``).
    """
    started = clock()
    wall0 = time.monotonic()
    if warmup < 0 or repeats < 1:
        raise UsageError(f"warmup must be >= 0 and repeats >= 1 (got warmup={warmup}, repeats={repeats})")
    floors = parse_floor(quality)
    budget_bytes = None if budget is None else _planning.parse_bytes(budget)
    if budget_bytes is not None and budget_bytes <= 0:
        raise UsageError(f"budget must be > 0 bytes, got {budget!r}")
    torch = _torch()
    dev = device or ("cuda" if torch is not None and torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and (torch is None or not torch.cuda.is_available()):
        raise UsageError("device cuda was asked for but torch sees no CUDA GPU; pass device='cpu'")
    if isolation not in ("auto", "reset", "process"):
        raise UsageError(f"isolation must be auto, reset or process, got {isolation!r}")
    base_dtype = dtype or ("bf16" if dev.startswith("cuda") else None)
    tdtype = None
    if torch is not None and base_dtype:
        tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[base_dtype]
    src = _Source(pipe_or_factory, tdtype)
    if isolation == "process":
        raise UsageError("isolation='process' is not implemented yet in this build; use 'reset' (the default)")
    iso = "reset"
    if src.live is not None and torch is not None:
        for comp in getattr(src.live, "components", {}).values():
            if isinstance(comp, torch.nn.Module) and any(p.is_cuda for p in comp.parameters()):
                src.live.to("cpu")
                break
    probe = src.fresh()
    names = [c for c in (candidates or []) if isinstance(c, str)] or None
    extra = [c for c in (candidates or []) if isinstance(c, Recipe)]
    if candidates and not names and extra and not any(r.name in ("default", "baseline") for r in extra):
        extra.insert(0, parse_recipe("default", base_dtype))
    recipes, skipped = discover(probe, device=dev, names=names if names or not extra else ["default"],
                                base_dtype=base_dtype, machine=machine, extra=extra)
    src.done_with(probe)
    del probe
    out_path = None if out is None else Path(out)
    rdir = Path(runs_dir) if runs_dir is not None else (out_path.parent / "tune-runs" if out_path is not None else None)
    if rdir is not None:
        rdir.mkdir(parents=True, exist_ok=True)
    gen = {k: call_kwargs[k] for k in _GEN_KEYS if k in call_kwargs}
    for k in ("prompt", "negative_prompt"):
        if isinstance(call_kwargs.get(k), str):
            gen[k] = call_kwargs[k]
    gpu = _gpu_name(dev)
    result = TuneResult(model=model or src.model_path, gpu=gpu, device=dev, budget_bytes=budget_bytes, generation=gen,
                        candidates=[CandidateResult(r) for r in recipes], skipped=skipped,
                        quality_floor=[f.to_dict() for f in floors], warmup=warmup, repeats=repeats, seed=seed,
                        isolation=iso, created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    qfn = quality_fn or torchmetrics_quality
    baseline_out: Any = None
    inductor_root = tempfile.mkdtemp(prefix="genprof-tune-inductor-")

    def save() -> None:
        if out_path is not None:
            result.wall_s = time.monotonic() - wall0
            result.save(out_path)

    bar = _progress(progress, len(recipes) * (warmup + repeats))
    try:
        with bar as (advance, describe), _budget(budget_bytes, dev):
            for i, res in enumerate(result.candidates):
                describe(f"{i + 1}/{len(recipes)} {res.name}")
                reset_runtime(os.path.join(inductor_root, f"{i:02d}"), device=dev)
                pipe = src.fresh()
                try:
                    output = _measure(pipe, res.recipe, res, index=i, device=dev, call_kwargs=call_kwargs, seed=seed,
                                      warmup=warmup, repeats=repeats, clock=clock, applier=applier, runs_dir=rdir,
                                      budget_bytes=budget_bytes, tick=advance)
                finally:
                    src.done_with(pipe)
                    del pipe
                if res.status == "ok":
                    if i == 0:
                        baseline_out = output
                        res.quality = {"psnr": float("inf"), "ssim": 1.0, "reason": "the baseline itself"}
                    elif baseline_out is None:
                        res.quality = {"psnr": None, "ssim": None, "reason": "the baseline did not produce an output"}
                    else:
                        try:
                            res.quality = qfn(output, baseline_out)
                        except Exception as e:  # noqa: BLE001 - quality is a figure; its failure is reported, not fatal
                            res.quality = {"psnr": None, "ssim": None, "reason": f"quality failed: {type(e).__name__}: {e}"}
                    why = below_floor(res.quality, floors) if i > 0 else None
                    if why:
                        res.status, res.reason = "below_quality_floor", why
                del output
                save()
    except KeyboardInterrupt:
        result.status = "interrupted"
        result.notes.append("interrupted by Ctrl-C: candidates after the last measured one were not run")
        for c in result.candidates:
            if c.status == "pending":
                c.status, c.reason = "interrupted", "not run: the sweep was interrupted"
        log.warning("tune interrupted; keeping %d measured candidate(s)", sum(c.median_s is not None for c in result.candidates))
    finally:
        reset_runtime(None, device=dev)
    if predict:
        time_model = None
        model_for_plan = model or src.model_path or src.live
        if use_calibration and result.model and gpu:
            from genprof.tune.calibration import load_calibration

            cal = load_calibration(result.model, gpu)
            if cal and cal.get("time_model"):
                time_model = _planning.make_time_model(**cal["time_model"])
                result.calibration_used = str(cal.get("created_at") or "yes")
        if model_for_plan is not None:
            _predict(result, model_for_plan, budget_bytes, gen, time_model)
        else:
            result.spearman_note = "no planner predictions: pass model= (a shipped model name or a model folder)"
    result.wall_s = time.monotonic() - wall0
    result.notes.append(f"sweep clock time {clock() - started:.3f} s")
    if calibrate:
        from genprof.tune.calibration import save_calibration

        p = save_calibration(result)
        result.notes.append(f"calibration saved to {p}")
    save()
    return result


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[tuple[Callable[[], None], Callable[[str], None]]]:
    if not enabled:
        yield (lambda: None), (lambda _s: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as prog:
        task = prog.add_task("tune", total=total)
        yield (lambda: prog.advance(task)), (lambda s: prog.update(task, description=s))
