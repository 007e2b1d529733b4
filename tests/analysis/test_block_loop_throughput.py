"""Throughput of a hand-written block loop: output fps, real-time factor, time to first frame,
blocks/s and deadline misses, from the span attributes ``prof.blocks`` records.

The runs set the attributes the profiler records (``frames`` on each block span, ``fps`` on the
enclosing blocks phase), so these tests hold for either spelling of the ``blocks()`` arguments.
"""

from __future__ import annotations

import pytest

from block_loop import block_loop_run
from genprof.analysis.targets import check_targets, compute_figures


@pytest.mark.parametrize("generation", [True, False])
def test_block_loop_with_fps_gets_every_video_figure(generation):
    run = block_loop_run(generation=generation)
    f = compute_figures(run)
    # 4 blocks x 9 frames = 36 output frames
    dur = 1.1 + 0.2 if generation else 1.1
    assert f["output_fps"].value == pytest.approx(36 / dur)
    assert f["real_time_factor"].value == pytest.approx((36 / 16) / dur)
    # first block ends at 1.5 s; the generation started at 0.9 s (the blocks phase at 1.0 s)
    assert f["time_to_first_frame_s"].value == pytest.approx(0.6 if generation else 0.5)
    assert f["blocks_per_s"].value == pytest.approx(4 / 1.1)
    # a block's 9 frames play for 9/16 = 0.5625 s: none of 0.5, 0.2, 0.2, 0.2 misses
    assert f["deadline_misses"].value == 0


def test_slow_block_counts_as_a_deadline_miss_and_check_reports_it():
    run = block_loop_run(generation=True, block_s=(0.9, 0.2, 0.7, 0.2))
    rep = check_targets(run, ["output_fps>=16", "real_time_factor>=1", "deadline_misses<=0",
                              "time_to_first_frame_s<=0.5", "blocks_per_s>=2"])
    by = {r.target.figure: r for r in rep.results}
    assert by["deadline_misses"].measured == 2 and by["deadline_misses"].status == "fail"
    assert by["time_to_first_frame_s"].measured == pytest.approx(1.0)
    assert by["blocks_per_s"].measured == pytest.approx(4 / 2.0)
    assert by["blocks_per_s"].status == "pass"
    assert all(r.status != "not_measured" for r in rep.results)


def test_without_fps_rtf_and_deadlines_say_why():
    run = block_loop_run(generation=False, fps=None)
    f = compute_figures(run)
    assert f["output_fps"].value == pytest.approx(36 / 1.1)
    assert f["real_time_factor"].value is None and "fps" in (f["real_time_factor"].reason or "")
    assert f["deadline_misses"].value is None and "fps" in (f["deadline_misses"].reason or "")
