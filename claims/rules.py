"""Statistical rules shared by the claim checks.

"Linearly connected" (Sharma et al. §2.1): the error barrier is below "the
expected Monte Carlo noise of the empirical loss estimator". lmccheck reads
that as two standard errors of the 0-1 error measured on n examples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats

from lmccheck.verdict import binomial_se

#: "the error barrier after aligning with P_end drops from around 70% (as measured between two differently
#: initialized networks after convergence) to 3-8% at any time t in training" (Sharma et al. §5.1). The paper's
#: worst case is 8% of a 70% converged unaligned barrier: at every t, the aligned error barrier is at most 8/70 of
#: the unaligned error barrier after convergence (S3, and S11's regime 1, which quotes S3's "highly reduced")
HIGHLY_REDUCED_RATIO = 8 / 70


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


def seed_halfwidths(rows: Sequence[Sequence[float]], level: float = 0.95) -> list[float]:
    """Per column, the half-width of the Student t interval of the mean over the rows (``rows[seed][point]``):
    the error bars of a figure's seed means (0 for a single row)."""
    if len(rows) < 2:
        return [0.0] * (len(rows[0]) if rows else 0)
    q = float(stats.t.ppf(0.5 + level / 2, len(rows) - 1))
    return [q * mean_std([r[j] for r in rows])[1] / math.sqrt(len(rows)) for j in range(len(rows[0]))]


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


def error_barrier_se(res: Any) -> float:
    """The test-set standard error of one error barrier (a :class:`~lmccheck.barrier_curves.BarrierResult`):
    the binomial noise of the error at the barrier's alpha and of the line between the endpoints there, on
    ``res.n_examples`` examples, added as if independent (shared examples correlate them positively, so this
    is an upper bound)."""
    a = float(res.error_argmax_alpha)
    n = int(res.n_examples)
    e0, e1 = (float(x) for x in res.error_endpoints)
    peak = (1 - a) * e0 + a * e1 + float(res.error_barrier)
    return math.sqrt(binomial_se(peak, n) ** 2 + ((1 - a) * binomial_se(e0, n)) ** 2 + (a * binomial_se(e1, n)) ** 2)


def mean_noise(ses: Sequence[float]) -> float:
    """The test-set standard error of a seed mean whose seeds were measured on the same examples: the root
    mean square of their standard errors (the examples are shared, so their noise does not average out)."""
    ses = list(ses)
    return math.sqrt(sum(x * x for x in ses) / len(ses)) if ses else 0.0


def contrast_noise(*ses: Sequence[float]) -> float:
    """The test-set standard error of a seed mean of a contrast of several measurements (each a per-seed list
    of standard errors): their noises added in quadrature, an upper bound for measurements on shared examples."""
    return math.sqrt(sum(mean_noise(s) ** 2 for s in ses))
