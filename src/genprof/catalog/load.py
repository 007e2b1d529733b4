"""Read the YAML catalogue (``data/components.yaml`` and ``data/models/*.yaml``) into specs.

pyyaml (a core dependency) reads the files with ``safe_load``; a malformed entry raises
:class:`UsageError` naming the file, the model and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
from importlib import resources
from typing import Any

import yaml

from genprof.catalog.spec import CFG_MODES, ROLES, ComponentSpec, ModelSpec
from genprof.errors import UsageError

# families in the order ``MODEL_NAMES`` lists them; any other file in data/models/ follows, by name
_FAMILY_ORDER = ("wan", "sd", "sd3", "flux", "qwen", "hunyuan", "cogvideox", "ltx")
_TUPLE_FIELDS = {"patch_size", "aliases"}
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)}
_COMPONENT_FIELDS = {f.name for f in dataclasses.fields(ComponentSpec)}


def _read(path: Any) -> Any:
    with path.open("r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _component(raw: dict[str, Any], shared: dict[str, Any], where: str) -> ComponentSpec:
    unknown = set(raw) - _COMPONENT_FIELDS
    if unknown:
        raise UsageError(f"{where}: unknown component field(s) {sorted(unknown)}; known: {sorted(_COMPONENT_FIELDS)}")
    cfg = raw.get("config")
    if isinstance(cfg, str):
        if cfg not in shared:
            raise UsageError(f"{where}: config {cfg!r} is not in components.yaml; it has {', '.join(shared)}")
        cfg = shared[cfg]["config"]
    if not isinstance(cfg, dict):
        raise UsageError(f"{where}: config must be a mapping or the name of a shared config")
    if raw.get("role") not in ROLES:
        raise UsageError(f"{where}: role must be one of {', '.join(ROLES)}, not {raw.get('role')!r}")
    return ComponentSpec(**{**raw, "config": cfg})


def _model(raw: dict[str, Any], shared: dict[str, Any], fname: str) -> ModelSpec:
    where = f"catalog {fname}, model {raw.get('name', '?')!r}"
    unknown = set(raw) - _MODEL_FIELDS
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_MODEL_FIELDS)}")
    kw = dict(raw)
    kw["components"] = tuple(
        _component(c, shared, f"{where}, component {c.get('name', '?')!r}") for c in raw.get("components", ())
    )
    for name in _TUPLE_FIELDS & set(kw):
        kw[name] = tuple(kw[name])
    if kw.get("cfg_mode", "batched") not in CFG_MODES:
        raise UsageError(f"{where}: cfg_mode must be one of {', '.join(CFG_MODES)}")
    try:
        return ModelSpec(**kw)
    except TypeError as exc:
        raise UsageError(f"{where}: {exc}") from None


def load_catalog() -> dict[str, ModelSpec]:
    """Every shipped model spec by name, in catalogue order (read from the package data)."""
    data = resources.files("genprof.catalog") / "data"
    shared = _read(data / "components.yaml")["configs"]
    files = {p.name.removesuffix(".yaml"): p for p in (data / "models").iterdir() if p.name.endswith(".yaml")}
    order = [f for f in _FAMILY_ORDER if f in files] + sorted(set(files) - set(_FAMILY_ORDER))
    specs: dict[str, ModelSpec] = {}
    for fam in order:
        for raw in _read(files[fam])["models"]:
            spec = _model(raw, shared, f"models/{fam}.yaml")
            if spec.name in specs:
                raise UsageError(f"catalog models/{fam}.yaml: model {spec.name!r} is defined twice")
            specs[spec.name] = spec
    return specs


_SPECS = load_catalog()
MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)
ALIASES: dict[str, str] = {a.lower(): s.name for s in _SPECS.values() for a in s.aliases}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def get_config(name: str) -> ModelSpec:
    """The spec of a known model by name or alias (case-insensitive, ``_`` or ``-``).

    Raises :class:`UsageError` listing the known names when ``name`` is unknown. Every call
    returns the same frozen spec; use :meth:`ComponentSpec.config_copy` before changing a config.
    """
    key = _norm(name)
    for cand in (key, name.strip().lower()):
        if cand in _SPECS:
            return _SPECS[cand]
        if cand in ALIASES:
            return _SPECS[ALIASES[cand]]
    close = difflib.get_close_matches(key, list(_SPECS) + list(ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(
        f"unknown model {name!r}{hint}; known models: {', '.join(MODEL_NAMES)}. "
        "Or pass a diffusers model folder (with model_index.json)."
    )
