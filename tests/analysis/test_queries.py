"""Span queries: the span tree (ancestors, nearest phase, exclusive times) and the run's generations."""

from __future__ import annotations

import pytest
from synth import GiB, make_run

from genprof.analysis.queries import (
    ancestors,
    finite_float,
    generations,
    innermost_peak_phase,
    nearest_phase_name,
    phase_exclusive_times,
    whole_int,
)
from genprof.model import Run, Span


def _run(spans: list[Span], **metadata: object) -> Run:
    return Run(name="q", run_id="q-1", started_at="2026-01-01T00:00:00Z", started_unix_s=1.7e9, duration_s=10.0,
               spans=spans, metadata=dict(metadata))


def test_ancestors_walk_to_the_root_and_stop_at_a_cycle() -> None:
    # GIVEN a three-level tree and a damaged pair of spans that name each other as parent
    a = Span(id=1, name="gen", kind="generation", start_s=0.0, duration_s=5.0)
    b = Span(id=2, name="denoise", kind="phase", start_s=0.0, duration_s=4.0, parent_id=1)
    c = Span(id=3, name="step", kind="step", start_s=0.0, duration_s=1.0, parent_id=2)
    x = Span(id=4, name="x", kind="phase", start_s=0.0, parent_id=5)
    y = Span(id=5, name="y", kind="phase", start_s=0.0, parent_id=4)
    by_id = {s.id: s for s in (a, b, c, x, y)}
    # THEN the walk lists parents nearest first and ends, also on the cycle
    assert [s.id for s in ancestors(by_id, c)] == [2, 1]
    assert [s.id for s in ancestors(by_id, a)] == []
    assert [s.id for s in ancestors(by_id, x)] == [5]


def test_nearest_phase_name_skips_blocks_and_steps() -> None:
    spans = [
        Span(id=1, name="generation", kind="generation", start_s=0.0, duration_s=3.0),
        Span(id=2, name="blocks", kind="phase", start_s=0.0, duration_s=3.0, parent_id=1),
        Span(id=3, name="block", kind="block", start_s=0.0, duration_s=1.0, parent_id=2),
        Span(id=4, name="step", kind="step", start_s=0.0, duration_s=0.5, parent_id=3),
    ]
    run = _run(spans)
    assert nearest_phase_name(run, spans[3]) == "blocks"
    assert nearest_phase_name(run, spans[1]) == "generation"
    assert nearest_phase_name(run, spans[0]) is None


def test_innermost_peak_phase_is_the_shortest_phase_at_the_peak() -> None:
    run = make_run(decode_peak_bytes=30 * GiB, denoise_peak_bytes=14 * GiB)
    ph = innermost_peak_phase(run, "peak_reserved_bytes")
    assert ph is not None and ph.name == "decode"  # the generation holds the same peak but lasts longer
    assert innermost_peak_phase(make_run(gpu=False), "peak_reserved_bytes") is None


def test_block_loop_without_generation_spans_counts_each_blocks_phase_once() -> None:
    # GIVEN two blocks phases of 2 blocks each, 4 frames a block, at 16 fps, and no generation span
    spans: list[Span] = []
    for g in range(2):
        pid = 10 * (g + 1)
        spans.append(Span(id=pid, name="blocks", kind="phase", start_s=5.0 * g, duration_s=4.0,
                          attributes={"fps": 16}))
        for i in range(2):
            spans.append(Span(id=pid + i + 1, name="block", kind="block", start_s=5.0 * g + 2.0 * i,
                              duration_s=2.0, parent_id=pid, index=i, attributes={"frames": 4}))
    gens, src = generations(_run(spans))
    assert "each blocks phase counts as one" in src
    assert [(g.duration_s, g.output_frames, g.fps, len(g.blocks)) for g in gens] == [(4.0, 8, 16.0, 2)] * 2


def test_generation_spans_take_frames_from_their_blocks() -> None:
    spans = [
        Span(id=1, name="generation", kind="generation", start_s=0.0, duration_s=6.0),
        Span(id=2, name="blocks", kind="phase", start_s=0.0, duration_s=6.0, parent_id=1, attributes={"fps": 8}),
        Span(id=3, name="block", kind="block", start_s=0.0, duration_s=3.0, parent_id=2, attributes={"frames": 5}),
        Span(id=4, name="block", kind="block", start_s=3.0, duration_s=3.0, parent_id=2, attributes={"frames": 7}),
    ]
    gens, src = generations(_run(spans))
    assert src == "generation spans"
    assert len(gens) == 1 and gens[0].output_frames == 12 and gens[0].fps == 8.0


def test_a_block_without_a_frame_count_leaves_the_total_unknown() -> None:
    spans = [
        Span(id=1, name="generation", kind="generation", start_s=0.0, duration_s=6.0),
        Span(id=2, name="block", kind="block", start_s=0.0, duration_s=3.0, parent_id=1, attributes={"frames": 5}),
        Span(id=3, name="block", kind="block", start_s=3.0, duration_s=3.0, parent_id=1),
    ]
    gens, _ = generations(_run(spans))
    assert gens[0].output_frames is None  # unknown, not 5


def test_metadata_generations_win_and_bad_entries_are_skipped() -> None:
    run = _run([Span(id=1, name="generation", kind="generation", start_s=0.0, duration_s=9.0)],
               generations=[{"duration_s": 2.5, "output_frames": 33.0}, {"duration_s": "fast"}, "junk"])
    gens, src = generations(run)
    assert src == 'run.metadata["generations"]'
    assert [(g.duration_s, g.output_frames) for g in gens] == [(2.5, 33)]


@pytest.mark.parametrize(("v", "f", "i"), [(3, 3.0, 3), (3.0, 3.0, 3), (2.5, 2.5, None), (True, None, None),
                                           (float("nan"), None, None), ("3", None, None), (None, None, None)])
def test_number_readers_refuse_bools_text_and_non_finite(v: object, f: float | None, i: int | None) -> None:
    assert finite_float(v) == f
    assert whole_int(v) == i


def test_phase_exclusive_times_do_not_double_count() -> None:
    run = make_run(generations=2, steps=5, step_s=0.2)
    excl = phase_exclusive_times(run)
    assert run.duration_s is not None
    assert sum(excl.values()) <= run.duration_s + 1e-9
    assert excl["generation/denoise"] == pytest.approx(2 * (5 * 0.2 + 5 * 0.0005), rel=1e-6)


def test_a_negative_block_frame_count_is_not_a_count() -> None:
    spans = [
        Span(id=1, name="generation", kind="generation", start_s=0.0, duration_s=6.0),
        Span(id=2, name="block", kind="block", start_s=0.0, duration_s=3.0, parent_id=1, attributes={"frames": 5}),
        Span(id=3, name="block", kind="block", start_s=3.0, duration_s=3.0, parent_id=1, attributes={"frames": -5}),
    ]
    gens, _ = generations(_run(spans))
    assert gens[0].output_frames is None  # not 0 from 5 + (-5)
