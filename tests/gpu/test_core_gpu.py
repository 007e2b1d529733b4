"""Core figures checked against independent measurements on a real GPU (run with: pytest -m gpu)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from genprof.model import load_run
from genprof.profiler import Profiler

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")


def _matmuls(x: object, n: int) -> object:
    y = x
    for _ in range(n):
        y = x @ x  # type: ignore[operator]
    return y


@pytest.fixture(scope="module")
def mat() -> object:
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    _matmuls(x, 10)
    torch.cuda.synchronize()
    return x


def test_span_gpu_time_agrees_with_a_synchronized_measurement(mat: object) -> None:
    """The same work timed twice: by the span's CUDA events and by host time between synchronizes."""
    for n in (50, 150, 300):  # ~70 ms to ~0.4 s of GPU work
        with Profiler("gpu-time", handle_sigterm=False, energy_spans="none") as prof:
            with prof.phase("mm"):
                torch.cuda.synchronize()
                t = time.perf_counter()
                _matmuls(mat, n)
                torch.cuda.synchronize()
                hand = time.perf_counter() - t
        g = prof.run.spans[0].gpu_time_s
        assert g is not None
        assert abs(g - hand) / hand < 0.02, f"{n} matmuls: GPU span time {g:.4f} s vs synchronized {hand:.4f} s"


def test_no_synchronize_on_the_hot_path(mat: object) -> None:
    """Host time of a span around queued GPU work is launch time, not GPU time."""
    with Profiler("async", handle_sigterm=False, energy_spans="none") as prof:
        with prof.phase("queue"):
            _matmuls(mat, 100)
    s = prof.run.spans[0]
    assert s.gpu_time_s is not None and s.duration_s < 0.5 * s.gpu_time_s


def _alloc_work() -> None:
    a = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    b = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
    del a
    c = torch.empty(128 * 2**20, dtype=torch.uint8, device="cuda")
    del b, c


def test_phase_peaks_equal_max_memory_allocated_by_hand() -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    _alloc_work()
    hand_inner = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    big = torch.empty(1024 * 2**20, dtype=torch.uint8, device="cuda")
    del big
    _alloc_work()
    _alloc_work()
    hand_outer = torch.cuda.max_memory_allocated()
    with Profiler("peaks", handle_sigterm=False, energy_spans="none") as prof:
        with prof.phase("outer"):
            big = torch.empty(1024 * 2**20, dtype=torch.uint8, device="cuda")
            del big
            with prof.phase("inner1"):
                _alloc_work()
            with prof.phase("inner2"):
                _alloc_work()
    by = {s.name: s for s in prof.run.spans}
    assert by["inner1"].peak_allocated_bytes == hand_inner
    assert by["inner2"].peak_allocated_bytes == hand_inner
    assert by["outer"].peak_allocated_bytes == hand_outer
    assert by["outer"].peak_reserved_bytes >= by["outer"].peak_allocated_bytes


def test_step_loop_shared_boundaries_agree_with_hand_measurements(mat: object) -> None:
    """Steps of prof.steps() share one event and one allocator reading per boundary: each step's
    GPU time matches a synchronized measurement and its peak what it allocated."""
    sizes = (50, 150, 100)  # matmuls per step: different GPU times
    extra = (256, 768, 512)  # MiB allocated and freed inside each step: different peaks
    hand: list[float] = []
    torch.cuda.synchronize()
    with Profiler("steps", handle_sigterm=False, energy_spans="none") as prof:
        base = torch.cuda.memory_allocated()
        for i in prof.steps(range(3), phase=None):
            torch.cuda.synchronize()
            t = time.perf_counter()
            _matmuls(mat, sizes[i])
            torch.cuda.synchronize()
            hand.append(time.perf_counter() - t)
            buf = torch.empty(extra[i] * 2**20, dtype=torch.uint8, device="cuda")
            del buf
    steps = [s for s in prof.run.spans if s.kind == "step"]
    assert [s.index for s in steps] == [0, 1, 2]
    for s, h in zip(steps, hand, strict=True):
        assert s.gpu_time_s is not None
        assert abs(s.gpu_time_s - h) / h < 0.03, f"step {s.index}: GPU {s.gpu_time_s:.4f} s vs synchronized {h:.4f} s"
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.allocated_end_bytes == b.allocated_start_bytes
    # each step's peak: what was allocated at its start plus its own buffer (and the matmul output)
    for s, mib in zip(steps, extra, strict=True):
        assert s.peak_allocated_bytes is not None and s.peak_allocated_bytes >= base + mib * 2**20
    assert steps[1].peak_allocated_bytes > steps[2].peak_allocated_bytes > steps[0].peak_allocated_bytes


def test_energy_agrees_with_the_counter_read_by_hand(mat: object) -> None:
    import pynvml

    pynvml.nvmlInit()
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    uuid = str(props.uuid)
    h = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
    with Profiler("energy", handle_sigterm=False) as prof:
        e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
        with prof.phase("burn"):
            t_end = time.perf_counter() + 2.0
            while time.perf_counter() < t_end:
                _matmuls(mat, 20)
                torch.cuda.synchronize()
        e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
    span = prof.run.spans[0]
    hand = e1 - e0
    assert span.energy_j is not None and span.energy_reliable
    assert abs(span.energy_j - hand) / hand < 0.05, f"span {span.energy_j:.1f} J vs hand {hand:.1f} J"


def test_sampler_reads_this_gpu(mat: object) -> None:
    with Profiler("samples", handle_sigterm=False, gpu_monitor_interval=0.05) as prof:
        t_end = time.perf_counter() + 1.0
        while time.perf_counter() < t_end:
            _matmuls(mat, 20)
            torch.cuda.synchronize()
    names = {s.name for s in prof.run.series}
    for n in ("power_w", "utilization_pct", "temperature_c", "sm_clock_mhz", "memory_used_bytes", "allocated_bytes"):
        assert n in names, (n, prof.run.unavailable)
    util = [s for s in prof.run.series if s.name == "utilization_pct"][0]
    assert max(util.values) > 50
    assert prof.run.gpus[0].uuid and prof.run.gpus[0].name


def test_real_oom_leaves_forensics(tmp_path: Path) -> None:
    with pytest.raises(torch.OutOfMemoryError):
        with Profiler("oom", output_dir=str(tmp_path), handle_sigterm=False) as prof:
            keep = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
            with prof.phase("vae_decode"):
                torch.empty(2**50, dtype=torch.uint8, device="cuda")
            del keep
    run = load_run(prof.run_path)  # type: ignore[arg-type]
    assert run.end.status == "oom"
    oom = run.end.oom or {}
    assert oom["phase"] == "vae_decode" and oom["allocated_bytes"] >= 64 * 2**20
    assert "largest_free_block_bytes" in oom and oom["device_total_bytes"] > 0
    assert any(t["bytes"] == 64 * 2**20 for t in oom["largest_tensors"])


def test_doctor_sees_this_gpu_through_nvml() -> None:
    from genprof.cli import doctor

    data = doctor.collect()
    assert data["cuda"]["usable"] and data["nvml"]["available"]
    g = data["gpus"][0]
    assert g["nvml"]["matched"], g["nvml"]
    assert g["nvml"]["energy_counter_j"] is not None
    assert g["nvml"]["readings"]["power_w"] is not None


def test_direct_nvml_reads_agree_with_nvidia_ml_py() -> None:
    """The sampler's direct C reads against pynvml's wrappers, on the real library and GPU."""
    from genprof.probes.nvml import NvmlProbe, _FastReader

    probe = NvmlProbe()
    devs = probe.visible_devices()
    assert devs, probe.reason
    dev = devs[0]
    read = probe.reader(dev)
    assert isinstance(read, _FastReader)  # nvidia-ml-py's ctypes bindings are there
    x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")  # NVML's used memory moves
    torch.cuda.synchronize()
    direct, wrapped = read(), probe.read(dev)
    del x
    assert set(direct) == set(wrapped)
    assert probe.unavailable == {}, probe.unavailable
    for key in direct:
        assert direct[key] is not None and type(direct[key]) is type(wrapped[key]), key
    assert abs(int(direct["memory_used_bytes"]) - int(wrapped["memory_used_bytes"])) < 64 * 2**20  # type: ignore[arg-type]
    assert direct["memory_used_bytes"] >= 512 * 2**20  # type: ignore[operator]
    assert abs(float(direct["temperature_c"]) - float(wrapped["temperature_c"])) <= 3  # type: ignore[arg-type]
    assert 0 < float(direct["power_w"]) < 2000 and 0 <= float(direct["utilization_pct"]) <= 100  # type: ignore[arg-type]
    assert abs(float(direct["sm_clock_mhz"]) - float(wrapped["sm_clock_mhz"])) <= 500  # type: ignore[arg-type]
    assert probe.power_source(dev)  # the instant field or the averaged figure, named
