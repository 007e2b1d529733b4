"""Memoised decoder calls: a replayed call leaves the allocation sequence and the counts a run leaves."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from genprof.planning.alloc_trace import AllocEvent, AllocRecorder
from genprof.planning.estimate import trace as trace_mod
from genprof.planning.estimate.call_memo import CallMemo, events_equal
from genprof.planning.estimate.trace import trace_live_bytes


class CachedConv(torch.nn.Module):
    """A causal-convolution-like block: keeps its last frame in a cache list it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Any, cache: list[Any], idx: list[int], first: bool = False) -> Any:
        h = self.conv(x)
        old = cache[idx[0]]
        if not first and old is not None:
            h = h + old
        cache[idx[0]] = h.clone()  # the old entry dies here, inside the call
        idx[0] += 1
        return torch.nn.functional.silu(h)


class Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = CachedConv()
        self.b = CachedConv()

    def forward(self, x: Any, cache: list[Any], idx: list[int], first: bool = False) -> Any:
        return self.b(self.a(x, cache, idx, first), cache, idx, first)


class Stateful(torch.nn.Module):
    """Keeps a tensor on itself: a replay could not reproduce when it dies."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: Any = None

    def forward(self, x: Any) -> Any:
        self.kept = x * 2
        return x + 1


def _decode(dec: torch.nn.Module, memo: bool, tiles: list[tuple[int, int]], frames: int) -> tuple[Any, ...]:
    """A tiled, frame-by-frame decode in the shape of a video VAE's: a fresh cache per tile."""
    rec = AllocRecorder()
    hits = 0
    with trace_live_bytes("flash", recorder=rec) as (counter, attn):
        wrap = CallMemo(torch, counter, attn, rec) if memo else None
        ctx = wrap.wrapping(dec) if wrap is not None else _null()
        with ctx:
            rows = []
            for h, w in tiles:
                cache: list[Any] = [None, None]
                outs = []
                for k in range(frames):
                    x = torch.empty(1, 4, h, w, device="meta")
                    outs.append(dec(x, cache, [0], first=k == 0))
                rows.append(torch.cat(outs, dim=1))
            out = torch.cat([r.flatten() for r in rows])
            shape = tuple(out.shape)
            del out, rows, outs, cache
        if wrap is not None:
            hits = wrap.hits
    return list(rec.events), counter.peak, counter.current, counter.ops, shape, hits


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture(autouse=True)
def _memo_on() -> Any:
    trace_mod._MEMO.clear()
    yield
    trace_mod._MEMO_ON[0] = True


def test_replayed_calls_leave_the_same_allocation_sequence_and_counts() -> None:
    dec = Decoder().to("meta")
    tiles = [(8, 8), (8, 8), (8, 4), (8, 8)]
    with_memo = _decode(dec, True, tiles, frames=4)
    without = _decode(dec, False, tiles, frames=4)
    assert events_equal(with_memo[0], without[0])
    assert with_memo[1:5] == without[1:5]
    # per tile shape: the first frame and the second differ (no cache yet, then one); the rest repeat
    assert with_memo[5] == len(tiles) * 4 - 2 * 2


def test_a_module_that_keeps_state_is_run_every_time() -> None:
    mod = Stateful().to("meta")
    results = []
    for memo in (True, False):
        rec = AllocRecorder()
        with trace_live_bytes("flash", recorder=rec) as (counter, attn):
            wrap = CallMemo(torch, counter, attn, rec)
            with wrap.wrapping(mod) if memo else _null():
                for _ in range(3):
                    y = mod(torch.empty(64, device="meta"))
                    del y
        mod.kept = None
        results.append((list(rec.events), counter.peak, wrap.hits))
    (ev_m, peak_m, hits), (ev, peak, _) = results
    assert hits == 0
    assert events_equal(ev_m, ev) and peak_m == peak


def test_events_equal_pairs_ids_consistently() -> None:
    a = [AllocEvent("alloc", 1, 512), AllocEvent("alloc", 2, 512), AllocEvent("free", 1, 512)]
    b = [AllocEvent("alloc", 7, 512), AllocEvent("alloc", 8, 512), AllocEvent("free", 8, 512)]
    assert events_equal(a, [AllocEvent("alloc", 7, 512), AllocEvent("alloc", 8, 512), AllocEvent("free", 7, 512)])
    assert not events_equal(a, b)  # the other storage was freed


def _tiny_vae(name: str) -> Any:
    import diffusers

    if name == "wan":
        with torch.device("meta"):
            vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                                             temperal_downsample=[True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24,
                          tile_sample_stride_width=24)
        return vae, torch.empty(1, 4, 5, 12, 10, device="meta")
    with torch.device("meta"):
        vae = diffusers.AutoencoderKLCogVideoX(in_channels=3, out_channels=3, latent_channels=4,
                                               down_block_types=("CogVideoXDownBlock3D",) * 2,
                                               up_block_types=("CogVideoXUpBlock3D",) * 2,
                                               block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=2,
                                               temporal_compression_ratio=4)
    vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_overlap_factor_height=0.25,
                      tile_overlap_factor_width=0.25)
    return vae, torch.empty(1, 4, 5, 12, 10, device="meta")


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_a_tiled_video_vae_decode_traces_the_same_with_the_memo(name: str) -> None:
    pytest.importorskip("diffusers")
    vae, z = _tiny_vae(name)
    runs = []
    for memo in (True, False):
        trace_mod._MEMO_ON[0] = memo
        rec = AllocRecorder()
        with trace_live_bytes("flash", recorder=rec) as (counter, attn):
            wrap = CallMemo(torch, counter, attn, rec)
            with wrap.wrapping(vae.decoder) if memo else _null():
                out = vae.decode(z, return_dict=False)[0]
                shape = tuple(out.shape)
                del out
        runs.append((list(rec.events), counter.peak, counter.ops, shape, wrap.hits))
    (ev_m, *rest_m, hits), (ev, *rest, _) = runs
    assert events_equal(ev_m, ev)
    assert rest_m == rest
    if name == "wan":  # a call per tile and latent frame: most repeat an earlier one
        assert hits > 0
