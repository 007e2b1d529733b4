"""A hand-written block loop run (shared by analysis, render and CLI tests).

It sets the attributes the profiler records (``frames`` on each block span, ``fps`` on the
enclosing blocks phase), so the tests hold for either spelling of ``Profiler.blocks()``'s
arguments.
"""

from __future__ import annotations

from genprof.model import HostInfo, Run, Span


def block_loop_run(*, generation: bool, block_s: tuple[float, ...] = (0.5, 0.2, 0.2, 0.2),
                   frames: int = 9, fps: float | None = 16.0) -> Run:
    # GIVEN a blocks phase starting at 1.0 s holding one block span per item, back to back
    spans: list[Span] = []
    ids = iter(range(1, 1000))
    gen_id = None
    if generation:
        gen_id = next(ids)
        spans.append(Span(id=gen_id, name="generation", kind="generation", start_s=0.9,
                          duration_s=sum(block_s) + 0.2))
    phase = Span(id=next(ids), name="blocks", kind="phase", start_s=1.0, duration_s=sum(block_s),
                 parent_id=gen_id, attributes={} if fps is None else {"fps": fps})
    spans.append(phase)
    t = 1.0
    for i, d in enumerate(block_s):
        spans.append(Span(id=next(ids), name="block", kind="block", start_s=t, duration_s=d, index=i,
                          parent_id=phase.id, attributes={"frames": frames, "steps": 4}))
        t += d
    run = Run(name="loop", run_id="r", started_at="2024-01-01T00:00:00+00:00", started_unix_s=0.0,
              duration_s=t + 0.5, host=HostInfo(hostname="h"), spans=spans)
    run.end.status = "ok"
    return run
