"""The peak table's dtypes: every PEAK_DTYPES entry is a column of GPU_PEAKS, and others are refused by name."""

from __future__ import annotations

from genprof.analysis.devices import GPU_PEAKS, PEAK_DTYPES, normalize_dtype, peak_tflops


def test_every_peak_dtype_is_a_column_of_the_table_and_normalises_to_itself() -> None:
    for dt in PEAK_DTYPES:
        assert normalize_dtype(dt) == dt
        assert all(hasattr(row, dt) for row in GPU_PEAKS)


def test_a_dtype_without_a_peak_figure_names_the_known_ones() -> None:
    value, why = peak_tflops("NVIDIA H100 80GB HBM3", "int8")
    assert value is None
    assert why.endswith("known: " + ", ".join(PEAK_DTYPES))
