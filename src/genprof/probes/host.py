"""Host readings: CPU, process RSS, system RAM, machine facts.

``psutil`` everywhere; on Linux the sampler's per-tick readings come from ``/proc`` files kept
open (:class:`ProcStatReader`), because psutil's Python parsing of whole files holds the GIL
for 100-800 us a sample on a busy host (measured on the lent H100 VM), time taken from the
pipeline's own thread.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
import time
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


CPU_WINDOW_S = 0.1
"""Shortest window a CPU percent is computed over. The kernel counts CPU time in clock ticks
(10 ms); over 1 ms a process that ran one tick would read 1,000%. A read sooner than this after
the last figure returns None, and the next figure covers the whole window since it."""

_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") and "SC_CLK_TCK" in os.sysconf_names else 100.0
_NCPU = os.cpu_count() or 1


class ProcStatReader:
    """System CPU percent, process CPU percent and RAM in use, from ``/proc`` on Linux.

    The same definitions as psutil's: system CPU busy = all time - idle - iowait (guest time is
    already inside user time), as a percent of all time since the last read; process CPU =
    user + system time of this process (``os.times``) per wall second, 100 = one core; RAM in
    use = ``MemTotal - MemAvailable``. ``/proc/stat`` and ``/proc/meminfo`` stay open and are
    read with ``pread`` of their first lines only. :meth:`create` returns None where these
    files are missing or unreadable (then psutil is used).
    """

    def __init__(self, stat_fd: int, meminfo_fd: int) -> None:
        self._stat_fd = stat_fd
        self._mem_fd = meminfo_fd
        self._cpu_prev = self._cpu_times()
        self._proc_prev = self._proc_times()

    @classmethod
    def create(cls) -> ProcStatReader | None:
        if not sys.platform.startswith("linux"):
            return None
        fds: list[int] = []
        try:
            fds.append(os.open("/proc/stat", os.O_RDONLY))
            fds.append(os.open("/proc/meminfo", os.O_RDONLY))
            reader = cls(fds[0], fds[1])
            reader.ram()
            return reader
        except (OSError, ValueError, IndexError) as exc:
            log.debug("fast /proc reads unavailable (%s); using psutil", exc)
            for fd in fds:
                os.close(fd)
            return None

    def _cpu_times(self) -> tuple[float, float]:
        line = os.pread(self._stat_fd, 256, 0).split(b"\n", 1)[0].split()
        if line[0] != b"cpu":
            raise ValueError(f"/proc/stat starts with {line[0]!r}, not the cpu line")
        v = [int(x) for x in line[1:9]]  # user nice system idle iowait irq softirq steal
        return float(sum(v)), float(v[3] + v[4])

    @staticmethod
    def _proc_times() -> tuple[float, float]:
        t = os.times()
        return t.user + t.system, time.monotonic()

    def cpu_pct(self) -> float | None:
        total, idle = self._cpu_times()
        t0, i0 = self._cpu_prev
        dt = total - t0
        # /proc/stat counts in clock ticks (10 ms): over fewer than CPU_WINDOW_S of all CPUs' time the
        # figure is noise; the window grows until it is long enough (None until then, not 0)
        if dt <= 0 or dt < CPU_WINDOW_S * _CLK_TCK * _NCPU:
            return None
        self._cpu_prev = (total, idle)
        return max(0.0, min(100.0, 100.0 * (dt - (idle - i0)) / dt))

    def process_cpu_pct(self) -> float | None:
        cpu, wall = self._proc_times()
        c0, w0 = self._proc_prev
        if wall - w0 < CPU_WINDOW_S:
            return None  # os.times() moves in 10 ms ticks: a shorter window reads 1000s of percent
        self._proc_prev = (cpu, wall)
        return max(0.0, min(100.0 * _NCPU, 100.0 * (cpu - c0) / (wall - w0)))

    def ram(self) -> tuple[int, int]:
        """(total, in use) bytes."""
        total = avail = None
        for line in os.pread(self._mem_fd, 512, 0).split(b"\n")[:8]:
            if line.startswith(b"MemTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith(b"MemAvailable:"):
                avail = int(line.split()[1]) * 1024
        if total is None or avail is None:
            raise ValueError("MemTotal or MemAvailable not in the first lines of /proc/meminfo")
        return total, total - avail

    def close(self) -> None:
        for fd in (self._stat_fd, self._mem_fd):
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("closing a /proc fd failed: %s", exc)


class HostProbe:
    """Host CPU and memory readings for the sampler."""

    def __init__(self, *, fast: bool = True) -> None:
        self._proc = psutil.Process()
        self._fast = ProcStatReader.create() if fast else None
        self._psutil_cpu_at = time.monotonic()
        if self._fast is None:
            # The first cpu_percent call primes the counters and returns 0.0 meaninglessly; prime here.
            self._proc.cpu_percent(None)
            psutil.cpu_percent(None)
        self._rss = RssReader()

    @property
    def source(self) -> str:
        return "/proc" if self._fast is not None else "psutil"

    def read(self, *, cpu: bool = True, memory: bool = True) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {}
        fast = self._fast
        if fast is not None:
            try:
                if cpu:
                    out["cpu_pct"] = fast.cpu_pct()
                    out["process_cpu_pct"] = fast.process_cpu_pct()
                if memory:
                    total, used = fast.ram()
                    out["ram_used_bytes"] = used
                    out["ram_total_bytes"] = total
                    out["rss_bytes"] = self._rss.read_bytes()
                return out
            except (OSError, ValueError, IndexError) as exc:
                log.warning("reading /proc failed (%s: %s); host readings switch to psutil", type(exc).__name__, exc)
                fast.close()
                self._fast = None
                self._proc.cpu_percent(None)
                psutil.cpu_percent(None)
                self._psutil_cpu_at = time.monotonic()
                out = {}
        if cpu:
            now = time.monotonic()
            if now - self._psutil_cpu_at >= CPU_WINDOW_S:  # psutil's figures are since its last call
                self._psutil_cpu_at = now
                out["cpu_pct"] = float(psutil.cpu_percent(None))
                out["process_cpu_pct"] = float(self._proc.cpu_percent(None))
            else:
                out["cpu_pct"] = out["process_cpu_pct"] = None
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
        if self._fast is not None:
            self._fast.close()
            self._fast = None


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


def os_name() -> str:
    """``platform.platform()``'s text (``Linux-6.1.0-x86_64-with-glibc2.36``), read without its cost.

    ``platform.platform()`` finds the C library by scanning the Python executable (about 6 ms);
    on Linux the C library says its version through ``confstr``. Elsewhere, platform's answer.
    """
    if sys.platform.startswith("linux") and hasattr(os, "uname") and hasattr(os, "confstr"):
        try:
            u = os.uname()
            libc = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        except (OSError, ValueError) as exc:
            log.debug("os.uname/confstr failed: %s", exc)
        else:
            tail = f"-with-{libc[0]}{libc[1]}" if len(libc) == 2 else ""
            return f"{u.sysname}-{u.release}-{u.machine}{tail}"
    return platform.platform()


_STATIC_HOST: dict[str, Any] | None = None


def forget_static_facts() -> None:
    """Read the host's static facts again at the next :func:`host_facts`."""
    global _STATIC_HOST
    _STATIC_HOST = None


def host_facts() -> dict[str, Any]:
    """The machine's facts for a run record.

    The parts that cannot change while the process lives (OS, CPU model and counts, RAM size)
    are read once per process and reused: reading them (``/proc/cpuinfo``, ``/sys`` topology)
    was most of a warm run's enter time. Hostname and pid are read each time.
    """
    global _STATIC_HOST
    if _STATIC_HOST is None:
        _STATIC_HOST = {
            "os": os_name(),
            "cpu_model": cpu_model(),
            "cpu_count_logical": psutil.cpu_count(logical=True),
            "cpu_count_physical": psutil.cpu_count(logical=False),
            "ram_total_bytes": int(psutil.virtual_memory().total),
        }
    return {"hostname": socket.gethostname(), **_STATIC_HOST, "pid": os.getpid()}
