"""Shared by the rule tests: a check that a rule fires with its evidence, and pipeline layouts."""

from __future__ import annotations

from synth import GiB

from genprof.analysis.findings import Finding
from genprof.analysis.rules import Rule


def fires(rule: Rule, run: object) -> Finding:
    f = rule(run)  # type: ignore[arg-type]
    assert f is not None, f"{rule.__name__} should fire"
    assert f.evidence and f.cause and f.suggestion
    return f


PIPE_FP32 = {
    "class": "FluxPipeline",
    "components": {
        "transformer": {"dtype": "torch.float32", "device": "cuda:0", "parameters_bytes": 47 * GiB},
        "vae": {"dtype": "torch.bfloat16", "device": "cuda:0", "parameters_bytes": GiB // 4},
    },
}


PIPE_TE = {
    "components": [
        {"name": "text_encoder_2", "dtype": "bfloat16", "device": "cuda:0", "parameters_bytes": 9 * GiB},
        {"name": "transformer", "dtype": "bfloat16", "device": "cuda:0", "parameters_bytes": 23 * GiB},
    ]
}


# the layout the diffusers helper writes (genprof.integrations.diffusers_facts.pipeline_facts)
PIPE_FACTS = {
    "class": "FluxPipeline",
    "components": {
        "text_encoder": {"class": "CLIPTextModel", "parameters": 123_000_000, "dtype": "bfloat16", "device": "cuda:0",
                         "offload": None},
        "text_encoder_2": {"class": "T5EncoderModel", "parameters": 4_760_000_000, "dtype": "float32",
                           "device": "cuda:0", "offload": None},
        "transformer": {"class": "FluxTransformer2DModel", "parameters": 11_900_000_000, "dtype": "bfloat16",
                        "dtypes": None, "device": "cuda:0", "offload": None},
        "scheduler": {"class": "FlowMatchEulerDiscreteScheduler"},
    },
    "text_encoders": ["text_encoder", "text_encoder_2"],
}
