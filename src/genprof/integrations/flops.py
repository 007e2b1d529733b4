"""FLOPs of a denoiser forward, counted once per input shape, and FLOP utilization per step.

How it counts: the module is rebuilt from its config **on the meta device**
(``type(module).from_config(module.config)`` inside ``torch.device("meta")``: no memory, no
compute, no hooks of the real module), its parameters given the real module's dtypes, and one
forward with meta tensors of the recorded input shapes runs under
``torch.utils.flop_counter.FlopCounterMode``. Nothing of this runs inside a timed span: the
diffusers integration calls it after the generation span has closed. Results are cached by
(module class, config, input shapes and dtypes).

A module that cannot be rebuilt from a config (not a diffusers ``ModelMixin``), or whose
forward needs real values (``.item()``, data-dependent shapes), gives ``None`` with the
reason. ``FlopCounterMode`` counts matmuls, convolutions and attention (2 FLOPs per
multiply-add); element-wise work is not counted, so utilization figures are of the matmul
work, as MFU is usually defined.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from genprof.analysis.devices import peak_tflops

log = logging.getLogger(__name__)

_recipes: weakref.WeakKeyDictionary[Any, tuple[Any, ModuleRecipe]] = weakref.WeakKeyDictionary()
_clone_cache: weakref.WeakKeyDictionary[ModuleRecipe, Any] = weakref.WeakKeyDictionary()
_flop_cache: dict[Any, tuple[int | None, str | None]] = {}
_class_cache: dict[Any, dict[str, int]] = {}  # same keys: the forward's FLOPs by op class

#: How :func:`forward_flops_by_class` splits a forward's FLOPs (the op classes of genprof's kernel
#: classification, ``genprof.analysis.diagnose.OP_CLASSES``).
CLASS_METHOD = ("FlopCounterMode on a meta-device copy; attention: the FLOPs counted inside each "
                "torch.nn.functional.scaled_dot_product_attention call, convolution: aten convolution "
                "ops, gemm: the rest (matmuls)")


class ModuleRecipe:
    """What a meta-device copy of a module is built from: class, config, parameter dtypes.

    Taken once per module (and again if its dtype changes), so FLOPs can be counted when the run
    ends even if the module itself has been freed by then; holds no tensor.
    """

    __slots__ = ("cls", "config", "dtypes", "cfg_key", "__weakref__")

    def __init__(self, cls: type, config: dict[str, Any], dtypes: dict[str, Any]) -> None:
        self.cls = cls
        self.config = config
        self.dtypes = dtypes
        try:
            self.cfg_key = repr(sorted(config.items()))
        except TypeError:
            self.cfg_key = f"id:{id(self)}"


def _dtype_signature(module: Any) -> Any:
    p = next(module.parameters(), None) if hasattr(module, "parameters") else None
    return None if p is None else p.dtype


def recipe_of(module: Any) -> ModuleRecipe:
    """The :class:`ModuleRecipe` of ``module`` (cached per module; retaken if its dtype changed).

    Raises TypeError for a module that cannot be rebuilt from a config (not a diffusers ModelMixin).
    """
    if isinstance(module, ModuleRecipe):
        return module
    sig = _dtype_signature(module)
    cached = _recipes.get(module)
    if cached is not None and cached[0] == sig:
        return cached[1]
    cfg = getattr(module, "config", None)
    if cfg is None or getattr(type(module), "from_config", None) is None:
        raise TypeError(f"{type(module).__name__} cannot be rebuilt from a config (not a diffusers ModelMixin)")
    recipe = ModuleRecipe(type(module), dict(cfg), {n: p.dtype for n, p in module.named_parameters()})
    _recipes[module] = (sig, recipe)
    return recipe


def _meta_clone(recipe: ModuleRecipe) -> Any:
    import torch

    cached = _clone_cache.get(recipe)
    if cached is not None:
        return cached
    with torch.device("meta"):
        clone = recipe.cls.from_config(dict(recipe.config))  # type: ignore[attr-defined]
    for name, p in clone.named_parameters():
        dt = recipe.dtypes.get(name)
        if dt is not None and p.dtype != dt:
            p.data = torch.empty(p.shape, dtype=dt, device="meta")
    clone.eval()
    _clone_cache[recipe] = clone
    return clone


def _to_meta(spec: Any) -> Any:
    import torch

    if isinstance(spec, tuple) and spec and spec[0] == "T":
        _, shape, dtype = spec
        dt = getattr(torch, dtype)
        if dt.is_floating_point:
            return torch.empty(shape, dtype=dt, device="meta")
        return torch.zeros(shape, dtype=dt, device="meta")
    if isinstance(spec, tuple) and spec and spec[0] in ("list", "tuple"):
        vals = [_to_meta(v) for v in spec[1]]
        return vals if spec[0] == "list" else tuple(vals)
    if isinstance(spec, tuple) and spec and spec[0] == "dict":
        return {k: _to_meta(v) for k, v in spec[1]}
    if isinstance(spec, tuple) and spec and spec[0] == "obj":
        raise TypeError(f"an input of type {spec[1]} cannot be rebuilt on the meta device")
    return spec


def count_forward_flops(module: Any, args_spec: Any, kwargs_spec: Any) -> tuple[int | None, str | None]:
    """FLOPs of one forward of ``module`` (or its :class:`ModuleRecipe`) with inputs described by
    ``tensor_spec``; cached per class, config and input signature.

    Returns ``(flops, None)`` or ``(None, reason)``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        recipe = recipe_of(module)
    except TypeError as exc:
        return None, f"FLOPs not counted: {exc}"
    key = (recipe.cls.__name__, recipe.cfg_key, args_spec, kwargs_spec)
    if key in _flop_cache:
        return _flop_cache[key]
    try:
        clone = _meta_clone(recipe)
        args = _to_meta(args_spec)
        kwargs = _to_meta(kwargs_spec)
        counter = FlopCounterMode(display=False)
        tally = _attention_tally(counter)
        with torch.no_grad(), counter, tally:
            clone(*args, **kwargs)
        result: tuple[int | None, str | None] = (int(counter.get_total_flops()), None)
        _class_cache[key] = _by_class(counter.get_flop_counts().get("Global", {}), tally.moved)
    except Exception as exc:  # noqa: BLE001 - any failure of the meta run means "not countable", with why
        reason = f"FLOPs not counted on the meta device: {type(exc).__name__}: {str(exc)[:200]}"
        log.info("%s (%s)", reason, recipe.cls.__name__)
        result = (None, reason)
    _flop_cache[key] = result
    return result


def forward_flops_by_class(module: Any, args_spec: Any, kwargs_spec: Any) -> dict[str, int] | None:
    """FLOPs of one forward by op class (``attention``, ``convolution``, ``gemm``); None if not countable.

    Counted in the same meta-device run as :func:`count_forward_flops` (and cached with it). On
    the meta device ``scaled_dot_product_attention`` runs as its math decomposition (two batched
    matmuls), so the class comes from the call, not the op: what is counted inside each call is
    attention.
    """
    flops, _ = count_forward_flops(module, args_spec, kwargs_spec)
    if flops is None:
        return None
    recipe = recipe_of(module)
    return dict(_class_cache.get((recipe.cls.__name__, recipe.cfg_key, args_spec, kwargs_spec), {})) or None


def _op_class(op: Any) -> str:
    name = str(op)
    if "attention" in name:
        return "attention"
    if "conv" in name:
        return "convolution"
    return "gemm"


def _by_class(counts: Any, moved: dict[Any, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for op, n in counts.items():
        rest = int(n) - moved.get(op, 0)
        if rest:
            c = _op_class(op)
            out[c] = out.get(c, 0) + rest
    inside = sum(moved.values())
    if inside:
        out["attention"] = out.get("attention", 0) + inside
    return out


def _attention_tally(counter: Any) -> Any:
    """A torch function mode noting, per aten op, the FLOPs ``counter`` counted inside each SDPA call.

    Built on first use: torch is an optional dependency and is imported only here.
    """
    import torch.nn.functional as F  # noqa: N812 - torch's own spelling
    from torch.overrides import TorchFunctionMode

    class AttentionTally(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.moved: dict[Any, int] = {}

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is not F.scaled_dot_product_attention:
                return func(*args, **kwargs)
            before = dict(counter.get_flop_counts().get("Global", {}))
            out = func(*args, **kwargs)
            for op, n in counter.get_flop_counts().get("Global", {}).items():
                d = int(n) - int(before.get(op, 0))
                if d:
                    self.moved[op] = self.moved.get(op, 0) + d
            return out

    return AttentionTally()


def step_utilization(
    step_flops: int | None, gpu_time_s: float | None, host_time_s: float | None, device_name: str | None, dtype: str | None
) -> dict[str, Any]:
    """Achieved TFLOP/s of one step (GPU time preferred) and MFU against the device's dense peak."""
    if gpu_time_s:
        t, source = gpu_time_s, "gpu"
    elif host_time_s:
        t, source = host_time_s, "host"
    else:
        t, source = None, None
    achieved = (step_flops / t / 1e12) if step_flops is not None and t else None
    peak, peak_src = peak_tflops(device_name, dtype) if device_name else (None, "no GPU (CPU run)")
    mfu = (achieved / peak) if achieved is not None and peak else None
    return {
        "flops": step_flops,
        "time_s": t,
        "time_source": source,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": mfu,
        "mfu_reason": None if mfu is not None else (peak_src if peak is None else "no step time or FLOPs"),
    }
