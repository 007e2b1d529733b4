"""Demo builders: tokenizers built in code, and real-size pipelines assembled (on the meta device)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from genprof.errors import UsageError  # noqa: E402
from genprof.integrations import demo  # noqa: E402


def test_tokenizer_pads_truncates_and_marks_the_end() -> None:
    tok = demo.build_tokenizer(8, clip_style=True)
    ids = tok("a cat on the beach", padding="max_length", max_length=8, truncation=True, return_tensors="pt")
    row = ids.input_ids[0].tolist()
    assert len(row) == 8 and row[0] == 0 and 2 in row and row[-1] == 1  # <s> ... </s> <pad>
    t5 = demo.build_tokenizer(16)
    assert t5("zebra").input_ids == [t5.unk_token_id, t5.eos_token_id]


def test_unknown_kind_or_size_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        demo.build_pipeline("nope")
    with pytest.raises(UsageError):
        demo.build_pipeline("sd", "huge")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wan", "sd"])
def test_full_size_pipeline_assembles_on_meta(kind: str) -> None:
    d = demo._full(kind, torch, diffusers, transformers, "meta", torch.bfloat16)
    den = d.pipe.transformer if kind == "wan" else d.pipe.unet
    n = sum(p.numel() for p in den.parameters())
    if kind == "wan":
        assert 1.3e9 < n < 1.5e9 and d.call_kwargs["num_frames"] == 33 and d.fps == 16
        assert (d.call_kwargs["height"], d.call_kwargs["width"]) == (480, 832)
    else:
        assert 0.85e9 < n < 0.87e9 and d.call_kwargs["height"] == 512
