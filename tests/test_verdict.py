"""The verdict rule (lmccheck.verdict), tested against a known truth by simulation and on constructed cases.

The simulations draw per-seed contrasts from a normal distribution with a known mean and spread and count how
often each verdict comes out:

* at the boundary of a true null, a false FAIL and a false PASS each happen at most 5% of the time (the rule's
  design rate is 2.5% per side for orders and 5% for TOST);
* a true effect as large as the minimum detectable effect the module reports for that n PASSes at least 80% of
  the time (the definition the report relies on), up to the Monte Carlo error of the simulation.

Breaking the rule turns them red: normal instead of t quantiles (the false rates at n = 2 reach ~15%, the MDE
is too small to give 80% power), no Holm correction (the family-wise false FAIL over 10 points reaches ~22%), a
one-sided TOST (a contrast far below -delta passes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmccheck import verdict as v

SRC = v.reading("a test threshold")
#: simulated experiments per case; the Monte Carlo standard error of a 5% rate is then 0.7 points
N_SIM = 1000


def _rates(rule: v.Rule, draw, n_sim: int = N_SIM, **kwargs) -> dict[str, float]:
    counts = dict.fromkeys(v.OUTCOMES, 0)
    for _ in range(n_sim):
        counts[v.judge("sim", rule, draw(), SRC, **kwargs).outcome] += 1
    return {k: c / n_sim for k, c in counts.items()}


def _mc_tolerance(p: float, n_sim: int = N_SIM) -> float:
    """Three Monte Carlo standard errors of a simulated rate ``p``."""
    return 3 * math.sqrt(p * (1 - p) / n_sim)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 5])
def test_an_order_at_the_boundary_of_a_true_null_errs_at_most_5_percent_each_way(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    rates = _rates(v.Above(0.3), lambda: rng.normal(0.3, 1.0, n))
    assert rates[v.FAIL] <= 0.05 and rates[v.PASS] <= 0.05, rates


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_true_effect_of_the_reported_mde_passes_at_least_80_percent(n: int) -> None:
    rng = np.random.default_rng(200 + n)
    sigma = 0.7
    effect = v.mde(sigma / math.sqrt(n), n - 1, v.ORDER_ALPHA / 2)
    rates = _rates(v.Above(0.0), lambda: rng.normal(effect, sigma, n))
    assert rates[v.PASS] >= v.POWER - _mc_tolerance(v.POWER), (effect, rates)
    # and the same effect judged with Below is a significant FAIL as often
    rates = _rates(v.Below(0.0), lambda: rng.normal(effect, sigma, n))
    assert rates[v.FAIL] >= v.POWER - _mc_tolerance(v.POWER), (effect, rates)


def test_the_mde_is_the_t_tests_and_not_the_normal_one() -> None:
    """At n = 2 (df 1) the t quantiles are 12.7 (97.5%) and about 1.9 (80% power, non-central); the normal
    approximation would give 1.96 + 0.84 = 2.8 standard errors."""
    assert v.mde(1.0, 1, 0.025) > 10
    assert v.mde(1.0, math.inf, 0.025) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert v.mde(0.0, 3, 0.025) == 0.0


@pytest.mark.slow
def test_test_set_noise_shared_by_the_seeds_keeps_the_false_fail_rate() -> None:
    """Every seed is evaluated on the same examples, so their noise is one draw per experiment: the seed spread
    cannot see it. With the noise passed in, the false FAIL rate stays within 5%; without it, it does not."""
    rng = np.random.default_rng(7)
    n, sigma, tau = 5, 0.1, 1.0

    def draw() -> np.ndarray:
        return rng.normal(0.0, sigma, n) + rng.normal(0.0, tau)

    with_noise = _rates(v.Above(0.0), draw, noise=tau)
    without = _rates(v.Above(0.0), draw)
    assert with_noise[v.FAIL] <= 0.05, with_noise
    assert without[v.FAIL] > 0.2, without


@pytest.mark.slow
def test_pooling_the_spread_over_points_keeps_each_points_false_fail_rate() -> None:
    rng = np.random.default_rng(11)
    fails = 0
    for _ in range(N_SIM):
        points = {f"t{i}": rng.normal(0.0, 1.0, 2) for i in range(6)}
        judged = v.judge("pooled", v.Above(0.0), points, SRC, over="every", pool=True)
        fails += judged.points[0].outcome == v.FAIL
        assert judged.points[0].df == 6  # df = sum of (n_i - 1)
    assert fails / N_SIM <= 0.05


@pytest.mark.slow
def test_every_point_at_a_true_null_gives_a_family_wise_false_fail_within_5_percent() -> None:
    """Holm over 10 points: without the correction a false FAIL happens about 1 - 0.975**10 = 22% of the time."""
    rng = np.random.default_rng(13)
    rates = _rates(v.Above(0.0), lambda: {f"p{i}": rng.normal(0.0, 1.0, 4) for i in range(10)}, over="every")
    assert rates[v.FAIL] <= 0.05, rates


def _point(label: str, outcome: str, p_fail: float) -> v.PointResult:
    return v.PointResult(label, 3, 0.0, (0.0, 0.0), 2.0, 1.0, 0.0, outcome, 0.5, p_fail, 1.0, None)


def test_holm_on_constructed_p_values() -> None:
    alpha = 0.025
    # smallest p 0.01 > alpha/3: Holm rejects nothing, although every p is below alpha
    three = [_point("a", v.INCONCLUSIVE, 0.01), _point("b", v.INCONCLUSIVE, 0.02), _point("c", v.INCONCLUSIVE, 0.024)]
    assert v.every(three, alpha) == v.INCONCLUSIVE
    # 0.005 <= alpha/3 is rejected: FAIL
    three[0] = _point("a", v.FAIL, 0.005)
    assert v.every(three, alpha) == v.FAIL
    assert v._holm([0.005, 0.012, 0.03], alpha) == [True, True, False]
    assert v._holm([0.03, 0.005, 0.012], alpha) == [False, True, True]


def test_intersection_union_passes_only_when_every_point_passes() -> None:
    sure = [1.0, 1.01, 0.99]
    vague = [1.0, -1.0, 0.5]
    assert v.judge("all", v.Above(0.0), {"a": sure, "b": sure}, SRC, over="every").outcome == v.PASS
    mixed = v.judge("one vague", v.Above(0.0), {"a": sure, "b": vague}, SRC, over="every")
    assert mixed.outcome == v.INCONCLUSIVE and mixed.seeds_needed is not None
    assert [p.outcome for p in mixed.points] == [v.PASS, v.INCONCLUSIVE]
    failing = v.judge("one fails", v.Above(0.0), {"a": sure, "b": [-1.0, -1.01, -0.99]}, SRC, over="every")
    assert failing.outcome == v.FAIL and failing.observed == pytest.approx(-1.0)


def test_a_mean_over_points_judges_each_seeds_mean() -> None:
    points = {"p1": [0.5, 0.6, 0.55], "p2": [-0.1, 0.0, -0.05]}
    judged = v.judge("generally", v.Above(0.0), points, SRC, over="mean")
    assert judged.observed == pytest.approx(0.25)
    assert judged.outcome == v.PASS
    with pytest.raises(v.VerdictInputError, match="same seeds"):
        v.judge("generally", v.Above(0.0), {"p1": [1, 2, 3], "p2": [1, 2]}, SRC, over="mean")


def test_tost_on_constructed_cases() -> None:
    rule = v.Within(delta=0.1)
    assert v.judge("inside", rule, [0.01, -0.01, 0.0], SRC).outcome == v.PASS
    assert v.judge("far above", rule, [0.5, 0.52, 0.48], SRC).outcome == v.FAIL
    # a one-sided TOST (only the upper bound) would pass this
    assert v.judge("far below", rule, [-0.5, -0.52, -0.48], SRC).outcome == v.FAIL
    assert v.judge("vague", rule, [0.05, -0.3, 0.3], SRC).outcome == v.INCONCLUSIVE
    one_sided = v.Within(upper=0.1)
    assert v.judge("at most", one_sided, [-5.0, -5.1, -4.9], SRC).outcome == v.PASS
    assert v.judge("at most, above", one_sided, [0.5, 0.52, 0.48], SRC).outcome == v.FAIL
    judged = v.judge("interval", rule, [0.01, -0.01, 0.0], SRC)
    assert judged.level == pytest.approx(0.90)


@pytest.mark.slow
def test_tost_at_the_equivalence_boundary_passes_at_most_5_percent() -> None:
    """TOST's design rate at the boundary is exactly 5% (one of its two tests is at its null), so the simulated
    rate may exceed it by Monte Carlo error only."""
    rng = np.random.default_rng(17)
    for edge in (1.0, -1.0):
        rates = _rates(v.Within(delta=1.0), lambda: rng.normal(edge, 0.5, 4))  # noqa: B023
        assert rates[v.PASS] <= 0.05 + _mc_tolerance(0.05), (edge, rates)


def test_an_indifference_zone() -> None:
    rule = v.Negligible(clearly=0.05, clearly_not=0.2)
    assert v.judge("small", rule, [0.01, 0.012, 0.011], SRC).outcome == v.PASS
    assert v.judge("large", rule, [0.5, 0.52, 0.51], SRC).outcome == v.FAIL
    between = v.judge("between", rule, [0.1, 0.101, 0.099], SRC)
    assert between.outcome == v.INCONCLUSIVE and between.seeds_needed is None  # no seeds decide it
    with pytest.raises(v.VerdictInputError, match="clearly <= clearly_not"):
        v.judge("reversed", v.Negligible(clearly=0.2, clearly_not=0.1), [0.1, 0.1], SRC)


def test_seeds_needed_is_the_first_n_whose_mde_reaches_the_gap() -> None:
    judged = v.judge("vague", v.Above(0.0), [0.3, -0.1, 0.4], SRC)
    assert judged.outcome == v.INCONCLUSIVE
    n = judged.seeds_needed
    assert n is not None and n > 3
    sd = float(np.std([0.3, -0.1, 0.4], ddof=1))
    gap = float(np.mean([0.3, -0.1, 0.4]))
    assert v.mde(sd / math.sqrt(n), n - 1, 0.025) <= gap < v.mde(sd / math.sqrt(n - 1), n - 2, 0.025)


def test_test_set_noise_alone_larger_than_the_gap_means_no_number_of_seeds_decides() -> None:
    judged = v.judge("noisy", v.Above(0.0), [0.01, 0.012, 0.011], SRC, noise=1.0)
    assert judged.outcome == v.INCONCLUSIVE and judged.seeds_needed is None


def test_a_share_with_its_exact_interval() -> None:
    assert v.share("most", 19, 20, SRC).outcome == v.PASS
    assert v.share("half", 10, 20, SRC).outcome == v.INCONCLUSIVE
    assert v.share("few", 1, 20, SRC).outcome == v.FAIL
    judged = v.share("some", 7, 10, SRC)
    assert judged.outcome == v.INCONCLUSIVE and judged.seeds_needed is not None and judged.seeds_needed > 10


def test_combine() -> None:
    p = v.exact("p", True, 0.0, "== 0", SRC)
    f = v.exact("f", False, 1.0, "== 0", SRC)
    i = v.judge("i", v.Above(0.0), [1.0, -1.0, 0.5], SRC)
    extra = v.exact("extra", False, 1.0, "== 0", SRC, decides=False)
    assert v.combine([p, extra]) == v.PASS
    assert v.combine([p, i]) == v.INCONCLUSIVE
    assert v.combine([p, i, f]) == v.FAIL
    with pytest.raises(v.VerdictInputError, match="no deciding assertion"):
        v.combine([extra])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: v.judge("one seed", v.Above(0.0), [1.0], SRC), "'one seed'.*1 seed"),
        (lambda: v.judge("nan", v.Above(0.0), [1.0, math.nan], SRC), "'nan'.*not finite"),
        (lambda: v.judge("no source", v.Above(0.0), [1.0, 2.0], None), "'no source'.*no source"),  # type: ignore[arg-type]
        (lambda: v.judge("zero delta", v.Within(delta=0.0), [1.0, 2.0], SRC), "'zero delta'.*positive width"),
        (lambda: v.judge("points", v.Above(0.0), {"a": [1, 2]}, SRC), "'points'.*over="),
        (lambda: v.judge("bad noise", v.Above(0.0), [1, 2], SRC, noise=-1.0), "'bad noise'.*noise"),
        (lambda: v.share("share", 3, 1, SRC), "'share'"),
        (lambda: v.exact("nan exact", True, math.nan, "== 0", SRC), "'nan exact'.*NaN"),
        (lambda: v.paper("a quote", ""), "needs its section"),
        (lambda: v.reading("  "), "needs its text"),
    ],
)
def test_bad_input_names_the_assertion(call, message: str) -> None:
    with pytest.raises(v.VerdictInputError, match=message):
        call()


def test_a_judgement_is_recorded_as_data() -> None:
    src = v.paper("drops ... to 3-8% at any time t", "§5.1")
    judged = v.judge("aligned below", v.Below(0.08), {"t=0": [0.01, 0.02, 0.03], "t=1": [0.02, 0.02, 0.04]},
                     src, over="every", noise=0.001, pool=True)
    d = judged.to_dict()
    assert d["outcome"] == v.PASS and d["source"] == {"kind": "paper", "text": src.text, "where": "§5.1"}
    assert d["n"] == 3 and d["over"] == "every" and len(d["points"]) == 2
    assert d["bound"] == "< 0.08" and d["level"] == pytest.approx(0.95)
    lo, hi = d["interval"]
    assert lo < d["observed"] < hi < 0.08
    assert d["points"][0]["test_noise"] == 0.001 and d["mde"] > 0


def test_substantial_is_the_mirror_of_negligible() -> None:
    rule = v.Substantial(clearly=0.05, clearly_not=0.02)
    assert v.judge("large", rule, [0.2, 0.21, 0.19], SRC).outcome == v.PASS
    assert v.judge("small", rule, [0.001, 0.002, 0.0015], SRC).outcome == v.FAIL
    between = v.judge("between", rule, [0.03, 0.031, 0.029], SRC)
    assert between.outcome == v.INCONCLUSIVE and between.seeds_needed is None
    with pytest.raises(v.VerdictInputError, match="clearly <= clearly_not"):
        v.judge("reversed", v.Substantial(clearly=0.01, clearly_not=0.05), [0.1, 0.1], SRC)


def test_a_slope_against_scipys_regression_and_its_noise() -> None:
    from scipy import stats

    x = [6.0, 7.0, 8.0, 9.0]
    y = [[0.05, 0.06, 0.055], [0.04, 0.045], [0.03, 0.035], [0.02, 0.022]]
    judged = v.slope("falls", v.Below(0.0), x, y, SRC)
    xs = [xi for xi, row in zip(x, y) for _ in row]
    fit = stats.linregress(xs, [u for row in y for u in row])
    q = stats.t.ppf(0.975, len(xs) - 2)
    assert judged.observed == pytest.approx(fit.slope)
    assert judged.interval == pytest.approx((fit.slope - q * fit.stderr, fit.slope + q * fit.stderr))
    assert judged.outcome == v.PASS and judged.df == len(xs) - 2
    # one test-set error per group: the slope's noise is sum_i n_i c_i e with c_i = (x_i - x_bar) / sxx
    noisy = v.slope("falls, noisy", v.Below(0.0), x, y, SRC, noise=[0.05] * 4)
    x_bar = sum(xs) / len(xs)
    sxx = sum((xi - x_bar) ** 2 for xi in xs)
    expected = math.sqrt(sum((len(row) * (xi - x_bar) / sxx * 0.05) ** 2 for xi, row in zip(x, y)))
    assert noisy.points == [] and noisy.interval[1] - noisy.observed == pytest.approx(
        stats.t.ppf(0.975, noisy.df) * math.sqrt(fit.stderr**2 + expected**2))
    assert noisy.outcome == v.INCONCLUSIVE
    with pytest.raises(v.VerdictInputError, match="'flat'.*distinct x"):
        v.slope("flat", v.Below(0.0), [1.0, 1.0], [[0.1, 0.2], [0.3]], SRC)


def test_a_statement_the_setting_cannot_test_is_inconclusive_with_its_contrast_recorded() -> None:
    judged = v.judge("tie", v.Above(0.0), [1.0, 1.01, 0.99], SRC, not_exercised="a tie at the grid's resolution")
    assert judged.outcome == v.INCONCLUSIVE and judged.seeds_needed is None
    assert judged.observed == pytest.approx(1.0) and judged.interval[0] > 0
    assert judged.note.startswith("not exercised at this setting: a tie")


# ------------------------------------------------- small exact cases (survivors of the mutation sample) --
def test_welch_df_of_a_seed_spread_plus_known_test_set_noise() -> None:
    # two seeds (df 1) with a mean's variance 0.01 and a test-set noise 0.05: total 0.0125, df 0.0125**2 / 0.01**2
    [est] = v.estimates("x", {"p": [0.0, 2 * math.sqrt(0.01)]}, {"p": 0.05}, pool=False)
    assert est.se == pytest.approx(math.sqrt(0.0125)) and est.df == pytest.approx(1.5625)
    [quiet] = v.estimates("x", {"p": [0.0, 2 * math.sqrt(0.01)]}, {}, pool=False)
    assert quiet.df == 1


def test_a_one_sided_equivalence_with_an_infinite_side() -> None:
    at_least = v.Within(lower=0.0)
    assert v.judge("above", at_least, [1.0, 1.1, 0.9], SRC).outcome == v.PASS
    assert v.judge("below", at_least, [-1.0, -1.1, -0.9], SRC).outcome == v.FAIL
    at_most = v.Within(upper=0.0)
    assert v.judge("below", at_most, [-1.0, -1.1, -0.9], SRC).outcome == v.PASS


def test_the_gap_to_decide_is_the_distance_to_the_nearest_edge() -> None:
    within = v.Within(lower=0.3, upper=0.4)
    assert within.gap(0.1) == pytest.approx(0.2) and within.gap(0.7) == pytest.approx(0.3)
    assert within.gap(0.32) == pytest.approx(0.02)
    substantial = v.Substantial(clearly=0.3, clearly_not=0.1)
    assert substantial.gap(0.7) == pytest.approx(0.4) and substantial.gap(0.04) == pytest.approx(0.06)
    assert substantial.gap(0.2) is None
    negligible = v.Negligible(clearly=0.1, clearly_not=0.3)
    assert negligible.gap(0.04) == pytest.approx(0.06) and negligible.gap(0.7) == pytest.approx(0.4)


def test_an_indifference_zone_of_no_width_is_the_order_at_0() -> None:
    for rule in (v.Negligible(), v.Substantial()):
        assert (rule.clearly, rule.clearly_not) == (0.0, 0.0)
    assert v.judge("small", v.Negligible(), [-0.5, -0.6, -0.4], SRC).outcome == v.PASS
    assert v.judge("large", v.Substantial(), [0.5, 0.6, 0.4], SRC).outcome == v.PASS


def test_no_points_are_refused_with_the_reason() -> None:
    for over in ("mean", "every"):
        with pytest.raises(v.VerdictInputError, match="'none': no points to judge"):
            v.judge("none", v.Above(0.0), {}, SRC, over=over)
    with pytest.raises(v.VerdictInputError, match=r"needs the same seeds at every point, got \[2, 3\] seeds"):
        v.judge("ragged", v.Above(0.0), {"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}, SRC, over="mean")


def test_a_slope_over_three_replicates_has_one_degree_of_freedom_and_keeps_the_note() -> None:
    judged = v.slope("three", v.Below(0.0), [1.0, 2.0, 3.0], [[0.3], [0.2], [0.1]], SRC, note="lmccheck's grid")
    assert judged.df == 1 and judged.note.startswith("lmccheck's grid least-squares slope over 3 replicates")


def test_binomial_and_paired_test_set_noise() -> None:
    assert v.binomial_se(0.1, 100) == pytest.approx(0.03)
    assert v.binomial_se(-0.5, 100) == pytest.approx(1e-7)  # clamped to [0, 1], never 0
    # per seed se_a**2 + se_b**2, averaged over the seeds (the examples are shared, so no 1/k shrinkage)
    expected = math.sqrt(((0.0009 + 0.0009) + (0.0016 + 0.0021)) / 2)
    assert v.paired_noise([0.1, 0.2], [0.1, 0.3], 100) == pytest.approx(expected)
