"""Host cost of one span (open + close), by configuration.

    python bench/bench_span_cost.py [--n 5000] [--repeats 25] [--gc on|freeze|off] [--out span_cost.json]

Modes: disabled (enabled: false); host-only (no GPU timing, no allocator or RSS reads,
no energy); gpu-timing (CUDA events only); default (events + allocator peaks with reset +
RSS). Step spans, empty bodies, each repeat in a fresh profiler; the repeats run in rounds that
interleave the modes and an interpreter-speed reference (an empty Python ``with``); median, min
and max over the rounds, and the garbage collector's share. (Until session 3 the default was 7
repeats of 20,000 spans per mode, one mode after the other.) On a machine without CUDA the GPU
modes are skipped and say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time

from genprof.profiler import Profiler

MODES = {
    "disabled": {"enabled": False},
    "host-only": {"gpu_timing": False, "memory_tracking": False, "track_rss": False, "energy_spans": "none"},
    "gpu-timing": {"gpu_timing": True, "memory_tracking": False, "track_rss": False, "energy_spans": "none"},
    "default": {},
}


class GcTime:
    """Time the garbage collector runs, from ``gc.callbacks`` (its start and stop phases)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.collections = [0, 0, 0]
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._t
            self.collections[info["generation"]] += 1


GC = GcTime()


def one(prof: Profiler, n: int) -> tuple[float, float]:
    """Seconds per span, and of them in the garbage collector."""
    g0 = GC.total_s
    t = time.perf_counter()
    for i in range(n):
        with prof.span("step", "step", index=i):
            pass
    return (time.perf_counter() - t) / n, (GC.total_s - g0) / n


class _PyCM:
    """The cheapest context manager written in Python: the interpreter-speed reference."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def reference(n: int) -> float:
    """Seconds per ``with`` on a Python context manager that does nothing.

    Lent VM instances differ 1.5-2.5x in Python speed; a span's cost divided by this one is a
    figure that carries from one instance to another.
    """
    cm = _PyCM()
    t = time.perf_counter()
    for _ in range(n):
        with cm:
            pass
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000, help="spans per repeat")
    ap.add_argument("--repeats", type=int, default=25, help="rounds; each runs every mode once, interleaved")
    ap.add_argument("--gc", choices=("on", "freeze", "off"), default="on",
                    help="garbage collector: as is (default); gc.freeze() after the imports, so full "
                         "collections skip the objects that torch and the rest created; off")
    ap.add_argument("--out")
    a = ap.parse_args()
    try:
        import torch

        cuda = torch.cuda.is_available()
        device = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    except ImportError:
        cuda, device = False, "cpu (no torch)"
    tracked = len(gc.get_objects())
    if a.gc == "freeze":
        gc.collect()
        gc.freeze()
    elif a.gc == "off":
        gc.disable()
    gc.callbacks.append(GC)
    results: dict[str, object] = {"device": device, "python": platform.python_version(), "n": a.n,
                                  "repeats": a.repeats, "gc": a.gc,
                                  "gc_tracked_objects_at_start": tracked, "modes": {}}
    refs = []
    modes = {m: kw for m, kw in MODES.items() if cuda or m != "gpu-timing"}
    for m in MODES:
        if m not in modes:
            results["modes"][m] = {"skipped": "no CUDA"}  # type: ignore[index]
    samples: dict[str, list[float]] = {m: [] for m in modes}
    gc_s: dict[str, list[float]] = {m: [] for m in modes}
    order = list(modes)
    for rnd in range(a.repeats):
        # rounds interleave the modes (in a rotating order) and the reference, so a stretch of
        # time in which the VM runs slow falls on every mode alike instead of on one mode's repeats
        for mode in order[rnd % len(order):] + order[: rnd % len(order)]:
            # a fresh profiler per repeat: a run of n spans, as a real run holds thousands, not
            # hundreds of thousands (the garbage collector's work grows with the spans kept)
            with Profiler("span-cost", handle_sigterm=False, monitor_cpu_usage=False, **modes[mode]) as prof:
                one(prof, 500)
                per_span, in_gc = one(prof, a.n)
                samples[mode].append(per_span)
                gc_s[mode].append(in_gc)
        refs.append(reference(a.n))
    for mode in modes:
        xs, gs = samples[mode], gc_s[mode]
        results["modes"][mode] = {  # type: ignore[index]
            "median_us": round(statistics.median(xs) * 1e6, 3),
            "min_us": round(min(xs) * 1e6, 3),
            "max_us": round(max(xs) * 1e6, 3),
            "gc_us_per_span_median": round(statistics.median(gs) * 1e6, 3),
            "gc_us_per_span_mean": round(statistics.fmean(gs) * 1e6, 3),
            "median_without_gc_us": round(statistics.median([x - g for x, g in zip(xs, gs, strict=True)]) * 1e6, 3),
        }
    ref_us = statistics.median(refs) * 1e6
    results["reference_with_us"] = round(ref_us, 4)
    for r in results["modes"].values():  # type: ignore[union-attr]
        if "median_us" in r:
            r["median_in_reference_withs"] = round(r["median_us"] / ref_us, 2)
    print(f"device: {device}  python {platform.python_version()}")
    print(f"reference: an empty Python context manager's with statement, median {ref_us:.4f} us")
    print(f"garbage collector: {a.gc}; {results['gc_tracked_objects_at_start']} tracked objects at start; "
          f"collections by generation {GC.collections}")
    print(f"{'mode':12s} {'median us/span':>15s} {'min':>8s} {'max':>8s} {'x reference':>12s} {'in GC':>7s} "
          f"{'without GC':>11s}")
    for mode in MODES:
        r = results["modes"][mode]  # type: ignore[index]
        if "skipped" in r:
            print(f"{mode:12s} skipped: {r['skipped']}")
        else:
            print(f"{mode:12s} {r['median_us']:15.3f} {r['min_us']:8.3f} {r['max_us']:8.3f} "
                  f"{r['median_in_reference_withs']:12.1f} {r['gc_us_per_span_median']:7.3f} "
                  f"{r['median_without_gc_us']:11.3f}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
