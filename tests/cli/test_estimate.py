import json

import pytest

from genprof.cli.main import main

pytest.importorskip("torch")


@pytest.mark.slow
def test_estimate_table_and_json(capsys):
    assert main(["estimate", "--model", "sd1.5", "--height", "512", "--width", "512"]) == 0
    out = capsys.readouterr().out
    assert "vae_decode" in out and "reserved" in out and "UNet2DConditionModel" in out
    assert main(["estimate", "--model", "sd1.5", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["peak_reserved_bytes"] >= d["peak_allocated_bytes"] > 0


def test_estimate_bad_model_exits_2(capsys):
    assert main(["estimate", "--model", "no-such-model"]) == 2
    assert "known models" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _trace_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPROF_CACHE_DIR", str(tmp_path / "cache"))


def _fits_80(out):
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "\u2026" not in out and "..." not in out  # nothing cut with an ellipsis


def test_estimate_list_names_every_model(capsys, monkeypatch):
    from genprof.catalog import MODEL_NAMES

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["estimate", "--list"]) == 0
    out = capsys.readouterr().out
    for name in MODEL_NAMES:
        assert name in out
    _fits_80(out)


def test_estimate_without_model_says_what_to_pass(capsys):
    assert main(["estimate"]) == 2
    assert "--model is required" in capsys.readouterr().err


@pytest.mark.slow
def test_estimate_one_component_at_80_columns_states_traced_batch(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["estimate", "--model", "sd1.5", "--component", "vae_decode"]) == 0
    out = capsys.readouterr().out
    _fits_80(out)
    assert "vae_decode" in out and "denoise" not in out.split("peak GPU memory")[1].split("note:")[0]
    assert "CFG doubles it in one call: denoiser traced at batch 2" in out.replace("\n", " ")
    assert "reserved (GiB)" in out and "kept tensors (KiB)" in out  # one unit per row, in its label
    assert main(["estimate", "--model", "sd1.5", "--component", "vae_decode", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in d["phases"]] == ["vae_decode"]
    assert main(["estimate", "--model", "sd1.5", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    whole = next(p for p in full["phases"] if p["name"] == "vae_decode")
    # alone, the decode carries no cache from the denoise phase; the rest of the phase is the same
    assert d["phases"][0]["peak_allocated_bytes"] == whole["peak_allocated_bytes"]
    assert d["phases"][0]["peak_reserved_bytes"] <= whole["peak_reserved_bytes"]


@pytest.mark.slow
def test_estimate_reserved_method_flag_reaches_the_estimate(capsys):
    # the denoising phase alone keeps this quick; both methods answer, and say which one was used
    args = ["estimate", "--model", "sd1.5", "--component", "unet", "--json"]
    out = {}
    for method in ("factor", "replay"):
        assert main([*args, "--reserved-method", method]) == 0
        out[method] = json.loads(capsys.readouterr().out)
    for method, d in out.items():
        assert d["settings"]["reserved_method"] == method  # the method is recorded in the result
        assert d["peak_reserved_bytes"] >= d["peak_allocated_bytes"] > 0
    assert out["factor"]["peak_reserved_bytes"] != out["replay"]["peak_reserved_bytes"]
    assert "allocator replay" in out["replay"]["method"] and "fitted reserved factors" in out["factor"]["method"]
    # the table says where its reserved row came from; the replay is the default
    assert main(args[:-1]) == 0
    assert "reserved from replaying the call's traced allocations" in " ".join(capsys.readouterr().out.split())
    assert main([*args[:-1], "--reserved-method", "factor"]) == 0
    assert "reserved from the fitted reserved factors" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main([*args, "--reserved-method", "guess"])
