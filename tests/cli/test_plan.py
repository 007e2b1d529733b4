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
