"""Steps of a block loop form one loop, also when each block nests its steps in a phase of its
own (``prof.steps(..., phase="denoise")`` inside ``prof.blocks(...)``, as the README writes it)."""

from __future__ import annotations

import pytest

from block_loop import block_loop_run
from genprof.analysis import rules as R
from genprof.analysis.summary import step_loop
from genprof.model import Run, Span
from genprof.render.html import report_data


def nested_block_loop(first_step_s: float) -> Run:
    # GIVEN 4 blocks, each holding a "denoise" phase of 4 steps; only the loop's very first step is slow
    run = block_loop_run(generation=True)
    nid = max(s.id for s in run.spans) + 1
    for b in [s for s in run.spans if s.kind == "block"]:
        den = Span(id=nid, name="denoise", kind="phase", start_s=b.start_s, duration_s=0.2, parent_id=b.id)
        run.spans.append(den)
        nid += 1
        for k in range(4):
            d = first_step_s if (b.index == 0 and k == 0) else 0.05
            run.spans.append(Span(id=nid, name="step", kind="step", start_s=b.start_s + 0.01 * k, duration_s=d,
                                  index=k, parent_id=den.id))
            nid += 1
    return run


def test_step_loop_finds_the_block_through_a_nested_phase() -> None:
    run = nested_block_loop(0.05)
    by_id = {s.id: s for s in run.spans}
    blocks_phase = next(s for s in run.spans if s.name == "blocks")
    loops = {step_loop(by_id, s)[0] for s in run.iter_spans(kind="step")}
    assert loops == {blocks_phase.id}
    assert sorted(step_loop(by_id, s)[1].index for s in run.iter_spans(kind="step")) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4  # type: ignore[union-attr]


def test_step_loop_outside_blocks_is_the_parent() -> None:
    a = Span(id=1, name="generation", kind="generation", start_s=0.0, duration_s=1.0)
    d = Span(id=2, name="denoise", kind="phase", start_s=0.0, duration_s=1.0, parent_id=1)
    s = Span(id=3, name="step", kind="step", start_s=0.0, duration_s=0.1, parent_id=2)
    assert step_loop({x.id: x for x in (a, d, s)}, s) == (2, None)


def test_chart_marks_only_the_loops_first_step_and_names_each_block() -> None:
    cols = report_data(nested_block_loop(0.3), findings=[])["steps"]
    assert cols["warmup"] == [1] + [0] * 15
    assert cols["block"] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4


def test_warmup_rule_sees_one_loop_in_nested_blocks() -> None:
    f = R.rule_warmup_steps(nested_block_loop(0.3))
    assert f is not None and f.numbers["first_step_s"] == pytest.approx(0.3)
    assert f.numbers["median_rest_s"] == pytest.approx(0.05)
    assert R.rule_warmup_steps(nested_block_loop(0.05)) is None
