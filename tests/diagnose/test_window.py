"""The diagnose window: its spec, the steps it records, and a real torch.profiler window on CPU."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from genprof.errors import UsageError

torch = pytest.importorskip("torch")

from genprof.analysis import diagnose as dg  # noqa: E402
from genprof.analysis.rules import DIAGNOSE_RULES, run_rules  # noqa: E402
from genprof.diagnose import DiagnoseWindow, WindowSpec, parse_window  # noqa: E402


# --------------------------------------------------------------------------- the spec
@pytest.mark.parametrize(("spec", "want"), [
    ("steps:2-3", (2, 3)), ("steps:4", (4, 4)), (" Steps:0-1 ", (0, 1)), (True, (1, 2)), ("true", (1, 2)),
])
def test_window_spec_parses(spec: Any, want: tuple[int, int]) -> None:
    w = parse_window(spec)
    assert w is not None and (w.first, w.last) == want


@pytest.mark.parametrize("spec", [None, False, "off", ""])
def test_window_spec_off(spec: Any) -> None:
    assert parse_window(spec) is None


@pytest.mark.parametrize(("spec", "words"), [
    ("2-3", "does not start with 'steps:'"), ("steps:a-b", "not a step index"), ("steps:3-2", "before the first"),
    ("steps:-1", "not a step index"), ("steps:0-20", "at most 8"), (3, "is a int"),
])
def test_window_spec_errors_name_the_problem_and_the_fix(spec: Any, words: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_window(spec)
    assert words in str(e.value)
    assert "steps:A-B" in str(e.value) or "at most" in str(e.value)


def test_window_spec_round_trips_as_text() -> None:
    assert str(WindowSpec(2, 3)) == "steps:2-3" and str(WindowSpec(4, 4)) == "steps:4"


# --------------------------------------------------------------------------- schedule with fakes
@dataclass
class FakeSpan:
    index: int
    start_s: float
    duration_s: float | None = None
    id: int = 0
    kind: str = "step"


class FakeProfiler:
    """The listener seam of genprof.Profiler: subscribe(cb, kinds) and now(); optionally no span_start."""

    def __init__(self, with_start: bool = True) -> None:
        self.with_start = with_start
        self.cbs: list[Any] = []
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def subscribe(self, cb: Any, kinds: Any = None) -> Any:
        kinds = tuple(kinds or ())
        if "span_start" in kinds and not self.with_start:
            raise UsageError("unknown listener event kind(s) 'span_start'")
        self.cbs.append(cb)
        return lambda: self.cbs.remove(cb)

    def emit(self, kind: str, payload: Any) -> None:
        for cb in list(self.cbs):
            cb(kind, payload)

    def loop(self, n: int, step_s: float, observe: Any) -> None:
        for i in range(n):
            s = FakeSpan(index=i, start_s=self.t, id=100 + i)
            if self.with_start:
                self.emit("span_start", s)
            observe(i)
            self.t += step_s
            s.duration_s = step_s
            self.emit("span_end", s)


class FakeTorchProfile:
    """Counts step() calls and answers the real torch.profiler schedule's action for each."""

    def __init__(self, acts: Any, schedule: Any, on_ready: Any) -> None:
        self.schedule = schedule
        self.on_ready = on_ready
        self.step_num: int | None = None
        self.stopped = False

    def start(self) -> None:
        self.step_num = 0

    def step(self) -> None:
        assert self.step_num is not None
        self.step_num += 1

    def stop(self) -> None:
        self.stopped = True

    def action(self) -> str:
        if self.step_num is None or self.stopped:
            return "off"
        return self.schedule(self.step_num).name

    def export_chrome_trace(self, path: str) -> None:
        with open(path, "w") as f:
            f.write('{"traceEvents": []}')


@pytest.mark.parametrize("with_start", [True, False])
def test_schedule_records_only_the_chosen_steps(with_start: bool) -> None:
    # GIVEN a window over steps 3-4 of an 8-step loop, with and without span_start events
    made: list[FakeTorchProfile] = []

    def factory(acts: Any, sched: Any, ready: Any) -> FakeTorchProfile:
        made.append(FakeTorchProfile(acts, sched, ready))
        return made[-1]

    fp = FakeProfiler(with_start=with_start)
    w = DiagnoseWindow("steps:3-4", profile_factory=factory, cuda=False).attach(fp)
    seen: dict[int, str] = {}
    # WHEN the loop runs (the action is observed while each step's body runs)
    fp.loop(8, 0.01, lambda i: seen.__setitem__(i, made[0].action() if made else "off"))
    fp.emit("run_end", type("R", (), {"metadata": {}})())
    # THEN steps 3 and 4 record, step 2 warms up, nothing else pays, and the profiler was stopped
    recording = {i for i, a in seen.items() if a.startswith("RECORD")}
    assert recording == {3, 4}
    assert {i for i, a in seen.items() if a == "WARMUP"} == {2}
    assert all(seen[i] == "off" for i in (0, 1, 5, 6, 7))
    assert made[0].stopped
    assert w.diagnosis is not None and [s.index for s in w.diagnosis.step_windows] == [3, 4]
    assert [s.span_id for s in w.diagnosis.step_windows] == [103, 104]


def test_profiler_start_and_stop_costs_are_recorded_on_the_injected_clock() -> None:
    # GIVEN a torch profiler whose start takes 0.25 s and whose final step+stop take 0.5 s of the
    # genprof clock (the fake profiler's clock, advanced by the fake torch profiler)
    fp = FakeProfiler()

    class Slow(FakeTorchProfile):
        def start(self) -> None:
            super().start()
            fp.t += 0.25

        def stop(self) -> None:
            super().stop()
            fp.t += 0.5

    w = DiagnoseWindow("steps:2-3", profile_factory=Slow, cuda=False).attach(fp)
    # WHEN the loop runs past the window
    fp.loop(6, 0.01, lambda i: None)
    fp.emit("run_end", type("R", (), {"metadata": {}})())
    # THEN both costs are in the diagnosis, measured, not guessed
    assert w.diagnosis is not None
    assert w.diagnosis.start_cost_s == pytest.approx(0.25)
    assert w.diagnosis.stop_cost_s == pytest.approx(0.5)


def test_costs_are_none_when_the_window_never_opened() -> None:
    fp = FakeProfiler()
    w = DiagnoseWindow("steps:5-6", profile_factory=FakeTorchProfile, cuda=False).attach(fp)
    fp.loop(3, 0.01, lambda i: None)
    fp.emit("run_end", type("R", (), {"metadata": {}})())
    assert w.diagnosis is not None and w.diagnosis.start_cost_s is None and w.diagnosis.stop_cost_s is None


def test_window_at_step_zero_needs_span_start_events() -> None:
    fp = FakeProfiler(with_start=False)
    w = DiagnoseWindow("steps:0-1", profile_factory=FakeTorchProfile, cuda=False).attach(fp)
    fp.loop(3, 0.01, lambda i: None)
    fp.emit("run_end", type("R", (), {"metadata": {}})())
    assert w.diagnosis is not None and w.diagnosis.status == "skipped"
    assert "span_start" in (w.diagnosis.status_reason or "")


def test_window_never_reached_says_so() -> None:
    fp = FakeProfiler()
    w = DiagnoseWindow("steps:5-6", profile_factory=FakeTorchProfile, cuda=False).attach(fp)
    fp.loop(3, 0.01, lambda i: None)
    fp.emit("run_end", type("R", (), {"metadata": {}})())
    assert w.diagnosis is not None and w.diagnosis.status == "incomplete"
    assert "before the window steps:5-6 began" in (w.diagnosis.status_reason or "")


def test_another_profiler_active_is_reported_once_and_the_run_continues(caplog: pytest.LogCaptureFixture) -> None:
    fp = FakeProfiler()
    w = DiagnoseWindow("steps:1-2", cuda=False).attach(fp)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        fp.loop(4, 0.01, lambda i: None)
    fp.emit("run_end", type("R", (), {"metadata": {}})())
    assert w.diagnosis is not None and w.diagnosis.status == "skipped"
    assert "another torch profiler is already active" in (w.diagnosis.status_reason or "")
    assert sum("another torch profiler" in r.getMessage() for r in caplog.records) == 1


# --------------------------------------------------------------------------- a real CPU window
class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn1 = torch.nn.Linear(16, 16)
        self.ffn = torch.nn.Linear(16, 16)

    def forward(self, x: Any) -> Any:
        return self.ffn(self.attn1(x))


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj_in = torch.nn.Linear(16, 16)
        self.blocks = torch.nn.ModuleList([Block() for _ in range(3)])

    def forward(self, x: Any) -> Any:
        x = self.proj_in(x)
        for b in self.blocks:
            x = b(x)
        return x


def test_cpu_run_records_cpu_ops_of_the_window_only_and_says_why_gpu_figures_are_absent() -> None:
    import genprof

    m = Tiny()
    with genprof.Profiler("diag-cpu") as p:
        DiagnoseWindow("steps:2-3", modules=m, cuda=False).attach(p)
        x = torch.ones(4, 16)
        for i in p.steps(range(6)):
            with torch.no_grad(), torch.profiler.record_function(f"body{i}"):
                x = m(x)
    run = p.run
    d = dg.diagnosis_of(run)
    assert d is not None and d.status == "ok" and d.steps == [2, 3]
    # 7 linears per forward, all in the window's two steps, each with its module scope
    lin = [o for o in d.cpu_ops if o.name == "aten::linear"]
    assert len(lin) == 14 and {o.step for o in lin} == {2, 3}
    assert {o.scope for o in lin} == {"proj_in", "blocks.0.attn1", "blocks.0.ffn", "blocks.1.attn1", "blocks.1.ffn",
                                      "blocks.2.attn1", "blocks.2.ffn"}
    assert d.scope_roots == ["proj_in", "blocks.0", "blocks.1", "blocks.2"]
    # hooks are gone after the window
    assert all(not mod._forward_pre_hooks for mod in m.modules())
    # GPU figures: None with the reason; no GPU advice
    a = dg.analyze(run)
    assert a is not None
    assert a["idle"]["idle_share"] is None and "CPU" in a["idle"]["reason"]
    assert a["syncs"]["sites"] is None and a["classes"]["classes"] is None and a["modules"]["modules"] is None
    assert run_rules(run, DIAGNOSE_RULES) == []
    # the run file keeps it
    back = genprof.model.Run.from_dict(run.to_dict())
    assert dg.diagnosis_of(back) == d


def _broken(x: Any) -> Any:
    y = x * 2
    print("graph break here")  # the planted graph break
    return y + 1


def test_planted_graph_break_is_found_with_its_reason_and_line() -> None:
    import genprof

    fn = torch.compile(_broken, backend="eager")
    line = inspect.getsource(_broken).splitlines().index('    print("graph break here")  # the planted graph break')
    line += inspect.getsourcelines(_broken)[1]
    with genprof.Profiler("diag-compile") as p:
        w = DiagnoseWindow("steps:1", cuda=False).attach(p)
        for _ in p.steps(range(3)):
            fn(torch.ones(3))
    c = w.diagnosis.compile if w.diagnosis else None
    assert c is not None and c.reason is None
    assert c.frames_compiled >= 1 and c.compile_time_s is not None and c.compile_time_s > 0
    gb = [g for g in c.graph_breaks if "print" in g.reason]
    assert gb, c.graph_breaks
    assert gb[0].file == __file__ and gb[0].line == line
    findings = {f.rule_id: f for f in run_rules(p.run, DIAGNOSE_RULES)}
    assert "graph_breaks" in findings and f":{line}" in findings["graph_breaks"].evidence
