"""FLOPs of a forward split by op class, and the diagnose window given them by instrument()."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import ModelMixin  # noqa: E402
from diffusers.configuration_utils import ConfigMixin, register_to_config  # noqa: E402

import genprof  # noqa: E402
from genprof.analysis import diagnose as dg  # noqa: E402
from genprof.integrations import diffusers as gd  # noqa: E402
from genprof.integrations import flops  # noqa: E402
from genprof.integrations.demo import build_pipeline  # noqa: E402
from genprof.integrations.diffusers.facts import tensor_spec  # noqa: E402


class Tiny(ModelMixin, ConfigMixin):  # type: ignore[misc]
    @register_to_config
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(width, 16, bias=False)
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)

    def forward(self, x: Any, img: Any, q: Any) -> Any:
        a = self.proj(x)
        b = self.conv(img)
        c = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return a.sum() + b.sum() + c.sum()


def test_a_forwards_flops_split_into_attention_convolution_and_gemm() -> None:
    m = Tiny()
    x, img, q = torch.randn(1, 5, 8), torch.randn(1, 3, 8, 8), torch.randn(1, 2, 10, 4)
    args = tensor_spec((x, img, q))
    total, reason = flops.count_forward_flops(m, args, tensor_spec({}))
    by = flops.forward_flops_by_class(m, args, tensor_spec({}))
    assert reason is None and by is not None
    # linear: 2*5*8*16; conv: 2 * (4*6*6 outputs) * (3*3*3 taps); SDPA: QK^T and PV, 2*2*10*10*4 each
    assert by == {"gemm": 1280, "convolution": 7776, "attention": 3200}
    assert sum(by.values()) == total


def test_a_module_that_cannot_be_counted_has_no_class_split() -> None:
    assert flops.forward_flops_by_class(flops.recipe_of(Tiny()), tensor_spec(("not a tensor",)),
                                        tensor_spec({})) is None


def test_instrument_gives_its_diagnose_window_the_steps_flops_by_class() -> None:
    demo = build_pipeline("sd", device="cpu")
    prof = genprof.Profiler("t", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0)
    gd.instrument(demo.pipe, prof, diagnose="steps:1-2")
    try:
        with prof:
            demo.pipe(**demo.call_kwargs)
    finally:
        gd.uninstrument(demo.pipe)
    d = dg.diagnosis_of(prof.run)
    assert d is not None and d.flops_by_class is not None, prof.run.metadata["diagnosis"]
    step_flops = {s["span_id"]: s["flops"] for s in prof.run.metadata["generations"][0]["flops"]["steps"]}
    window_ids = [w.span_id for w in d.step_windows]
    assert sum(d.flops_by_class.values()) == pytest.approx(sum(step_flops[i] for i in window_ids) / 2)
    assert set(d.flops_by_class) == {"gemm", "convolution", "attention"}  # a UNet has all three
    assert d.flops_source and "scaled_dot_product_attention" in d.flops_source


def test_a_config_window_that_finished_first_is_updated_in_the_run_and_its_file(tmp_path: Any) -> None:
    demo = build_pipeline("sd", device="cpu")
    prof = genprof.Profiler("t", diagnose="steps:1-2", output_dir=str(tmp_path), gpu_monitor_interval=1.0,
                            cpu_monitor_interval=1.0)
    gd.instrument(demo.pipe, prof)
    try:
        with prof:
            demo.pipe(**demo.call_kwargs)
    finally:
        gd.uninstrument(demo.pipe)
    assert prof.run_path is not None
    on_disk = dg.diagnosis_of(genprof.load_run(prof.run_path))
    assert on_disk is not None and on_disk.flops_by_class is not None
    assert on_disk.flops_by_class == dg.diagnosis_of(prof.run).flops_by_class  # type: ignore[union-attr]
