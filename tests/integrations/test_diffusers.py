"""diffusers integration on tiny random-weight pipelines (CPU).

Every check compares what genprof recorded with what the pipeline did, observed
independently: forward hooks of the test's own, the user's callback, output shapes.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import genprof  # noqa: E402
from genprof.integrations import diffusers as gd  # noqa: E402
from genprof.integrations.demo import build_pipeline  # noqa: E402

# kind -> (denoiser component, forwards per step, batch per forward, video?)
EXPECT = {
    "wan": ("transformer", 2, 1, True),
    "wan22-5b": ("transformer", 2, 1, True),
    "sd": ("unet", 1, 2, False),
    "sdxl": ("unet", 1, 2, False),
    "flux": ("transformer", 1, 1, False),
    "cogvideox": ("transformer", 1, 2, True),
}


def _count_forwards(module: Any) -> tuple[list[int], Any]:
    calls: list[int] = []

    def hook(mod: Any, args: Any, kwargs: Any, out: Any) -> None:
        calls.append(1)

    return calls, module.register_forward_hook(hook, with_kwargs=True)


def _profile(pipe: Any, call_kwargs: dict[str, Any], **instr: Any) -> tuple[genprof.Run, Any]:
    prof = genprof.Profiler("test", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0)
    gd.instrument(pipe, prof, **instr)
    try:
        with prof:
            out = pipe(**call_kwargs)
    finally:
        gd.uninstrument(pipe)
    return prof.run, out


def _children(run: genprof.Run, span: Any) -> list[Any]:
    return sorted(run.children(span), key=lambda s: s.start_s)


@pytest.mark.parametrize("kind", list(EXPECT))
def test_tiny_pipeline_phases_steps_forwards_latents(kind: str) -> None:
    demo = build_pipeline(kind, device="cpu")
    den_name, per_step, batch, video = EXPECT[kind]
    den = getattr(demo.pipe, den_name)
    calls, h = _count_forwards(den)
    seen_steps: list[int] = []

    def user_cb(pipe: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        seen_steps.append(i)
        return kw

    try:
        run, out = _profile(demo.pipe, {**demo.call_kwargs, "callback_on_step_end": user_cb})
    finally:
        h.remove()
    steps_asked = demo.call_kwargs["num_inference_steps"]
    # the user's callback still ran, once per step
    assert seen_steps == list(range(steps_asked))
    (gen,) = run.iter_spans(kind="generation")
    phases = [s.name for s in _children(run, gen)]
    assert phases == ["text_encode", "denoise", "vae_decode", "postprocess"]
    (denoise,) = [s for s in _children(run, gen) if s.name == "denoise"]
    steps = _children(run, denoise)
    assert [s.index for s in steps] == list(range(steps_asked))
    assert all(s.kind == "step" for s in steps)
    assert sum(s.attributes["denoiser_forwards"] for s in steps) == len(calls)
    assert all(s.attributes["denoiser_forwards"] == per_step for s in steps)
    assert all(b == batch for s in steps for b in s.attributes["forward_batch"])
    # consecutive steps share their boundary (opened at the previous step's callback), and the
    # last one closes at its own callback: none is left aborted or open
    assert all(s.status == "ok" for s in steps)
    for a, b in zip(steps, steps[1:], strict=False):
        assert a.start_s + a.duration_s == pytest.approx(b.start_s, abs=1e-9)
    assert steps[-1].start_s + steps[-1].duration_s <= denoise.start_s + denoise.duration_s

    (g,) = run.metadata["generations"]
    assert g["span_id"] == gen.id
    assert g["steps"] == steps_asked
    assert g["denoiser_forwards"]["total"] == len(calls)
    frames = out.frames if video else out.images
    arr = frames if hasattr(frames, "shape") else None
    assert arr is not None
    if video:
        assert g["output_frames"] == arr.shape[0] * arr.shape[1]
        assert g["fps"] == demo.fps or g["fps"] is not None
    else:
        assert g["output_frames"] == arr.shape[0]
        assert g["fps"] is None
    lat = g["latents"]["decode"]
    vae = demo.pipe.vae
    assert lat["layout"] == ("BCTHW" if video else "BCHW")
    channels = getattr(vae.config, "z_dim", None) or vae.config.latent_channels
    assert lat["dims"]["C"] == channels
    assert lat["bytes"] == lat["elements"] * 4  # float32 on CPU
    out_h, out_w = arr.shape[-3], arr.shape[-2]  # numpy output is (..., H, W, C)
    assert lat["compression"]["spatial"] == pytest.approx(out_h * out_w / (lat["dims"]["H"] * lat["dims"]["W"]))
    if video:
        assert lat["compression"]["temporal"] == pytest.approx(arr.shape[1] / lat["dims"]["T"])
    fl = g["flops"]
    assert fl["reason"] is None and fl["total_flops"] and fl["total_flops"] > 0
    assert len(fl["steps"]) == steps_asked
    assert all(s["mfu"] is None and s["mfu_reason"] for s in fl["steps"])  # CPU: no peak figure
    facts = run.metadata["pipeline"]
    assert facts["class"] == type(demo.pipe).__name__
    assert facts["components"][den_name]["parameters"] == sum(p.numel() for p in den.parameters())


def test_architecture_families() -> None:
    fam = {}
    for kind in ("sd", "flux", "wan"):
        pipe = build_pipeline(kind, device="cpu").pipe
        den = pipe.unet if kind == "sd" else pipe.transformer
        fam[kind] = gd.facts.detect_architecture(den)["family"]
    assert fam == {"sd": "unet", "flux": "mmdit", "wan": "video_dit"}


def test_meta_flops_equal_flops_of_the_real_forward() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    demo = build_pipeline("wan", device="cpu")
    captured: list[tuple[Any, Any]] = []
    h = demo.pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: captured.append((a, dict(k))) if not captured else None, with_kwargs=True
    )
    try:
        run, _ = _profile(demo.pipe, demo.call_kwargs)
    finally:
        h.remove()
    a, k = captured[0]
    counter = FlopCounterMode(display=False)
    # torch's CPU flash-attention kernel has no FLOP formula registered, so the real forward is
    # counted with the math SDPA backend (matmuls, counted); CUDA attention kernels have formulas.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        demo.pipe.transformer(*a, **k)
    assert run.metadata["generations"][0]["flops"]["per_forward"] == [counter.get_total_flops()]


def test_pipeline_callback_objects_keep_their_tensor_inputs() -> None:
    from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

    got: list[list[str]] = []

    class Spy(PipelineCallback):
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> Any:
            got.append(sorted(callback_kwargs))
            return callback_kwargs

    demo = build_pipeline("wan", device="cpu")
    run, _ = _profile(demo.pipe, {**demo.call_kwargs, "callback_on_step_end": Spy()})
    assert got == [["latents"]] * 3
    assert run.metadata["generations"][0]["steps"] == 3
    got.clear()
    run, _ = _profile(demo.pipe, {**demo.call_kwargs, "callback_on_step_end": MultiPipelineCallbacks([Spy(), Spy()])})
    assert len(got) == 6 and run.metadata["generations"][0]["steps"] == 3


def test_scheduler_step_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = build_pipeline("sd", device="cpu")
    monkeypatch.setitem(gd._call_params, type(demo.pipe), False)
    run, _ = _profile(demo.pipe, demo.call_kwargs)
    g = run.metadata["generations"][0]
    assert g["step_mode"] == "scheduler.step"
    assert g["steps"] == 3 and g["denoiser_forwards"]["per_step"] == [1, 1, 1]
    assert "step" not in demo.pipe.scheduler.__dict__  # restored after the call


def test_instrument_twice_then_uninstrument_restores_everything() -> None:
    demo = build_pipeline("sd", device="cpu")
    pipe = demo.pipe
    cls = type(pipe)
    n_hooks = len(pipe.unet._forward_pre_hooks)
    prof = genprof.Profiler("t")
    h1 = gd.instrument(pipe, prof)
    h2 = gd.instrument(pipe, prof)
    assert h1 is h2
    assert len(pipe.unet._forward_pre_hooks) == n_hooks + 1
    with prof:
        pipe(**demo.call_kwargs)
    assert prof.run.metadata["generations"][0]["denoiser_forwards"]["per_step"] == [1, 1, 1]
    assert gd.uninstrument(pipe) is True
    assert type(pipe) is cls
    assert len(pipe.unet._forward_pre_hooks) == n_hooks
    assert "decode" not in pipe.vae.__dict__ and "encode_prompt" not in pipe.__dict__
    assert type(pipe.image_processor) is diffusers.image_processor.VaeImageProcessor
    assert type(pipe.vae) is diffusers.AutoencoderKL
    assert gd.uninstrument(pipe) is False
    pipe(**demo.call_kwargs)  # still works


def test_active_profiler_is_found_and_no_profiler_means_plain_call() -> None:
    demo = build_pipeline("sd", device="cpu")
    gd.instrument(demo.pipe)  # no profiler: whichever is active at call time
    try:
        out = demo.pipe(**demo.call_kwargs)  # none active: runs plainly
        assert out.images.shape[0] == 1
        with genprof.Profiler("outer") as prof:
            demo.pipe(**demo.call_kwargs)
        assert len(prof.run.metadata["generations"]) == 1
    finally:
        gd.uninstrument(demo.pipe)


def test_exception_in_call_is_recorded_and_state_restored() -> None:
    demo = build_pipeline("sd", device="cpu")

    def boom(pipe: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if i == 1:
            raise RuntimeError("user callback failed")
        return kw

    prof = genprof.Profiler("t")
    gd.instrument(demo.pipe, prof)
    with pytest.raises(RuntimeError), prof:
        demo.pipe(**demo.call_kwargs, callback_on_step_end=boom)
    gd.uninstrument(demo.pipe)
    (gen,) = prof.run.iter_spans(kind="generation")
    assert gen.status == "error"
    assert prof.run.metadata["generations"][0]["status"] == "error"
    assert prof.run.end.status == "exception"


def test_swapped_component_is_picked_up() -> None:
    demo = build_pipeline("sd", device="cpu")
    prof = genprof.Profiler("t")
    gd.instrument(demo.pipe, prof)
    import copy

    demo.pipe.unet = copy.deepcopy(demo.pipe.unet)
    demo.pipe.vae = copy.deepcopy(demo.pipe.vae)
    with prof:
        demo.pipe(**demo.call_kwargs)
    gd.uninstrument(demo.pipe)
    g = prof.run.metadata["generations"][0]
    assert g["denoiser_forwards"]["total"] == 3
    assert g["latents"]["decode"] is not None


def test_vae_encode_phase_for_image_to_image() -> None:
    demo = build_pipeline("sd", device="cpu")
    pipe = diffusers.StableDiffusionImg2ImgPipeline(**demo.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 16, 16)
    run, _ = _profile(pipe, {"prompt": "a cat", "image": image, "num_inference_steps": 4, "strength": 0.5,
                             "output_type": "np"})
    (gen,) = run.iter_spans(kind="generation")
    names = [s.name for s in _children(run, gen)]
    assert "vae_encode" in names and names.index("vae_encode") < names.index("denoise")
    enc = run.metadata["generations"][0]["latents"]["encode"]
    assert enc["input_frames"] == 1 and enc["input_bytes"] == 3 * 16 * 16 * 4
    assert enc["frames_per_s"] > 0 and enc["megabytes_per_s"] > 0
    assert enc["latent"]["dims"]["C"] == 4


def test_profile_pipeline_context_manager(tmp_path: Any) -> None:
    demo = build_pipeline("flux", device="cpu")
    with gd.profile_pipeline(demo.pipe, name="flux-test", output_dir=str(tmp_path)) as prof:
        demo.pipe(**demo.call_kwargs)
        demo.pipe(**demo.call_kwargs)
    assert type(demo.pipe) is diffusers.FluxPipeline
    run = genprof.load_run(prof.run_path)
    assert [g["steps"] for g in run.metadata["generations"]] == [2, 2]
    assert run.metadata["pipeline"]["architecture"]["family"] == "mmdit"


def test_profile_load_records_each_component() -> None:
    import transformers

    from genprof.integrations.demo import _t5

    with genprof.Profiler("load") as prof:
        with gd.profile_load() as load:
            with load.component("text_encoder") as slot:
                slot.module = _t5(transformers)
            load.placed("other", torch.nn.Linear(4, 4))
    entries = prof.run.metadata["load"]
    assert [e["component"] for e in entries] == ["text_encoder", "other"]
    assert entries[0]["parameters"] == sum(p.numel() for p in slot.module.parameters())
    assert entries[0]["rss_bytes"] > 0 and entries[0]["duration_s"] > 0
    (load_span,) = [s for s in prof.run.spans if s.name == "load"]
    assert [s.name for s in prof.run.children(load_span)] == ["text_encoder"]
    assert prof.run.usage_statistics()["initialization_time_s"] is not None


def test_wan22_two_experts_and_latent_output() -> None:
    import copy

    demo = build_pipeline("wan", device="cpu")
    p = demo.pipe
    pipe = diffusers.WanPipeline(tokenizer=p.tokenizer, text_encoder=p.text_encoder, transformer=p.transformer,
                                 transformer_2=copy.deepcopy(p.transformer), vae=p.vae, scheduler=p.scheduler,
                                 boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    run, _ = _profile(pipe, {**demo.call_kwargs, "num_inference_steps": 4, "output_type": "latent"})
    g = run.metadata["generations"][0]
    by = g["denoiser_forwards"]["by_module"]
    assert set(by) == {"transformer", "transformer_2"} and sum(by.values()) == 8
    assert by["transformer"] > 0 and by["transformer_2"] > 0
    assert g["output_frames"] is None and g["latents"]["decode"] is None
    (gen,) = run.iter_spans(kind="generation")
    assert [s.name for s in _children(run, gen)] == ["text_encode", "denoise"]


class _StepLog:
    """A step listener that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, Any]] = []

    def on_step_start(self, index: int) -> None:
        self.events.append(("start", index, None))

    def on_step_end(self, index: int, span: Any) -> None:
        self.events.append(("end", index, span))


@pytest.mark.parametrize("scheduler_step", [False, True])
def test_step_listener_sees_each_step_start_and_end(scheduler_step: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = build_pipeline("sd", device="cpu")
    if scheduler_step:  # steps then end in scheduler.step and open at the next forward
        monkeypatch.setitem(gd._call_params, type(demo.pipe), False)
    prof = genprof.Profiler("listener", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0)
    handle = gd.instrument(demo.pipe, prof)
    seen = _StepLog()
    remove = handle.add_step_listener(seen)
    try:
        with prof:
            demo.pipe(**dict(demo.call_kwargs, num_inference_steps=3))
            remove()
            demo.pipe(**dict(demo.call_kwargs, num_inference_steps=2))
    finally:
        gd.uninstrument(demo.pipe)
    steps = [s for s in prof.run.spans if s.kind == "step"]
    assert [(k, i) for k, i, _ in seen.events] == [("start", 0), ("end", 0), ("start", 1), ("end", 1),
                                                  ("start", 2), ("end", 2)]
    assert [sp for k, _, sp in seen.events if k == "end"] == steps[:3]  # the first call's step spans
    assert len(steps) == 5  # the second call ran with the listener removed


def test_each_generation_span_names_its_pipeline() -> None:
    wan, sd = build_pipeline("wan", device="cpu"), build_pipeline("sd", device="cpu")
    prof = genprof.Profiler("two", gpu_monitor_interval=1.0, cpu_monitor_interval=1.0)
    with prof:
        for d in (wan, sd, wan):
            gd.instrument(d.pipe, prof)
            try:
                d.pipe(**dict(d.call_kwargs, num_inference_steps=1))
            finally:
                gd.uninstrument(d.pipe)
    gens = [s for s in prof.run.spans if s.kind == "generation"]
    assert [g.attributes["pipeline"] for g in gens] == ["WanPipeline", "StableDiffusionPipeline", "WanPipeline"]
    assert [g["pipeline_class"] for g in prof.run.metadata["generations"]] == [g.attributes["pipeline"] for g in gens]


def test_profile_pipeline_writes_html_next_to_the_run_file(tmp_path: Any) -> None:
    pytest.importorskip("plotly")
    demo = build_pipeline("sd", device="cpu")
    with gd.profile_pipeline(demo.pipe, name="sd-html", output_dir=str(tmp_path)) as prof:
        demo.pipe(**dict(demo.call_kwargs, num_inference_steps=1))
    assert prof.run_path is not None
    html = prof.run_path.with_suffix(".html")
    assert html.is_file() and "<html" in html.read_text(encoding="utf-8").lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([prof.run_path.name, html.name])


def test_profile_pipeline_without_plotly_logs_why_no_html(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from genprof.errors import MissingDependencyError
    from genprof.render import html as html_mod

    def no_plotly(*a: Any, **k: Any) -> Any:
        raise MissingDependencyError("plotly", "the HTML report", extra="html")

    monkeypatch.setattr(html_mod, "write_html", no_plotly)
    demo = build_pipeline("sd", device="cpu")
    with caplog.at_level("WARNING"):
        with gd.profile_pipeline(demo.pipe, output_dir=str(tmp_path)) as prof:
            demo.pipe(**dict(demo.call_kwargs, num_inference_steps=1))
    assert [p.name for p in tmp_path.iterdir()] == [prof.run_path.name]  # the run file is intact
    lines = [r.getMessage() for r in caplog.records if "HTML report not written" in r.getMessage()]
    assert len(lines) == 1 and "plotly" in lines[0]


def test_profile_pipeline_leaves_reports_to_the_config_when_it_asks_for_them(tmp_path: Any) -> None:
    demo = build_pipeline("sd", device="cpu")
    with gd.profile_pipeline(demo.pipe, output_dir=str(tmp_path), generate_final_report=True,
                             report_format="json") as prof:
        demo.pipe(**dict(demo.call_kwargs, num_inference_steps=1))
    assert not list(tmp_path.glob("*.html")) and prof.run_path is not None


def test_a_failing_html_renderer_returns_none_and_says_so(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from genprof.render import html as html_mod

    def broken(*a: Any, **k: Any) -> Any:
        raise KeyError("figure")

    monkeypatch.setattr(html_mod, "write_html", broken)
    with caplog.at_level("ERROR"):
        run = genprof.Run(name="r", run_id="0", started_at="2026-01-01T00:00:00Z", started_unix_s=0.0)
        assert gd.write_html_report(run, tmp_path / "r.html") is None
    assert any("KeyError" in r.getMessage() for r in caplog.records)


def test_instrument_diagnose_records_a_window_over_the_calls_steps_with_the_denoiser_scoped() -> None:
    demo = build_pipeline("sd", device="cpu")
    steps = demo.call_kwargs["num_inference_steps"]
    assert steps >= 3
    run, _ = _profile(demo.pipe, demo.call_kwargs, diagnose="steps:1-2")
    d = run.metadata["diagnosis"]
    assert d["status"] == "ok" and d["steps"] == [1, 2], d.get("status_reason")
    assert any(r.startswith("unet") for r in d["scope_roots"]), d["scope_roots"]
    scoped = [o for o in d["cpu_ops"] if (o.get("scope") or "").startswith("unet")]
    assert scoped and all(o["step"] in (1, 2) for o in scoped)


def test_instrument_refuses_a_bad_diagnose_window_before_any_call() -> None:
    demo = build_pipeline("sd", device="cpu")
    with pytest.raises(genprof.errors.UsageError, match="diagnose"):
        gd.instrument(demo.pipe, diagnose="steps:x")
    assert not hasattr(type(demo.pipe), "_genprof_original_class")
