"""Profiler configuration: a YAML file, keyword arguments, or a named preset.

Every key of an Inferix-style ``profiling:`` block is accepted, plus genprof's own. Unknown keys
are errors that name the key and the closest allowed one; values are type-checked.
See ``docs/config.md`` for what each key does.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from genprof.errors import ConfigError

REPORT_FORMATS = ("html", "json", "both", "none")
END_SUMMARIES = ("short", "line", "none")
ENERGY_SPANS = ("phases", "all", "none")


@dataclass(frozen=True)
class ProfilerConfig:
    """All settings of a :class:`genprof.Profiler`. Build with :func:`load_config`."""

    # Inferix-compatible keys
    enabled: bool = True
    real_time_display: bool = False
    display_interval: float = 1.0
    gpu_monitor_interval: float = 0.1
    monitor_gpu_memory: bool = True
    monitor_gpu_utilization: bool = True
    monitor_gpu_temperature: bool = True
    monitor_gpu_power: bool = True
    monitor_gpu_clocks: bool = True
    cpu_monitor_interval: float = 1.0
    monitor_cpu_usage: bool = True
    monitor_system_memory: bool = True
    generate_final_report: bool = False
    report_format: str = "json"
    output_dir: str | None = None
    max_data_points: int = 10000
    profile_inference_steps: bool = True
    profile_vae_decode: bool = True
    profile_text_encoding: bool = True
    save_raw_data: bool = True
    session_tags: dict[str, Any] = field(default_factory=dict)
    # genprof keys
    targets: dict[str, Any] = field(default_factory=dict)
    gpu_timing: bool = True
    memory_tracking: bool = True
    reset_peak_memory: bool = True
    track_rss: bool = True
    energy_spans: str = "phases"
    nvtx: bool = False
    handle_sigterm: bool = True
    log_file: bool = False
    console_summary: bool = False
    end_summary: str = "short"  # what a run prints on stderr when it stops: short, line or none
    display_force: bool = False
    device_index: int | None = None
    diagnose: bool | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> ProfilerConfig:
        return load_config(None, base=self, **changes)


_FIELDS = {f.name: f for f in fields(ProfilerConfig)}

_POSITIVE = {"display_interval", "gpu_monitor_interval", "cpu_monitor_interval"}
MAX_INTERVAL_S = 86400.0
"""Longest sampling or display interval accepted (a day): a longer one samples nothing useful."""
MAX_DATA_POINTS = 10_000_000
"""Largest ``max_data_points`` accepted: the in-memory bound on each sampled series."""
MAX_VALUE_DEPTH = 32
"""Deepest nesting of lists and mappings accepted in ``session_tags`` and ``targets``."""

PRESETS: dict[str, dict[str, Any]] = {
    # The "development mode" preset: sample often, show everything, keep all data.
    "dev": {
        "enabled": True,
        "real_time_display": True,
        "display_interval": 1.0,
        "gpu_monitor_interval": 0.1,
        "cpu_monitor_interval": 0.5,
        "generate_final_report": True,
        "report_format": "both",
        "save_raw_data": True,
        "output_dir": "./debug_profiling",
        "profile_inference_steps": True,
        "profile_vae_decode": True,
        "profile_text_encoding": True,
        "session_tags": {"mode": "debug"},
    },
    # The "production mode" preset: few samples, key metrics only, JSON only.
    "prod": {
        "enabled": True,
        "real_time_display": False,
        "gpu_monitor_interval": 1.0,
        "cpu_monitor_interval": 2.0,
        "monitor_gpu_memory": True,
        "monitor_gpu_utilization": True,
        "monitor_gpu_temperature": False,
        "monitor_gpu_power": False,
        "monitor_cpu_usage": False,
        "monitor_system_memory": True,
        "end_summary": "line",
        "generate_final_report": True,
        "report_format": "json",
        "save_raw_data": False,
        "output_dir": "./production_profiling",
        "max_data_points": 5000,
        "profile_inference_steps": True,
        "profile_vae_decode": True,
        "profile_text_encoding": False,
        "session_tags": {"mode": "production"},
    },
}


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, list(_FIELDS), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_value(key: str, value: Any, source: str) -> Any:
    f = _FIELDS[key]
    t = str(f.type)
    where = f" in {source}" if source else ""
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}{where} must be true or false, got {value!r}")
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}{where} must be a number of seconds, got {value!r}")
        try:
            x = float(value)
        except OverflowError:
            x = math.inf
        if not math.isfinite(x):
            raise ConfigError(f"config key {key!r}{where} must be a finite number of seconds, got {value!r}")
        if key in _POSITIVE and not 0 < x <= MAX_INTERVAL_S:
            raise ConfigError(f"config key {key!r}{where} must be > 0 and at most {MAX_INTERVAL_S:g} s (a day), "
                              f"got {value!r}")
        return x
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}{where} must be an integer, got {value!r}")
        if key == "max_data_points" and not 16 <= value <= MAX_DATA_POINTS:
            shown = value if abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
            raise ConfigError(f"config key 'max_data_points'{where} must be between 16 and {MAX_DATA_POINTS:,}, "
                              f"got {shown}")
        return value
    if t == "bool | str | None":  # diagnose: the window spec is parsed by genprof.diagnose at profiler start
        if value is not None and not isinstance(value, (bool, str)):
            raise ConfigError(f"config key {key!r}{where} must be true, false, null or a window like "
                              f"'steps:2-3', got {value!r}")
        return value
    if t == "int | None":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"config key {key!r}{where} must be a device index >= 0 or null, got {value!r}")
        return value
    if t == "str | None":
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"config key {key!r}{where} must be a path or null, got {value!r}")
        return None if value is None else os.fspath(value)
    if t == "str":
        allowed = {"report_format": REPORT_FORMATS, "energy_spans": ENERGY_SPANS, "end_summary": END_SUMMARIES}[key]
        if value not in allowed:
            raise ConfigError(
                f"config key {key!r}{where} is {value!r}; allowed values: {', '.join(allowed)}"
            )
        return value
    if t == "dict[str, Any]":
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}{where} must be a mapping of tag names to values, got {value!r}")
        if _depth(value) > MAX_VALUE_DEPTH:
            raise ConfigError(f"config key {key!r}{where} nests lists or mappings more than {MAX_VALUE_DEPTH} deep")
        return dict(value)
    raise AssertionError(f"unhandled config type {t} for {key}")  # pragma: no cover


def _depth(value: Any, limit: int = MAX_VALUE_DEPTH + 1) -> int:
    """Nesting depth of lists and mappings in ``value``, counted up to ``limit`` (no deep recursion)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, Mapping):
            items: Any = v.values()
        elif isinstance(v, (list, tuple)):
            items = v
        else:
            continue
        deepest = max(deepest, d)
        if d >= limit:
            return d
        todo.extend((x, d + 1) for x in items)
    return deepest


_MAX_YAML_DEPTH = MAX_VALUE_DEPTH + 8  # a value's depth plus the keys above it (profiling:, session_tags:)


def _strict_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses aliases and duplicate keys.

    Aliases (``*name``) are refused in user config: a few lines of them expand to billions of
    values (the "billion laughs"), and no genprof key needs one. A duplicate key would silently
    drop the first value; it is named instead. Built on pyyaml's own composer and constructor.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        # nesting is bounded while scanning: pyyaml's scanner is quadratic in the depth of
        # flow collections ("[[[[...") and recursive in the composer
        def fetch_flow_collection_start(self, TokenClass: Any) -> None:
            if self.flow_level >= _MAX_YAML_DEPTH:
                raise yaml.scanner.ScannerError(
                    None, None, f"lists or mappings nested more than {_MAX_YAML_DEPTH} deep", self.get_mark())
            super().fetch_flow_collection_start(TokenClass)

        def add_indent(self, column: int) -> bool:
            if len(self.indents) >= _MAX_YAML_DEPTH:
                raise yaml.scanner.ScannerError(
                    None, None, f"lists or mappings nested more than {_MAX_YAML_DEPTH} deep", self.get_mark())
            return bool(super().add_indent(column))

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                ev = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None,
                    f"found the alias *{ev.anchor}: YAML aliases are not accepted in a genprof config "
                    "(they can expand without bound); write the value out instead", ev.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            if isinstance(node, yaml.MappingNode):
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:
                        continue  # an unhashable key: the base constructor reports it
                    if first is not key_node:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found the key {key!r} twice (first on line {first.start_mark.line + 1}); "
                            "keep one", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                          "save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML for genprof: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"config file {path} nests lists or mappings too deeply to be a genprof config") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer over Python's 4,300-digit limit
        raise ConfigError(f"config file {path} holds a value genprof cannot read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    # Inferix-style files nest everything under "profiling:"; accept both layouts.
    if set(data) == {"profiling"} and isinstance(data["profiling"], dict):
        data = data["profiling"]
    return data


def load_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | ProfilerConfig | None = None,
    *,
    preset: str | None = None,
    base: ProfilerConfig | None = None,
    **overrides: Any,
) -> ProfilerConfig:
    """Build a validated :class:`ProfilerConfig`.

    Layers, later ones winning: defaults (or ``base``), ``preset`` (``"dev"`` or ``"prod"``),
    the file or mapping ``config``, then keyword ``overrides``. A file may also name a preset
    with a ``preset:`` key.
    """
    cfg = base or ProfilerConfig()
    layers: list[tuple[str, Mapping[str, Any]]] = []
    file_data: Mapping[str, Any] = {}
    source = ""
    if isinstance(config, ProfilerConfig):
        cfg = config
    elif isinstance(config, Mapping):
        file_data = config
        source = "config mapping"
    elif config is not None:
        p = Path(config)
        file_data = _read_yaml(p)
        source = str(p)
    file_preset = file_data.get("preset") if file_data else None
    for name in (preset, file_preset):
        if name is None:
            continue
        if not isinstance(name, str) or name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}" + (f" in {source}" if source else "")
                              + f"; a preset is one name: {', '.join(PRESETS)}")
        layers.append((f"preset {name!r}", PRESETS[name]))
    layers.append((source, {k: v for k, v in file_data.items() if k != "preset"}))
    layers.append(("keyword arguments", overrides))
    changes: dict[str, Any] = {}
    for src, layer in layers:
        for key, value in layer.items():
            if key not in _FIELDS:
                raise ConfigError(
                    f"unknown config key {key!r}" + (f" in {src}" if src else "") + _suggest(str(key))
                    + f". Allowed keys: {', '.join(sorted(_FIELDS))}"
                )
            changes[key] = _check_value(key, value, src)
    return replace(cfg, **changes)
