"""The Profiler: spans, nesting, threads, endings, config effects (GPU-free, with fakes)."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import genprof
from fakes import FakeAllocator, FakeClock, FakeEvent, FakeNvml, install_fake_cuda
from genprof.model import load_run
from genprof.profiler import Profiler, current_profiler

QUIET = {"cpu_monitor_interval": 0.05, "gpu_monitor_interval": 0.05, "handle_sigterm": False}


def test_phases_steps_events_and_nesting() -> None:
    with Profiler("t", tags={"model": "m"}, **QUIET) as prof:
        with prof.phase("load"):
            with prof.phase("load_vae"):
                pass
        for _ in prof.steps(range(4), phase="denoise", timestep_kind="flow"):
            pass
        for _ in prof.blocks(range(2), steps_per_block=3, output_frames_per_block=4):
            pass
        prof.event("checkpoint_loaded", path="/x")
    run = prof.run
    by = {(s.name, s.index): s for s in run.spans}
    load, sub = by[("load", None)], by[("load_vae", None)]
    assert sub.parent_id == load.id and load.parent_id is None
    steps = [s for s in run.spans if s.kind == "step"]
    assert [s.index for s in steps] == [0, 1, 2, 3]
    assert all(s.parent_id == by[("denoise", None)].id for s in steps)
    assert steps[0].attributes == {"timestep_kind": "flow"}
    blocks = [s for s in run.spans if s.kind == "block"]
    assert [b.attributes["frames"] for b in blocks] == [4, 4] and blocks[0].attributes["steps"] == 3
    assert run.events[0].name == "checkpoint_loaded" and run.events[0].attributes == {"path": "/x"}
    assert run.end.status == "ok" and run.tags == {"model": "m"}
    # host times nest: a child never outlasts its parent
    assert sub.start_s >= load.start_s and sub.end_s is not None and load.end_s is not None
    assert sub.end_s <= load.end_s
    # no GPU here: GPU figures are None with a reason, never 0
    assert all(s.gpu_time_s is None for s in run.spans)
    assert "cuda" in run.unavailable and "gpu_time" in run.unavailable
    assert all(s.peak_allocated_bytes is None for s in run.spans)


def test_host_durations_come_from_the_injected_clock() -> None:
    clock = FakeClock()
    with Profiler("t", clock=clock, **QUIET) as prof:
        clock.advance(0.5)
        with prof.phase("work"):
            clock.advance(0.05)
        ev = prof.event("mark")
        clock.advance(0.25)
    (s,) = prof.run.spans
    assert s.start_s == pytest.approx(0.5) and s.duration_s == pytest.approx(0.05)
    assert ev is not None and ev.t_s == pytest.approx(0.55)
    assert prof.run.duration_s == pytest.approx(0.8)


def test_the_default_clock_is_real_time() -> None:
    # the default clock is time.perf_counter: a span around real work lasts at least that long
    with Profiler("t", **QUIET) as prof:
        with prof.phase("busy"):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.002:
                pass
    (s,) = prof.run.spans
    assert s.duration_s >= 0.002


def test_eight_threads_no_span_lost_parents_right() -> None:
    n_threads, n_spans = 8, 200
    with Profiler("threads", **QUIET) as prof:
        barrier = threading.Barrier(n_threads)

        def work(k: int) -> None:
            barrier.wait()
            for i in range(n_spans):
                with prof.span(f"outer-{k}", "call", index=i):
                    with prof.span(f"inner-{k}", "call", index=i):
                        pass

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    spans = prof.run.spans
    assert len(spans) == n_threads * n_spans * 2
    assert len({s.id for s in spans}) == len(spans)
    by_id = {s.id: s for s in spans}
    for s in spans:
        if s.name.startswith("inner-"):
            parent = by_id[s.parent_id]
            assert parent.name == "outer-" + s.name.split("-")[1] and parent.index == s.index
            assert parent.thread == s.thread
        else:
            assert s.parent_id is None


def test_current_profiler_and_phase_decorator() -> None:
    calls = []

    @genprof.phase("vae_decode")
    def decode() -> str:
        calls.append(current_profiler())
        return "img"

    assert decode() == "img" and calls == [None]  # no profiler: straight through
    with Profiler("t", **QUIET) as prof:
        assert decode() == "img"
        with genprof.phase("postprocess"):
            pass
    assert calls[1] is prof
    assert [s.name for s in prof.run.spans] == ["vae_decode", "postprocess"]


def test_exception_leaves_a_readable_run_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with Profiler("boom", output_dir=str(tmp_path), **QUIET) as prof:
            with prof.phase("denoise"):
                raise ValueError("bad latent shape")
    run = load_run(prof.run_path)  # type: ignore[arg-type]
    assert run.end.status == "exception" and run.end.exception_type == "ValueError"
    assert run.end.message == "bad latent shape" and run.end.open_spans == ["denoise"]
    assert run.spans[0].status == "error"


def test_exception_inside_a_step_loop_names_the_step(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with Profiler("boom", output_dir=str(tmp_path), **QUIET) as prof:
            for i in prof.steps(range(5)):
                if i == 2:
                    raise RuntimeError("nan in latents")
    run = load_run(prof.run_path)  # type: ignore[arg-type]
    assert run.end.status == "exception"
    assert run.end.open_spans[-1] == "denoise/step[2]"
    assert [s.status for s in run.spans if s.kind == "step"] == ["ok", "ok", "aborted"]


def test_a_loop_left_by_break_is_not_blamed_for_a_later_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with Profiler("later", output_dir=str(tmp_path), **QUIET) as prof:
            for i in prof.steps(range(5)):
                if i == 1:
                    break  # the loop is left early: its path is remembered...
            with prof.phase("vae_decode"):
                pass  # ...until a span opens after it
            raise RuntimeError("after the loop")
    assert load_run(prof.run_path).end.open_spans == []  # type: ignore[arg-type]


def test_live_progress_counts_the_current_loops_steps(tmp_path: Path) -> None:
    clock = FakeClock()
    with Profiler("progress", output_dir=str(tmp_path), clock=clock, **QUIET) as prof:
        for _ in prof.steps(range(3), phase="warmup"):
            pass
        assert prof.live_snapshot()["steps_done"] == 3
        for i in prof.steps(range(4)):
            snap = prof.live_snapshot()
            assert snap["steps_done"] == i  # steps of this loop closed so far, the warm-up's not counted
            assert snap["steps_total"] == 4
            if i == 1:
                assert snap["step_rate_per_s"] == pytest.approx(1 / 0.25)  # one step of 0.25 s
                assert snap["eta_s"] == pytest.approx(3 * 0.25)
            clock.advance(0.25)
        snap = prof.live_snapshot()
    assert snap["steps_done"] == 4 and snap["eta_s"] == 0
    assert snap["step_rate_per_s"] == pytest.approx(4 / 1.0)  # four steps of 0.25 s


def test_keyboard_interrupt_is_interrupted(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with Profiler("ctrlc", output_dir=str(tmp_path), **QUIET) as prof:
            raise KeyboardInterrupt
    assert load_run(prof.run_path).end.status == "interrupted"  # type: ignore[arg-type]


def test_sys_exit_zero_is_ok() -> None:
    with pytest.raises(SystemExit):
        with Profiler("exit", **QUIET) as prof:
            sys.exit(0)
    assert prof.run.end.status == "ok"


def test_a_file_exists_while_running_and_says_so(tmp_path: Path) -> None:
    with Profiler("live", output_dir=str(tmp_path), **QUIET) as prof:
        mid = load_run(prof.default_run_path())  # type: ignore[arg-type]
        assert mid.end.status == "running"
    assert load_run(prof.run_path).end.status == "ok"  # type: ignore[arg-type]


def test_sigterm_leaves_an_interrupted_run_file(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import threading, genprof
        with genprof.Profiler("term", output_dir={str(tmp_path)!r}) as prof:
            with prof.phase("denoise"):
                print("ready", flush=True)
                threading.Event().wait(30)  # until SIGTERM arrives
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    (f,) = [p for p in tmp_path.glob("term-*.json")]
    run = load_run(f)
    assert run.end.status == "interrupted" and run.end.message == "SIGTERM"
    assert run.end.open_spans == ["denoise"]


def test_disabled_profiler_records_nothing_and_costs_nothing() -> None:
    items = []
    with Profiler("off", enabled=False) as prof:
        with prof.phase("load"):
            pass
        for i in prof.steps(range(3)):
            items.append(i)
        assert prof.event("x") is None
    assert items == [0, 1, 2] and prof.run.spans == [] and prof.run.series == []
    assert prof.run.unavailable["profiling"].startswith("disabled")


def test_disabled_span_yields_none_and_lets_exceptions_through() -> None:
    # the no-op context manager's __enter__/__exit__ are C functions; check the with protocol
    with Profiler("off", enabled=False) as prof:
        with prof.span("s", "call", index=1) as got:
            assert got is None
        with pytest.raises(KeyError, match="boom"), prof.phase("load"):
            raise KeyError("boom")
        with pytest.raises(ZeroDivisionError):
            for _ in prof.steps(range(2)):
                1 / 0  # noqa: B018


def test_span_closed_from_another_thread_leaves_its_opening_stack() -> None:
    # a hook may close a span on a different thread than the one that opened it
    with Profiler("xthread", **QUIET) as prof:
        o = prof.open_span("transfer", "call")
        t = threading.Thread(target=prof.close_span, args=(o,), name="closer")
        t.start()
        t.join()
        with prof.span("after", "call") as after:
            assert after is not None
    by_name = {s.name: s for s in prof.run.spans}
    assert by_name["after"].parent_id is None  # not parented to the span closed elsewhere
    assert by_name["transfer"].thread == threading.current_thread().name  # the opening thread
    assert by_name["transfer"].duration_s is not None and by_name["transfer"].duration_s >= 0


def test_close_span_status_and_exception() -> None:
    with Profiler("close", **QUIET) as prof:
        a = prof.open_span("a", "call")
        assert prof.close_span(a, status="open_at_end") is not None
        b = prof.open_span("b", "call")
        sp = prof.close_span(b, ValueError("bad input"))
        assert prof.close_span(None) is None
    assert sp is not None and sp.status == "error" and sp.attributes["error"] == "ValueError: bad input"
    assert [s.status for s in prof.run.spans] == ["open_at_end", "error"]


def test_profile_switches_change_what_is_recorded() -> None:
    with Profiler("sw", profile_inference_steps=False, profile_text_encoding=False, profile_vae_decode=False,
                  **QUIET) as prof:
        with prof.phase("text_encode"):
            pass
        for _ in prof.steps(range(3)):
            pass
        with prof.phase("vae_decode"):
            pass
    assert [(s.name, s.kind) for s in prof.run.spans] == [("denoise", "phase")]


def test_cpu_and_memory_monitor_switches() -> None:
    # the sampler takes a final reading at stop; CPU percent needs one reading before it
    # (psutil's "since the last call"), so wait for two ticks of the sampler thread
    with Profiler("m", monitor_cpu_usage=False, cpu_monitor_interval=0.02, handle_sigterm=False) as prof:
        pass
    names = {s.name for s in prof.run.series}
    assert "cpu_pct" not in names and "rss_bytes" in names
    ticks: list[object] = []
    two = threading.Event()

    def on_tick(kind: str, payload: object) -> None:
        ticks.append(payload)
        if len(ticks) >= 8:  # CPU percents need a 100 ms window (probes.host.CPU_WINDOW_S)
            two.set()

    with Profiler("m", monitor_system_memory=False, cpu_monitor_interval=0.02, handle_sigterm=False) as prof:
        prof.subscribe(on_tick, kinds=("samples",))
        assert two.wait(30), "the sampler thread took fewer than eight readings"
    names = {s.name for s in prof.run.series}
    assert "cpu_pct" in names and "rss_bytes" not in names and "ram_used_bytes" not in names


def test_save_raw_data_false_drops_series_from_the_file(tmp_path: Path) -> None:
    with Profiler("raw", output_dir=str(tmp_path), save_raw_data=False, cpu_monitor_interval=0.02,
                  handle_sigterm=False) as prof:
        pass
    assert prof.run.series  # kept in memory (the final reading at stop)
    data = json.loads(prof.run_path.read_text())  # type: ignore[union-attr]
    assert data["series"] == [] and "save_raw_data" in data["unavailable"]["series"]


def test_max_data_points_bounds_series() -> None:
    ticks = threading.Event()
    seen = [0]

    def count(kind: str, payload: object) -> None:
        seen[0] += 1
        if seen[0] >= 60:
            ticks.set()

    with Profiler("bound", max_data_points=16, cpu_monitor_interval=0.001, handle_sigterm=False) as prof:
        prof.subscribe(count, kinds=("samples",))
        assert ticks.wait(30), "the sampler thread took fewer than 60 readings"
    assert prof.run.series
    for s in prof.run.series:
        assert len(s.t_s) <= 18


def test_log_file_in_output_dir(tmp_path: Path) -> None:
    with Profiler("logged", output_dir=str(tmp_path), log_file=True, **QUIET) as prof:
        with prof.phase("load"):
            pass
    text = (tmp_path / "genprof.log").read_text()
    assert "started" in text and "usage:" in text and "run file written" in text
    assert "phase 'load' ended (ok) after" in text and "RSS" in text


def test_rss_is_measured_per_span() -> None:
    with Profiler("rss", **QUIET) as prof:
        with prof.phase("alloc"):
            # fresh anonymous pages (a bytearray may reuse heap memory that is already resident)
            blob = mmap.mmap(-1, 64 * 2**20)
            for off in range(0, len(blob), 4096):
                blob[off] = 1
        blob.close()
    (s,) = prof.run.spans
    assert s.rss_start_bytes and s.rss_end_bytes and s.rss_peak_bytes
    assert s.rss_end_bytes - s.rss_start_bytes > 32 * 2**20


def test_a_profiler_runs_once() -> None:
    prof = Profiler("once", **QUIET)
    prof.start()
    prof.stop()
    with pytest.raises(genprof.errors.UsageError if hasattr(genprof, "errors") else Exception):
        prof.start()


# ------------------------------------------------------------------ fake CUDA
def test_nested_peaks_with_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each span's peak is its own, although every child start resets the device-wide counter."""
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc)
    GiB = 2**30
    with Profiler("mem", energy_spans="none", **QUIET) as prof:
        alloc.set(1 * GiB)
        with prof.phase("generation"):
            alloc.set(6 * GiB)  # parent-only peak before any child
            alloc.set(2 * GiB)
            with prof.phase("text_encode"):
                alloc.set(3 * GiB)
                alloc.set(2 * GiB)
            with prof.phase("denoise"):
                for _ in prof.steps(range(2), phase=None):
                    alloc.set(5 * GiB)
                    alloc.set(2 * GiB)
            with prof.phase("vae_decode"):
                alloc.set(4 * GiB)
                alloc.set(2 * GiB)
    by = {s.name: s for s in prof.run.spans if s.kind == "phase"}
    assert by["text_encode"].peak_allocated_bytes == 3 * GiB
    assert by["denoise"].peak_allocated_bytes == 5 * GiB
    assert by["vae_decode"].peak_allocated_bytes == 4 * GiB
    assert by["generation"].peak_allocated_bytes == 6 * GiB
    steps = [s for s in prof.run.spans if s.kind == "step"]
    assert [s.peak_allocated_bytes for s in steps] == [5 * GiB, 5 * GiB]
    assert by["generation"].allocated_start_bytes == 1 * GiB and by["generation"].allocated_end_bytes == 2 * GiB
    assert alloc.resets >= 6


def test_no_reset_mode_leaves_the_counter_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc)
    with Profiler("mem", reset_peak_memory=False, energy_spans="none", **QUIET) as prof:
        alloc.set(8)
        alloc.set(2)
        with prof.phase("p"):
            alloc.set(4)
    assert alloc.resets == 0
    (s,) = prof.run.spans
    assert s.peak_allocated_bytes == 8 and "NOT reset" in (s.peak_source or "")


def _hold_energy_reads_until_run_end(nv: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keep each run's energy thread from reading until the run asks for its end reading.

    Every request of the run then waits in the queue at once, so which requests share a
    reading is the same on every run of the test. Returns the thread name of each counter read.
    """
    from genprof.profiler import energy

    gate = threading.Event()
    threads: list[str] = []
    read = nv.nvmlDeviceGetTotalEnergyConsumption

    def traced(h: dict[str, object]) -> int:
        threads.append(threading.current_thread().name)
        return read(h)

    loop, end_run, init = energy._EnergyReader._loop, energy.EnergyWindows.end_run, energy.EnergyWindows.__init__

    def held_loop(self: energy._EnergyReader) -> None:
        assert gate.wait(10.0), "the run never asked for its end reading"
        loop(self)

    def end_then_open(self: energy.EnergyWindows) -> None:
        end_run(self)
        gate.set()

    def new_run(self: energy.EnergyWindows, *a: Any, **k: Any) -> None:
        gate.clear()
        init(self, *a, **k)

    nv.nvmlDeviceGetTotalEnergyConsumption = traced
    monkeypatch.setattr(energy._EnergyReader, "_loop", held_loop)
    monkeypatch.setattr(energy.EnergyWindows, "end_run", end_then_open)
    monkeypatch.setattr(energy.EnergyWindows, "__init__", new_run)
    return threads


def test_gpu_time_from_events_and_energy_from_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = FakeAllocator()
    nv = FakeNvml()
    threads = _hold_energy_reads_until_run_end(nv, monkeypatch)
    # the counter's readings, in mJ, in the order they are taken: run start (the caller's thread,
    # first run of the process), then on the energy thread, every request waiting together:
    # denoise start, denoise end with short start (one reading), short end with the run's end
    nv.devices[0]["energy_script"] = [1_000_000, 1_000_000, 1_060_000, 1_061_000]
    install_fake_cuda(monkeypatch, alloc, nv)
    FakeEvent.gpu_clock[0] = 0.0
    clock = FakeClock()
    with Profiler("gpu", clock=clock, **QUIET) as prof:
        with prof.phase("denoise"):
            FakeEvent.gpu_clock[0] += 250.0  # ms of GPU work
            clock.advance(0.3)
        with prof.phase("short"):
            clock.advance(0.01)
        clock.advance(0.1)
    d, short = prof.run.spans
    assert d.gpu_time_s == pytest.approx(0.25)
    assert d.duration_s == pytest.approx(0.3) and short.duration_s == pytest.approx(0.01)
    assert d.energy_j == pytest.approx(60.0) and d.energy_reliable is True  # >= 100 ms
    assert short.energy_j == pytest.approx(1.0) and short.energy_reliable is False
    energy = prof.run.metadata["energy"]
    assert energy["total_j"] == pytest.approx(61.0) and energy["average_power_w"] == pytest.approx(61.0 / 0.41)
    assert prof.run.gpus[0].uuid == "GPU-aaaa" and prof.run.gpus[0].power_limit_w == 700.0
    assert prof.run.software.driver == "580.00"
    assert len(threads) == 4  # the four requests that waited together cost two reads


def test_a_span_never_gets_its_start_and_end_from_one_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = FakeAllocator()
    nv = FakeNvml()
    threads = _hold_energy_reads_until_run_end(nv, monkeypatch)
    # run start (caller's thread), then waiting together: outer start with inner start (one
    # reading), and inner end, which cannot share inner start's reading, with outer end and run end
    nv.devices[0]["energy_script"] = [2_000_000, 2_010_000, 2_030_000]
    install_fake_cuda(monkeypatch, alloc, nv)
    clock = FakeClock()
    with Profiler("nest", clock=clock, **QUIET) as prof:
        with prof.phase("outer"):
            with prof.phase("inner"):
                clock.advance(0.2)
    inner = next(s for s in prof.run.spans if s.name == "inner")
    outer = next(s for s in prof.run.spans if s.name == "outer")
    assert inner.energy_j == pytest.approx(20.0) and outer.energy_j == pytest.approx(20.0)
    assert prof.run.metadata["energy"]["total_j"] == pytest.approx(30.0) and len(threads) == 3


def test_exit_ends_the_open_spans_and_the_run_on_one_counter_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    # a read is about 2.3 ms on an H100: the exit must not pay one for the span left open and
    # another for the run's end. Made deterministic: the run's end is asked for only once the
    # energy thread has taken the open span's end from its queue (without the batching, it then
    # reads for that span alone and the run's end needs a reading of its own)
    alloc = FakeAllocator()
    nv = FakeNvml()
    reads: list[str] = []
    read = nv.nvmlDeviceGetTotalEnergyConsumption

    def traced(h: dict[str, object]) -> int:
        reads.append(threading.current_thread().name)
        return read(h)

    nv.nvmlDeviceGetTotalEnergyConsumption = traced
    from genprof.profiler import energy

    end_run = energy.EnergyWindows.end_run

    def end_run_once_the_span_end_was_taken(self: energy.EnergyWindows) -> None:
        q = self.reader._q  # type: ignore[union-attr]  # synchronisation only: has the thread taken it?
        for _ in range(1_000_000):
            if q.empty():
                break
            time.sleep(0)  # yield to the energy thread
        end_run(self)

    monkeypatch.setattr(energy.EnergyWindows, "end_run", end_run_once_the_span_end_was_taken)
    # run start (caller's thread), phase start, then one reading for the phase's end and the run's
    nv.devices[0]["energy_script"] = [3_000_000, 3_000_000, 3_025_000]
    install_fake_cuda(monkeypatch, alloc, nv)
    clock = FakeClock()
    prof = Profiler("open", clock=clock, **QUIET)
    with prof:
        prof.phase("denoise").__enter__()  # left open: the exit ends it
        clock.advance(0.2)
        for _ in range(1_000_000):  # the phase's start reading taken, so only its end is queued at exit
            if len(reads) == 2:
                break
            time.sleep(0)
    assert prof.run.spans[0].status == "open_at_end"
    assert prof.run.spans[0].energy_j == pytest.approx(25.0)
    assert prof.run.metadata["energy"]["total_j"] == pytest.approx(25.0)
    assert len(reads) == 3


def test_later_runs_read_the_energy_counter_off_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = FakeAllocator()
    nv = FakeNvml()
    threads = _hold_energy_reads_until_run_end(nv, monkeypatch)
    install_fake_cuda(monkeypatch, alloc, nv)
    clock = FakeClock()
    totals = []
    # first run: run start (caller's thread), phase start, phase end with run end; second run,
    # its start read on the energy thread too: run start with phase start, phase end with run end
    for script in ([5_000_000, 5_000_000, 5_040_000], [7_000_000, 7_020_000]):
        nv.devices[0]["energy_script"] = list(script)
        threads.clear()
        with Profiler("e", clock=clock, **QUIET) as prof:
            with prof.phase("denoise"):
                clock.advance(0.2)
        totals.append((prof.run.metadata["energy"]["total_j"], prof.run.spans[0].energy_j, list(threads)))
    (t1, p1, th1), (t2, p2, th2) = totals
    assert (t1, p1) == (pytest.approx(40.0), pytest.approx(40.0))
    assert (t2, p2) == (pytest.approx(20.0), pytest.approx(20.0))
    # the first run finds out on the caller's thread whether the counter reads; later runs never wait on it
    assert th1[0] == "MainThread" and set(th1[1:]) == {"genprof-energy"}
    assert set(th2) == {"genprof-energy"} and len(th2) == 2


def test_gpu_sampler_series_and_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = FakeAllocator()
    nv = FakeNvml()
    install_fake_cuda(monkeypatch, alloc, nv)
    with Profiler("s", gpu_monitor_interval=0.01, monitor_gpu_power=False, monitor_gpu_temperature=False,
                  monitor_cpu_usage=False, monitor_system_memory=False, handle_sigterm=False) as prof:
        alloc.set(7)
    names = {(s.device, s.name) for s in prof.run.series}  # the final reading at stop at least
    assert ("gpu0", "utilization_pct") in names and ("gpu0", "allocated_bytes") in names
    assert ("gpu0", "power_w") not in names and ("gpu0", "temperature_c") not in names
    assert "nvmlDeviceGetPowerUsage" not in nv.calls and "nvmlDeviceGetTemperature" not in nv.calls
    assert "nvmlDeviceGetTotalEnergyConsumption" not in nv.calls  # energy follows monitor_gpu_power
    reasons = [s for s in prof.run.series if s.name == "clock_event_reasons"][0]
    assert reasons.kind == "state" and reasons.values == [4.0]
    util = [s for s in prof.run.series if s.name == "utilization_pct"][0]
    assert "busy" in util.source


def test_oom_records_allocator_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc)
    from genprof.probes import torch_cuda

    fake_torch = torch_cuda.get_torch()
    monkeypatch.setattr(torch_cuda, "is_oom_error", lambda t, e: isinstance(e, torch.OutOfMemoryError))
    with pytest.raises(torch.OutOfMemoryError):
        with Profiler("oom", output_dir=str(tmp_path), **QUIET) as prof:
            with prof.phase("vae_decode"):
                alloc.set(70 * 2**30, 79 * 2**30)
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
    assert fake_torch is not None
    run = load_run(prof.run_path)  # type: ignore[arg-type]
    assert run.end.status == "oom" and run.end.open_spans == ["vae_decode"]
    assert run.end.oom is not None and run.end.oom["reserved_bytes"] == 79 * 2**30
    assert run.end.oom["phase"] == "vae_decode"


def test_oom_without_cuda_says_why(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(torch.OutOfMemoryError):
        with Profiler("oom", **QUIET) as prof:
            raise torch.OutOfMemoryError("CUDA out of memory")
    assert prof.run.end.status == "oom" and "reason" in (prof.run.end.oom or {})


def test_listeners_get_spans_samples_and_the_end() -> None:
    got: list[str] = []
    sampled = threading.Event()

    def listen(kind: str, payload: object) -> None:
        got.append(kind)
        if kind == "samples":
            sampled.set()

    with Profiler("l", cpu_monitor_interval=0.01, handle_sigterm=False) as prof:
        prof.subscribe(listen)
        with prof.phase("p"):
            assert sampled.wait(30), "no samples event from the sampler thread"
    assert "span_end" in got and "samples" in got and got[-1] == "run_end"


def test_usage_statistics_on_a_profiled_run() -> None:
    clock = FakeClock()
    with Profiler("u", clock=clock, **QUIET) as prof:
        with prof.phase("load"):
            clock.advance(0.02)
        for _ in range(2):
            with prof.generation():
                for _ in prof.steps(range(2)):
                    clock.advance(0.01)
    st = prof.run.usage_statistics()
    assert st["generations"] == 2 and not st["generations_implicit"]
    assert st["initialization_time_s"] == pytest.approx(0.02)
    assert st["average_inference_time_s"] == pytest.approx(0.02)
    assert st["device_name"] == "cpu" and st["peak_allocated_bytes"] is None


def test_import_genprof_does_not_import_optional_dependencies() -> None:
    code = "import sys, genprof; genprof.Profiler; bad=[m for m in ('torch','diffusers','plotly','prometheus_client','transformers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert out.stdout.strip() == "[]"


def test_step_loop_shares_boundaries_between_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive steps meet at one boundary: one clock, event, allocator and RSS reading."""
    alloc = FakeAllocator()
    install_fake_cuda(monkeypatch, alloc)
    reads = []
    orig_stats = alloc.stats

    def counting_stats(idx: int) -> tuple[int, int, int, int]:
        reads.append(idx)
        return orig_stats(idx)

    alloc.stats = counting_stats  # type: ignore[method-assign]
    GiB = 2**30
    FakeEvent.gpu_clock[0] = 0.0
    with Profiler("loop", energy_spans="none", **QUIET) as prof:
        alloc.set(1 * GiB)
        reads.clear()
        for i in prof.steps(range(3), phase=None):
            FakeEvent.gpu_clock[0] += 10.0 * (i + 1)  # step i runs (i + 1) x 10 ms on the GPU
            alloc.set((2 + i) * GiB)  # a peak inside step i
            alloc.set((1 + i) * GiB)  # and what it leaves allocated
        n_reads = len(reads)
    steps = [s for s in prof.run.spans if s.kind == "step"]
    assert [s.index for s in steps] == [0, 1, 2]
    assert n_reads == 4  # first open, two shared boundaries, last close (not 6)
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.start_s + a.duration_s == pytest.approx(b.start_s, abs=1e-9)  # no gap, no overlap
        assert a.allocated_end_bytes == b.allocated_start_bytes
        assert a.rss_end_bytes == b.rss_start_bytes
        assert a.parent_id == b.parent_id and a.thread == b.thread
    assert [s.peak_allocated_bytes for s in steps] == [2 * GiB, 3 * GiB, 4 * GiB]
    assert [s.allocated_end_bytes for s in steps] == [1 * GiB, 2 * GiB, 3 * GiB]
    assert [s.gpu_time_s for s in steps] == pytest.approx([0.01, 0.02, 0.03])
    assert len({s.id for s in prof.run.spans}) == len(prof.run.spans)


def test_next_span_falls_back_when_the_span_is_not_innermost() -> None:
    with Profiler("fallback", **QUIET) as prof:
        first = prof.open_span("step", "step", index=0)
        inner = prof.open_span("call", "call")
        second = prof.next_span(first, index=1)  # a call is still open inside: close + open
        prof.close_span(inner)
        prof.close_span(second)
        assert prof.next_span(None) is None
    by = {(s.name, s.index): s for s in prof.run.spans}
    assert by[("step", 0)].duration_s is not None and by[("step", 1)].index == 1
    assert by[("step", 1)].start_s >= by[("step", 0)].start_s + by[("step", 0)].duration_s


def test_a_failing_iterable_closes_the_open_step() -> None:
    def items() -> Iterator[int]:
        yield 0
        raise ValueError("no more data")

    with pytest.raises(ValueError), Profiler("iterfail", **QUIET) as prof:
        for _ in prof.steps(items()):
            pass
    (step,) = [s for s in prof.run.spans if s.kind == "step"]
    assert step.status == "error" and "no more data" in step.attributes["error"]


def test_listeners_get_only_the_kinds_they_ask_for() -> None:
    ends: list[str] = []
    alls: list[str] = []
    sampled = threading.Event()

    def listen_all(kind: str, payload: object) -> None:
        alls.append(kind)
        if kind == "samples":
            sampled.set()

    with Profiler("kinds", cpu_monitor_interval=0.01, handle_sigterm=False) as prof:
        prof.subscribe(lambda kind, payload: ends.append(kind), kinds=("run_end",))
        unsub = prof.subscribe(listen_all)
        with prof.phase("p"):
            assert sampled.wait(30), "no samples event from the sampler thread"
        unsub()
        n_before = len(alls)
        with prof.phase("after"):  # an unsubscribed listener hears nothing more
            pass
        with pytest.raises(genprof.UsageError, match="unknown listener event kind"):
            prof.subscribe(lambda kind, payload: None, kinds=("spans",))
    assert ends == ["run_end"]  # no span or sample event for a run_end-only listener
    assert "span_end" in alls and "samples" in alls and "run_end" not in alls
    assert len(alls) == n_before


# the host-only configuration (no GPU timer, allocator, RSS or energy work): the profiler's
# fast path; QUIET alone keeps RSS on, the path with extras
HOST_ONLY = {"gpu_timing": False, "memory_tracking": False, "track_rss": False, "energy_spans": "none", **QUIET}
BOTH_PATHS = pytest.mark.parametrize("cfg", [HOST_ONLY, QUIET], ids=["host-only", "with-extras"])


def test_host_only_config_records_host_time_only() -> None:
    with Profiler("plain", **HOST_ONLY) as prof:
        with prof.phase("p"):
            pass
    (s,) = prof.run.spans
    assert s.duration_s is not None and s.rss_start_bytes is None and s.device_index is None
    assert s.energy_j is None and s.peak_allocated_bytes is None
    with Profiler("rss", track_rss=True, **QUIET) as prof:
        with prof.phase("p"):
            pass
    (s,) = prof.run.spans
    assert s.rss_start_bytes is not None and s.rss_start_bytes > 0 and s.rss_end_bytes is not None


@BOTH_PATHS
def test_parents_threads_and_events_on_several_threads(cfg: dict[str, object]) -> None:
    n_threads = 4
    with Profiler("threads", **cfg) as prof:
        barrier = threading.Barrier(n_threads)

        def work(k: int) -> None:
            barrier.wait()
            prof.event(f"top-{k}")
            for _ in range(2):  # the thread's stack is back to its root between the two
                with prof.span(f"outer-{k}", "call") as outer:
                    for i in prof.steps(range(3), phase=f"loop-{k}"):
                        with prof.span(f"inner-{k}", "call", index=i):
                            prof.event(f"in-{k}", i=i)
                    assert outer is not None

        threads = [threading.Thread(target=work, args=(k,), name=f"worker-{k}") for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with prof.span("main-outer", "call"):
            with prof.span("main-inner", "call"):
                pass
    spans = prof.run.spans
    by_id = {s.id: s for s in spans}
    assert len(by_id) == len(spans) == n_threads * 2 * (1 + 1 + 3 + 3) + 2
    for s in spans:
        assert s.status == "ok" and s.duration_s is not None and s.duration_s >= 0
        if s.name.startswith("main-"):
            assert s.thread == threading.current_thread().name
            assert s.parent_id == (None if s.name == "main-outer" else next(x.id for x in spans if x.name == "main-outer"))
            continue
        assert s.thread is not None and s.thread.startswith("worker-")
        k = s.thread.split("-")[1]
        assert s.name in (f"outer-{k}", f"loop-{k}", "step", f"inner-{k}")
        parent = by_id.get(s.parent_id)  # type: ignore[arg-type]
        expected = {"outer": None, "loop": f"outer-{k}", "step": f"loop-{k}", "inner": "step"}[s.name.split("-")[0]]
        if expected is None:
            assert s.parent_id is None
        else:
            assert parent is not None and parent.name == expected and parent.thread == s.thread
            if expected == "step":
                assert parent.index == s.index
    events = {(e.name, e.attributes.get("i")): e for e in prof.run.events}
    for k in range(n_threads):
        assert events[(f"top-{k}", None)].span_id is None  # no open span: the root's id
        for i in range(3):
            span = by_id[events[(f"in-{k}", i)].span_id]  # type: ignore[index]
            assert span.name == f"inner-{k}" and span.thread == f"worker-{k}"


@BOTH_PATHS
def test_a_span_closed_from_another_thread_in_the_middle_of_the_stack(cfg: dict[str, object]) -> None:
    # a hook on another thread closes a span that still has an open span inside it
    with Profiler("xmiddle", **cfg) as prof:
        outer = prof.open_span("outer", "call")
        inner = prof.open_span("inner", "call")
        t = threading.Thread(target=prof.close_span, args=(outer,), name="closer")
        t.start()
        t.join()
        with prof.span("child", "call"):
            pass
        prof.close_span(inner)
        with prof.span("after", "call"):
            pass
    by = {s.name: s for s in prof.run.spans}
    assert by["after"].parent_id is None  # this thread's stack was empty again
    me = threading.current_thread().name
    assert [s.name for s in prof.run.spans] == ["outer", "child", "inner", "after"]
    assert by["outer"].thread == by["inner"].thread == by["child"].thread == me
    assert by["inner"].parent_id == by["outer"].id
    assert by["child"].parent_id == by["inner"].id  # the innermost span still open here
    assert by["after"].parent_id is None
    assert all(s.status == "ok" for s in prof.run.spans)


@BOTH_PATHS
def test_the_innermost_span_closed_from_another_thread(cfg: dict[str, object]) -> None:
    with Profiler("xtop", **cfg) as prof:
        outer = prof.open_span("outer", "call")
        inner = prof.open_span("inner", "call")
        t = threading.Thread(target=prof.close_span, args=(inner,), kwargs={"status": "closed-by-hook"})
        t.start()
        t.join()
        with prof.span("child", "call"):
            pass
        prof.close_span(outer)
    by = {s.name: s for s in prof.run.spans}
    assert by["inner"].status == "closed-by-hook" and by["inner"].thread == threading.current_thread().name
    assert by["child"].parent_id == by["outer"].id


@BOTH_PATHS
def test_spans_left_open_on_several_threads_end_open_at_end(cfg: dict[str, object]) -> None:
    with Profiler("left", **cfg) as prof:
        def leave_open(k: int) -> None:
            o = prof.open_span(f"left-{k}", "call")
            assert o is not None
            prof.open_span(f"left-inner-{k}", "call")

        threads = [threading.Thread(target=leave_open, args=(k,), name=f"t-{k}") for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        prof.open_span("main-left", "phase")
    spans = prof.run.spans
    assert len(spans) == 7 and all(s.status == "open_at_end" for s in spans)  # no root among them
    by = {s.name: s for s in spans}
    for k in range(3):
        assert by[f"left-{k}"].thread == by[f"left-inner-{k}"].thread == f"t-{k}"
        assert by[f"left-inner-{k}"].parent_id == by[f"left-{k}"].id and by[f"left-{k}"].parent_id is None
    assert by["main-left"].parent_id is None


@BOTH_PATHS
def test_step_loop_boundaries_and_phase_progress(cfg: dict[str, object]) -> None:
    with Profiler("loop", **cfg) as prof:
        with prof.phase("outer"):
            for i in prof.steps(range(4), phase="denoise"):
                snap = prof.live_snapshot()
                assert snap["phase"] == "denoise" and snap["step_index"] == i
            assert prof.live_snapshot()["phase"] == "outer"  # back to the enclosing phase
        assert prof.live_snapshot()["phase"] is None
    steps = [s for s in prof.run.spans if s.kind == "step"]
    denoise = next(s for s in prof.run.spans if s.name == "denoise")
    assert [s.index for s in steps] == [0, 1, 2, 3]
    assert len({s.id for s in prof.run.spans}) == len(prof.run.spans)
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.start_s + a.duration_s == pytest.approx(b.start_s, abs=1e-9)
        assert a.parent_id == b.parent_id == denoise.id and a.thread == b.thread
        assert b.id > a.id


@BOTH_PATHS
def test_span_attributes_are_recorded_as_given(cfg: dict[str, object], tmp_path: Path) -> None:
    with Profiler("attrs", output_dir=str(tmp_path), **cfg) as prof:
        with prof.span("plain", "call") as a:
            assert a is not None and a.attributes == {}
        with prof.span("set-inside", "call") as b:
            assert b is not None
            b.attributes["k"] = 1
        with prof.span("given", "call", x=2):
            pass
        with pytest.raises(KeyError), prof.span("failed", "call"):
            raise KeyError("boom")
        o = prof.open_span("opened", "block", index=3)
        prof.close_span(o)
        for _ in prof.steps(range(2), phase=None):
            pass
    by = {(s.name, s.index): s for s in prof.run.spans}
    assert by[("plain", None)].attributes == {} and by[("set-inside", None)].attributes == {"k": 1}
    assert by[("given", None)].attributes == {"x": 2}
    assert by[("failed", None)].attributes == {"error": "KeyError: 'boom'"} and by[("failed", None)].status == "error"
    assert by[("opened", 3)].attributes == {} and by[("step", 1)].attributes == {}
    by[("plain", None)].attributes["y"] = 1  # each span has its own dict
    assert by[("opened", 3)].attributes == {} and by[("step", 0)].attributes == {}
    by[("plain", None)].attributes.clear()
    again = load_run(prof.run_path)  # type: ignore[arg-type]
    assert again.spans == prof.run.spans


def test_blocks_from_latent_frames_with_a_causal_vae_and_fps() -> None:
    with Profiler("blk", **QUIET) as prof:
        for _ in prof.blocks(range(3), latent_frames_per_block=3, vae_temporal_factor=4, fps=16):
            pass
    blocks = [s for s in prof.run.spans if s.kind == "block"]
    (phase,) = [s for s in prof.run.spans if s.kind == "phase"]
    assert [b.attributes["frames"] for b in blocks] == [9, 12, 12]  # 1 + 4*(3-1), then 4*3
    assert phase.name == "blocks" and phase.attributes["fps"] == 16 and "fps" not in blocks[0].attributes


def test_blocks_latent_frames_without_the_vae_factor_is_a_usage_error() -> None:
    with Profiler("blk", **QUIET) as prof:
        with pytest.raises(genprof.UsageError, match="vae_temporal_factor"):
            prof.blocks(range(2), latent_frames_per_block=3)
        with pytest.raises(genprof.UsageError, match="not both"):
            prof.blocks(range(2), latent_frames_per_block=3, vae_temporal_factor=4, output_frames_per_block=12)
    assert prof.run.spans == []


def test_frames_per_block_is_a_deprecated_alias_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    import genprof.profiler.loops as loops_mod

    loops_mod._frames_alias_warned = False
    with caplog.at_level("WARNING", logger="genprof"), Profiler("blk", **QUIET) as prof:
        for _ in range(2):
            for _ in prof.blocks(range(2), frames_per_block=5):
                pass
    assert [b.attributes["frames"] for b in prof.run.spans if b.kind == "block"] == [5, 5, 5, 5]
    assert sum("frames_per_block" in r.getMessage() and "deprecated" in r.getMessage() for r in caplog.records) == 1


def test_reports_attach_without_importing_any_renderer(tmp_path: Path) -> None:
    # the user imports only genprof: the outputs module attached at start writes the reports
    script = textwrap.dedent(
        f"""
        import genprof
        with genprof.Profiler("plainuser", output_dir={str(tmp_path)!r}, generate_final_report=True,
                              report_format="json", console_summary=False, handle_sigterm=False) as prof:
            with prof.phase("p"):
                pass
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": str(Path(genprof.__file__).parents[1])})
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json"]
    assert len(list(tmp_path.glob("plainuser-*.report.json"))) == 1


def test_run_end_listeners_hear_the_end_after_the_run_file_is_written(tmp_path: Path) -> None:
    seen: list[bool] = []
    with Profiler("order", output_dir=str(tmp_path), **QUIET) as prof:
        prof.subscribe(lambda kind, run: seen.append(load_run(prof.run_path).end.status == "ok"),  # type: ignore[arg-type]
                       kinds=("run_end",))
    assert seen == [True]
