"""The run file: round trip, atomic writes, and clear errors for bad files (property-tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genprof.errors import RunFileError
from genprof.model import SCHEMA_VERSION, EndState, Event, GpuInfo, Run, Series, Span, load_run, loads_run


def make_run() -> Run:
    r = Run(name="wan <t2v>", run_id="abc123", started_at="2026-11-22T10:00:00+00:00", started_unix_s=1.8e9,
            duration_s=12.5, tags={"model": "wan2.1", "evil": "<script>alert(1)</script>"})
    r.gpus = [GpuInfo(index=0, name="NVIDIA H100", uuid="GPU-x", total_memory_bytes=80 * 2**30)]
    r.spans = [
        Span(id=1, name="load", kind="phase", start_s=0.0, duration_s=2.0, energy_j=100.0, energy_reliable=True),
        Span(id=2, name="denoise", kind="phase", start_s=2.0, duration_s=9.0),
        Span(id=3, name="step", kind="step", start_s=2.0, duration_s=4.5, parent_id=2, index=0, gpu_time_s=4.4,
             peak_allocated_bytes=5 * 2**30, attributes={"timestep": 999}),
        Span(id=4, name="step", kind="step", start_s=6.5, duration_s=4.5, parent_id=2, index=1, gpu_time_s=None,
             gpu_time_reason="off"),
    ]
    r.events = [Event(name="ckpt", t_s=1.0, span_id=1, attributes={"path": "/x"})]
    r.series = [Series(name="power_w", device="gpu0", t_s=[0.0, 0.1, 0.2], values=[100.0, 300.5, 250.0],
                       source="instant")]
    r.end = EndState(status="ok", at_s=12.5)
    r.unavailable = {"nvml": "not installed"}
    return r


def test_round_trip_is_equal(tmp_path: Path) -> None:
    run = make_run()
    p = run.save(tmp_path / "r.json")
    again = load_run(p)
    assert again == run
    assert json.loads(p.read_text())["schema_version"] == SCHEMA_VERSION


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    run = make_run()
    run.save(tmp_path / "r.json")
    run.save(tmp_path / "r.json")
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    run = make_run()
    run.spans[0].energy_j = float("nan")
    again = load_run(run.save(tmp_path / "r.json"))
    assert again.spans[0].energy_j is None


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"{\"format\": \"genprof.run\", \"schema_", "truncated"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2, 3]", "not a genprof run file"),
        (b"{\"hello\": 1}", "not a genprof run file"),
        (json.dumps({"format": "genprof.run", "schema_version": SCHEMA_VERSION + 1}).encode(), "newer genprof"),
        (json.dumps({"format": "genprof.run", "schema_version": "1"}).encode(), "schema_version"),
    ],
)
def test_bad_files_give_one_clear_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    with pytest.raises(RunFileError) as ei:
        load_run(p)
    assert str(p) in str(ei.value)
    assert message in str(ei.value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(constant: str) -> None:
    text = make_run().to_json().replace('"duration_s": 12.5', f'"duration_s": {constant}')
    with pytest.raises(RunFileError, match=constant):
        loads_run(text, source="x.json")
    d = make_run().to_dict()
    d["duration_s"] = float("inf")
    with pytest.raises(RunFileError, match="finite"):
        Run.from_dict(d, source="x.json")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="no such file"):
        load_run(tmp_path / "nope.json")
    with pytest.raises(RunFileError, match="folder"):
        load_run(tmp_path)


def test_truncated_real_run_file(tmp_path: Path) -> None:
    text = make_run().to_json()
    for cut in (10, len(text) // 2, len(text) - 1):
        with pytest.raises(RunFileError):
            loads_run(text[:cut], source="cut.json")


def test_damaged_fields_are_reported() -> None:
    d = make_run().to_dict()
    d["spans"][0]["duration_s"] = "fast"
    with pytest.raises(RunFileError, match="duration_s"):
        Run.from_dict(d, source="x.json")
    d = make_run().to_dict()
    d["series"][0]["values"].append(1.0)
    with pytest.raises(RunFileError, match="series"):
        Run.from_dict(d, source="x.json")
    d = make_run().to_dict()
    d["end"]["status"] = "exploded"
    with pytest.raises(RunFileError, match="end.status"):
        Run.from_dict(d, source="x.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_loader_never_raises_anything_but_runfileerror_on_bytes(data: bytes) -> None:
    try:
        loads_run(data, source="fuzz")
    except RunFileError:
        pass


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_loader_never_raises_anything_but_runfileerror_on_json(obj: object) -> None:
    try:
        loads_run(json.dumps(obj), source="fuzz")
    except RunFileError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["spans", "events", "series", "gpus", "end", "tags", "host", "software", "duration_s"]),
       json_values)
def test_loader_rejects_damaged_sections_cleanly(key: str, value: object) -> None:
    d = make_run().to_dict()
    d[key] = value
    try:
        run = Run.from_dict(json.loads(json.dumps(d)), source="fuzz")
    except RunFileError:
        return
    # whatever loaded must save and load again
    assert loads_run(run.to_json()) == run


def test_usage_statistics_from_spans() -> None:
    run = make_run()
    st_ = run.usage_statistics()
    assert st_["initialization_time_s"] == 2.0
    assert st_["generations"] == 1 and st_["generations_implicit"] is True
    assert st_["total_inference_time_s"] == pytest.approx(10.5)
    assert st_["peak_allocated_bytes"] == 5 * 2**30
    assert st_["current_allocated_bytes"] is None  # not measured: None, never 0
    run.spans.append(Span(id=9, name="generation", kind="generation", start_s=2, duration_s=3.0))
    run.spans.append(Span(id=10, name="generation", kind="generation", start_s=5, duration_s=5.0))
    st_ = run.usage_statistics()
    assert st_["generations"] == 2 and st_["average_inference_time_s"] == 4.0


def test_span_fields_left_unset_by_the_hot_path_read_as_their_defaults() -> None:
    # the profiler builds spans with object.__new__ and sets only what it measured
    s = object.__new__(Span)
    s.id, s.name, s.kind, s.start_s = 1, "step", "step", 0.5
    assert s.gpu_time_s is None and s.status == "ok" and s.parent_id is None
    s.attributes["k"] = 1  # a default dict is created once and kept
    assert s.attributes == {"k": 1}
    assert s == Span(id=1, name="step", kind="step", start_s=0.5, attributes={"k": 1})
    assert Span.from_dict(s.to_dict()) == s
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        s.nope  # noqa: B018
    assert not hasattr(s, "__dict__")  # slots: no per-span dict
