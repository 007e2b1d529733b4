"""What an estimate returns: per-component weights, per-phase figures, the whole call.

Part of :mod:`genprof.planning.estimate`; see its docstring for the method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ results
@dataclass
class ComponentWeights:
    """Weight bytes of one component at the run dtype, and what offloading keeps resident."""

    name: str
    role: str
    class_name: str
    params: int
    weight_bytes: int
    reserved_bytes: int  # as the allocator holds them (per-tensor rounding)
    outside_blocks_bytes: int  # parameters not inside a top-level ModuleList (group block offload)
    largest_block_bytes: int
    largest_leaf_bytes: int
    fp8_bytes: int  # weight bytes with layerwise fp8 storage (only where applied)
    dtype: str
    second_leaf_bytes: int = 0  # the next largest leaf (tied parameters counted once): stream prefetch

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PhaseEstimate:
    """Peak of one phase. ``allocated`` and ``reserved`` are the caching allocator's figures."""

    name: str
    component: str
    resident_weights_bytes: int
    persistent_bytes: int
    activation_peak_bytes: int
    workspace_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    traced: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Estimate:
    """A memory estimate. ``peak_*`` are the maxima over :attr:`phases`."""

    model: str
    settings: dict[str, Any]
    components: list[ComponentWeights]
    phases: list[PhaseEstimate]
    calibration: dict[str, float]
    notes: list[str] = field(default_factory=list)
    trace_time_s: float | None = None

    @property
    def peak_allocated_bytes(self) -> int:
        return max(p.peak_allocated_bytes for p in self.phases)

    @property
    def peak_reserved_bytes(self) -> int:
        return max(p.peak_reserved_bytes for p in self.phases)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda p: p.peak_reserved_bytes).name

    def phase(self, name: str) -> PhaseEstimate:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def total_weight_bytes(self) -> int:
        return sum(c.weight_bytes for c in self.components)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": dict(self.settings),
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "peak_phase": self.peak_phase,
            "total_weight_bytes": self.total_weight_bytes,
            "components": [c.to_dict() for c in self.components],
            "phases": [p.to_dict() for p in self.phases],
            "calibration": dict(self.calibration),
            "notes": list(self.notes),
            "trace_time_s": self.trace_time_s,
            "method": "meta-device trace of live storage bytes; peak reserved from "
                      + ("the allocator replay of the traced call" if self.settings.get("reserved_method") == "replay"
                         else "the fitted reserved factors") + " (genprof.planning.estimate)",
        }


