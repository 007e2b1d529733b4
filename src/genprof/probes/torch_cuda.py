"""PyTorch CUDA allocator, events and device facts.

torch is optional: :func:`get_torch` imports it only when it is installed, and every function
here returns ``None`` (with a reason from :func:`cuda_unavailable_reason`) when CUDA is absent.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def get_torch(*, import_if_needed: bool = True) -> Any | None:
    """The torch module, or None when it is not installed (or not imported and not asked to)."""
    mod = sys.modules.get("torch")
    if mod is not None:
        return mod
    if not import_if_needed or importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def cuda_unavailable_reason(torch: Any | None) -> str | None:
    """None when CUDA can be used, else why not."""
    if torch is None:
        return "torch is not installed"
    if not torch.cuda.is_available():
        if getattr(torch.version, "cuda", None) is None:
            return f"this torch build ({torch.__version__}) has no CUDA support"
        return "torch sees no CUDA device (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)"
    return None


def software_versions(torch: Any | None) -> dict[str, str | None]:
    if torch is None:
        return {"torch": None, "cuda": None, "cudnn": None}
    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            cudnn = str(torch.backends.cudnn.version())
    except (RuntimeError, AttributeError) as exc:
        log.debug("cudnn version unknown: %s", exc)
    return {"torch": str(torch.__version__), "cuda": getattr(torch.version, "cuda", None), "cudnn": cudnn}


_DEVICE_FACTS: dict[tuple[int, int], dict[str, Any]] = {}


def forget_device_facts() -> None:
    """Read each device's properties again at the next :func:`device_facts`."""
    _DEVICE_FACTS.clear()


def device_facts(torch: Any, index: int) -> dict[str, Any]:
    """Facts of CUDA device ``index`` as torch sees it (UUID, name, memory, capability).

    A device's properties are fixed for the process's life, so they are read once per
    (torch module, index) and a copy is returned each time.
    """
    key = (id(torch), index)
    if key not in _DEVICE_FACTS:
        _DEVICE_FACTS[key] = _read_device_facts(torch, index)
    return dict(_DEVICE_FACTS[key])


def _read_device_facts(torch: Any, index: int) -> dict[str, Any]:
    p = torch.cuda.get_device_properties(index)
    uuid = getattr(p, "uuid", None)
    uuid_s = None
    if uuid is not None:
        uuid_s = str(uuid)
        if not uuid_s.startswith(("GPU-", "MIG-")):
            uuid_s = "GPU-" + uuid_s
    bf16 = None
    try:
        bf16 = bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError) as exc:
        log.debug("bf16 support unknown: %s", exc)
    return {
        "index": index,
        "name": p.name,
        "uuid": uuid_s,
        "total_memory_bytes": int(p.total_memory),
        "compute_capability": f"{p.major}.{p.minor}",
        "multiprocessor_count": int(p.multi_processor_count),
        "bf16_supported": bf16,
    }


def allocator_state(torch: Any, index: int, *, top_tensors: int = 10) -> dict[str, Any]:
    """The caching allocator's state, for out-of-memory forensics.

    Includes allocated, reserved and peak bytes, the device's free and total memory, the
    largest free block inside reserved segments (from ``memory_snapshot``), and the biggest
    live CUDA tensors found by a garbage-collector scan (their shapes, dtypes and sizes).
    Costs up to a second on a large heap; called once, when the run failed.
    """
    out: dict[str, Any] = {"device_index": index}
    try:
        out["allocated_bytes"] = int(torch.cuda.memory_allocated(index))
        out["reserved_bytes"] = int(torch.cuda.memory_reserved(index))
        out["max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(index))
        out["max_reserved_bytes"] = int(torch.cuda.max_memory_reserved(index))
    except RuntimeError as exc:
        out["allocator_error"] = str(exc)
    try:
        free, total = torch.cuda.mem_get_info(index)
        out["device_free_bytes"] = int(free)
        out["device_total_bytes"] = int(total)
    except RuntimeError as exc:
        out["mem_get_info_error"] = str(exc)
    try:
        largest = 0
        for seg in torch.cuda.memory_snapshot():
            if seg.get("device") != index:
                continue
            for blk in seg.get("blocks", []):
                if blk.get("state") == "inactive":
                    largest = max(largest, int(blk.get("size", 0)))
        out["largest_free_block_bytes"] = largest
    except (RuntimeError, AttributeError, TypeError) as exc:
        out["largest_free_block_bytes"] = None
        out["largest_free_block_reason"] = f"memory_snapshot failed: {exc}"
    tensors: list[dict[str, Any]] = []
    try:
        seen: set[int] = set()
        for obj in gc.get_objects():
            try:
                if not torch.is_tensor(obj) or not obj.is_cuda:
                    continue
                if obj.device.index != index:
                    continue
                st = obj.untyped_storage()
                ptr = st.data_ptr()
                if ptr in seen:
                    continue
                seen.add(ptr)
                tensors.append(
                    {"shape": list(obj.shape), "dtype": str(obj.dtype).replace("torch.", ""), "bytes": int(st.nbytes())}
                )
            except (RuntimeError, ReferenceError, AttributeError):
                continue
        tensors.sort(key=lambda t: t["bytes"], reverse=True)
        out["largest_tensors"] = tensors[:top_tensors]
        out["live_tensor_count"] = len(tensors)
    except RuntimeError as exc:
        out["largest_tensors_reason"] = f"tensor scan failed: {exc}"
    return out


def is_oom_error(torch: Any | None, exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors (torch's class, or a RuntimeError that says so)."""
    if torch is not None:
        cls = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
        if cls is not None and isinstance(exc, cls):
            return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
