"""Real-size configurations of common diffusion pipelines, as data, so that nothing has to be downloaded.

Each model is one entry of a YAML file under ``catalog/data/models/`` (one file a family), read
into a :class:`ModelSpec`: the diffusers pipeline class, the class and config dict of every
component (denoiser, VAE, text encoders) exactly as ``diffusers`` / ``transformers`` read them
from the checkpoint's ``config.json`` (field names checked by instantiating every component on
the meta device in ``tests/planning/test_model_configs.py``), plus the pipeline facts that the
memory estimator and the demo need: VAE scale factors, latent channels, default size, fps, text
lengths and how the pipeline runs classifier-free guidance. Component configs that several
pipelines share (CLIP-L, T5-XXL, UMT5-XXL, the Wan 2.1 and Flux VAEs) live once, by name, in
``catalog/data/components.yaml``.

Only sizes matter here: the VAE ``latents_mean``/``latents_std`` lists are placeholders of the
right length (zeros and ones); real checkpoints carry their own values.

This package is data only; it imports neither torch nor diffusers. Build modules from a spec
with :func:`genprof.planning.build.build_component` (meta device or random weights) or with
``diffusers``/``transformers`` yourself::

    spec = get_config("wan2.1-1.3b")
    comp = spec.component("transformer")
    cls = getattr(importlib.import_module(comp.library), comp.class_name)
    model = cls.from_config(comp.config)           # diffusers
    model = cls(config_cls(**comp.config))         # transformers (see ``comp.config_class``)

Adding a model: add an entry to the family's YAML file (or a new file in ``data/models/``);
a field left out takes the :class:`ModelSpec` default.
"""

from __future__ import annotations

from genprof.catalog.load import ALIASES, MODEL_NAMES, get_config, load_catalog
from genprof.catalog.spec import CFG_MODES, ROLES, ComponentSpec, ModelSpec

__all__ = [
    "ALIASES",
    "CFG_MODES",
    "MODEL_NAMES",
    "ROLES",
    "ComponentSpec",
    "ModelSpec",
    "get_config",
    "load_catalog",
]
