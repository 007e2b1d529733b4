"""On a GPU: the replay's cuDNN workspace rule against what a real 2-D convolution asks the caching allocator for.

The rule (``trace.conv_workspace_bytes``: a copy of the input and of the output) was checked at
the level of a whole SDXL VAE decode; this checks it per convolution, for the bf16 3x3 convs of
image VAE decoders. Run with ``pytest -m gpu``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(("c", "hw"), [(128, 1024), (256, 512), (512, 256)])
def test_a_vae_convolution_requests_about_a_copy_of_its_input_and_output(c: int, hw: int) -> None:
    from genprof.planning.estimate.trace import conv_workspace_bytes

    x = torch.randn(1, c, hw, hw, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(c, c, 3, 3, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        torch.nn.functional.conv2d(x, w, padding=1)  # the first call picks the algorithm
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        y = torch.nn.functional.conv2d(x, w, padding=1)
        torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - before - y.numel() * y.element_size()
    rule = conv_workspace_bytes(x.to("meta"), y.to("meta"))
    assert measured == pytest.approx(rule, rel=0.15), f"measured {measured / 2**20:.1f} MiB, rule {rule / 2**20:.1f} MiB"
