"""``isolation="process"``: each candidate in its own child process (multiprocessing, "spawn").

The parent sends the child a job: the pipeline source (a module-level factory, an import path
``"pkg.mod:fn"`` or a model folder / Hub name: anything that pickles by reference), the recipe,
the call, the seed, warm-up and repeats, the budget and the run-file folder. The child builds
the pipeline, enforces the budget for itself, runs :func:`genprof.tune._measure.measure`,
saves its run file, and writes its measurements (``result.json``) and its decoded output
(``output.npy``, or ``output.pkl`` when the output is not an image array) into a temporary folder
that the parent reads and removes. Nothing survives from one candidate to the next: no hooks, no
compiled graphs (each child also gets a fresh ``TORCHINDUCTOR_CACHE_DIR``), no allocator state,
no CUDA context, no module-level caches.

A child that crashes (a segfault, ``os._exit``, the host's OOM killer), runs past its timeout or
writes no result is recorded as that candidate's failure, with the exit code or signal, and the
sweep goes on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from genprof.tune._measure import Source, measure, memory_budget, reset_runtime
from genprof.tune.recipes import Recipe
from genprof.tune.result import CandidateResult

log = logging.getLogger(__name__)

_RESULT = "result.json"
_NPY = "output.npy"
_PKL = "output.pkl"


def _pickle_problem(what: str, obj: Any) -> str | None:
    try:
        pickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - any pickling failure means "cannot go to a child"; the reason is returned
        return (f"the {what} cannot be sent to a child process ({type(e).__name__}: {str(e)[:160]}); "
                "use a module-level function or an import path 'pkg.mod:fn'")
    return None


def process_unavailable(src: Source, parts: Mapping[str, Any]) -> str | None:
    """Why this sweep cannot run each candidate in its own process, or ``None`` when it can.

    ``parts``: the other things the child needs (the applier, the clock, the call's arguments),
    each of which must pickle.
    """
    if "spawn" not in multiprocessing.get_all_start_methods():
        return "this platform has no 'spawn' start method"
    if src.live is not None:
        return ("a live pipeline cannot be rebuilt in a child process; pass a function that builds it "
                "(module-level, or 'pkg.mod:fn') or a model folder / Hub name")
    if src.import_path is None and src.model_path is None:
        why = _pickle_problem("pipeline factory", src.obj)
        if why:
            return why
    for what, obj in parts.items():
        why = _pickle_problem(what, obj)
        if why:
            return why
    return None


def _save_output(output: Any, folder: Path) -> str | None:
    """The decoded output as ``output.npy`` (frames, H, W, C), else pickled; the reason when neither works."""
    import numpy as np

    from genprof.tune.quality import to_frames

    try:
        np.save(folder / _NPY, to_frames(output))
        return None
    except Exception as e:  # noqa: BLE001 - not an image array: fall back to pickling it
        first = f"{type(e).__name__}: {e}"
    try:
        (folder / _PKL).write_bytes(pickle.dumps(output))
        return None
    except Exception as e:  # noqa: BLE001 - the output cannot leave the child; quality says why
        return f"the output could not be sent back ({first}; pickling: {type(e).__name__}: {e})"


def child_main(job: dict[str, Any]) -> None:
    """The child process: build, apply, measure, write ``result.json`` (and the output) into ``job["out_dir"]``."""
    folder = Path(job["out_dir"])
    device = job["device"]
    reset_runtime(job["inductor_dir"], device=device)
    res = CandidateResult(Recipe.from_dict(job["recipe"]))
    output: Any = None
    try:
        try:
            pipe = Source(job["source"], job["dtype"]).fresh(job["seed"])
        except Exception as e:  # noqa: BLE001 - recorded as this candidate's failure, written below
            res.status, res.reason = "failed", f"building the pipeline failed: {type(e).__name__}: {str(e)[:300]}"
        else:
            with memory_budget(job["budget_bytes"], device):
                output = measure(pipe, res.recipe, res, index=job["index"], device=device, call_kwargs=job["call_kwargs"],
                                 seed=job["seed"], warmup=job["warmup"], repeats=job["repeats"], clock=job["clock"],
                                 applier=job["applier"], runs_dir=None if job["runs_dir"] is None else Path(job["runs_dir"]),
                                 budget_bytes=job["budget_bytes"], tick=lambda: None)
    except KeyboardInterrupt:
        res.status, res.reason = "interrupted", "stopped by Ctrl-C"
    res.observations["pid"] = os.getpid()
    if res.status == "ok" and output is not None:
        why = _save_output(output, folder)
        if why:
            res.observations["output_not_returned"] = why
    tmp = folder / (_RESULT + ".tmp")
    tmp.write_text(json.dumps(res.to_dict(), default=str), encoding="utf-8")
    os.replace(tmp, folder / _RESULT)


def _ended(code: int | None) -> str:
    if code is None:
        return "did not end"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the host may have run out of memory)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _stop(proc: Any) -> None:
    proc.terminate()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def run_candidate(job: Mapping[str, Any], recipe: Recipe, *, index: int, inductor_dir: str,
                  timeout_s: float | None) -> tuple[CandidateResult, Any]:
    """Measure ``recipe`` in a fresh child process; returns its result and its decoded output (or ``None``).

    Never raises for the child's sake: a crash, a timeout or a missing result is the returned
    candidate's ``failed`` status with the reason. Ctrl-C stops the child and is raised.
    """
    ctx = multiprocessing.get_context("spawn")
    folder = Path(tempfile.mkdtemp(prefix=f"genprof-tune-{index:02d}-"))
    full = {**job, "recipe": recipe.to_dict(), "index": index, "inductor_dir": inductor_dir, "out_dir": str(folder)}
    proc = ctx.Process(target=child_main, args=(full,), name=f"genprof-tune-{index:02d}")
    try:
        proc.start()
        try:
            proc.join(timeout_s)
        except KeyboardInterrupt:
            _stop(proc)
            raise
        timed_out = proc.is_alive()
        if timed_out:
            _stop(proc)
        return _collect(recipe, folder, proc.exitcode, timed_out, timeout_s)
    finally:
        if proc.is_alive():  # an error in this process while the child runs: do not leave it behind
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _collect(recipe: Recipe, folder: Path, code: int | None, timed_out: bool,
             timeout_s: float | None) -> tuple[CandidateResult, Any]:
    path = folder / _RESULT
    if timed_out:
        res = CandidateResult(recipe, status="failed",
                              reason=f"timed out after {timeout_s:g} s: the child process was stopped")
        return res, None
    if not path.exists():
        res = CandidateResult(recipe, status="failed",
                              reason=f"the child process {_ended(code)} before writing its result (a crash in the "
                                     "pipeline, a native library, or the host's memory)")
        return res, None
    try:
        res = CandidateResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        return CandidateResult(recipe, status="failed", reason=f"the child's result could not be read: {e}"), None
    res.recipe = recipe
    res.observations["child_exit"] = _ended(code)
    output: Any = None
    if (folder / _NPY).exists():
        import numpy as np

        output = np.load(folder / _NPY)
    elif (folder / _PKL).exists():
        output = pickle.loads((folder / _PKL).read_bytes())  # noqa: S301 - written by our own child a moment ago
    return res, output


def job_for(src: Source, *, device: str, call_kwargs: Mapping[str, Any], seed: int, warmup: int, repeats: int,
            clock: Callable[[], float], applier: Callable[..., list[str]], runs_dir: Path | None,
            budget_bytes: int | None) -> dict[str, Any]:
    """What every child of this sweep gets (the recipe, index and folders are added per candidate)."""
    return {"source": src.import_path or src.model_path or src.obj, "dtype": src.dtype_name, "device": device,
            "call_kwargs": dict(call_kwargs), "seed": seed, "warmup": warmup, "repeats": repeats, "clock": clock,
            "applier": applier, "runs_dir": None if runs_dir is None else str(runs_dir), "budget_bytes": budget_bytes}

