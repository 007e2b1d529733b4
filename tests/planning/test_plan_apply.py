"""Applying a plan to a pipeline (genprof.planning.plan_apply), on a fake pipeline that records the calls."""

import pytest

from genprof.planning.plan_apply import apply

pytest.importorskip("torch")


class _FakeVae:
    def __init__(self):
        self.calls = []

    def enable_tiling(self):
        self.calls.append("tiling")

    def enable_slicing(self):
        self.calls.append("slicing")


class _FakeDenoiser:
    def __init__(self):
        self.calls = []

    def enable_layerwise_casting(self, **kw):
        self.calls.append(("fp8", kw))

    def set_attention_backend(self, name):
        self.calls.append(("attn", name))


class _FakePipe:
    """Records the diffusers API calls that apply() makes, in order."""

    def __init__(self):
        self.transformer = _FakeDenoiser()
        self.vae = _FakeVae()
        self.calls = []

    def to(self, *a, **kw):
        self.calls.append(("to", a, kw))
        return self

    def enable_group_offload(self, **kw):
        self.calls.append(("group", kw))

    def enable_model_cpu_offload(self, **kw):
        self.calls.append(("model", kw))


def test_apply_uses_diffusers_apis_in_order():
    import torch

    pipe = _FakePipe()
    done = apply(pipe, {"dtype": "bf16", "offload": "group_leaf_stream", "vae_tiling": True, "vae_slicing": False,
                        "layerwise_fp8": True, "attention_backend": "flash"})
    assert done[0].startswith("pipe.to(dtype=")
    assert "enable_layerwise_casting" in done[1] and "enable_group_offload" in done[2]
    # flash-class attention is PyTorch SDPA's own choice: diffusers' "_native_flash" refuses masks
    assert done[3] == "vae.enable_tiling()" and done[4] == "transformer.set_attention_backend('native')"
    assert pipe.transformer.calls[0][1]["storage_dtype"] == torch.float8_e4m3fn
    assert pipe.calls[1][1]["offload_type"] == "leaf_level" and pipe.calls[1][1]["use_stream"] is True
