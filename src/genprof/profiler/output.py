"""What a run writes while it goes on: its run file (partial at start, final at stop), its log file, the usage line."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from genprof.config import ProfilerConfig
from genprof.model import Run

log = logging.getLogger("genprof")


def default_run_path(config: ProfilerConfig, run: Run, name: str) -> Path | None:
    """``<output_dir>/<name>-<run id>.json``, or None without an ``output_dir``."""
    if not config.output_dir:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "run"
    return Path(config.output_dir) / f"{safe}-{run.run_id[:8]}.json"


def run_for_file(config: ProfilerConfig, run: Run) -> Run:
    """The run as its file holds it: without the sampled series unless ``save_raw_data``."""
    if config.save_raw_data:
        return run
    r = copy.copy(run)
    r.series = []
    r.unavailable = dict(run.unavailable)
    r.unavailable["series"] = "not saved: save_raw_data is false"
    return r


def write_run_file(config: ProfilerConfig, run: Run, name: str, *, partial: bool) -> Path | None:
    """Write the run file where the config says; the path, or None (no ``output_dir``, or the write failed: logged)."""
    path = default_run_path(config, run, name)
    if path is None:
        return None
    try:
        run_for_file(config, run).save(path)
    except OSError as exc:
        log.error("could not write the run file %s: %s", path, exc)
        return None
    if not partial:
        log.info("genprof run file written: %s", path)
    return path


def log_usage(run: Run) -> None:
    """The end-of-run usage line (initialisation, generations, peaks, times, device)."""
    st = run.usage_statistics()
    from genprof.units import format_bytes, format_seconds

    log.info(
        "usage: initialization %s, generations %d, peak allocated %s, peak reserved %s, average %s, total %s, device %s",
        format_seconds(st["initialization_time_s"]), st["generations"], format_bytes(st["peak_allocated_bytes"]),
        format_bytes(st["peak_reserved_bytes"]), format_seconds(st["average_inference_time_s"]),
        format_seconds(st["total_inference_time_s"]), st["device_name"],
    )


class LogFile:
    """``<output_dir>/genprof.log`` while a run goes on (``log_file: true``): genprof's INFO lines."""

    def __init__(self) -> None:
        self._handler: logging.Handler | None = None

    def open(self, config: ProfilerConfig) -> None:
        if not (config.log_file and config.output_dir):
            return
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        h = logging.FileHandler(Path(config.output_dir) / "genprof.log", encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h.setLevel(logging.INFO)
        lg = logging.getLogger("genprof")
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
        lg.addHandler(h)
        self._handler = h

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger("genprof").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
