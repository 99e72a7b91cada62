"""Verdicts from intervals over seeds: PASS, FAIL or INCONCLUSIVE.

A claim's statement becomes one or more *assertions*. Each assertion takes a
*contrast*: one number per seed (a replicate), signed so that the claim holds
when the contrast is large (or small, or near zero, as the rule says), and
judges it with a Student t interval over the seeds:

* :class:`Above` / :class:`Below` (order statements, "A below B", "falls with
  width"): PASS when the 95% interval lies above (below) the margin, FAIL when
  it lies on the wrong side, INCONCLUSIVE otherwise. So at the boundary of a
  true null each wrong verdict has probability 2.5%.
* :class:`Within` (equivalence, "as well as", "within noise", "bounded
  between", "does not increase"): TOST. PASS when the 90% interval lies inside
  ``[lower, upper]``, FAIL when it lies wholly outside, INCONCLUSIVE otherwise.
  One side may be infinite ("at most").
* :class:`Negligible` (lmccheck's reading of "close to 0", "negligible",
  "much smaller" where the paper gives no number): an indifference zone. PASS
  when the 95% interval lies below the value that clearly means negligible,
  FAIL when it lies above the value that clearly does not, INCONCLUSIVE
  between or across.
* :class:`Most` ("most cases"): a share of successes with its exact
  (Clopper-Pearson) interval against a share bound.

A contrast may have several *points* (levels, times, widths: a mapping from a
label to the per-seed values). ``over="every"`` is an intersection-union
test: PASS only when every point passes at its level, FAIL when some point
fails after Holm's correction over the points, else INCONCLUSIVE.
``over="mean"`` ("generally") averages each seed over the points and judges
that mean. With few seeds, ``pool=True`` pools the spread over the points
(df = sum of n_i - 1).

Each measurement may carry its *test-set noise*: the standard error of the
seed mean that comes from evaluating on a finite, fixed test set (a component
the spread over seeds cannot see, since every seed is evaluated on the same
examples). It is added to the variance of the mean; the degrees of freedom
follow Welch-Satterthwaite, with the noise term counted as known.

Every assertion records its minimum detectable effect: the distance from the
bound at which the rule decides with 80% probability at this n (non-central
t). An INCONCLUSIVE assertion also records how many seeds would decide it, if
its estimate stayed where it is.

Distributions come from :mod:`scipy.stats`. Bad input (fewer than 2 seeds, a
non-finite value, a missing source, a zero delta) raises
:class:`VerdictInputError`, which names the assertion.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE)

#: two-sided level of the order intervals (95%: 2.5% each side)
ORDER_ALPHA = 0.05
#: level of each one-sided test of TOST (90% interval)
EQUIVALENCE_ALPHA = 0.05
#: the power that defines the minimum detectable effect
POWER = 0.80
#: the most seeds an INCONCLUSIVE assertion's seed estimate looks at
MAX_SEEDS = 1000


class VerdictInputError(ValueError):
    """An assertion that cannot be judged: too few seeds, a non-finite value, no source, a zero delta."""


# --------------------------------------------------------------------------- #
# Sources of thresholds
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Source:
    """Where an assertion's threshold comes from: the paper (a quote and where it stands) or lmccheck's reading
    (the reason, where the paper gives no number)."""

    kind: Literal["paper", "reading"]
    text: str
    where: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("paper", "reading"):
            raise VerdictInputError(f"a source is 'paper' or 'reading', not {self.kind!r}")
        if not str(self.text).strip():
            raise VerdictInputError(f"a {self.kind} source needs its text: the quote, or the reason for the reading")
        if self.kind == "paper" and not str(self.where).strip():
            raise VerdictInputError(f"the paper source {self.text[:60]!r} needs its section (where=...)")

    def describe(self) -> str:
        if self.kind == "paper":
            return f'paper, {self.where}: "{self.text}"'
        return "lmccheck's reading: " + self.text

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text, "where": self.where}


def paper(quote: str, where: str) -> Source:
    """A threshold stated by the paper: the quoted sentence and its section, figure or equation."""
    return Source("paper", quote, where)


def reading(reason: str) -> Source:
    """A threshold of lmccheck's reading, where the paper gives no number: the reason for the value."""
    return Source("reading", reason)


# --------------------------------------------------------------------------- #
# Intervals
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Estimate:
    """One point's mean over seeds and the standard error of that mean."""

    label: str
    n: int
    mean: float
    se: float
    df: float
    sd: float
    noise: float

    def interval(self, alpha_one_sided: float) -> tuple[float, float]:
        if self.se == 0:
            return self.mean, self.mean
        q = float(stats.t.ppf(1 - alpha_one_sided, self.df))
        return self.mean - q * self.se, self.mean + q * self.se

    def p_greater(self, bound: float) -> float:
        """One-sided p-value of H0: mean <= bound (small: evidence the mean is above the bound)."""
        return _p(self.mean - bound, self.se, self.df)

    def p_less(self, bound: float) -> float:
        """One-sided p-value of H0: mean >= bound (small: evidence the mean is below the bound)."""
        return _p(bound - self.mean, self.se, self.df)


def _p(distance: float, se: float, df: float) -> float:
    if se == 0:
        return 0.0 if distance > 0 else 1.0
    return float(stats.t.sf(distance / se, df))


def _values(name: str, label: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size < 2:
        raise VerdictInputError(
            f"assertion {name!r}{' at ' + label if label else ''}: {arr.size} seed(s); an interval over seeds "
            "needs at least 2 (run with --lmc-seeds 2 or more)"
        )
    if not np.all(np.isfinite(arr)):
        raise VerdictInputError(
            f"assertion {name!r}{' at ' + label if label else ''}: a measurement is not finite ({arr.tolist()}); "
            "a NaN or infinite barrier or metric means a diverged network or a broken measurement, never a verdict"
        )
    return arr


def _noise(name: str, label: str, noise: float) -> float:
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise VerdictInputError(f"assertion {name!r}{' at ' + label if label else ''}: test-set noise {noise} must be "
                                "a finite standard error >= 0")
    return noise


def _welch_df(var_seed: float, df_seed: float, noise: float) -> float:
    """Welch-Satterthwaite degrees of freedom of ``var_seed + noise**2`` with the noise term known."""
    total = var_seed + noise**2
    if var_seed == 0:
        return math.inf if noise > 0 else df_seed
    return total**2 / (var_seed**2 / df_seed)


def estimates(
    name: str,
    points: Mapping[str, Sequence[float] | np.ndarray],
    noise: Mapping[str, float],
    pool: bool,
) -> list[Estimate]:
    """Per point: the mean, its standard error (seed spread, pooled over the points when ``pool``, plus the
    test-set noise) and its degrees of freedom."""
    arrays = {label: _values(name, label, v) for label, v in points.items()}
    if not arrays:
        raise VerdictInputError(f"assertion {name!r}: no points to judge")
    pooled_var, pooled_df = 0.0, 0
    if pool:
        ss = sum(float(np.var(a, ddof=1)) * (a.size - 1) for a in arrays.values())
        pooled_df = sum(a.size - 1 for a in arrays.values())
        pooled_var = ss / pooled_df
    out = []
    for label, a in arrays.items():
        n = a.size
        var = pooled_var if pool else float(np.var(a, ddof=1))
        df_seed = float(pooled_df if pool else n - 1)
        nz = _noise(name, label, noise.get(label, 0.0))
        var_mean = var / n
        out.append(Estimate(label, n, float(a.mean()), math.sqrt(var_mean + nz**2), _welch_df(var_mean, df_seed, nz),
                            math.sqrt(var), nz))
    return out


def mde(se: float, df: float, alpha_one_sided: float, power: float = POWER) -> float:
    """The minimum detectable effect: the distance from the bound at which a one-sided t test at
    ``alpha_one_sided`` rejects with probability ``power`` (non-central t with ``df`` degrees of freedom)."""
    if se == 0:
        return 0.0
    # the multiplier depends on df only through its t distribution: df is rounded to 0.01 for the cache
    return _noncentrality(round(float(df), 2) if math.isfinite(df) else math.inf, alpha_one_sided, power) * se


@functools.lru_cache(maxsize=4096)
def _noncentrality(df: float, alpha_one_sided: float, power: float) -> float:
    """The non-centrality at which a one-sided t test with ``df`` degrees of freedom rejects with ``power``."""
    crit = float(stats.t.ppf(1 - alpha_one_sided, df))
    if math.isinf(df):
        return crit + float(stats.norm.ppf(power))

    def miss(lam: float) -> float:
        return float(stats.nct.sf(crit, df, lam)) - power

    hi = crit + 10.0
    while miss(hi) < 0:
        hi *= 2
    return float(optimize.brentq(miss, 0.0, hi, xtol=1e-10))


def _holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections at family level ``alpha``, in the order given (scipy.stats has no Holm)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    m = len(pvalues)
    rejected = [False] * m
    for rank, i in enumerate(order):
        if pvalues[i] <= alpha / (m - rank):
            rejected[i] = True
        else:
            break
    return rejected


# --------------------------------------------------------------------------- #
# Judgements
# --------------------------------------------------------------------------- #
@dataclass
class PointResult:
    label: str
    n: int
    mean: float
    interval: tuple[float, float]
    df: float
    se: float
    noise: float
    outcome: str
    p_pass: float
    p_fail: float
    mde: float
    seeds_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "n": self.n, "mean": self.mean, "interval": list(self.interval),
            "df": None if math.isinf(self.df) else self.df, "se": self.se, "test_noise": self.noise,
            "outcome": self.outcome, "p_pass": self.p_pass, "p_fail": self.p_fail, "mde": self.mde,
            "seeds_needed": self.seeds_needed,
        }


@dataclass
class Judgement:
    """One assertion, judged: what :meth:`lmccheck.measurement.Measurement.expect` records."""

    name: str
    rule: str
    bound: str
    outcome: str
    observed: float
    interval: tuple[float, float]
    level: float
    n: int
    df: float | None
    mde: float
    seeds_needed: int | None
    source: Source
    over: str | None = None
    points: list[PointResult] = field(default_factory=list)
    decides: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "rule": self.rule, "bound": self.bound, "outcome": self.outcome,
            "observed": self.observed, "interval": list(self.interval), "level": self.level, "n": self.n,
            "df": self.df, "mde": self.mde, "seeds_needed": self.seeds_needed, "source": self.source.to_dict(),
            "over": self.over, "points": [p.to_dict() for p in self.points], "decides": self.decides,
            "note": self.note,
        }


class Rule:
    """A statement about a contrast: decides PASS / FAIL / INCONCLUSIVE for one point's estimate."""

    alpha: float = ORDER_ALPHA / 2  # one-sided

    def check(self, name: str) -> None:
        """Raise :class:`VerdictInputError` for a rule that cannot be judged."""

    def describe(self) -> str:
        raise NotImplementedError

    def p_values(self, est: Estimate) -> tuple[float, float]:
        """(p of the PASS test, p of the FAIL test): small p = evidence for that outcome."""
        raise NotImplementedError

    def gap(self, mean: float) -> float | None:
        """How far the estimate stands from the bound it would be decided against (None: it could never be)."""
        raise NotImplementedError

    def judge_point(self, est: Estimate) -> PointResult:
        p_pass, p_fail = self.p_values(est)
        outcome = PASS if p_pass < self.alpha else FAIL if p_fail < self.alpha else INCONCLUSIVE
        effect = mde(est.se, est.df, self.alpha)
        needed = None
        if outcome == INCONCLUSIVE:
            needed = seeds_needed(est, self.gap(est.mean), self.alpha)
        return PointResult(est.label, est.n, est.mean, est.interval(self.alpha), est.df, est.se, est.noise, outcome,
                           p_pass, p_fail, effect, needed)


def seeds_needed(est: Estimate, gap: float | None, alpha: float) -> int | None:
    """The fewest seeds at which the minimum detectable effect falls to ``gap``, if the seed spread and the
    test-set noise stay as measured (None: no number of seeds up to :data:`MAX_SEEDS` would: the estimate sits
    on the bound, or the test-set noise alone is too large)."""
    if gap is None or gap <= 0:
        return None
    var = est.sd**2

    def detects(n: int) -> bool:
        se = math.sqrt(var / n + est.noise**2)
        # the seed spread's own degrees of freedom at n seeds (unpooled: a lower bound when the spread is pooled)
        df = _welch_df(var / n, float(n - 1), est.noise) if var > 0 else math.inf
        return mde(se, df, alpha) <= gap

    lo, hi = est.n, MAX_SEEDS  # the MDE falls with n: bisect for the first n that detects the gap
    if not detects(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if detects(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Above(Rule):
    """The claim holds when the contrast is above ``margin`` (0 for a plain ordering)."""

    margin: float = 0.0

    def describe(self) -> str:
        return f"> {self.margin:g}"

    def p_values(self, est: Estimate) -> tuple[float, float]:
        return est.p_greater(self.margin), est.p_less(self.margin)

    def gap(self, mean: float) -> float | None:
        return abs(mean - self.margin)


@dataclass(frozen=True)
class Below(Rule):
    """The claim holds when the contrast is below ``margin``."""

    margin: float = 0.0

    def describe(self) -> str:
        return f"< {self.margin:g}"

    def p_values(self, est: Estimate) -> tuple[float, float]:
        return est.p_less(self.margin), est.p_greater(self.margin)

    def gap(self, mean: float) -> float | None:
        return abs(mean - self.margin)


@dataclass(frozen=True)
class Within(Rule):
    """Equivalence (TOST): the claim holds when the contrast lies in ``[lower, upper]``; ``Within(delta)`` is
    ``[-delta, delta]``. Either side may be infinite (a one-sided "at most" / "at least"). PASS when the 90%
    interval lies inside, FAIL when it lies wholly outside."""

    delta: float | None = None
    lower: float | None = None
    upper: float | None = None
    alpha: float = EQUIVALENCE_ALPHA

    @property
    def bounds(self) -> tuple[float, float]:
        if self.delta is not None:
            return -abs(self.delta), abs(self.delta)
        lo = -math.inf if self.lower is None else self.lower
        hi = math.inf if self.upper is None else self.upper
        return lo, hi

    def check(self, name: str) -> None:
        lo, hi = self.bounds
        if self.delta is not None and (self.lower is not None or self.upper is not None):
            raise VerdictInputError(f"assertion {name!r}: give delta or lower/upper, not both")
        if not hi > lo or (self.delta is not None and not (math.isfinite(self.delta) and self.delta > 0)):
            raise VerdictInputError(
                f"assertion {name!r}: an equivalence needs a margin of positive width (delta > 0, lower < upper); "
                f"got {self.describe()}. State the claim's delta and why (at least the measurement's own noise)"
            )
        if math.isinf(lo) and math.isinf(hi):
            raise VerdictInputError(f"assertion {name!r}: an equivalence needs at least one finite bound")

    def describe(self) -> str:
        lo, hi = self.bounds
        if math.isinf(lo):
            return f"<= {hi:g} (90% interval)"
        if math.isinf(hi):
            return f">= {lo:g} (90% interval)"
        return f"in [{lo:g}, {hi:g}] (90% interval)"

    def p_values(self, est: Estimate) -> tuple[float, float]:
        lo, hi = self.bounds
        # TOST: both one-sided tests must reject for PASS; FAIL when the interval lies wholly outside
        p_lo = est.p_greater(lo) if math.isfinite(lo) else 0.0
        p_hi = est.p_less(hi) if math.isfinite(hi) else 0.0
        p_pass = max(p_lo, p_hi)
        p_out_lo = est.p_less(lo) if math.isfinite(lo) else 1.0
        p_out_hi = est.p_greater(hi) if math.isfinite(hi) else 1.0
        return p_pass, min(p_out_lo, p_out_hi)

    def gap(self, mean: float) -> float | None:
        lo, hi = self.bounds
        if lo <= mean <= hi:
            return min(mean - lo, hi - mean)
        return lo - mean if mean < lo else mean - hi


@dataclass(frozen=True)
class Negligible(Rule):
    """lmccheck's reading of "negligible" / "close to 0" / "much smaller": an indifference zone. PASS when the 95%
    interval lies below ``clearly``, FAIL when it lies above ``clearly_not``, INCONCLUSIVE between."""

    clearly: float = 0.0
    clearly_not: float = 0.0

    def check(self, name: str) -> None:
        if not (math.isfinite(self.clearly) and math.isfinite(self.clearly_not) and self.clearly_not >= self.clearly):
            raise VerdictInputError(
                f"assertion {name!r}: an indifference zone needs clearly <= clearly_not, both finite; got "
                f"{self.clearly} and {self.clearly_not}"
            )

    def describe(self) -> str:
        return f"< {self.clearly:g} (negligible); > {self.clearly_not:g} (clearly not)"

    def p_values(self, est: Estimate) -> tuple[float, float]:
        return est.p_less(self.clearly), est.p_greater(self.clearly_not)

    def gap(self, mean: float) -> float | None:
        if mean < self.clearly:
            return self.clearly - mean
        if mean > self.clearly_not:
            return mean - self.clearly_not
        return None  # inside the zone: more seeds would not decide it


@dataclass(frozen=True)
class Substantial(Rule):
    """The mirror of :class:`Negligible`, for "clearly larger", "fails to", "much higher" where the paper gives no
    number: PASS when the 95% interval lies above ``clearly``, FAIL when it lies below ``clearly_not``,
    INCONCLUSIVE between."""

    clearly: float = 0.0
    clearly_not: float = 0.0

    def check(self, name: str) -> None:
        Negligible(self.clearly_not, self.clearly).check(name)

    def describe(self) -> str:
        return f"> {self.clearly:g} (clearly); < {self.clearly_not:g} (clearly not)"

    def p_values(self, est: Estimate) -> tuple[float, float]:
        return est.p_greater(self.clearly), est.p_less(self.clearly_not)

    def gap(self, mean: float) -> float | None:
        if mean > self.clearly:
            return mean - self.clearly
        if mean < self.clearly_not:
            return self.clearly_not - mean
        return None  # inside the zone: more seeds would not decide it


def judge(
    name: str,
    rule: Rule,
    contrast: Sequence[float] | np.ndarray | Mapping[str, Sequence[float]],
    source: Source,
    *,
    over: Literal["every", "mean"] | None = None,
    noise: float | Mapping[str, float] = 0.0,
    pool: bool = False,
    decides: bool = True,
    note: str = "",
    not_exercised: str = "",
) -> Judgement:
    """Judge one assertion.

    ``contrast``: the per-seed values of one point, or a mapping from point labels to per-seed values (then
    ``over`` says how the points combine: ``"every"`` (intersection-union, Holm for FAIL) or ``"mean"``
    ("generally": each seed's mean over the points; seeds must then be the same at every point). ``noise``:
    the test-set standard error of each point's mean (one number for all, or per label). ``pool``: pool the
    seed spread over the points (``over="every"`` only). ``decides=False`` records an assertion that is
    lmccheck's own addition: shown, never deciding the check's verdict. ``not_exercised``: the reason why this
    setting cannot test the statement (a grid that never reaches where the paper compares, a tie at the grid's
    resolution): the contrast and its interval are recorded, and the outcome is INCONCLUSIVE whatever they say.
    """
    if not isinstance(name, str) or not name.strip():
        raise VerdictInputError("an assertion needs a name")
    if not isinstance(source, Source):
        raise VerdictInputError(f"assertion {name!r}: no source for its threshold; give verdict.paper(quote, where) "
                                "or verdict.reading(reason)")
    if not isinstance(rule, Rule):
        raise VerdictInputError(f"assertion {name!r}: {rule!r} is not a verdict rule "
                                "(Above, Below, Within, Negligible)")
    rule.check(name)
    points: dict[str, Sequence[float] | np.ndarray]
    if isinstance(contrast, Mapping):
        points = {str(k): v for k, v in contrast.items()}
        if not points:
            raise VerdictInputError(f"assertion {name!r}: no points to judge (an empty mapping of points)")
        if over not in ("every", "mean"):
            raise VerdictInputError(f"assertion {name!r}: {len(points)} points need over='every' or over='mean'")
    else:
        if over is not None:
            raise VerdictInputError(f"assertion {name!r}: over={over!r} needs a mapping of points")
        points = {"": contrast}
    noise_map = dict(noise) if isinstance(noise, Mapping) else {label: float(noise) for label in points}
    if over == "mean":
        arrays = [_values(name, label, v) for label, v in points.items()]
        sizes = {a.size for a in arrays}
        if len(sizes) != 1:
            raise VerdictInputError(f"assertion {name!r}: a mean over points needs the same seeds at every point, "
                                    f"got {sorted(sizes)} seeds")
        k = len(arrays)
        mean_noise = math.sqrt(sum(_noise(name, lb, noise_map.get(lb, 0.0)) ** 2 for lb in points)) / k
        points, noise_map = {"mean over points": np.mean(arrays, axis=0)}, {"mean over points": mean_noise}
        pool = False
    results = [rule.judge_point(e) for e in estimates(name, points, noise_map, pool)]
    if len(results) == 1:
        r = results[0]
        outcome, observed, interval, n, df, effect, needed = (r.outcome, r.mean, r.interval, r.n, r.df, r.mde,
                                                             r.seeds_needed)
    else:
        outcome = every(results, rule.alpha)
        worst = min(results, key=lambda r: r.p_fail if outcome == FAIL else -r.p_pass)
        observed, interval, n, df, effect = worst.mean, worst.interval, worst.n, worst.df, worst.mde
        pending = [r.seeds_needed for r in results if r.outcome != PASS]
        counts = [x for x in pending if x is not None]
        known = bool(pending) and len(counts) == len(pending)
        needed = max(counts) if outcome == INCONCLUSIVE and known else None
    level = 1 - 2 * rule.alpha
    if not_exercised:
        outcome, needed, note = INCONCLUSIVE, None, f"not exercised at this setting: {not_exercised}" + (
            f"; {note}" if note else "")
    return Judgement(
        name=name, rule=type(rule).__name__, bound=rule.describe(), outcome=outcome, observed=observed,
        interval=interval, level=level, n=n, df=None if math.isinf(df) else df, mde=effect, seeds_needed=needed,
        source=source, over=over, points=results if len(results) > 1 or over else [], decides=decides, note=note,
    )


def slope(
    name: str,
    rule: Rule,
    x: Sequence[float],
    y: Sequence[Sequence[float]],
    source: Source,
    *,
    noise: Sequence[float] | None = None,
    decides: bool = True,
    note: str = "",
) -> Judgement:
    """Judge the least-squares slope of ``y`` on ``x`` with ``rule`` ("falls with width", "grows with k").

    ``x`` has one value per group (a width, a depth) and ``y[i]`` the replicates measured at ``x[i]`` (their
    number may differ between groups). The slope's interval is Student t with df = replicates - 2 (the fit's
    residual spread), plus the test-set noise of the slope when ``noise[i]`` gives the standard error of one
    measurement at ``x[i]``: a group's replicates share their evaluation examples, so its noise is taken as one
    draw per group, independent between groups."""
    if not isinstance(source, Source):
        raise VerdictInputError(f"assertion {name!r}: no source for its threshold")
    rule.check(name)
    if len(x) != len(y):
        raise VerdictInputError(f"assertion {name!r}: {len(x)} x values for {len(y)} groups of replicates")
    xs = [float(xi) for xi, ys in zip(x, y) for _ in ys]
    ys = [float(v) for row in y for v in row]
    n = len(ys)
    if n < 3 or len(set(xs)) < 2 or not all(math.isfinite(v) for v in ys + xs):
        raise VerdictInputError(f"assertion {name!r}: a slope needs >= 3 finite values at >= 2 distinct x, got "
                                f"{ys} at {xs}")
    fit = stats.linregress(xs, ys)
    x_bar = sum(xs) / n
    sxx = sum((xi - x_bar) ** 2 for xi in xs)
    # the slope is sum_i c_i y_i with c_i = (x_i - x_bar) / sxx; a group's replicates share one test-set error
    nz = [0.0] * len(y) if noise is None else [_noise(name, f"x={xi:g}", v) for xi, v in zip(x, noise)]
    slope_noise = math.sqrt(sum((len(row) * (float(xi) - x_bar) / sxx * e) ** 2 for xi, row, e in zip(x, y, nz)))
    var_fit, df_fit = float(fit.stderr) ** 2, float(n - 2)
    est = Estimate("slope", n, float(fit.slope), math.sqrt(var_fit + slope_noise**2),
                   _welch_df(var_fit, df_fit, slope_noise), math.sqrt(var_fit * n), slope_noise)
    r = rule.judge_point(est)
    return Judgement(
        name=name, rule=type(rule).__name__, bound=rule.describe(), outcome=r.outcome, observed=r.mean,
        interval=r.interval, level=1 - 2 * rule.alpha, n=r.n, df=None if math.isinf(r.df) else r.df, mde=r.mde,
        seeds_needed=r.seeds_needed, source=source, decides=decides,
        note=(note + " " if note else "") + f"least-squares slope over {n} replicates at {len(y)} x values "
        f"(df {n - 2}); 'seeds needed' counts replicates in all",
    )


def every(results: Sequence[PointResult], alpha: float) -> str:
    """Intersection-union over points: PASS if every point passes at ``alpha``; FAIL if some point fails after
    Holm's correction over the points; else INCONCLUSIVE."""
    if all(r.outcome == PASS for r in results):
        return PASS
    if any(_holm([r.p_fail for r in results], alpha)):
        return FAIL
    return INCONCLUSIVE


def share(
    name: str,
    successes: int,
    trials: int,
    source: Source,
    *,
    above: float = 0.5,
    decides: bool = True,
    note: str = "",
) -> Judgement:
    """"Most" / "a share of": ``successes`` of ``trials`` cases, against the share ``above``, with the exact
    (Clopper-Pearson) 95% interval: PASS when it lies above, FAIL when it lies below, else INCONCLUSIVE."""
    if not isinstance(source, Source):
        raise VerdictInputError(f"assertion {name!r}: no source for its threshold")
    if trials < 2 or not 0 <= successes <= trials:
        raise VerdictInputError(f"assertion {name!r}: {successes} of {trials} cases; a share needs >= 2 cases")
    if not 0 < above < 1:
        raise VerdictInputError(f"assertion {name!r}: a share bound lies strictly between 0 and 1, got {above}")
    test = stats.binomtest(successes, trials, above)
    ci = test.proportion_ci(confidence_level=1 - ORDER_ALPHA, method="exact")
    outcome = PASS if ci.low > above else FAIL if ci.high < above else INCONCLUSIVE
    observed = successes / trials
    needed = None
    if outcome == INCONCLUSIVE and observed != above:
        for m in range(trials + 1, 10 * MAX_SEEDS):
            k = round(observed * m)
            ci_m = stats.binomtest(k, m, above).proportion_ci(confidence_level=1 - ORDER_ALPHA, method="exact")
            if ci_m.low > above or ci_m.high < above:
                needed = m
                break
    return Judgement(
        name=name, rule="Most", bound=f"share > {above:g}", outcome=outcome, observed=observed,
        interval=(float(ci.low), float(ci.high)), level=1 - ORDER_ALPHA, n=trials, df=None, mde=math.nan,
        seeds_needed=needed, source=source, decides=decides, note=note,
    )


def exact(
    name: str,
    holds: bool,
    observed: float,
    bound: str,
    source: Source,
    *,
    decides: bool = True,
    note: str = "",
) -> Judgement:
    """A deterministic statement (an identity up to float tolerance, a theorem on constructed cases): PASS or
    FAIL, no interval (there is no sampling noise to judge)."""
    if not isinstance(source, Source):
        raise VerdictInputError(f"assertion {name!r}: no source for its threshold")
    observed = float(observed)
    if math.isnan(observed):
        raise VerdictInputError(f"assertion {name!r}: the measured value is NaN")
    return Judgement(
        name=name, rule="Exact", bound=bound, outcome=PASS if holds else FAIL, observed=observed,
        interval=(observed, observed), level=1.0, n=1, df=None, mde=0.0, seeds_needed=None, source=source,
        decides=decides, note=note,
    )


def combine(judgements: Sequence[Judgement]) -> str:
    """A check's verdict from its deciding assertions: FAIL if any fails, else INCONCLUSIVE if any is, else
    PASS. Assertions with ``decides=False`` (lmccheck's own additions) never decide it."""
    deciding = [j.outcome for j in judgements if j.decides]
    if not deciding:
        raise VerdictInputError("the check records no deciding assertion: a claim check must assert its claim")
    if FAIL in deciding:
        return FAIL
    if INCONCLUSIVE in deciding:
        return INCONCLUSIVE
    return PASS


def binomial_se(rate: float, n_examples: int) -> float:
    """The standard error of an error rate ``rate`` measured on ``n_examples`` examples."""
    if n_examples < 1:
        raise VerdictInputError(f"a test-set noise needs at least one example, got {n_examples}")
    r = min(max(float(rate), 0.0), 1.0)
    return math.sqrt(max(r * (1 - r), 1e-12) / n_examples)


def paired_noise(rates_a: Sequence[float], rates_b: Sequence[float], n_examples: int) -> float:
    """The test-set standard error of the seed mean of a paired difference of error rates (``rates_a[i]`` and
    ``rates_b[i]`` measured on the same ``n_examples`` examples): both rates' binomial noise, added as if
    independent (an upper bound: the shared examples correlate them positively), averaged over seeds."""
    a, b = list(rates_a), list(rates_b)
    if len(a) != len(b) or not a:
        raise VerdictInputError(f"paired noise needs rates of the same seeds, got {len(a)} and {len(b)}")
    k = len(a)
    # the examples are the same for every seed, so their noise does not average out over seeds
    return math.sqrt(sum(binomial_se(x, n_examples) ** 2 + binomial_se(y, n_examples) ** 2 for x, y in zip(a, b)) / k)
