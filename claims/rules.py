"""Statistical rules shared by the claim checks.

"Linearly connected" (Sharma et al. §2.1): the error barrier is below "the
expected Monte Carlo noise of the empirical loss estimator". lmccheck reads
that as two standard errors of the 0-1 error measured on n examples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

class MeasurementBug(RuntimeError):
    """A measurement contradicted an identity that holds by construction: a bug in lmccheck, never a finding
    (not an ``AssertionError``, so a setting marked as a known finding still fails on it)."""


#: standard errors of the Monte Carlo noise that still count as "no barrier"
MC_NOISE_STDERRS = 2.0


def connected_threshold(error: float, n: int) -> float:
    """The largest error barrier that is still Monte Carlo noise, for endpoint error ``error`` on ``n`` examples."""
    return MC_NOISE_STDERRS * math.sqrt(max(error * (1 - error), 1e-12) / n)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    xs = list(xs)
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def seed_means(rows: Sequence[Sequence[float]]) -> list[float]:
    """Per column, the mean over the rows: ``rows[seed][point]`` -> the mean curve over seeds."""
    return [mean_std([r[j] for r in rows])[0] for j in range(len(rows[0]))] if rows else []


def outside_band(value: float, a: float, b: float, tol: float) -> bool:
    """Whether ``value`` lies outside the interval spanned by ``a`` and ``b``, widened by ``tol`` on both sides."""
    lo, hi = min(a, b), max(a, b)
    return not lo - tol <= value <= hi + tol


def decreasing_steps(values: Sequence[float], tol: float) -> list[int]:
    """Indices ``i`` where ``values[i + 1]`` falls below ``values[i]`` by more than ``tol``."""
    return [i for i in range(len(values) - 1) if values[i + 1] < values[i] - tol]


def first_time_within(times: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """The first time from which ``values`` stay at or below ``target`` for every later time (None: never)."""
    for i in range(len(times)):
        if all(v <= target for v in values[i:]):
            return times[i]
    return None
