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

_clone_cache: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_flop_cache: dict[Any, tuple[int | None, str | None]] = {}
_cfg_keys: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _meta_clone(module: Any) -> Any:
    import torch

    cached = _clone_cache.get(module)
    if cached is not None:
        return cached
    cfg = getattr(module, "config", None)
    from_config = getattr(type(module), "from_config", None)
    if cfg is None or from_config is None:
        raise TypeError(f"{type(module).__name__} cannot be rebuilt from a config (not a diffusers ModelMixin)")
    with torch.device("meta"):
        clone = from_config(dict(cfg))
    real = dict(module.named_parameters())
    for name, p in clone.named_parameters():
        src = real.get(name)
        if src is not None and p.dtype != src.dtype:
            p.data = torch.empty(p.shape, dtype=src.dtype, device="meta")
    clone.eval()
    _clone_cache[module] = clone
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
    """FLOPs of one forward of ``module`` with inputs described by ``tensor_spec``; cached.

    Returns ``(flops, None)`` or ``(None, reason)``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg_key = _cfg_keys.get(module)
    if cfg_key is None:
        try:
            cfg_key = repr(sorted(dict(getattr(module, "config", {}) or {}).items()))
        except TypeError:
            cfg_key = str(id(module))
        _cfg_keys[module] = cfg_key
    key = (type(module).__name__, cfg_key, args_spec, kwargs_spec)
    if key in _flop_cache:
        return _flop_cache[key]
    try:
        clone = _meta_clone(module)
        args = _to_meta(args_spec)
        kwargs = _to_meta(kwargs_spec)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            clone(*args, **kwargs)
        result: tuple[int | None, str | None] = (int(counter.get_total_flops()), None)
    except Exception as exc:  # noqa: BLE001 - any failure of the meta run means "not countable", with why
        reason = f"FLOPs not counted on the meta device: {type(exc).__name__}: {str(exc)[:200]}"
        log.info("%s (%s)", reason, type(module).__name__)
        result = (None, reason)
    _flop_cache[key] = result
    return result


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
