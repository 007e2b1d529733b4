"""genprof doctor: what can be measured here, and why not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_torch_build_reads_what_torch_itself_says() -> None:
    torch = pytest.importorskip("torch")
    build = doctor.torch_build()
    assert build["installed"] and build["read"]
    assert build["version"] == torch.__version__
    assert build["cuda"] == torch.version.cuda


FAKE_TORCH_INIT = """
import types
from . import version
__version__ = version.__version__
open(__file__ + ".imported", "w").close()
cuda = types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0)
"""


@pytest.mark.parametrize(("cuda", "imported"), [(None, False), ("'12.8'", True)])
def test_doctor_imports_torch_only_when_its_build_can_use_a_gpu(tmp_path: Path, cuda: str | None, imported: bool) -> None:
    """GIVEN a torch whose version.py names no CUDA (or CUDA 12.8) WHEN doctor runs THEN torch is imported only
    for the CUDA build, and the answer without the import still names the reason and what was not checked."""
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAKE_TORCH_INIT)
    (pkg / "version.py").write_text(f"__version__ = '9.9.9+fake'\ncuda = {cuda}\nhip = None\n")
    src = Path(doctor.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(src)])}
    proc = subprocess.run([sys.executable, "-m", "genprof", "doctor", "--json"], env=env, capture_output=True,
                          text=True, check=True, timeout=120)
    data = json.loads(proc.stdout)
    assert (pkg / "__init__.py.imported").exists() is imported
    assert data["torch_imported"] is imported
    assert data["torch_build"]["version"] == "9.9.9+fake"
    assert not data["cuda"]["usable"] and data["cuda"]["reason"]
    if imported:
        assert data["not_checked"] == []
    else:
        assert "has no CUDA support" in data["cuda"]["reason"]
        assert any("--import-torch" in line for line in data["not_checked"])
