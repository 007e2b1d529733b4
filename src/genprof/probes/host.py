"""Host readings through ``psutil``: CPU, process RSS, system RAM, machine facts."""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
from typing import Any

import psutil

log = logging.getLogger(__name__)


class RssReader:
    """Process resident set size, cheaply.

    On Linux it reads ``/proc/self/statm`` through a kept file descriptor (about a
    microsecond); elsewhere it asks psutil.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._proc = psutil.Process()
        if sys.platform.startswith("linux"):
            try:
                self._fd = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError as exc:
                log.debug("cannot open /proc/self/statm (%s); using psutil", exc)

    def read_bytes(self) -> int:
        if self._fd is not None:
            try:
                data = os.pread(self._fd, 128, 0)
                return int(data.split()[1]) * self._page
            except (OSError, IndexError, ValueError) as exc:
                log.debug("statm read failed (%s); using psutil", exc)
                self.close()
        return int(self._proc.memory_info().rss)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError as exc:
                log.debug("closing statm fd failed: %s", exc)
            self._fd = None


class HostProbe:
    """Host CPU and memory readings for the sampler."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        # The first cpu_percent call primes the counters and returns 0.0 meaninglessly; prime here.
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)
        self._rss = RssReader()

    def read(self, *, cpu: bool = True, memory: bool = True) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {}
        if cpu:
            out["cpu_pct"] = float(psutil.cpu_percent(None))
            out["process_cpu_pct"] = float(self._proc.cpu_percent(None))
        if memory:
            vm = psutil.virtual_memory()
            out["ram_used_bytes"] = int(vm.total - vm.available)
            out["ram_total_bytes"] = int(vm.total)
            out["rss_bytes"] = self._rss.read_bytes()
        return out

    def rss_bytes(self) -> int:
        return self._rss.read_bytes()

    def close(self) -> None:
        self._rss.close()


def cpu_model() -> str | None:
    """The CPU's model name, from /proc/cpuinfo on Linux, else platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError as exc:
        log.debug("no /proc/cpuinfo: %s", exc)
    return platform.processor() or None


def host_facts() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "ram_total_bytes": int(vm.total),
        "pid": os.getpid(),
    }
