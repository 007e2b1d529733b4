import json

import pytest

from genprof.cli.main import main

pytest.importorskip("torch")


@pytest.mark.slow
def test_plan_prints_choice_and_exits_1_when_nothing_fits(capsys):
    assert main(["plan", "--model", "sd1.5", "--budget", "16GiB", "--step-time", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "plan:" in out and "offload=none" in out
    assert main(["plan", "--model", "sd1.5", "--budget", "100MiB", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["fits"] is False and "needs a budget" in d["needed"]


def test_plan_bad_budget_exits_2(capsys):
    assert main(["plan", "--model", "sd1.5", "--budget", "lots"]) == 2
    assert "not a size" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _trace_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.slow
def test_plan_prints_code_device_and_hides_dominated_rows_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plan", "--model", "sd1.5", "--budget", "4GiB"]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "pipe.to(dtype=torch.bfloat16)" in out and "pipe.unet.set_attention_backend" in out
    assert "genprof.apply(pipe, plan)" in out
    assert "H100-class GPU" in out  # the device the time figures assume
    flat = out.replace("\n", " ")
    assert "candidates hidden" in flat and "--all shows every candidate" in flat
    assert main(["plan", "--model", "sd1.5", "--budget", "4GiB", "--all"]) == 0
    every = capsys.readouterr().out
    assert "hidden" not in every
    assert every.count("offload=") > out.count("offload=")


def test_plan_code_matches_the_settings():
    from genprof.planning.plan import plan_code

    code = plan_code({"dtype": "fp16", "offload": "group_leaf_stream", "vae_tiling": True, "layerwise_fp8": True,
                      "attention_backend": "efficient"}, denoiser="transformer")
    text = "\n".join(code)
    assert "pipe.to(dtype=torch.float16)" in text
    assert "pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float16)" in text
    assert "offload_type='leaf_level', use_stream=True" in text
    assert "pipe.vae.enable_tiling()" in text and "enable_slicing" not in text
    assert "set_attention_backend('_native_efficient')" in text
    compile(text, "<plan>", "exec")  # valid Python
