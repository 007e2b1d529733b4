"""Module-name scopes for the window: ``record_function`` ranges around a denoiser's blocks.

torch.profiler's ``with_modules=True`` records module hierarchy for TorchScript models only,
so eager modules get their names from forward pre/post hooks, installed when the window opens
and removed when it closes (outside the window they cost nothing). Each range is named
``genprof.module:<scope>``.

Scopes: the module's top-level children, with ``ModuleList``/``Sequential`` children expanded
into their items (``blocks.0`` .. ``blocks.29``) and containers of such lists expanded once
more (a VAE's ``decoder.up_blocks.0``); these are the *roots*. Each root's direct children are
scopes too (``blocks.3.attn1``, ``blocks.3.ffn``), so time can be summed per root and per
child name across roots.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from genprof.diagnose.capture import SCOPE_PREFIX

log = logging.getLogger(__name__)


def _is_list(m: Any) -> bool:
    import torch

    return isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential))


def _has_list_child(m: Any) -> bool:
    return any(_is_list(c) for c in m.children())


def scope_targets(module: Any, prefix: str = "") -> list[tuple[str, Any, bool]]:
    """``(scope name, module, is_root)`` for every scope of ``module`` (see the module docstring)."""
    out: list[tuple[str, Any, bool]] = []

    def add_root(name: str, m: Any) -> None:
        out.append((name, m, True))
        for cn, c in m.named_children():
            out.append((f"{name}.{cn}", c, False))

    def walk(m: Any, pre: str, depth: int) -> None:
        for n, c in m.named_children():
            name = f"{pre}{n}"
            if _is_list(c):
                for i, item in c.named_children():
                    add_root(f"{name}.{i}", item)
            elif depth == 0 and _has_list_child(c):
                walk(c, f"{name}.", depth + 1)
            else:
                add_root(name, c)

    walk(module, prefix, 0)
    return out


def is_compiled(module: Any) -> bool:
    """Whether ``module`` is a ``torch.compile`` wrapper (hooks on it would force recompiles)."""
    return hasattr(module, "_orig_mod") or type(module).__name__ == "OptimizedModule"


class ModuleScopes:
    """Installs the scope hooks on :meth:`install`, removes them on :meth:`remove`."""

    def __init__(self, modules: Any) -> None:
        self.modules: dict[str, Any] = _as_mapping(modules)
        self.roots: list[str] = []
        self.reason: str | None = None
        self._handles: list[Any] = []
        self._open: dict[int, list[Any]] = {}

    def install(self) -> None:
        if not self.modules:
            self.reason = "no module given to scope (pass the denoiser, e.g. DiagnoseWindow(modules=pipe.transformer))"
            return
        from torch.autograd.profiler import record_function

        compiled = [k or "module" for k, m in self.modules.items() if is_compiled(m)]
        if compiled:
            self.reason = (f"{', '.join(compiled)} is compiled with torch.compile: module hooks would force a "
                           "recompile inside the window, so time is broken down by op class only")
            return
        for key, mod in self.modules.items():
            pre = f"{key}." if key else ""
            for name, m, root in scope_targets(mod, pre):
                if root:
                    self.roots.append(name)
                self._hook(m, name, record_function)

    def _hook(self, m: Any, name: str, record_function: Callable[[str], Any]) -> None:
        stack: list[Any] = self._open.setdefault(id(m), [])
        label = SCOPE_PREFIX + name

        def pre(_m: Any, _args: Any) -> None:
            rf = record_function(label)
            rf.__enter__()
            stack.append(rf)

        def post(_m: Any, _args: Any, _out: Any) -> None:
            if stack:
                stack.pop().__exit__(None, None, None)

        self._handles.append(m.register_forward_pre_hook(pre))
        self._handles.append(m.register_forward_hook(post, always_call=True))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for stack in self._open.values():
            while stack:  # a forward still running when the window closed
                stack.pop().__exit__(None, None, None)


def _as_mapping(modules: Any) -> dict[str, Any]:
    if modules is None:
        return {}
    if isinstance(modules, Mapping):
        return {str(k): v for k, v in modules.items() if v is not None}
    return {"": modules}


__all__ = ["ModuleScopes", "is_compiled", "scope_targets"]
