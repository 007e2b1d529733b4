"""Small statistics shared by analysis and tuning: Spearman rank correlation.

Written here (Pearson correlation of ranks, a few lines) rather than importing scipy, which
is not a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks of ``xs``; tied values share the mean of their ranks."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties get average ranks); ``None`` for fewer than 3 pairs, sides
    of different lengths, or a constant side."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


__all__ = ["ranks", "spearman"]
