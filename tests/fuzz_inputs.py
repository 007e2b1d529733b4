"""Mutated run files and config files, and the checks every one of them must pass.

Shared by ``tests/test_fuzz_inputs.py`` (hypothesis, short) and ``bench/bench_fuzz_inputs.py``
(at least 10,000 inputs). The checks:

* ``load_run`` either returns a Run or raises :class:`genprof.errors.RunFileError`;
  ``load_config`` either returns a config or raises :class:`genprof.errors.ConfigError`;
* for a run file, ``genprof summary``, ``genprof report`` (HTML, JSON and trace) and
  ``genprof check`` called in-process (``genprof.cli.main.main``) return 0 or 2 (``check`` may
  also return 1: a target not met or not measured) and raise nothing: any exception would be
  a traceback from the command line;
* ``report`` succeeds (0) on every file that ``load_run`` accepts;
* nothing takes longer than ``TIME_LIMIT_S`` (a SIGALRM timer interrupts a hang).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genprof.cli.main import main
from genprof.config import load_config
from genprof.errors import ConfigError, RunFileError
from genprof.model import load_run

TIME_LIMIT_S = 2.0
_HERE = Path(__file__).resolve().parent


def _runs_module() -> Any:
    spec = importlib.util.spec_from_file_location("genprof_fuzz_runs", _HERE / "render" / "runs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def base_runs() -> list[dict[str, Any]]:
    """Small realistic run files (as dicts) to mutate: an ok run with GPU data, an OOM, a CPU-only one."""
    runs = _runs_module()
    out = [
        runs.make_run(generations=1, steps=3, sample_hz=2.0),
        runs.make_run(generations=1, steps=2, sample_hz=1.0, end_status="oom", with_blocks=True, seed=1),
        runs.make_run(generations=1, steps=2, sample_hz=1.0, with_gpu=False, seed=2),
    ]
    return [json.loads(r.to_json()) for r in out]


BASE_CONFIGS = [
    "",
    "gpu_monitor_interval: 0.5\ncpu_monitor_interval: 1\nreport_format: both\nsession_tags: {team: a}\n",
    "profiling:\n  enabled: true\n  output_dir: ./out\n  max_data_points: 500\n  targets: {generation_time_s: 5}\n",
    "preset: prod\nnvtx: false\ndevice_index: 0\nenergy_spans: all\n",
]

# ``RAW:`` strings are written into the JSON text as they are (numbers JSON allows but floats do not hold)
_RAW = ["RAW:1" + "0" * 5000, "RAW:1e400", "RAW:-1e400", "RAW:1" + "0" * 400, "RAW:-1" + "0" * 30,
        "RAW:NaN", "RAW:Infinity", "RAW:1e-400", "RAW:123456789012345678901234567890.5"]
_NASTY: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, 2**64, -(2**70), 1e308, -1e308, 5e-324, 1e9, 1e12, -1e9, 0.5,
    "", "\ud800", "a\udfffb", "\ud83d\ude00", "x" * 5000, "<script>alert(1)</script>", "\x00\x1b[31m",
    "ok", "oom", "phase", "step", "gpu0", [], {}, [1, 2], {"a": {"b": [None]}}, [[[[[]]]]],
    [1e308, -1e308], ["a", None, 3], {"": None}, *_RAW,
]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):  # the first few items of long lists are enough
            yield from _paths(v, (*prefix, i))


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _nasty(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.6:
        return copy.deepcopy(rng.choice(_NASTY))
    if r < 0.8:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.randint(-(2**40), 2**40), rng.random()])
    n = rng.randint(0, 30)
    return "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0, 0x2FFFF)])) for _ in range(n))


def _to_text(obj: Any) -> str:
    raws: list[str] = []

    def sub(o: Any) -> Any:
        if isinstance(o, str) and o.startswith("RAW:"):
            raws.append(o[4:])
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(o, dict):
            return {sub(k) if isinstance(k, str) else k: sub(v) for k, v in o.items()}
        if isinstance(o, list):
            return [sub(x) for x in o]
        return o

    text = json.dumps(sub(obj))
    for i, r in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', r)
    return text


def mutate_run(rng: random.Random, base: dict[str, Any]) -> bytes:
    """One mutated run file: 1-3 structural changes, sometimes a text-level one."""
    obj = copy.deepcopy(base)
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(obj))
        path = rng.choice(paths[1:]) if len(paths) > 1 else ()
        parent = _get(obj, path[:-1]) if path else None
        op = rng.random()
        if parent is None:
            break
        key = path[-1]
        if op < 0.65:
            parent[key] = _nasty(rng)
        elif op < 0.8:
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif op < 0.9 and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif isinstance(parent, dict):
            parent[rng.choice(["\ud800", "extra", "", "x" * 100])] = _nasty(rng)
    data = _to_text(obj).encode("utf-8", "surrogatepass")
    r = rng.random()
    if r < 0.05:
        data = data[: rng.randint(0, len(data))]
    elif r < 0.1:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([rng.randint(0, 255)]) + data[i + 1:]
    return data


def _bomb(levels: int) -> str:
    lines = ["session_tags:", "  a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(levels):
        a, b = chr(97 + i), chr(98 + i)
        lines.append(f"  {b}: &{b} [" + ", ".join([f"*{a}"] * 9) + "]")
    return "\n".join(lines) + "\n"


_CFG_GOOD = {"enabled": ["true", "false"], "gpu_monitor_interval": ["0.5", "1", "0.01"],
             "cpu_monitor_interval": ["2", "0.25"], "display_interval": ["1.0"], "report_format": ["json", "both"],
             "max_data_points": ["100", "20000"], "output_dir": ["./out", "null"], "session_tags": ["{a: 1, b: [x]}"],
             "targets": ["{generation_time_s: 5}"], "preset": ["dev", "prod"], "device_index": ["0", "null"],
             "energy_spans": ["all", "none"], "nvtx": ["true"]}
_CFG_KEYS = ["enabled", "gpu_monitor_interval", "cpu_monitor_interval", "display_interval", "report_format",
             "max_data_points", "output_dir", "session_tags", "targets", "preset", "device_index", "energy_spans",
             "nvtx", "unknown_key", "profiling"]
_CFG_VALUES = [".inf", "-.inf", ".nan", "-1", "0", "1e-9", "90000", "1" + "0" * 400, "1" + "0" * 5000, "true",
               "null", "[dev]", "{a: 1}", "'\\ud800'", "\"\\ud800\"", "dev", "prod", "both", "x" * 300,
               "[" * 60 + "]" * 60, "[" * 3000 + "]" * 3000, "&a 1", "*a", "!!python/object:os.system x",
               "!!binary aGVsbG8=", "2001-12-14", "0x1F", "1_000", "~", "'a': b"]


def mutate_config(rng: random.Random) -> bytes:
    """One config file: a base with lines added, replaced or broken, or a hostile document."""
    r = rng.random()
    if r < 0.05:
        return _bomb(rng.randint(1, 9)).encode()
    lines = rng.choice(BASE_CONFIGS).splitlines()
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(_CFG_KEYS)
        good = _CFG_GOOD.get(key)
        value = rng.choice(good) if good and rng.random() < 0.6 else rng.choice(_CFG_VALUES)
        line = f"{key}: {value}"
        if lines and rng.random() < 0.5:
            lines[rng.randrange(len(lines))] = line
        else:
            lines.insert(rng.randint(0, len(lines)), line)
        if rng.random() < 0.1 and lines:
            lines.append(rng.choice(lines))  # a duplicate key, often
    data = ("\n".join(lines) + "\n").encode("utf-8")
    r = rng.random()
    if r < 0.05:
        data = data + b"# \xff\xfe not UTF-8\n"
    elif r < 0.1 and data:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([rng.randint(0, 255)]) + data[i:]
    return data


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S) -> Iterator[None]:
    """Interrupt the block with :class:`Hang` after ``seconds`` (main thread, Unix)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"took over {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    text = err.getvalue()
    # what goes to a terminal must be encodable (a lone surrogate here crashes a real stdout)
    (out.getvalue() + text).encode("utf-8")
    return code, text


def check_run_bytes(data: bytes, tmp: Path, *, cli: bool = True) -> str:
    """Check one run file; returns ``"accepted"`` or ``"refused"``; raises AssertionError or Hang."""
    path = tmp / "fuzz.json"
    path.write_bytes(data)
    t0 = time.perf_counter()
    with time_limit():
        try:
            load_run(path)
            outcome = "accepted"
        except RunFileError:
            outcome = "refused"
        if cli:
            code, err = _cli(["summary", str(path), "--width", "100"])
            assert code in (0, 2), f"summary exit {code}: {err[-500:]}"
            assert (code == 0) == (outcome == "accepted"), f"summary exit {code} for a file {outcome}: {err[-300:]}"
            code, err = _cli(["report", str(path), "--html", str(tmp / "r.html"), "--json", str(tmp / "r.report.json"),
                              "--trace", str(tmp / "r.trace.json")])
            assert code in (0, 2), f"report exit {code}: {err[-500:]}"
            assert (code == 0) == (outcome == "accepted"), f"report exit {code} for a file {outcome}: {err[-300:]}"
            code, err = _cli(["check", str(path), "-t", "generation_time_s<=1000000", "--findings"])
            assert code in (0, 1, 2), f"check exit {code}: {err[-500:]}"
            assert (code == 2) == (outcome == "refused"), f"check exit {code} for a file {outcome}: {err[-300:]}"
    assert time.perf_counter() - t0 < TIME_LIMIT_S * 2
    return outcome


def check_config_bytes(data: bytes, tmp: Path) -> str:
    path = tmp / "fuzz.yaml"
    path.write_bytes(data)
    with time_limit():
        try:
            load_config(path)
            return "accepted"
        except ConfigError:
            return "refused"

