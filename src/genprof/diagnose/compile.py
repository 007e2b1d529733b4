"""torch.compile's graph breaks, recompiles and compile time, from torch._dynamo's own records.

Sources (no log text is parsed):

* ``torch._dynamo.utils.get_compilation_metrics()``: one ``CompilationMetrics`` per compiled
  frame, with the frame's file and first line, ``restart_reasons`` (why a frame's tracing hit
  a graph break), ``recompile_reason`` (the guard that failed) and
  ``entire_frame_compile_time_s``. A graph break makes Dynamo compile a resume function for
  the rest of the frame; its code object starts at the line of the break, so the resume frame's
  ``co_firstlineno`` is the break's line.
* ``torch._dynamo.utils.counters["graph_break"]``: how many times each graph-break reason occurred.

:class:`CompileWatch` notes how many records exist when the run starts and reads only the
newer ones at the end, so compiles from before the run are not counted.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from genprof.diagnosis import CompileInfo, GraphBreak, Recompile

log = logging.getLogger(__name__)

_RESUME = re.compile(r"^torch_dynamo_resume_in_(?P<fn>.+)_at_(?P<line>\d+)$")


def _first_line(reason: str) -> str:
    """The reason's headline, with Dynamo's ``Explanation:`` line when it has one (hints left out)."""
    lines = [x.strip() for x in reason.strip().splitlines() if x.strip()]
    if not lines:
        return reason
    expl = next((x for x in lines[1:] if x.startswith("Explanation:")), None)
    return lines[0] if expl is None else f"{lines[0]}: {expl[len('Explanation:'):].strip()}"


class CompileWatch:
    def __init__(self) -> None:
        self._start = 0
        self._counts: dict[str, int] = {}
        self.reason: str | None = None
        try:
            import torch._dynamo.utils as du
        except Exception as exc:  # noqa: BLE001 - torch without dynamo, or a broken install: say why
            self.reason = f"torch._dynamo is not available: {type(exc).__name__}: {exc}"
            self._du: Any = None
            return
        self._du = du
        self._start = len(du.get_compilation_metrics())
        self._counts = dict(du.counters.get("graph_break", {}))

    def collect(self) -> CompileInfo:
        if self._du is None:
            return CompileInfo(reason=self.reason)
        du = self._du
        metrics = list(du.get_compilation_metrics())[self._start:]
        counts = {k: v - self._counts.get(k, 0) for k, v in dict(du.counters.get("graph_break", {})).items()}
        counts = {k: v for k, v in counts.items() if v > 0}
        info = CompileInfo(frames_compiled=len(metrics))
        times = [m.entire_frame_compile_time_s for m in metrics if m.entire_frame_compile_time_s is not None]
        info.compile_time_s = float(sum(times)) if metrics else 0.0
        resumes = [m for m in metrics if m.co_name and _RESUME.match(m.co_name)]
        seen: set[tuple[str, str | None, int | None]] = set()
        for m in metrics:
            if m.recompile_reason:
                info.recompiles.append(Recompile(function=m.co_name, file=m.co_filename, line=m.co_firstlineno,
                                                 reason=str(m.recompile_reason).strip()))
            for reason in sorted(m.restart_reasons or ()):
                # the resume function of this frame: same file, named after the frame's function
                loc = next((r for r in resumes if r.co_filename == m.co_filename
                            and _RESUME.match(r.co_name or "") and _RESUME.match(r.co_name or "").group("fn") == m.co_name),  # type: ignore[union-attr]
                           None)
                line = loc.co_firstlineno if loc is not None else None
                key = (reason, m.co_filename, line)
                if key in seen:
                    continue
                seen.add(key)
                info.graph_breaks.append(GraphBreak(reason=_first_line(reason), file=m.co_filename, line=line,
                                                    function=m.co_name, count=counts.get(reason, 1)))
        known = {gb.reason for gb in info.graph_breaks}
        for reason, n in counts.items():  # breaks whose frame record carried no reason
            if _first_line(reason) not in known:
                info.graph_breaks.append(GraphBreak(reason=_first_line(reason), count=n))
        return info


__all__ = ["CompileWatch"]
