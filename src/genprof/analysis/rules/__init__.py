"""Rules: small pure functions ``rule(run) -> Finding | None`` that turn a run into advice.

Each rule looks for one situation, states the evidence in numbers taken from the run, the
likely cause and a concrete change (with the diffusers call where one exists). A rule
returns ``None`` when the data it needs is missing: a CPU-only run gets no GPU advice, a run
without a utilisation series gets no host-bound verdict. Rules give inference advice only.

The rules live in families, one module each: ``speed`` (the dominant phase, warm-up, steps
that slow down), ``memory`` (peak near capacity, fragmentation, decode peak, float32 weights,
text encoders on the GPU), ``device`` (host-bound loop, throttling) and ``window`` (the
diagnose window's records). Thresholds are module constants of each family, documented with
each rule in ``docs/analysis.md``, and re-exported here. :data:`RULES` lists every rule in the
order :func:`run_rules` applies them.
"""

from __future__ import annotations

import logging

from genprof.analysis.findings import Finding
from genprof.analysis.rules.common import Rule
from genprof.analysis.rules.device import (
    IDLE_MIN_SAMPLES,
    IDLE_UTIL_PCT,
    THROTTLE_MIN_SHARE,
    rule_gpu_idle_between_steps,
    rule_throttling,
)
from genprof.analysis.rules.memory import (
    DECODE_MEM_MIN_GAP_BYTES,
    DECODE_MEM_RATIO,
    FRAG_MIN_GAP_BYTES,
    FRAG_RATIO,
    NEAR_CAPACITY,
    NEAR_CAPACITY_CRITICAL,
    TEXT_ENCODER_MIN_BYTES,
    rule_decode_memory,
    rule_fp32_weights,
    rule_fragmentation,
    rule_peak_near_capacity,
    rule_text_encoder_on_gpu,
)
from genprof.analysis.rules.speed import (
    DOMINANT_PHASE_SHARE,
    SLOWDOWN_MIN_RANK_CORR,
    SLOWDOWN_MIN_STEPS,
    SLOWDOWN_RATIO,
    WARMUP_MIN_STEPS,
    WARMUP_RATIO,
    rule_dominant_phase,
    rule_steps_slow_down,
    rule_warmup_steps,
)
from genprof.analysis.rules.window import (
    CLASS_LOW_PEAK_SHARE,
    DIAGNOSE_RULES,
    SYNC_MIN_SHARE,
    WINDOW_IDLE_SHARE,
    rule_graph_breaks,
    rule_host_syncs,
    rule_recompiles,
    rule_window_gpu_idle,
    rule_window_time_breakdown,
)
from genprof.analysis.stats import spearman
from genprof.model import Run

log = logging.getLogger(__name__)

RULES: list[Rule] = [
    rule_dominant_phase,
    rule_warmup_steps,
    rule_gpu_idle_between_steps,
    rule_peak_near_capacity,
    rule_fragmentation,
    rule_throttling,
    rule_decode_memory,
    rule_fp32_weights,
    rule_text_encoder_on_gpu,
    rule_steps_slow_down,
    *DIAGNOSE_RULES,
]

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def run_rules(run: Run, rules: list[Rule] | None = None) -> list[Finding]:
    """Apply rules (default :data:`RULES`) and return their findings, most severe first.

    A rule that fails on an unexpected run layout is skipped with a logged warning naming it,
    so one odd field never hides the other findings.
    """
    out: list[Finding] = []
    for rule in RULES if rules is None else rules:
        try:
            f = rule(run)
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError, IndexError) as exc:
            log.warning("rule %s skipped: %s: %s", getattr(rule, "__name__", rule), type(exc).__name__, exc)
            continue
        if f is not None:
            out.append(f)
    out.sort(key=lambda f: _SEVERITY_ORDER.get(f.severity, 3))
    return out


__all__ = [
    "CLASS_LOW_PEAK_SHARE",
    "DECODE_MEM_MIN_GAP_BYTES",
    "DECODE_MEM_RATIO",
    "DIAGNOSE_RULES",
    "DOMINANT_PHASE_SHARE",
    "FRAG_MIN_GAP_BYTES",
    "FRAG_RATIO",
    "IDLE_MIN_SAMPLES",
    "IDLE_UTIL_PCT",
    "NEAR_CAPACITY",
    "NEAR_CAPACITY_CRITICAL",
    "RULES",
    "SLOWDOWN_MIN_RANK_CORR",
    "SLOWDOWN_MIN_STEPS",
    "SLOWDOWN_RATIO",
    "SYNC_MIN_SHARE",
    "TEXT_ENCODER_MIN_BYTES",
    "THROTTLE_MIN_SHARE",
    "WARMUP_MIN_STEPS",
    "WARMUP_RATIO",
    "WINDOW_IDLE_SHARE",
    "Rule",
    "run_rules",
    "spearman",
    "rule_dominant_phase",
    "rule_warmup_steps",
    "rule_gpu_idle_between_steps",
    "rule_peak_near_capacity",
    "rule_fragmentation",
    "rule_throttling",
    "rule_decode_memory",
    "rule_fp32_weights",
    "rule_text_encoder_on_gpu",
    "rule_steps_slow_down",
    "rule_host_syncs",
    "rule_window_gpu_idle",
    "rule_window_time_breakdown",
    "rule_graph_breaks",
    "rule_recompiles",
]
