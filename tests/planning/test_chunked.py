import pytest

from genprof.errors import UsageError
from genprof.planning.chunked import ChunkedProcessor, psnr

torch = pytest.importorskip("torch")


def test_bounds_cover_with_overlap():
    cp = ChunkedProcessor(chunk_size=4, overlap=1)
    assert cp.bounds(10) == [(0, 4), (3, 7), (6, 10)]
    assert cp.bounds(3) == [(0, 3)]
    with pytest.raises(UsageError):
        ChunkedProcessor(chunk_size=2, overlap=2)


def test_framewise_function_is_reproduced_exactly():
    x = torch.randn(1, 4, 11, 8, 8)
    cp = ChunkedProcessor(chunk_size=4, overlap=2, progress=True)
    y = cp.process(x, lambda c: c * 2)
    assert torch.allclose(y, x * 2)
    assert cp.chunks_done == 5


@pytest.mark.slow
def test_chunked_decode_of_a_causal_video_vae_against_full_decode():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=16, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    z = torch.randn(1, 4, 9, 8, 8)
    with torch.no_grad():
        full = vae.decode(z, return_dict=False)[0]
        cp = ChunkedProcessor(chunk_size=5, overlap=2, out_frames=lambda n: 1 + (n - 1) * 4)
        chunked = cp.process(z, lambda c: vae.decode(c, return_dict=False)[0])
    assert chunked.shape == full.shape == (1, 3, 33, 64, 64)
    # the first chunk is identical (same causal cache); later chunks start with an empty cache
    first = 1 + (5 - 2 - 1) * 4
    assert torch.allclose(chunked[:, :, :first], full[:, :, :first], atol=1e-5)
    value = psnr(chunked, full, data_range=float(full.max() - full.min()))
    assert value > 15.0, value  # close but not identical: the causal cache differs
    assert value < 200.0
