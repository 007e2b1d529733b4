"""Property-based fuzz of run files and config files (the longer run: ``bench/bench_fuzz_inputs.py``).

Every mutated run file loads or raises RunFileError; ``genprof summary``, ``report`` and ``check``
(in-process) exit 0 or 2 (``check`` also 1 for a target not met), never with a traceback, and
``report`` succeeds on every file ``load_run`` accepts; every config file loads or raises
ConfigError; nothing takes over 2 s. See ``tests/fuzz_inputs.py`` for the mutations.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_inputs as F  # noqa: E402

BASES = F.base_runs()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@pytest.fixture(autouse=True)
def _quiet() -> object:
    logging.disable(logging.CRITICAL)  # the CLI logs every refused file; the checks are the assertions
    yield
    logging.disable(logging.NOTSET)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), base=st.integers(0, len(BASES) - 1))
def test_mutated_run_files_load_or_raise_run_file_error_and_the_cli_never_crashes(rng: random.Random,
                                                                                   base: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        F.check_run_bytes(F.mutate_run(rng, BASES[base]), Path(d))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(["spans", "events", "series", "gpus", "end", "host", "metadata"]),
       key=st.text(max_size=25) | st.sampled_from(["duration_s", "start_s", "t_s", "values", "status", "index",
                                                   "peak_allocated_bytes", "energy_j", "name", "kind", "oom",
                                                   "open_spans", "energy", "generations", "final_memory"]),
       value=json_values)
def test_any_json_value_in_any_field(section: str, key: str, value: object) -> None:
    d = json.loads(json.dumps(BASES[0]))
    target = d[section]
    if isinstance(target, list):
        if not target:
            return
        target = target[0]
    target[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        F.check_run_bytes(json.dumps(d).encode("utf-8", "surrogatepass"), Path(tmp))


@settings(max_examples=300, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_mutated_config_files_load_or_raise_config_error(rng: random.Random) -> None:
    with tempfile.TemporaryDirectory() as d:
        F.check_config_bytes(F.mutate_config(rng), Path(d))
