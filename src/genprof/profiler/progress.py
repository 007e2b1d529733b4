"""Live progress for the live view and exporters: the phase, the step, the step rate and ETA, the latest samples."""

from __future__ import annotations

import threading
from typing import Any

from genprof.model import Run


class Progress:
    """Progress counted from ``run.spans`` when asked, so the hot path stores nothing for it.

    :attr:`state` is the one dict the hot path writes (``phase`` when a phase opens); step
    loops write ``step_index``, ``steps_total`` and ``first_step_s``.
    """

    def __init__(self, run: Run, lock: threading.RLock) -> None:
        self.state: dict[str, Any] = {"phase": None, "step_index": None, "steps_total": None, "first_step_s": None}
        self._run = run
        self._lock = lock
        # step spans closed since the last step loop started, and when the last one ended
        self._steps_done = 0
        self._last_step_end_s: float | None = None
        self._scan_pos = 0

    def step_loop_started(self, total: int | None, now_s: float) -> None:
        """A step loop begins: its steps are counted from here."""
        self.state["steps_total"] = total
        with self._lock:
            self._scan_pos = len(self._run.spans)
            self._steps_done = 0
        self.state["first_step_s"] = now_s

    def scan_steps(self) -> tuple[int, float | None]:
        """Step spans closed since the last step loop started, and the end of the latest one.

        Counted from ``run.spans`` past the last position read. Items below a list's length
        never move, so reading them while another thread appends is safe.
        """
        with self._lock:
            spans = self._run.spans
            n = len(spans)
            for i in range(self._scan_pos, n):
                sp = spans[i]
                if sp.kind == "step" and sp.start_s is not None and sp.duration_s is not None:
                    self._steps_done += 1
                    end = sp.start_s + sp.duration_s
                    if self._last_step_end_s is None or end > self._last_step_end_s:
                        self._last_step_end_s = end
            self._scan_pos = n
            return self._steps_done, self._last_step_end_s

    def snapshot(self, name: str, elapsed_s: float, latest: dict[str, float], gpu_label: str) -> dict[str, Any]:
        """Current progress and the latest samples (``latest``: the sampler's flat readings)."""
        p = self.state
        g = gpu_label
        rate = eta = None
        done, last_end = self.scan_steps()
        if done and p["first_step_s"] is not None and last_end is not None:
            dt = last_end - p["first_step_s"]
            if dt > 0:
                rate = done / dt
                if p["steps_total"]:
                    eta = max(0, p["steps_total"] - done) / rate
        gpu = None
        if self._run.gpus:
            gi = self._run.gpus[0]
            gpu = {
                "name": gi.name,
                "memory_used_bytes": latest.get(f"{g}.memory_used_bytes"),
                "memory_total_bytes": gi.total_memory_bytes,
                "utilization_pct": latest.get(f"{g}.utilization_pct"),
                "power_w": latest.get(f"{g}.power_w"),
                "temperature_c": latest.get(f"{g}.temperature_c"),
            }
        return {
            "name": name,
            "elapsed_s": elapsed_s,
            "phase": p["phase"],
            "step_index": p["step_index"],
            "steps_done": done,
            "steps_total": p["steps_total"],
            "step_rate_per_s": rate,
            "eta_s": eta,
            "gpu": gpu,
            "allocated_bytes": latest.get(f"{g}.allocated_bytes"),
            "reserved_bytes": latest.get(f"{g}.reserved_bytes"),
            "cpu_pct": latest.get("host.cpu_pct"),
            "rss_bytes": latest.get("process.rss_bytes"),
        }
