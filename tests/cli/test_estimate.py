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
