"""The result type of analysis rules: a finding with its evidence.

A rule is a pure function ``rule(run) -> Finding | None``. A finding states the evidence
in numbers taken from the run, the likely cause, and a concrete change to make.
Renderers show findings; they never compute them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")


@dataclass
class Finding:
    rule_id: str
    title: str
    severity: str
    evidence: str
    cause: str
    suggestion: str
    phase: str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    code: str | None = None  # a call to make, e.g. "pipe.vae.enable_tiling()"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} not in {SEVERITIES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(**d)
