"""The figure table: each figure computed from a synthetic run, or None with the reason."""

from __future__ import annotations

import pytest
from synth import make_run

from genprof.analysis.figures import FIGURES, compute_figures
from genprof.analysis.targets import check_targets
from genprof.errors import UsageError


def test_output_fps_prefers_metadata_generations() -> None:
    run = make_run(gen_metadata=[{"duration_s": 10.0, "output_frames": 81, "fps": 16}])
    figs = compute_figures(run, ["output_fps", "generation_time_s", "real_time_factor"])
    assert figs["output_fps"].value == pytest.approx(8.1)
    assert figs["generation_time_s"].value == 10.0
    assert figs["real_time_factor"].value == pytest.approx(81 / 16 / 10)
    rep = check_targets(run, ["output_fps>=16.2"])
    assert rep.results[0].score == pytest.approx(50.0)


def test_output_fps_without_frames_is_not_measured() -> None:
    run = make_run()
    m = compute_figures(run, ["output_fps"])["output_fps"]
    assert m.value is None and m.reason and "output_frames" in m.reason


def test_energy_per_generation() -> None:
    run = make_run(generations=2, phase_energy_w=100.0)
    m = compute_figures(run, ["energy_per_generation_j"])["energy_per_generation_j"]
    gens = [s for s in run.spans if s.kind == "generation"]
    assert m.value == pytest.approx(sum(100.0 * (g.duration_s or 0) for g in gens) / 2)


def test_unknown_figure_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="known figures: generation_time_s"):
        compute_figures(make_run(), ["generation_time"])


def test_every_figure_is_a_measurement_or_a_reason() -> None:
    cpu = compute_figures(make_run(gpu=False))
    assert set(cpu) == set(FIGURES)
    for name, m in cpu.items():
        assert (m.value is None) == (m.reason is not None), name
    assert cpu["peak_reserved_bytes"].value is None  # a CPU run has no allocator figure: None, never 0
