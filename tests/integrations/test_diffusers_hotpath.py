"""What the instrumented call does on its hot path, and what is left to after it (CPU, tiny pipelines).

Pipeline facts are taken when instrumenting (and after a call only if a component changed);
FLOPs are counted when the run stops, from a recipe that keeps no reference to the module; the
per-forward input signature is the cheap ``fast_spec``, normalized once per distinct input.
"""

from __future__ import annotations

import copy
import gc
import weakref
from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import genprof  # noqa: E402
from genprof.integrations import diffusers as gd  # noqa: E402
from genprof.integrations import flops as flops_mod  # noqa: E402
from genprof.integrations.demo import build_pipeline  # noqa: E402
from genprof.integrations.diffusers import facts  # noqa: E402


def _prof() -> genprof.Profiler:
    return genprof.Profiler("hotpath", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0)


@pytest.mark.parametrize(
    "value",
    [
        ((torch.zeros(2, 4, 8, 8), torch.tensor(3)), {}),
        ((torch.zeros(1, 3),), {"encoder_hidden_states": torch.zeros(2, 5, dtype=torch.float16), "return_dict": False,
                                "timestep_cond": None, "scale": 1.5, "name": "x"}),
        ((), {"sample": torch.zeros(4, 2), "added_cond_kwargs": {"time_ids": torch.zeros(2, 6),
                                                                  "text_embeds": torch.zeros(2, 8)},
              "lst": [torch.zeros(1), 3, None], "obj": object()}),
    ],
)
def test_fast_spec_normalizes_to_tensor_spec(value: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
    args, kwargs = value
    fa, fk = facts.fast_spec(args), facts.fast_spec(kwargs)
    assert facts.normalize_spec(fa) == facts.tensor_spec(args)
    assert facts.normalize_spec(fk) == facts.tensor_spec(kwargs)
    # equal inputs, equal (hashable) fast specs; a different shape, a different one
    assert hash((fa, fk)) == hash((facts.fast_spec(args), facts.fast_spec(kwargs)))
    if args:
        other = (torch.zeros(7, *args[0].shape[1:]),) + tuple(args[1:])
        assert facts.fast_spec(other) != fa


def test_spec_batch_reads_named_input_first_then_positional() -> None:
    kw = facts.fast_spec({"hidden_states": torch.zeros(3, 2), "encoder_hidden_states": torch.zeros(9, 2)})
    assert facts.spec_batch(facts.fast_spec((torch.zeros(5, 1),)), kw) == 3
    assert facts.spec_batch(facts.fast_spec((torch.zeros(5, 1),)), facts.fast_spec({})) == 5
    assert facts.spec_batch(facts.normalize_spec(facts.fast_spec((torch.zeros(5, 1),))), ("dict", ())) == 5
    assert facts.spec_batch(facts.fast_spec(()), facts.fast_spec({"t": 1})) is None


def test_pipeline_facts_not_taken_inside_unchanged_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = build_pipeline("sd", device="cpu")
    pipe = demo.pipe
    taken: list[float] = []
    orig = facts.pipeline_facts
    prof = _prof()

    def counting(*a: Any, **k: Any) -> Any:
        taken.append(prof.now() if prof.running else -1.0)
        return orig(*a, **k)

    monkeypatch.setattr(facts, "pipeline_facts", counting)
    kw = dict(demo.call_kwargs, num_inference_steps=2)
    gd.instrument(pipe, prof)
    try:
        assert len(taken) == 1  # at instrument time
        with prof:
            pipe(**kw)
            pipe(**kw)
            assert len(taken) == 1
            assert prof.run.metadata["pipeline"]["class"] == "StableDiffusionPipeline"
            pipe.vae = copy.deepcopy(pipe.vae)  # a swapped component: facts retaken, after that call
            pipe(**kw)
            assert len(taken) == 2
            gens_spans = [s for s in prof.run.spans if s.kind == "generation"]
            assert taken[1] >= gens_spans[-1].start_s + gens_spans[-1].duration_s
            pipe(**kw)
            assert len(taken) == 2
    finally:
        gd.uninstrument(pipe)
    assert prof.run.metadata["pipeline"]["components"]["unet"]["parameters"] == sum(
        p.numel() for p in pipe.unet.parameters())


def test_flops_counted_at_run_end_without_holding_the_module() -> None:
    demo = build_pipeline("wan", device="cpu")
    pipe = demo.pipe
    prof = _prof()
    gd.instrument(pipe, prof)
    kw = dict(demo.call_kwargs, num_inference_steps=2)
    ref = weakref.ref(pipe.transformer)
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    with prof:
        pipe(**kw)
        g = prof.run.metadata["generations"][0]
        assert g["flops"]["status"] == "pending"
        gd.uninstrument(pipe)
        del pipe, demo
        gc.collect()
        assert ref() is None, "the integration kept the denoiser alive after the call"
    fl = prof.run.metadata["generations"][0]["flops"]
    assert fl["status"] == "counted" and fl["reason"] is None
    assert len(fl["steps"]) == 2 and all(s["flops"] and s["flops"] > 0 for s in fl["steps"])
    (per_forward,) = fl["per_forward"]
    assert fl["steps"][0]["flops"] == 2 * per_forward  # Wan: guidance as two forwards per step
    assert per_forward >= 2 * n_params  # at least one multiply-add per weight per token


def test_recipe_is_retaken_when_dtype_changes() -> None:
    demo = build_pipeline("sd", device="cpu")
    unet = demo.pipe.unet
    r1 = flops_mod.recipe_of(unet)
    assert flops_mod.recipe_of(unet) is r1
    unet.to(torch.float64)
    r2 = flops_mod.recipe_of(unet)
    assert r2 is not r1 and set(r2.dtypes.values()) == {torch.float64}
    with pytest.raises(TypeError, match="cannot be rebuilt"):
        flops_mod.recipe_of(torch.nn.Linear(2, 2))


def test_step_attributes_and_batches_filled_after_the_call() -> None:
    demo = build_pipeline("sd", device="cpu")
    prof = _prof()
    gd.instrument(demo.pipe, prof)
    try:
        with prof:
            demo.pipe(**dict(demo.call_kwargs, num_inference_steps=3))
    finally:
        gd.uninstrument(demo.pipe)
    steps = [s for s in prof.run.spans if s.kind == "step"]
    assert [s.attributes["denoiser_forwards"] for s in steps] == [1, 1, 1]
    assert [s.attributes["forward_batch"] for s in steps] == [[2], [2], [2]]  # CFG batched
    g = prof.run.metadata["generations"][0]
    assert g["denoiser_forwards"]["batch_per_forward"] == [2, 2, 2]
    assert g["denoiser_forwards"]["by_module"] == {"unet": 3}


def test_old_module_paths_keep_their_names() -> None:
    from genprof.integrations import diffusers_facts as old_facts

    assert old_facts.fast_spec is facts.fast_spec and old_facts.pipeline_facts is facts.pipeline_facts
    for name in ("instrument", "uninstrument", "profile_pipeline", "profile_load", "InstrumentHandle",
                 "LoadRecorder", "refresh_utilization", "_CallState", "_chain_callback", "_run_phase", "_call_params"):
        assert hasattr(gd, name), name
    assert genprof.instrument is gd.instrument and genprof.profile_load is gd.profile_load
