"""Seed 001's six decorators and seed 002's monitor_generation."""

from __future__ import annotations

import pytest

from fakes import FakeClock
from genprof.decorators import (
    add_profiling_event,
    monitor_generation,
    profile_block_computation,
    profile_diffusion_step,
    profile_method,
    profile_model_parameters,
    profile_session,
)
from genprof.errors import UsageError
from genprof.profiler import Profiler

QUIET = {"cpu_monitor_interval": 0.05, "handle_sigterm": False}


class Pipeline:
    @profile_method("model_initialization")
    def init(self) -> str:
        return "ok"

    @profile_session("video_generation", {"mode": "t2v"})
    @add_profiling_event("generation_completed", lambda result, *a, **k: {"frames": len(result)})
    def run_text_to_video(self, prompt: str) -> list[int]:
        for i in range(3):
            self.diffusion_step(i, 1000 - i, 4)
        self.process_block(0, 4, 12.5, 100)
        return [1, 2, 3]

    @add_profiling_event("checkpoint_loaded", lambda _, checkpoint_path, **kwargs: {"checkpoint_path": checkpoint_path})
    def load_checkpoint(self, checkpoint_path: str) -> None:
        pass

    @profile_diffusion_step(lambda args, kwargs: {"step": args[0], "timestep": args[1], "block_size": args[2]})
    def diffusion_step(self, step: int, timestep: int, block_size: int) -> None:
        pass

    @profile_model_parameters(lambda args, kwargs: {"model_name": args[0], "parameters_count": args[1]})
    def record_model_parameters(self, model_name: str, parameters_count: int) -> None:
        pass

    @profile_block_computation(lambda args, kwargs: {"block_index": args[0], "block_size": args[1],
                                                     "computation_time_ms": args[2], "memory_usage_mb": args[3]})
    def process_block(self, block_index: int, block_size: int, computation_time_ms: float, memory_usage_mb: float) -> None:
        pass


def test_decorators_do_nothing_without_a_profiler() -> None:
    p = Pipeline()
    assert p.init() == "ok"
    assert p.run_text_to_video("a cat") == [1, 2, 3]


def test_decorators_record_into_the_active_profiler() -> None:
    p = Pipeline()
    with Profiler("deco", **QUIET) as prof:
        p.init()
        p.load_checkpoint("/ckpt.pt")
        p.record_model_parameters("wan", 1_300_000_000)
        p.run_text_to_video("a cat")
    run = prof.run
    kinds = [(s.name, s.kind, s.index) for s in run.spans]
    assert ("model_initialization", "phase", None) in kinds
    assert [(n, i) for n, k, i in kinds if k == "step"] == [("step", 0), ("step", 1), ("step", 2)]
    gen = [s for s in run.spans if s.kind == "generation"][0]
    assert gen.name == "video_generation" and run.tags["mode"] == "t2v"
    steps = [s for s in run.spans if s.kind == "step"]
    assert all(s.parent_id == gen.id for s in steps) and steps[1].attributes["timestep"] == 999
    block = [s for s in run.spans if s.kind == "block"][0]
    assert block.index == 0 and block.attributes["computation_time_ms"] == 12.5
    names = [e.name for e in run.events]
    assert names == ["checkpoint_loaded", "model_parameters", "generation_completed"]
    assert run.events[0].attributes == {"checkpoint_path": "/ckpt.pt"}
    assert run.events[2].attributes == {"frames": 3}
    assert run.metadata["models"] == [{"model_name": "wan", "parameters_count": 1_300_000_000}]


def test_a_failing_metadata_function_does_not_break_the_call() -> None:
    @profile_diffusion_step(lambda args, kwargs: {"step": args[5]})
    def step(i: int) -> int:
        return i * 2

    with Profiler("deco", **QUIET) as prof:
        assert step(3) == 6
    assert "metadata_error" in prof.run.spans[0].attributes


def test_monitor_generation_alone_runs_its_own_profiler() -> None:
    clock = FakeClock()
    with monitor_generation(model_name="Qwen-Image", num_steps=3, resolution=(1024, 1024), target_time=5.0,
                            clock=clock) as mon:
        for _ in range(3):
            mon.start_step_timing()
            clock.advance(1.5)
            assert mon.end_step_timing() == pytest.approx(1.5)
    assert mon.generation_time_s == pytest.approx(4.5) and mon.target_met is True
    run = mon.run
    assert run.end.status == "ok" and run.metadata["targets"] == ["generation_time_s<=5.0"]
    gen = [s for s in run.spans if s.kind == "generation"][0]
    assert gen.attributes == {"model_name": "Qwen-Image", "num_steps": 3, "resolution": [1024, 1024]}
    assert len(mon.step_spans) == 3


def test_monitor_generation_uses_the_active_profiler() -> None:
    clock = FakeClock()
    with Profiler("outer", clock=clock, **QUIET) as prof:
        with monitor_generation(model_name="m", target_time=1.0) as mon:
            clock.advance(1.25)
    assert mon.profiler is prof and mon.target_met is False and mon.generation_time_s == pytest.approx(1.25)
    with pytest.raises(UsageError):
        with Profiler("outer", **QUIET):
            with monitor_generation() as mon:
                mon.end_step_timing()
