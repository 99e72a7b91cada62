"""Statistical rules shared by the claim checks.

"Linearly connected" (Sharma et al. §2.1): the error barrier is below "the
expected Monte Carlo noise of the empirical loss estimator". lmccheck reads
that as two standard errors of the 0-1 error measured on n examples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: standard errors of the Monte Carlo noise that still count as "no barrier"
MC_NOISE_STDERRS = 2.0


def connected_threshold(error: float, n: int) -> float:
    """The largest error barrier that is still Monte Carlo noise, for endpoint error ``error`` on ``n`` examples."""
    return MC_NOISE_STDERRS * math.sqrt(max(error * (1 - error), 1e-12) / n)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    xs = list(xs)
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)
