"""Host readings: the /proc reader against psutil's figures, and the fallback."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from genprof.probes import host
from genprof.probes.host import HostProbe, ProcStatReader

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


def _burn(seconds: float) -> None:
    t = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < t:
        x += 1


@linux
def test_proc_reader_agrees_with_psutil() -> None:
    r = ProcStatReader.create()
    assert r is not None
    try:
        total, used = r.ram()
        vm = psutil.virtual_memory()
        assert total == vm.total
        assert abs(used - (vm.total - vm.available)) < 0.05 * vm.total  # RAM moves between the reads
        proc = psutil.Process()
        proc.cpu_percent(None)
        psutil.cpu_percent(None)
        r.process_cpu_pct()
        r.cpu_pct()
        cpu0, wall0 = time.process_time(), time.monotonic()
        _burn(0.5)  # this thread busy for half a second (a whole core only if the machine is idle)
        ours_proc, ps_proc = r.process_cpu_pct(), proc.cpu_percent(None)
        ours_sys, ps_sys = r.cpu_pct(), psutil.cpu_percent(None)
        used_pct = 100.0 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
        assert ours_proc is not None and ours_sys is not None
        assert ours_proc == pytest.approx(ps_proc, abs=15.0)
        # what the process really got from the scheduler over the window, read by the interpreter
        assert used_pct > 10.0
        assert ours_proc == pytest.approx(used_pct, abs=15.0)
        assert ours_sys == pytest.approx(ps_sys, abs=15.0)
        assert ours_sys >= 100.0 / psutil.cpu_count() * 0.5
    finally:
        r.close()


@linux
def test_no_elapsed_tick_gives_none_not_zero() -> None:
    r = ProcStatReader.create()
    assert r is not None
    try:
        r._cpu_prev = r._cpu_times()
        assert r.cpu_pct() is None  # the same counters twice in a row: no figure
        r._proc_prev = (r._proc_prev[0], float("inf"))
        assert r.process_cpu_pct() is None
    finally:
        r.close()


@linux
def test_host_probe_uses_proc_and_keeps_psutil_keys() -> None:
    fast, slow = HostProbe(), HostProbe(fast=False)
    try:
        assert fast.source == "/proc" and slow.source == "psutil"
        _burn(0.05)
        a, b = fast.read(), slow.read()
        assert set(a) == set(b) == {"cpu_pct", "process_cpu_pct", "ram_used_bytes", "ram_total_bytes", "rss_bytes"}
        assert a["ram_total_bytes"] == b["ram_total_bytes"]
    finally:
        fast.close()
        slow.close()


@linux
def test_a_failing_proc_read_switches_to_psutil(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    p = HostProbe()
    try:
        assert p.source == "/proc"

        def broken(fd: int, n: int, off: int) -> bytes:
            raise OSError("gone")

        monkeypatch.setattr(host.os, "pread", broken)
        with caplog.at_level("WARNING"):
            r = p.read(cpu=True, memory=False)
        assert p.source == "psutil"
        assert "switch to psutil" in caplog.text
        assert set(r) == {"cpu_pct", "process_cpu_pct"}
    finally:
        monkeypatch.undo()
        p.close()


def test_not_linux_means_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.sys, "platform", "darwin")
    assert ProcStatReader.create() is None
    p = HostProbe()
    try:
        assert p.source == "psutil"
    finally:
        p.close()


@linux
def test_rss_reader_agrees_with_psutil_and_sees_growth() -> None:
    from genprof.probes.host import RssReader

    r = RssReader()
    try:
        before = r.read_bytes()
        assert abs(before - psutil.Process().memory_info().rss) < 32 * 2**20
        block = bytearray(256 * 2**20)  # touched: resident
        after = r.read_bytes()
        assert after - before > 200 * 2**20
        del block
    finally:
        r.close()
    assert r.read_bytes() > 0  # closed: psutil answers


@linux
def test_cpu_percent_needs_a_window_of_cpu_window_s(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    clock = {"cpu": 0.0, "wall": 1000.0}
    monkeypatch.setattr(host.os, "times", lambda: types.SimpleNamespace(user=clock["cpu"], system=0.0))
    monkeypatch.setattr(host.time, "monotonic", lambda: clock["wall"])
    r = ProcStatReader.create()
    assert r is not None
    try:
        # 1 ms later the process has been charged one 10 ms clock tick: 1000% over 1 ms, noise
        clock["cpu"], clock["wall"] = 0.01, 1000.001
        assert r.process_cpu_pct() is None
        clock["wall"] = 1000.0 + host.CPU_WINDOW_S / 2
        assert r.process_cpu_pct() is None
        # the figure covers the whole window since the last one
        clock["cpu"], clock["wall"] = 0.05, 1000.0 + host.CPU_WINDOW_S
        assert r.process_cpu_pct() == pytest.approx(100.0 * 0.05 / host.CPU_WINDOW_S)
        clock["cpu"], clock["wall"] = 100.0, 1000.0 + 2 * host.CPU_WINDOW_S  # impossible: capped at all cores
        assert r.process_cpu_pct() == pytest.approx(100.0 * (os.cpu_count() or 1))
    finally:
        r.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the confstr path is Linux's")
def test_os_name_reads_what_platform_says_without_scanning_the_executable() -> None:
    import platform

    from genprof.probes.host import os_name

    assert os_name() == platform.platform()


def test_host_facts_keep_the_static_part_and_read_the_pid_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    a = host.host_facts()
    monkeypatch.setattr(host, "cpu_model", lambda: "changed")  # would show if the facts were read again
    monkeypatch.setattr(host.os, "getpid", lambda: 4242)
    b = host.host_facts()
    assert b["cpu_model"] == a["cpu_model"] and b["pid"] == 4242 and b["ram_total_bytes"] == a["ram_total_bytes"]
