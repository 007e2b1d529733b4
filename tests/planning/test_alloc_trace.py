"""Recording the allocation sequence of a region on meta tensors, and replaying it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from genprof.planning.alloc_trace import AllocEvent, AllocRecorder, record_allocations, recording  # noqa: E402
from genprof.planning.allocator import replay  # noqa: E402

MB = 1024 * 1024


def test_each_new_storage_is_one_alloc_and_frees_follow_the_last_reference() -> None:
    x = torch.empty(1024, device="meta")  # before the region: not recorded

    def region() -> torch.Tensor:
        a = x * 2  # 4 KiB
        b = a.view(32, 32)  # a view: no storage
        a.add_(1)  # in place: no storage
        c = torch.cat([a, a])  # 8 KiB
        del a
        del c
        return b.sum()

    events = record_allocations(region)
    allocs = [e for e in events if e.action == "alloc"]
    assert [e.size for e in allocs] == [4096, 8192, 4]
    order = [(e.action, e.id) for e in events]
    # c dies before a's storage (b still views it); everything is freed by the end
    assert order.index(("free", allocs[1].id)) < order.index(("free", allocs[0].id))
    assert {e.id for e in events if e.action == "free"} == {e.id for e in allocs}


def test_keep_output_leaves_the_result_allocated() -> None:
    events = record_allocations(lambda: torch.ones(256, 256, device="meta"), keep_output=True)
    assert events == [AllocEvent("alloc", 1, 256 * 256 * 4)]


def test_empty_cache_inside_the_region_is_recorded() -> None:
    def region() -> None:
        torch.empty(10, device="meta") + 1
        torch.cuda.empty_cache()

    events = record_allocations(region)
    assert [e.action for e in events][-1] == "empty_cache"
    assert torch.cuda.empty_cache.__name__ == "empty_cache"  # restored


def test_recorder_spike_is_an_alloc_freed_at_once_and_streams_are_tagged() -> None:
    rec = AllocRecorder(stream=7)
    rec.spike(3 * MB)
    assert rec.events == [AllocEvent("alloc", 1, 3 * MB, 7), AllocEvent("free", 1, 3 * MB, 7)]
    assert rec.peak == 3 * MB and rec.current == 0


def test_a_meta_module_forward_replays_to_reserved_memory() -> None:
    lin = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).to("meta")
    inp = torch.empty(64, 1024, device="meta")
    with recording() as rec:
        out = lin(inp)
        del out
    sizes = [e.size for e in rec.events if e.action == "alloc"]
    # linear out, gelu out, linear out: the weights' transposes are views of weights, not allocations
    assert sizes == [64 * 4096 * 4, 64 * 4096 * 4, 64 * 1024 * 4]
    assert rec.peak == 2 * MB
    res = replay(rec.events)
    assert res.peak_allocated == rec.peak
    # 1 MiB requests are small-pool: two fill one 2 MiB segment, and the 256 KiB output reuses the
    # first one's block, freed just before
    assert res.peak_reserved == 2 * MB


def test_alloc_event_validates() -> None:
    with pytest.raises(ValueError, match="action"):
        AllocEvent("malloc", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        AllocEvent("alloc", 1, -1)


def test_input_storage_keys_finds_tensors_in_flat_and_nested_arguments() -> None:
    import torch

    from genprof.planning.alloc_trace import input_storage_keys

    a, b, c = (torch.empty(n, device="meta") for n in (2, 3, 4))

    def key(t: torch.Tensor) -> int:
        return int(t.untyped_storage()._cdata)

    # a tensor, a Tensor?[] list with a None, a scalar, and a nested list in a keyword argument
    assert input_storage_keys(torch.Tensor, (a, [b, None], 1.0), {"x": [[c]]}) == {key(a), key(b), key(c)}
    assert input_storage_keys(torch.Tensor, (a.t(),), {}) == {key(a)}  # a view shares its base's storage
    assert input_storage_keys(torch.Tensor, (), {}) == set()
