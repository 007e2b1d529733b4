"""What the rule families share: the rule type and small queries over steps, phases and series."""

from __future__ import annotations

from collections.abc import Callable

from genprof.analysis.findings import Finding
from genprof.analysis.summary import percentile, step_loop
from genprof.model import Run, Series, Span

Rule = Callable[[Run], "Finding | None"]


def gpu_run(run: Run) -> bool:
    return bool(run.gpus)


def is_decode(name: str) -> bool:
    n = name.lower()
    return "decode" in n or n.startswith("vae")


def is_denoise(name: str) -> bool:
    n = name.lower()
    return "denoise" in n or "sampling" in n or n in ("transformer", "unet", "blocks", "diffusion")


def step_runs(run: Run) -> list[tuple[str, list[Span]]]:
    """Consecutive step sequences: steps grouped by their direct parent span (one denoise loop).

    In a block loop the steps of every block form one sequence (grouped by the blocks' parent),
    so only the loop's first steps count as warm-up, not the first step of each block.
    """
    by_id = {s.id: s for s in run.spans}
    groups: dict[int | None, list[Span]] = {}
    for s in sorted(run.spans, key=lambda s: s.start_s):
        if s.kind == "step" and s.duration_s is not None:
            key = step_loop(by_id, s)[0]  # in a block loop: the blocks' parent, also through nested phases
            groups.setdefault(key, []).append(s)
    out = []
    for pid, steps in groups.items():
        parent = run.span_by_id(pid) if pid is not None else None
        out.append((parent.name if parent is not None else "steps", steps))
    return out


def median(xs: list[float]) -> float:
    v = percentile(xs, 50)
    return 0.0 if v is None else v


def gpu_series(run: Run, names: tuple[str, ...]) -> list[Series]:
    return [s for s in run.series if s.name in names and s.device.startswith("gpu") and s.values]
