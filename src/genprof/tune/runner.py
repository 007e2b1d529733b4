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
import datetime as _dt
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from genprof.errors import UsageError
from genprof.tune import _planning, isolate
from genprof.tune._measure import Applier, Source, _torch, gpu_name, measure, memory_budget, reset_runtime
from genprof.tune.quality import QualityFn, below_floor, parse_floor, torchmetrics_quality
from genprof.tune.recipes import Machine, Recipe, apply_recipe, discover, parse_recipe
from genprof.tune.result import CandidateResult, TuneResult, spearman

log = logging.getLogger(__name__)

_GEN_KEYS = ("height", "width", "num_frames", "batch_size", "num_inference_steps", "guidance_scale")


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
    timeout_s: float | None = None,
    progress: bool = True,
    predict: bool = True,
    recheck_baseline: bool = True,
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
    (default: ``<out's folder>/tune-runs``). ``recheck_baseline``: measure the baseline again
    after the others (``result.baseline_again``, ``result.baseline_drift()``), so a candidate is
    chosen only when it beats the baseline's spread over the whole sweep, not a cold first run.
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
    if timeout_s is not None and timeout_s <= 0:
        raise UsageError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    src = Source(pipe_or_factory, base_dtype)
    iso, iso_reason = _choose_isolation(isolation, src, {"applier": applier, "clock": clock,
                                                         "pipeline call's arguments": dict(call_kwargs)})
    if src.live is not None and torch is not None:
        for comp in getattr(src.live, "components", {}).values():
            if isinstance(comp, torch.nn.Module) and any(p.is_cuda for p in comp.parameters()):
                src.live.to("cpu")
                break
    probe = src.fresh(seed)  # built here once (under process isolation too) to see which recipes apply
    names = [c for c in (candidates or []) if isinstance(c, str)] or None
    extra = [c for c in (candidates or []) if isinstance(c, Recipe)]
    if candidates and not names and extra and not any(r.name in ("default", "baseline") for r in extra):
        extra.insert(0, parse_recipe("default", base_dtype))
    recipes, skipped = discover(probe, device=dev, names=names if names or not extra else ["default"],
                                base_dtype=base_dtype, machine=machine, extra=extra)
    src.done_with(probe)
    del probe
    if iso == "process":
        reset_runtime(None, device=dev)  # give the probe's GPU memory back before the children start
    out_path = None if out is None else Path(out)
    rdir = Path(runs_dir) if runs_dir is not None else (out_path.parent / "tune-runs" if out_path is not None else None)
    if rdir is not None:
        rdir.mkdir(parents=True, exist_ok=True)
    gen = {k: call_kwargs[k] for k in _GEN_KEYS if k in call_kwargs}
    for k in ("prompt", "negative_prompt"):
        if isinstance(call_kwargs.get(k), str):
            gen[k] = call_kwargs[k]
    gpu = gpu_name(dev)
    result = TuneResult(model=model or src.model_path, gpu=gpu, device=dev, budget_bytes=budget_bytes, generation=gen,
                        candidates=[CandidateResult(r) for r in recipes], skipped=skipped,
                        quality_floor=[f.to_dict() for f in floors], warmup=warmup, repeats=repeats, seed=seed,
                        isolation=iso, isolation_reason=iso_reason,
                        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    qfn = quality_fn or torchmetrics_quality
    baseline_out: Any = None
    inductor_root = tempfile.mkdtemp(prefix="genprof-tune-inductor-")

    def save() -> None:
        if out_path is not None:
            result.wall_s = time.monotonic() - wall0
            result.save(out_path)

    if iso == "reset" and timeout_s is not None:
        result.notes.append(f"timeout_s={timeout_s:g} not enforced: a call in this process cannot be stopped "
                            "(it needs isolation='process')")
    job = None
    if iso == "process":
        job = isolate.job_for(src, device=dev, call_kwargs=call_kwargs, seed=seed, warmup=warmup, repeats=repeats,
                              clock=clock, applier=applier, runs_dir=rdir, budget_bytes=budget_bytes)
    again = recheck_baseline and len(recipes) > 1
    bar = _progress(progress, (len(recipes) + int(again)) * (warmup + repeats))
    budget_here = contextlib.nullcontext() if iso == "process" else memory_budget(budget_bytes, dev)  # a child sets its own
    def run_one(res: CandidateResult, i: int, advance: Callable[[], None]) -> tuple[CandidateResult, Any]:
        """Measure one candidate in its isolation: its result (a new object under process isolation) and output."""
        idir = os.path.join(inductor_root, f"{i:02d}")
        if job is None:
            return res, _in_process(src, res, i, idir, dev, call_kwargs, seed, warmup, repeats, clock, applier,
                                    rdir, budget_bytes, advance)
        try:
            res, output = isolate.run_candidate(job, res.recipe, index=i, inductor_dir=idir, timeout_s=timeout_s)
        except KeyboardInterrupt:
            res.status, res.reason = "interrupted", "stopped by Ctrl-C"
            raise
        for _ in range(warmup + repeats):
            advance()
        return res, output

    try:
        with bar as (advance, describe), budget_here:
            for i, res in enumerate(result.candidates):
                describe(f"{i + 1}/{len(recipes)} {res.name}")
                res, output = run_one(res, i, advance)
                result.candidates[i] = res
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
            base = result.baseline
            if again and base is not None and base.status == "ok":
                i = len(result.candidates)
                describe(f"{i + 1}/{i + 1} {base.name} again (drift check)")
                result.baseline_again, output = run_one(CandidateResult(base.recipe), i, advance)
                del output
                drift = result.baseline_drift()
                if drift is not None:
                    result.notes.append(f"baseline measured again after the other candidates: {drift:+.1%} "
                                        "against its first measurement; a candidate is chosen only when it beat both")
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


def _choose_isolation(asked: str, src: Source, parts: Mapping[str, Any]) -> tuple[str, str]:
    """The isolation this sweep uses and why (``"process"`` where possible under ``"auto"``)."""
    if asked == "reset":
        return "reset", "asked for: each candidate ran in this process after a full reset"
    why = isolate.process_unavailable(src, parts)
    if asked == "process":
        if why:
            raise UsageError(f"isolation='process' is not possible here: {why}")
        return "process", "asked for: each candidate ran in its own process"
    if why:
        return "reset", f"auto: {why}; so each candidate ran in this process after a full reset"
    return "process", "auto: the pipeline can be rebuilt in a child process, so each candidate ran in its own"


def _in_process(src: Source, res: CandidateResult, i: int, idir: str, dev: str, call_kwargs: Mapping[str, Any],
                seed: int, warmup: int, repeats: int, clock: Callable[[], float], applier: Applier,
                rdir: Path | None, budget_bytes: int | None, advance: Callable[[], None]) -> Any:
    """``isolation="reset"``: reset the runtime, build a fresh pipeline here, measure, remove its hooks."""
    reset_runtime(idir, device=dev)
    pipe = src.fresh(seed)
    try:
        return measure(pipe, res.recipe, res, index=i, device=dev, call_kwargs=call_kwargs, seed=seed, warmup=warmup,
                       repeats=repeats, clock=clock, applier=applier, runs_dir=rdir, budget_bytes=budget_bytes,
                       tick=advance)
    finally:
        src.done_with(pipe)
        del pipe


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
