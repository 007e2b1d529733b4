"""genprof doctor: what can be measured here, and why not."""

from __future__ import annotations

import json

import pytest

from fakes import FakeAllocator, FakeNvml, install_fake_cuda
from genprof.cli import doctor
from genprof.cli.main import main


def test_doctor_on_this_machine_names_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["resources"]["cpu_cores_logical"] >= 1
    if not data["cuda"]["usable"]:
        assert data["cuda"]["reason"]  # never a silent "no"
        assert data["gpus"] == []
    if not data["nvml"]["available"]:
        assert "nvml" in data["nvml"]["reason"].lower()


def test_doctor_tables_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "NVML" in out and "CUDA" in out and "host RAM" in out


def test_doctor_with_a_gpu_reports_each_nvml_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = FakeNvml(fail={"nvmlDeviceGetTemperature"})
    install_fake_cuda(monkeypatch, FakeAllocator(), nv)
    from genprof.planning import resources as res_mod
    from genprof.probes import torch_cuda

    fake_torch = torch_cuda.get_torch()
    fake_torch.cuda.device_count = lambda: 1  # type: ignore[union-attr]
    monkeypatch.setattr(res_mod, "resources", lambda measure_bandwidth=False: res_mod.Resources())
    data = doctor.collect()
    (g,) = data["gpus"]
    assert g["uuid"] == "GPU-aaaa" and g["nvml"]["matched"]
    assert g["nvml"]["readings"]["power_w"] == 312.5 and g["nvml"]["energy_counter_j"] == 1000.0
    assert g["nvml"]["readings"]["temperature_c"] is None
    assert "Not Supported" in g["nvml"]["unavailable"]["temperature"]
