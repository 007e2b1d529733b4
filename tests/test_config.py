from __future__ import annotations

from pathlib import Path

import pytest

from genprof.config import PRESETS, ProfilerConfig, load_config
from genprof.errors import ConfigError

SEED_001_KEYS = [
    "enabled", "real_time_display", "display_interval", "gpu_monitor_interval", "monitor_gpu_memory",
    "monitor_gpu_utilization", "monitor_gpu_temperature", "monitor_gpu_power", "cpu_monitor_interval",
    "monitor_cpu_usage", "monitor_system_memory", "generate_final_report", "report_format", "output_dir",
    "max_data_points", "profile_inference_steps", "profile_vae_decode", "profile_text_encoding", "save_raw_data",
    "session_tags",
]


def test_every_seed_key_is_accepted() -> None:
    fields = ProfilerConfig.__dataclass_fields__
    for k in SEED_001_KEYS:
        assert k in fields


def test_seed_yaml_layout_nested_under_profiling(tmp_path: Path) -> None:
    p = tmp_path / "profiling.yaml"
    p.write_text(
        "profiling:\n  enabled: true\n  gpu_monitor_interval: 0.5\n  report_format: both\n"
        "  session_tags:\n    model: self_forcing\n"
    )
    c = load_config(p)
    assert c.gpu_monitor_interval == 0.5 and c.report_format == "both"
    assert c.session_tags == {"model": "self_forcing"}


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("gpu_monitor_intervall: 0.5\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert "gpu_monitor_intervall" in msg and "gpu_monitor_interval" in msg and str(p) in msg


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("report_format", "pdf", "allowed values: html, json, both, none"),
        ("gpu_monitor_interval", 0, "must be > 0"),
        ("gpu_monitor_interval", "fast", "number of seconds"),
        ("enabled", "yes", "true or false"),
        ("max_data_points", 3, "between 16 and"),
        ("session_tags", [1, 2], "mapping"),
        ("energy_spans", "some", "allowed values"),
    ],
)
def test_bad_values_name_key_and_allowed_values(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(None, **{key: value})
    assert key in str(ei.value) and fragment in str(ei.value)


def test_presets_follow_the_seed() -> None:
    dev = load_config(preset="dev")
    prod = load_config(preset="prod")
    assert dev.real_time_display and dev.gpu_monitor_interval == 0.1 and dev.report_format == "both"
    assert not prod.real_time_display and not prod.monitor_gpu_power and prod.max_data_points == 5000
    assert prod.report_format == "json" and not prod.save_raw_data
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset="fast")
    assert set(PRESETS) == {"dev", "prod"}


def test_layering_preset_then_file_then_keywords(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("preset: prod\nmax_data_points: 2000\n")
    c = load_config(p, max_data_points=3000)
    assert c.max_data_points == 3000 and c.monitor_gpu_power is False


def test_bad_yaml(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


# --------------------------------------------------------------- hostile config files
def _cfg(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


BILLION_LAUGHS = "\n".join(
    ["session_tags:", "  a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"  {chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
       f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (BILLION_LAUGHS, ["alias *a", "write the value out"]),
        ("session_tags: {a: &x 1, b: *x}\n", ["alias *x"]),
        ("session_tags:\n  x: " + "[" * 5000 + "]" * 5000 + "\n", ["nested more than 40 deep"]),
        ("session_tags:\n  x: " + "[" * 40 + "]" * 40 + "\n", ["more than 32 deep"]),
        ("session_tags:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 60)) + " " * 60 + "v: 1\n",
         ["nested more than 40 deep"]),
        ("preset: [dev]\n", ["unknown preset ['dev']", "one name"]),
        ("preset: {dev: 1}\n", ["unknown preset"]),
        ("gpu_monitor_interval: 0.5\nnvtx: true\ngpu_monitor_interval: 1\n", ["'gpu_monitor_interval' twice", "line 1"]),
        ("cpu_monitor_interval: .inf\n", ["'cpu_monitor_interval'", "finite"]),
        ("cpu_monitor_interval: .nan\n", ["'cpu_monitor_interval'", "finite"]),
        ("cpu_monitor_interval: -1\n", ["'cpu_monitor_interval'", "> 0"]),
        ("gpu_monitor_interval: 0\n", ["'gpu_monitor_interval'", "> 0"]),
        ("display_interval: 90000\n", ["'display_interval'", "a day"]),
        ("cpu_monitor_interval: 1" + "0" * 400 + "\n", ["'cpu_monitor_interval'", "finite"]),
        ("max_data_points: 1" + "0" * 5000 + "\n", ["cannot read"]),
        ("max_data_points: 1" + "0" * 400 + "\n", ["'max_data_points'", "401 digits"]),
    ],
)
def test_hostile_config_files_raise_config_error(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(_cfg(tmp_path, text))
    for f in fragments:
        assert f in str(ei.value)


def test_non_utf8_config_names_the_byte(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(_cfg(tmp_path, b"nvtx: true\nsession_tags: {a: \"\xff\xfe\"}\n"))
    assert "not UTF-8" in str(ei.value) and "byte 30" in str(ei.value)


def test_anchors_without_aliases_and_plain_files_still_load(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path, "session_tags: &t {a: 1}\ncpu_monitor_interval: 86400\n"))
    assert cfg.session_tags == {"a": 1} and cfg.cpu_monitor_interval == 86400.0
