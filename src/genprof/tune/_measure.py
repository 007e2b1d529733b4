"""One candidate in a fresh state: where its pipeline comes from, the runtime reset, the measurement.

Shared by both isolation modes: ``isolation="reset"`` calls :func:`measure` in the sweep's own
process after :func:`reset_runtime`; ``isolation="process"`` (:mod:`genprof.tune.isolate`)
calls it in a child process per candidate.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import inspect
import logging
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from genprof.errors import UsageError
from genprof.tune import _planning
from genprof.tune.recipes import Recipe
from genprof.tune.result import CandidateResult

log = logging.getLogger(__name__)

Applier = Callable[..., list[str]]


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
    dyn = sys.modules.get("torch._dynamo")  # never imported (a fresh child): nothing compiled, nothing to forget
    if dyn is not None and hasattr(dyn, "reset"):
        dyn.reset()
    release_cached(_torch(), device)


def release_cached(torch: Any, device: str) -> None:
    """Give the caching allocator's free segments back to the driver and reset its peaks.

    Under a budget cap (``set_per_process_memory_fraction``, which refuses only new segments)
    whatever stays cached counts against the budget: after building a pipeline (random init in
    fp32 then a cast left 30.7 GiB reserved for 14.5 GiB of Wan 2.1 weights on the H100) or
    applying a recipe that moves weights off the GPU (offloading), a candidate would otherwise
    hold more than its budget and report that as its peak.
    """
    gc.collect()
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def resolve_factory(path: str) -> Callable[[], Any]:
    """``"pkg.mod:fn"`` -> the callable it names (a clear ``UsageError`` when it cannot be imported)."""
    mod_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(f"cannot import {mod_name!r} for the pipeline factory {path!r}: {e}; "
                         "check the module is on sys.path (PYTHONPATH)") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{mod_name!r} has no {attr!r} (pipeline factory {path!r}); name a module-level function")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"the pipeline factory {path!r} is not callable")
    return obj


def torch_dtype(name: str | None) -> Any:
    torch = _torch()
    if torch is None or not name:
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


class Source:
    """Where each candidate's fresh pipeline comes from.

    ``obj``: a live pipeline (copied structurally per candidate), a function returning a fresh
    one, an import path ``"pkg.mod:fn"`` naming such a function, or a model folder / Hub name
    (``DiffusionPipeline.from_pretrained`` with ``dtype``, a name: ``bf16``, ``fp16``, ``fp32``).
    """

    def __init__(self, obj: Any, dtype: str | None) -> None:
        self.obj = obj
        self.live: Any = None
        self.factory: Callable[[], Any] | None = None
        self.model_path: str | None = None
        self.import_path: str | None = None
        if isinstance(obj, (str, os.PathLike)):
            text = str(obj)
            if _IMPORT_PATH.match(text) and not os.path.exists(text):
                self.import_path = text
                self.factory = resolve_factory(text)
            else:
                self.model_path = text
                self.factory = self._from_pretrained
        elif _is_pipeline(obj):
            self.live = obj
        elif callable(obj):
            self.factory = obj
        else:
            raise UsageError("tune() needs a diffusers pipeline, a function that builds one ('pkg.mod:fn' or a "
                             f"module-level callable), or a model folder / Hub name; got {type(obj).__name__}")
        self.dtype_name = dtype

    def _from_pretrained(self) -> Any:
        import diffusers

        return diffusers.DiffusionPipeline.from_pretrained(self.model_path, torch_dtype=torch_dtype(self.dtype_name))

    def fresh(self, seed: int | None = None) -> Any:
        """A new pipeline. A factory runs with torch's RNG seeded ``seed``, so a random-weight pipeline is the same
        model in every candidate (and every child process) and quality against the baseline means something."""
        if self.live is not None:
            return _structural_copy(self.live)
        assert self.factory is not None
        torch = _torch()
        if seed is not None and torch is not None:
            torch.manual_seed(seed)
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


def measure(pipe: Any, recipe: Recipe, res: CandidateResult, *, index: int, device: str, call_kwargs: Mapping[str, Any],
             seed: int, warmup: int, repeats: int, clock: Callable[[], float], applier: Applier, runs_dir: Path | None,
             budget_bytes: int | None, tick: Callable[[], None]) -> Any:
    """Run one candidate on a fresh pipeline, filling ``res``; returns the last output.

    A failure of the recipe or of a call (out of memory included) is recorded in ``res``, never
    raised; Ctrl-C marks ``res`` interrupted and is raised.
    """
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
            release_cached(torch, device)  # what the build and the recipe left cached is not the candidate's
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
            if cuda:  # right only where no span reset the counters: the run's spans replace it below
                res.peak_reserved_bytes = int(torch.cuda.max_memory_reserved())
                res.peak_allocated_bytes = int(torch.cuda.max_memory_allocated())
        _peaks_from_run(res, prof.run, warmup)
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


def _peaks_from_run(res: CandidateResult, run: Any, warmup: int) -> None:
    """The timed calls' peaks from the run's generation spans, where the profiler measured them.

    The profiler resets the allocator's peak counters at every span (``reset_peak_memory``), so
    ``max_memory_allocated()`` after the calls is the last span's peak (the post-processing),
    not the call's: on the H100 it read 13.75 GiB for a Wan 2.1 call whose decode peaked at
    19.1 GiB. Each generation span keeps its own peak.
    """
    gens = [s for s in run.spans if s.kind == "generation"][warmup:]
    alloc = [s.peak_allocated_bytes for s in gens if s.peak_allocated_bytes is not None]
    reserved = [s.peak_reserved_bytes for s in gens if s.peak_reserved_bytes is not None]
    if alloc:
        res.peak_allocated_bytes = max(alloc)
    if reserved:
        res.peak_reserved_bytes = max(reserved)


@contextlib.contextmanager
def memory_budget(budget_bytes: int | None, device: str) -> Iterator[float | None]:
    """Cap the caching allocator at ``budget_bytes`` while the block runs.

    The cap only refuses new segments; :func:`measure` gives the cached ones back
    (:func:`release_cached`) once the recipe is applied, so the cap holds for the calls.
    """
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


def gpu_name(device: str) -> str | None:
    torch = _torch()
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(torch.device(device).index or 0))
    return None
