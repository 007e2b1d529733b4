"""The diagnose window: torch.profiler (CUPTI) over a few chosen steps of a running Profiler.

``DiagnoseWindow(spec).attach(profiler)`` listens to the profiler's step spans and drives
``torch.profiler.profile(schedule=schedule(wait=0, warmup=W, active=N, repeat=1))``: the torch
profiler is started at the warm-up step's start (one step before the window, when there is
one), :meth:`torch.profiler.profile.step` is called at each later step start and once at the
end of the window's last step, and it stops there. Before that and after it nothing is
recorded and no hook is installed, so the rest of the run keeps the default config's cost.
The events are converted into a :class:`genprof.diagnosis.Diagnosis` when the run ends
(``run_end``), outside the timed steps, and stored in ``run.metadata["diagnosis"]``.

Step starts come from the profiler's ``span_start`` events when it publishes them. Without
them the end of step k-1 stands for the start of step k (the step loop opens the next step
at the instant it closes the previous one), so step 0 cannot open a window then.

A missing CUPTI, another torch profiler already active, or a failure inside torch.profiler is
logged once and recorded as a reason in the diagnosis; the run continues.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprof.diagnose.capture import parse_trace, step_marks
from genprof.diagnose.compile import CompileWatch
from genprof.diagnose.modules import ModuleScopes
from genprof.diagnose.sites import SyncSites
from genprof.diagnosis import Diagnosis, StepWindow
from genprof.errors import UsageError

log = logging.getLogger(__name__)

MAX_WINDOW_STEPS = 8
DEFAULT_WINDOW = "steps:1-2"
METADATA_KEY = "diagnosis"

_USAGE = ('give the window as "steps:A-B" (0-based step indices, e.g. "steps:2-3"), "steps:A" for one step, '
          "or true for the default (two steps after the first)")


@dataclass(frozen=True)
class WindowSpec:
    first: int
    last: int

    @property
    def steps(self) -> list[int]:
        return list(range(self.first, self.last + 1))

    def __str__(self) -> str:
        return f"steps:{self.first}" if self.first == self.last else f"steps:{self.first}-{self.last}"


def parse_window(spec: Any) -> WindowSpec | None:
    """``"steps:2-3"`` -> steps 2 and 3; ``True`` -> steps 1-2; ``False``/``None`` -> no window.

    Raises :class:`UsageError` naming the problem and the accepted forms.
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        spec = DEFAULT_WINDOW
    if isinstance(spec, WindowSpec):
        return spec
    if not isinstance(spec, str):
        raise UsageError(f"diagnose window {spec!r} is a {type(spec).__name__}; {_USAGE}")
    s = spec.strip().lower()
    if s in ("true", "on", "yes", "default"):
        return parse_window(True)
    if s in ("false", "off", "no", "none", ""):
        return None
    if not s.startswith("steps:"):
        raise UsageError(f"diagnose window {spec!r} does not start with 'steps:'; {_USAGE}")
    body = s[len("steps:"):].strip()
    a, sep, b = body.partition("-")
    try:
        first = int(a)
        last = int(b) if sep else first
    except ValueError:
        raise UsageError(f"diagnose window {spec!r}: {body!r} is not a step index or range; {_USAGE}") from None
    if first < 0:
        raise UsageError(f"diagnose window {spec!r}: step indices start at 0; {_USAGE}")
    if last < first:
        raise UsageError(f"diagnose window {spec!r}: the last step {last} is before the first {first}; {_USAGE}")
    if last - first + 1 > MAX_WINDOW_STEPS:
        raise UsageError(f"diagnose window {spec!r} covers {last - first + 1} steps; at most {MAX_WINDOW_STEPS} "
                         "(a kernel trace of more steps costs memory and says nothing new): choose a shorter range")
    return WindowSpec(first, last)


def _default_profile_factory(activities: list[Any], schedule: Any, on_ready: Callable[[Any], None]) -> Any:
    import torch.profiler as tp

    return tp.profile(activities=activities, schedule=schedule, on_trace_ready=on_ready,
                      record_shapes=False, with_stack=True)


def _torch_profiler_active() -> bool:
    import torch

    fn = getattr(torch.autograd, "_profiler_enabled", None)
    return bool(fn()) if fn is not None else False


class DiagnoseWindow:
    """A diagnose window over steps ``spec`` of the profiler it is attached to.

    ``modules``: the denoiser (or ``{"transformer": ..., "vae": ...}``) whose blocks get module
    scopes. ``profile_factory(activities, schedule, on_ready)`` builds the torch profiler
    (tests inject a fake); ``cuda``: whether to record CUDA activity (default: a CUDA device is
    available).
    """

    def __init__(self, spec: Any = True, *, modules: Any = None,
                 profile_factory: Callable[[list[Any], Any, Callable[[Any], None]], Any] | None = None,
                 cuda: bool | None = None) -> None:
        w = parse_window(spec)
        if w is None:
            raise UsageError(f"diagnose window {spec!r} is off; pass a window (e.g. 'steps:2-3') or True")
        self.spec = w
        self.scopes = ModuleScopes(modules)
        self._factory = profile_factory or _default_profile_factory
        self._cuda = cuda
        self._prof: Any = None
        self._unsub: Callable[[], None] | None = None
        self._has_start_events = False
        self._state = "idle"  # idle -> pending -> warmup/active -> done | failed
        self._warmup = 0
        self._last_index: int | None = None
        self._marks: list[tuple[int, float]] = []  # (torch step_num, genprof time s) at each step() call
        self._step_num = 0
        self._steps: dict[int, StepWindow] = {}
        self._starts: dict[int, float] = {}
        self._ready: Any = None
        self._reason: str | None = None
        self._status_reason: str | None = None
        self._compile: CompileWatch | None = None
        self.diagnosis: Diagnosis | None = None
        self.torch_profile: Any = None  # the torch profiler of the window, kept for checks (bench, tests)
        self._sites: SyncSites | None = None
        self._start_cost_s: float | None = None
        self._stop_cost_s: float | None = None

    # ------------------------------------------------------------ attaching
    def attach(self, profiler: Any) -> DiagnoseWindow:
        """Listen to ``profiler`` (a running genprof Profiler, or anything with ``subscribe`` and ``now``)."""
        self._p = profiler
        self._clock_offset_us = (time.perf_counter() - float(profiler.now())) * 1e6  # fallback alignment
        self._compile = CompileWatch()
        try:
            self._unsub = profiler.subscribe(self._on_event, kinds=("span_start", "span_end", "run_end"))
            self._has_start_events = True
        except UsageError:
            self._unsub = profiler.subscribe(self._on_event, kinds=("span_end", "run_end"))
            self._has_start_events = False
        w = self.spec
        earliest = 0 if self._has_start_events else 1  # without span_start, step 0's start is not seen
        if w.first < earliest:
            self._fail_once("skipped", "this profiler publishes no span_start events, so step 0 cannot open the "
                            "window; choose a window from step 1 (e.g. 'steps:1-2')")
            return self
        self._warmup = 1 if w.first - 1 >= earliest else 0
        self._state = "pending"
        return self

    def detach(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None

    # ---------------------------------------------------------------- events
    def _on_event(self, kind: str, payload: Any) -> None:
        if kind == "run_end":
            self._finish(payload)
            # the profiler writes its run file before run_end listeners run: write it again with the window
            path = getattr(self._p, "run_path", None)
            if isinstance(path, Path) and path.exists():
                self._p.save(path)
            return
        if getattr(payload, "kind", None) != "step" or self._state not in ("pending", "warmup", "active"):
            return
        index = payload.index
        if index is None:
            return
        if kind == "span_start":
            self._step_start(index, payload.start_s)
        elif kind == "span_end":
            if not self._has_start_events:
                self._step_start(index + 1, payload.start_s + (payload.duration_s or 0.0))
            self._step_end(payload)

    def _step_start(self, index: int, t_s: float) -> None:
        w = self.spec
        if self._last_index is not None and index <= self._last_index and self._state in ("warmup", "active"):
            self._stop_torch()
            self._fail_once("incomplete", f"the step loop restarted at step {index} before the window "
                            f"{w} was complete (the loop had {self._last_index + 1} steps)")
            return
        self._last_index = index
        open_at = w.first - self._warmup
        if self._state == "pending" and index == open_at:
            t0 = self._p.now()
            self._open(t_s)
            self._start_cost_s = float(self._p.now() - t0)
        elif self._state in ("warmup", "active") and open_at < index <= w.last:
            self._call_step(t_s)
            self._state = "active"
        if w.first <= index <= w.last:
            self._starts[index] = t_s

    def _step_end(self, span: Any) -> None:
        w = self.spec
        idx = span.index
        if self._state == "active":
            if w.first <= idx <= w.last and idx in self._starts:
                end = span.start_s + (span.duration_s or 0.0)
                self._steps[idx] = StepWindow(index=idx, start_us=span.start_s * 1e6, end_us=end * 1e6,
                                              span_id=getattr(span, "id", None))
            if idx == w.last:
                t0 = self._p.now()
                self._call_step(span.start_s + (span.duration_s or 0.0))
                self._stop_torch()
                self._stop_cost_s = float(self._p.now() - t0)
                self._state = "done"

    # ------------------------------------------------------------ torch side
    def _open(self, t_s: float) -> None:
        try:
            import torch
        except ImportError:
            self._fail_once("skipped", "torch is not installed: the diagnose window needs torch.profiler")
            return
        if _torch_profiler_active():
            self._fail_once("skipped", "another torch profiler is already active in this process; the diagnose "
                            "window needs the only one (torch.profiler records one session at a time)")
            return
        import torch.profiler as tp

        cuda = torch.cuda.is_available() if self._cuda is None else self._cuda
        self._device = "cuda" if cuda else "cpu"
        acts = [tp.ProfilerActivity.CPU] + ([tp.ProfilerActivity.CUDA] if cuda else [])
        with warnings.catch_warnings():
            # without a warm-up step torch warns that results may skew; the window's first step then
            # also pays CUPTI's start, which the overhead figure shows
            warnings.filterwarnings("ignore", message="Profiler won't be using warmup")
            sched = tp.schedule(wait=0, warmup=self._warmup, active=len(self.spec.steps), repeat=1)
        self.scopes.install()
        try:
            self._prof = self._factory(acts, sched, self._on_ready)
            self._prof.start()
        except RuntimeError as exc:
            self.scopes.remove()
            self._prof = None
            self._fail_once("skipped", f"torch.profiler could not start: {exc}")
            return
        if cuda:
            self._sites = SyncSites(self._p.now, torch)
            if not self._sites.start():
                log.info("genprof diagnose: %s", self._sites.reason)
        self._marks.append((0, float(self._p.now())))  # after start(): ProfilerStep#0 opens at its end
        self._step_num = 0
        self._state = "warmup" if self._warmup else "active"

    def _call_step(self, t_s: float) -> None:
        if self._prof is None:
            return
        try:
            self._prof.step()
        except RuntimeError as exc:
            self._stop_torch()
            self._fail_once("incomplete", f"torch.profiler failed inside the window: {exc}")
            return
        self._step_num += 1
        # ProfilerStep#N opens at the end of step(), after the state transition's own work
        self._marks.append((self._step_num, float(self._p.now())))

    def _on_ready(self, prof: Any) -> None:
        self._ready = prof

    def _stop_torch(self) -> None:
        self.scopes.remove()
        if self._sites is not None:
            self._sites.stop()
        if self._prof is not None:
            try:
                self._prof.stop()
            except RuntimeError as exc:
                log.warning("torch.profiler did not stop cleanly: %s", exc)
            self.torch_profile = self._prof
            self._prof = None

    def _fail_once(self, status: str, reason: str) -> None:
        if self._status_reason is None:
            log.warning("genprof diagnose: %s", reason)
            self._status_reason = reason
        self._state = "failed" if status == "skipped" else "done"
        self._status = status

    # ---------------------------------------------------------------- finish
    def _finish(self, run: Any) -> None:
        if self._state == "pending":
            seen = "no step" if self._last_index is None else f"steps up to {self._last_index}"
            self._fail_once("incomplete", f"the run ended before the window {self.spec} began ({seen} seen)")
        elif self._state in ("warmup", "active"):
            self._stop_torch()
            last = self._last_index
            self._fail_once("incomplete", f"the run ended before the window {self.spec} was complete "
                            f"(last step seen: {last})")
        self.detach()
        t0 = time.perf_counter()
        d = self._build()
        d.collector_overhead_s = time.perf_counter() - t0
        d.start_cost_s = self._start_cost_s
        d.stop_cost_s = self._stop_cost_s
        self.diagnosis = d
        md = getattr(run, "metadata", None)
        if isinstance(md, dict):
            md[METADATA_KEY] = d.to_dict()

    def _build(self) -> Diagnosis:
        status = getattr(self, "_status", "ok")
        d = Diagnosis(window=str(self.spec), status=status, status_reason=self._status_reason,
                      device=getattr(self, "_device", "cpu"))
        with contextlib.suppress(ImportError):
            import torch

            d.torch_version = torch.__version__
            if d.device == "cuda":
                with contextlib.suppress(RuntimeError, AssertionError):
                    d.device_name = torch.cuda.get_device_name()
        d.dtype = self._module_dtype()
        if self._compile is not None:
            d.compile = self._compile.collect()
        d.step_windows = [self._steps[i] for i in sorted(self._steps)]
        d.steps = [s.index for s in d.step_windows]
        d.scope_roots = list(self.scopes.roots)
        flops = getattr(self, "_flops", None)
        if flops is not None:
            d.flops_by_class, d.flops_source = flops
        d.scopes_reason = self.scopes.reason
        prof = self.torch_profile
        if prof is None or status == "skipped":
            d.gpu_reason = self._status_reason or "the window was not recorded"
            return d
        trace = self._export(prof)
        if trace is None:
            d.gpu_reason = self._status_reason
            return d
        offset = _offset_us(trace, self._marks, self._clock_offset_us)
        sites = self._sites.sites if self._sites is not None else []
        cap = parse_trace(trace, offset_us=offset, steps=d.step_windows, sync_sites=sites)
        if self._sites is not None:
            d.sync_sites_reason = self._sites.reason
        d.kernels, d.runtime, d.cpu_ops, d.host_frames = cap.kernels, cap.runtime, cap.cpu_ops, cap.host_frames
        if d.device != "cuda":
            d.gpu_reason = "no CUDA device: a CPU run has no kernels, GPU idle time or host-device syncs"
        elif not d.kernels:
            d.gpu_reason = ("torch.profiler recorded no GPU activity: CUPTI is missing or could not start "
                            "(check that libcupti is installed with the CUDA toolkit and that no other tool "
                            "holds CUPTI, e.g. Nsight Systems)")
            log.warning("genprof diagnose: %s", d.gpu_reason)
        if not cap.scopes_seen and d.scopes_reason is None:
            d.scopes_reason = "no module scope was recorded (no module given, or its forward did not run in the window)"
        return d

    def _module_dtype(self) -> str | None:
        for m in self.scopes.modules.values():
            with contextlib.suppress(StopIteration, AttributeError, TypeError):
                return str(next(m.parameters()).dtype).replace("torch.", "")
        return None

    def _export(self, prof: Any) -> dict[str, Any] | None:
        fd, path = tempfile.mkstemp(prefix="genprof-diagnose-", suffix=".json")
        os.close(fd)
        try:
            prof.export_chrome_trace(path)
            with open(path, encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
            return data
        except (RuntimeError, OSError, ValueError) as exc:
            self._fail_once("incomplete", f"torch.profiler's trace could not be read: {type(exc).__name__}: {exc}")
            return None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def set_modules(self, modules: Any) -> bool:
        """Give the window the modules to scope (before it opens); False once it has opened or if it has some."""
        if self._state not in ("idle", "pending") or self.scopes.modules:
            return False
        self.scopes = ModuleScopes(modules)
        return True

    def step_span_ids(self) -> list[int]:
        """The run's span ids of the window's steps recorded so far, in step order."""
        return [w.span_id for _, w in sorted(self._steps.items()) if w.span_id is not None]

    def set_step_flops(self, flops_by_class: dict[str, float], source: str) -> None:
        """FLOPs of one denoiser step by op class (``"gemm"``, ``"attention"``, ``"convolution"``).

        Before the run ends they go into the diagnosis when it is built; after (a listener that
        counted FLOPs at run end, after the window's own), the stored diagnosis and the run file
        are updated.
        """
        self._flops = (dict(flops_by_class), source)
        d = self.diagnosis
        if d is None:
            return
        d.flops_by_class, d.flops_source = dict(flops_by_class), source
        run = getattr(self._p, "run", None)
        md = getattr(run, "metadata", None)
        if isinstance(md, dict):
            md[METADATA_KEY] = d.to_dict()
        path = getattr(self._p, "run_path", None)
        if isinstance(path, Path) and path.exists():
            self._p.save(path)


def _offset_us(trace: dict[str, Any], marks: list[tuple[int, float]], fallback_us: float) -> float:
    """Trace clock minus genprof clock (us), from ``ProfilerStep#N`` annotations and our step() times.

    Each ``prof.step()`` call opens ``ProfilerStep#N`` (N: the torch step number) just before it
    returns, and genprof's clock is read right after; the median difference over the recorded
    ones aligns the clocks (to within the few microseconds between the two reads).
    """
    got = step_marks(trace)
    diffs = sorted(got[n] - t * 1e6 for n, t in marks if n in got)
    if diffs:
        return diffs[len(diffs) // 2]
    log.info("no ProfilerStep marks in the trace; assuming torch.profiler's clock is time.perf_counter's")
    return fallback_us


__all__ = ["DEFAULT_WINDOW", "MAX_WINDOW_STEPS", "METADATA_KEY", "DiagnoseWindow", "WindowSpec", "parse_window"]
