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


# ---------------------------------------------------------------- hostile numbers and strings
def _file_with(mutate: object) -> str:
    run = Run(name="r", run_id="id", started_at="2026-01-01T00:00:00+00:00", started_unix_s=1.7e9)
    run.spans.append(Span(id=1, name="work", kind="phase", start_s=0.0, duration_s=1.0))
    run.series.append(Series(name="power_w", device="gpu0", t_s=[0.0, 1.0], values=[100.0, 200.0]))
    d = json.loads(run.to_json())
    mutate(d)  # type: ignore[operator]
    return json.dumps(d)


def _set(path: str, raw: str):
    def f(d: dict) -> None:
        keys = path.split(".")
        obj = d
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        last = keys[-1]
        if isinstance(obj, list):
            obj[int(last)] = "@@RAW@@"
        else:
            obj[last] = "@@RAW@@"
    return f, raw


@pytest.mark.parametrize(
    ("path", "raw", "fragments"),
    [
        ("spans.0.index", "1" + "0" * 5000, ["cannot read", "4300"]),
        ("spans.0.start_s", "1" + "0" * 400, ["spans[0].start_s", "401 digits", "range of a float"]),
        ("spans.0.duration_s", "1e400", ["1e400", "out of the range"]),
        ("series.0.values.1", "1e400", ["1e400"]),
        ("series.0.t_s.0", "-1e400", ["-1e400"]),
        ("spans.0.duration_s", "-1e308", ["spans[0].duration_s"]),
        ("spans.0.duration_s", "-1", ["spans[0].duration_s", "never negative"]),
        ("spans.0.duration_s", "1e12", ["spans[0].duration_s", "beyond"]),
        ("series.0.t_s.1", "1e300", ["series[0].t_s[1]", "beyond"]),
        ("spans.0.peak_allocated_bytes", "-5", ["spans[0].peak_allocated_bytes", "never negative"]),
        ("spans.0.id", str(2**64), ["spans[0].id", "beyond 64 bits"]),
        ("started_unix_s", "1e300", ["started_unix_s", "between 1970 and 3000"]),
        ("duration_s", "-3", ["duration_s", "never negative"]),
        ("metadata", '{"energy": {"total_j": "lots"}}', ["metadata.energy.total_j", "number"]),
        ("metadata", '{"final_memory": 3}', ["metadata.final_memory"]),
        ("end", '{"status": "oom", "oom": {"reserved_bytes": 1' + "0" * 400 + '}}', ["end.oom.reserved_bytes", "64 bits"]),
        ("end", '{"status": "oom", "oom": {"allocated_bytes": "x"}}', ["end.oom.allocated_bytes", "integer"]),
    ],
)
def test_hostile_numbers_raise_run_file_error_naming_the_field(path: str, raw: str, fragments: list[str]) -> None:
    mutate, raw = _set(path, raw)
    text = _file_with(mutate).replace('"@@RAW@@"', raw)
    with pytest.raises(RunFileError) as ei:
        loads_run(text, source="bad.json")
    msg = str(ei.value)
    assert msg.startswith("bad.json: ")
    for f in fragments:
        assert f in msg, msg


def test_lone_surrogates_are_escaped_visibly_and_pairs_kept() -> None:
    text = _file_with(lambda d: d.update(name="a\\ud800b", tags={"k\\udfff": "\\ud83d\\ude00"}))
    text = text.replace("\\\\u", "\\u")  # the JSON escapes themselves, not escaped backslashes
    run = loads_run(text)
    assert run.name == "a\\ud800b"  # six visible characters where the lone surrogate was
    assert run.tags == {"k\\udfff": "\U0001f600"}
    json.dumps(run.to_dict(), ensure_ascii=False).encode("utf-8")  # encodable everywhere


def test_atomic_write_never_touches_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from genprof.model import atomic_write_text

    old = os.umask(0o027)
    try:
        def forbidden(mask: int) -> int:
            raise AssertionError("atomic_write_text changed the process umask")

        monkeypatch.setattr(os, "umask", forbidden)
        atomic_write_text(tmp_path / "f.json", "{}")
        monkeypatch.undo()
        assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o640  # 0666 less the umask, as open() gives
        assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left
    finally:
        os.umask(old)


def test_records_name_themselves_in_errors_and_round_trip() -> None:
    from genprof.model import DistributedInfo, HostInfo, SoftwareInfo

    with pytest.raises(TypeError, match=r"^gpu\.index must be int"):
        GpuInfo.from_dict({"index": "0"})
    with pytest.raises(TypeError, match=r"^gpus\[3\]\.index must be int"):
        GpuInfo.from_dict({"index": "0"}, what="gpus[3]")
    with pytest.raises(TypeError, match=r"^host\.ram_total_bytes must be int"):
        HostInfo.from_dict({"ram_total_bytes": 1.5})
    with pytest.raises(ValueError, match="end.status is 'done'"):
        EndState.from_dict({"status": "done"})
    for rec in (GpuInfo(index=1, name="H100", power_limit_w=700.0), HostInfo(hostname="h", pid=7),
                SoftwareInfo(torch="2.13"), DistributedInfo(rank=1, world_size=2), EndState(status="ok", at_s=3.0)):
        d = rec.to_dict()
        assert "_what" not in d
        assert type(rec).from_dict(d) == rec
