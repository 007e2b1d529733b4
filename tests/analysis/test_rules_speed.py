"""Rules on time: the dominant phase, warm-up and steps that slow down; each fires on one run, stays quiet on another."""

from __future__ import annotations

import pytest
from rule_cases import fires
from synth import make_run

from genprof.analysis.rules import speed


# ------------------------------------------------------------------ dominant phase
def test_dominant_phase_fires_on_self_time() -> None:
    run = make_run(steps=50, step_s=0.2, load_s=1.0)
    f = fires(speed.rule_dominant_phase, run)
    assert f.phase == "generation/denoise"
    assert f.numbers["share_pct"] > 50
    assert f.code is not None and "compile" in f.code


def test_dominant_phase_quiet_when_balanced() -> None:
    run = make_run(steps=10, step_s=0.1, load_s=1.0, decode_s=1.0)
    assert speed.rule_dominant_phase(run) is None


def test_dominant_phase_does_not_double_count_nesting() -> None:
    # GIVEN the whole generation is one phase wrapping denoise: the outer phase must not win
    # with its inclusive time.
    run = make_run(steps=10, step_s=0.1, load_s=0.9, decode_s=0.01, encode_s=0.01)
    gen = next(s for s in run.spans if s.kind == "generation")
    gen.kind = "phase"
    f = speed.rule_dominant_phase(run)
    assert f is None or f.phase != "generation"


# ------------------------------------------------------------------ warm-up
def test_warmup_fires_on_slow_first_step() -> None:
    run = make_run(step_times=[2.0, 0.5] + [0.1] * 18)
    f = fires(speed.rule_warmup_steps, run)
    assert f.numbers["ratio"] == pytest.approx(20.0)
    assert "step 1" in f.evidence


def test_warmup_quiet_on_even_steps() -> None:
    assert speed.rule_warmup_steps(make_run(step_times=[0.2] + [0.1] * 19)) is None
    assert speed.rule_warmup_steps(make_run(step_times=[2.0, 0.1, 0.1])) is None  # too few steps


# ------------------------------------------------------------------ slowing down
def test_steps_slow_down_fires_and_names_memory_growth() -> None:
    times = [0.1 + 0.005 * i for i in range(30)]
    f = fires(speed.rule_steps_slow_down, make_run(step_times=times, step_alloc_growth_bytes=100 * 1024**2))
    assert f.numbers["ratio"] > 1.15
    assert "allocated memory grew" in f.cause


def test_steps_slow_down_quiet_on_noise() -> None:
    import random

    rnd = random.Random(1)
    times = [0.1 * (1 + 0.05 * rnd.uniform(-1, 1)) for _ in range(30)]
    assert speed.rule_steps_slow_down(make_run(step_times=times)) is None


def _block_loop_with_steps(first_step_s: float, second_block_first_s: float = 0.05):
    from block_loop import block_loop_run
    from genprof.model import Span

    run = block_loop_run(generation=True)
    nid = max(s.id for s in run.spans) + 1
    for b in [s for s in run.spans if s.kind == "block"]:
        for k in range(4):
            d = first_step_s if (b.index == 0 and k == 0) else (second_block_first_s if k == 0 else 0.05)
            run.spans.append(Span(id=nid, name="step", kind="step", start_s=b.start_s + 0.01 * nid, duration_s=d,
                                  index=k, parent_id=b.id))
            nid += 1
    return run


def test_warmup_in_a_block_loop_is_the_loops_first_step_only() -> None:
    # GIVEN a block loop whose very first step is 6x slower; each block's first step is normal
    f = speed.rule_warmup_steps(_block_loop_with_steps(0.3))
    assert f is not None and f.numbers["first_step_s"] == pytest.approx(0.3)
    assert f.numbers["median_rest_s"] == pytest.approx(0.05)
    # and a loop whose blocks all start at normal speed has no warm-up finding
    assert speed.rule_warmup_steps(_block_loop_with_steps(0.05)) is None
