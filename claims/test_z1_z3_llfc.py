"""Claims Z1-Z3: layerwise linear feature connectivity (LLFC) of linearly connected pairs, measured (Zhou et
al. 2023, §4, Fig. 2-4, App. B.2): Z1, E[1 - cos_alpha] is near 0 next to E[1 - cos_AB] in nearly all the
layers; Z2, at alpha = 0.5 the LMC pairs are LLFC and independent pairs are not; Z3, the LLFC scale coef_alpha
is close to 1 "in most cases".

The pair kinds, the LMC premise each check records first, the reading of "negligible" and the setting:
:mod:`claims.llfc_pairs`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fixtures import Lab
from fixtures.recipes import Setting
from lmccheck.figures import bar_panel
from lmccheck.llfc import alpha_key
from lmccheck.verdict import FAIL, PASS, Negligible, reading

from .llfc_pairs import (
    ALPHAS,
    CLEARLY_NEGLIGIBLE,
    CLEARLY_NOT_NEGLIGIBLE,
    KINDS,
    LMC_KINDS,
    LOGITS,
    NAMES,
    NEGLIGIBLE,
    PARAMS,
    PREMISE_NOTE,
    ZONE_REASON,
    _bars,
    _decides,
    _in_scope,
    _judge_premise,
    _mean,
    _mean_se,
    _pairs,
    _premise,
    _range,
    _ratio,
    _skip_without_premise,
    _stat,
    _tag,
)
from .rules import mean_noise

#: "c is close to 1": |E[coef] - 1| in the same zone, relative to the scale 1 itself
CLOSE_TO_ONE = Negligible(CLEARLY_NEGLIGIBLE, CLEARLY_NOT_NEGLIGIBLE)
#: "in most cases": more than half of the cases
MOST = 0.5
#: "nearly all the layers" (abstract): all but at most one layer in five, and never fewer than all but one
NEARLY_ALL_PER_EXCEPTION = 5
NEARLY_ALL_REASON = (
    '"nearly all the layers" (abstract; §4: "almost all the layers") gives no share. lmccheck reads it as all but at '
    "most one layer in five (about 80%), and at least all but one layer (so that 'nearly all' is never 'every'): "
    "with k such exceptions, the claim holds when the (k+1)-th largest of the layers' ratios is negligible. Per "
    "seed that order statistic is taken over the layers (each layer's largest ratio over the alphas, since §4 "
    'claims "different values of alpha" alike); it is judged over seeds with its t interval'
)
Z1_SOURCE = reading(
    'Fig. 2-3 (§4): "the values of E_D[1 - cosine_alpha(x_i)] are close to 0 across different layers, '
    'architectures, datasets, and different values of alpha"; App. B.2: "close to 0 compared with '
    'E_D[1 - cosine_A,B(x_i)]"; "they also satisfy LLFC in nearly all the layers" (abstract). ' + NEARLY_ALL_REASON
    + ". At the logits (Definition 2's l in [L] includes them) the baseline is the independent pair's "
    "E[1 - cos_alpha] (Fig. 4's not-LMC baseline) in place of E[1 - cos_A,B]: two trained networks' logits are "
    "nearly parallel, so E[1 - cos_A,B] is near 0 there (recorded per seed as logits_one_minus_cos_ab) and a "
    "ratio to it would measure nothing. Zone: " + ZONE_REASON
)
Z2_SOURCE = reading(
    'Fig. 4 (§4): "the values of E_D[1 - cosine_LMC(x_i)] are negligible compared to E_D[1 - cosine_not LMC(x_i)]"'
    ' (cosine at alpha = 0.5), with LLFC "in nearly all the layers" (abstract), the logits included (Definition '
    "2's l in [L]). " + NEARLY_ALL_REASON + ". Zone: " + ZONE_REASON
)
Z3_CASE_SOURCE = reading(
    'App. B.2: "the values of E_D[coef_alpha(x_i)] are close to 1 in most cases"; "close to 1" has no number: '
    "|E[coef] - 1| below 0.1 is clearly close (a deviation a decade below the scale), above 10^-1/2 = 0.316 "
    "clearly not (the same order of magnitude as the scale itself); between, INCONCLUSIVE"
)
Z3_SHARE_SOURCE = reading(
    'App. B.2: "E_D[coef_alpha(x_i)] are close to 1 in most cases"; §5.1: "Yet in most cases, we observe that c '
    'is close to 1". "Most" = more than half of the (pair kind, layer, alpha) cases of the pairs that meet the '
    "premise, which holds exactly when the median case is close to 1 (for an even count, the upper of the two "
    "middle cases: more than half must be close): per seed that case's "
    "|E[coef] - 1|, judged with its t interval over seeds in the zone of \"close to 1\" (below 0.1 clearly close, "
    "above 10^-1/2 = 0.316 clearly not, between INCONCLUSIVE). The cases are the paper's fixed layers and alphas; "
    "the seeds are what is sampled"
)


# ---------------------------------------------------------------------------- nearly all the layers
def _exceptions(n_layers: int) -> int:
    """How many layers "nearly all the layers" may leave out (:data:`NEARLY_ALL_REASON`)."""
    return min(max(1, n_layers // NEARLY_ALL_PER_EXCEPTION), n_layers - 1)


def _nearly_all(values: Mapping[str, Sequence[float]], ses: Mapping[str, Sequence[float]]
                ) -> tuple[list[float], float, int]:
    """Per seed, the ratio under which nearly all the layers stay: the (k+1)-th largest of the layers' per-seed
    values, k = :func:`_exceptions`; the test-set noise of its seed mean (the chosen layers' standard errors, RMS
    over seeds); and k. ``values`` and ``ses``: ``{layer: per-seed values}``."""
    layers = list(values)
    k = _exceptions(len(layers))
    picked, picked_se = [], []
    for r in range(len(values[layers[0]])):
        layer = sorted(layers, key=lambda n: values[n][r], reverse=True)[k]
        picked.append(values[layer][r])
        picked_se.append(ses[layer][r])
    return picked, mean_noise(picked_se), k


def _worst_alpha(points: Mapping[str, Sequence[float]], ses: Mapping[str, Sequence[float]],
                 labels: Mapping[str, Sequence[str]]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per layer and seed, the largest value over the layer's alpha points (``labels[layer]``) and its standard
    error: a layer is LLFC when it is at every alpha."""
    worst: dict[str, list[float]] = {}
    worst_se: dict[str, list[float]] = {}
    for layer, ls in labels.items():
        seeds = range(len(points[ls[0]]))
        best = [max(ls, key=lambda lb: points[lb][r]) for r in seeds]
        worst[layer] = [points[lb][r] for r, lb in zip(seeds, best, strict=True)]
        worst_se[layer] = [ses[lb][r] for r, lb in zip(seeds, best, strict=True)]
    return worst, worst_se


# ---------------------------------------------------------------------------- Z1, Z2, Z3: LLFC (§4, App. B.2)
def _llfc_stats(lab: Lab, pairs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {k: [_stat(lab, "llfc", p) for p in pairs[k]] for k in KINDS}


def _z1_ratios(stats: dict[str, list[dict[str, Any]]], kind: str
               ) -> tuple[dict[str, list[float]], dict[str, float], dict[str, list[float]], dict[str, list[str]]]:
    """Per (layer, alpha): per seed, E[1 - cos_alpha] over E[1 - cos_AB], the test-set noise of the seed mean, the
    per-seed standard errors, and per layer the labels of its alpha points.

    At the logits the baseline is the independent pair's E[1 - cos_alpha] at the same alpha (the paper's not-LMC
    baseline, Fig. 4): any two trained networks give nearly parallel logits, so E[1 - cos_AB] is near 0 there and
    a ratio to it measures nothing."""
    sites = stats[kind][0]["sites"]
    points: dict[str, list[float]] = {}
    noise: dict[str, float] = {}
    per_seed_se: dict[str, list[float]] = {}
    labels: dict[str, list[str]] = {s: [] for s in sites}
    for s in sites:
        for a in ALPHAS:
            ak = alpha_key(a)
            vals, ses = [], []
            for r, x in enumerate(stats[kind]):
                base = (stats["independent"][r]["one_minus_cos_alpha"][s][ak] if s == LOGITS
                        else x["one_minus_cos_ab"][s])
                v, se = _ratio(x["one_minus_cos_alpha"][s][ak], base)
                vals.append(v)
                ses.append(se)
            label = f"{s} (vs not-LMC) alpha={a:g}" if s == LOGITS else f"{s} alpha={a:g}"
            points[label], noise[label], per_seed_se[label] = vals, mean_noise(ses), ses
            labels[s].append(label)
    return points, noise, per_seed_se, labels


@pytest.mark.claim("Z1")
@pytest.mark.parametrize("setting", PARAMS)
def test_z1_llfc_cosine_is_near_zero_in_every_layer(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """Zhou §4, Fig. 2-3: "the values of E_D[1 - cosine_alpha(x_i)] are close to 0 across different layers,
    architectures, datasets, and different values of alpha, which verifies the LLFC property ... Moreover, the
    values of E_D[1 - cosine_A,B(x_i)] are not close to 0"; App. B.2: "close to 0 compared with
    E_D[1 - cosine_A,B(x_i)]"; abstract: pairs that satisfy LMC "also satisfy LLFC in nearly all the layers".

    For each pair kind that meets the LMC premise: the ratio E[1 - cos_alpha] / E[1 - cos_AB] is negligible
    (:data:`NEGLIGIBLE`) in nearly all the layers (:data:`NEARLY_ALL_REASON`: per seed, the (k+1)-th largest over
    the layers of each layer's largest ratio over the alphas, k = 1 of the MLP's 4 layers). The logits are one of
    the layers, with the not-LMC pair's E[1 - cos_alpha] as their baseline (see :func:`_z1_ratios`). The ratios at
    every layer and alpha are recorded as a non-deciding "every layer" assertion."""
    pairs = _pairs(lab, setting, n_seeds)
    premise = _premise(lab, setting, pairs)
    stats = _llfc_stats(lab, pairs)
    met = _judge_premise(measure, premise, setting)
    ratios = {k: _z1_ratios(stats, k) for k in LMC_KINDS}
    nearly_all = {}
    for kind in LMC_KINDS:
        points, noise, ses, labels = ratios[kind]
        picked, picked_noise, k = _nearly_all(*_worst_alpha(points, ses, labels))
        nearly_all[kind] = picked
        measure.expect(f"{_tag(kind, met)}: E[1-cos_alpha] negligible next to E[1-cos_AB] in nearly all the layers "
                       f"(all but {k} of {len(labels)}), every alpha", NEGLIGIBLE, picked, Z1_SOURCE,
                       noise=picked_noise, **_decides(kind, met, setting))
        measure.expect(f"{_tag(kind, met)}: the same in every layer and alpha (recorded)", NEGLIGIBLE, points,
                       Z1_SOURCE, over="every", noise=noise, pool=True, decides=False,
                       note="lmccheck's addition: the paper claims nearly all the layers, not every one")
    measure.values["nearly_all_ratio_per_seed"] = nearly_all
    _render_z1(setting, measure, stats, ratios, premise, met)
    _skip_without_premise(met, premise, measure)


def _llfc_values(stats: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The per-seed means over examples (and their standard deviations) of every LLFC quantity."""
    def per_seed(kind: str, field: str) -> dict[str, Any]:
        return {s: [x[field][s] for x in stats[kind]] for s in stats[kind][0]["sites"]}
    return {k: {f: per_seed(k, f) for f in ("one_minus_cos_alpha", "coef_alpha", "one_minus_cos_ab")} for k in KINDS}


def _render_z1(setting: Setting, measure, stats: dict[str, list[dict[str, Any]]],
               ratios: dict[str, tuple[dict[str, list[float]], dict[str, float], Any, Any]],
               premise: dict[str, dict[str, list[float]]], met: Mapping[str, bool]) -> None:
    sites = stats["spawned"][0]["sites"]
    measure.values.update({"sites": sites, "premise": premise, "premise_met": dict(met),
                           "per_seed": _llfc_values(stats),
                           "ratio_per_seed": {k: ratios[k][0] for k in LMC_KINDS},
                           "ratio_test_noise": {k: ratios[k][1] for k in LMC_KINDS},
                           # why the logits take the not-LMC baseline: E[1 - cos_AB] there, per kind and seed
                           "logits_one_minus_cos_ab": {k: [x["one_minus_cos_ab"][LOGITS]["mean"] for x in stats[k]]
                                                       for k in KINDS if LOGITS in stats[k][0]["sites"]}})
    measure.thresholds.update({"clearly_negligible": CLEARLY_NEGLIGIBLE,
                               "clearly_not_negligible": CLEARLY_NOT_NEGLIGIBLE})
    panels = []
    for kind in LMC_KINDS:
        series = {f"1-cos alpha={a:g}": {s: [x["one_minus_cos_alpha"][s][alpha_key(a)]["mean"] for x in stats[kind]]
                                           for s in sites} for a in ALPHAS}
        series["1-cos_AB"] = {s: [x["one_minus_cos_ab"][s]["mean"] for x in stats[kind]] for s in sites}
        ys, err = _bars(series, sites)
        panels.append(bar_panel(sites, ys, yerr=err, title=_tag(kind, met), xlabel="layer",
                                ylabel="E[1 - cosine] (mean, 95% t over seeds)", yscale="log"))
    measure.figure("llfc_cosine", title=f"Z1 {setting.name}: E[1 - cos] per layer", panels=panels)
    nearly_all = measure.values["nearly_all_ratio_per_seed"]
    measure.summary = ("ratio E[1-cos_alpha]/E[1-cos_AB] that nearly all the layers stay under (all alphas): "
                       + ", ".join(f"{_tag(k, met)} {_mean(nearly_all[k]):.3f} (largest of every layer and alpha "
                                   f"{max(_mean(v) for v in ratios[k][0].values()):.3f})" for k in LMC_KINDS))


@pytest.mark.claim("Z2")
@pytest.mark.parametrize("setting", PARAMS)
def test_z2_lmc_pairs_are_llfc_and_independent_pairs_are_not(setting: Setting, lab: Lab, n_seeds: int,
                                                            measure) -> None:
    """Zhou §4, Fig. 4: "We measure cosine_0.5 of the features of two modes that are linearly connected and two
    modes that are independently trained ... the values of E_D[1 - cosine_LMC(x_i)] are negligible compared to
    E_D[1 - cosine_not LMC(x_i)]".

    For each pair kind that meets the LMC premise: the ratio of its E[1 - cos_0.5] to the independent pair's of
    the same replicate is negligible in nearly all the layers, the logits included (:data:`NEARLY_ALL_REASON`:
    per seed, the (k+1)-th largest ratio over the layers). Per-layer ratios recorded as a non-deciding "every
    layer" assertion."""
    pairs = _pairs(lab, setting, n_seeds)
    premise = _premise(lab, setting, pairs)
    stats = _llfc_stats(lab, pairs)
    met = _judge_premise(measure, premise, setting)
    half = alpha_key(0.5)
    sites = stats["independent"][0]["sites"]
    ratios: dict[str, dict[str, list[float]]] = {}
    nearly_all: dict[str, list[float]] = {}
    for kind in LMC_KINDS:
        points, noise, ses = {}, {}, {}
        for s in sites:
            rs = [_ratio(x["one_minus_cos_alpha"][s][half], stats["independent"][r]["one_minus_cos_alpha"][s][half])
                  for r, x in enumerate(stats[kind])]
            points[s], ses[s] = [v for v, _ in rs], [se for _, se in rs]
            noise[s] = mean_noise(ses[s])
        ratios[kind] = points
        nearly_all[kind], picked_noise, k = _nearly_all(points, ses)
        measure.expect(f"{_tag(kind, met)}: E[1-cos_0.5] negligible next to the independent pairs' in nearly all "
                       f"the layers (all but {k} of {len(sites)})", NEGLIGIBLE, nearly_all[kind], Z2_SOURCE,
                       noise=picked_noise, **_decides(kind, met, setting))
        measure.expect(f"{_tag(kind, met)}: the same in every layer (recorded)", NEGLIGIBLE, points, Z2_SOURCE,
                       over="every", noise=noise, pool=True, decides=False,
                       note="lmccheck's addition: the paper claims nearly all the layers, not every one")
    values = {k: {s: [x["one_minus_cos_alpha"][s][half]["mean"] for x in stats[k]] for s in sites} for k in KINDS}
    measure.values.update({"sites": sites, "premise": premise, "premise_met": dict(met),
                           "one_minus_cos_half_per_seed": values, "ratio_per_seed": ratios,
                           "nearly_all_ratio_per_seed": nearly_all})
    measure.thresholds.update({"clearly_negligible": CLEARLY_NEGLIGIBLE,
                               "clearly_not_negligible": CLEARLY_NOT_NEGLIGIBLE})
    ys, err = _bars({(_tag(k, met) if k in LMC_KINDS else NAMES[k]): values[k] for k in KINDS}, sites)
    measure.figure("lmc_vs_independent",
                   title=f"Z2 {setting.name}: E[1 - cos_0.5], LMC vs not (mean, 95% t over seeds)",
                   panels=[bar_panel(sites, ys, yerr=err, xlabel="layer", ylabel="E[1 - cos_0.5]", yscale="log")])
    measure.summary = ("ratio of E[1-cos_0.5] to the independent pairs' that nearly all the layers stay under: "
                       + ", ".join(f"{_tag(k, met)} {_mean(nearly_all[k]):.3f} (largest layer "
                                   f"{max(_mean(v) for v in ratios[k].values()):.3f})" for k in LMC_KINDS)
        + f"; independent E[1-cos_0.5] {_range([_mean(v) for v in values['independent'].values()])}")
    _skip_without_premise(met, premise, measure)


@pytest.mark.claim("Z3")
@pytest.mark.parametrize("setting", PARAMS)
def test_z3_llfc_scale_is_close_to_one(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """Zhou App. B.2: "we conclude that the values of E_D[coef_alpha(x_i)] are close to 1 in most cases"; §5.1:
    "Yet in most cases, we observe that c is close to 1".

    A case is a (pair kind, layer, alpha) of the pair kinds that meet the LMC premise, every layer of Definition 2
    counted, the logits included. "Most cases close to 1" = more than half of the cases have |E[coef_alpha] - 1|
    in the "close" end of :data:`CLOSE_TO_ONE`, which is the statement that the median case does (the upper
    median for an even count): per seed, that case's value, judged in the zone with its t interval over seeds (the
    cases are the paper's fixed
    layers and alphas; the seeds are what is sampled). Recorded beside it: each case judged on its own (per kind,
    the seed spread pooled over the kind's cases) and the share of clearly close cases with its exact binomial
    interval (undecided cases counted against it: a lower bound)."""
    pairs = _pairs(lab, setting, n_seeds)
    premise = _premise(lab, setting, pairs)
    stats = _llfc_stats(lab, pairs)
    met = _judge_premise(measure, premise, setting)
    sites = stats["spawned"][0]["sites"]
    outcomes: dict[str, list[str]] = {}
    deviation: dict[str, dict[str, list[float]]] = {}
    case_noise: dict[str, dict[str, float]] = {}
    for kind in LMC_KINDS:
        points, noise = {}, {}
        for s in sites:
            for a in ALPHAS:
                ms = [x["coef_alpha"][s][alpha_key(a)] for x in stats[kind]]
                label = f"{s} alpha={a:g}"
                points[label] = [abs(float(m["mean"]) - 1.0) for m in ms]
                noise[label] = mean_noise([_mean_se(m) for m in ms])
        deviation[kind], case_noise[kind] = points, noise
        j = measure.expect(f"{_tag(kind, met)}: |E[coef_alpha] - 1| per case (recorded)",
                           CLOSE_TO_ONE, points, Z3_CASE_SOURCE, over="every", noise=noise, pool=True, decides=False,
                           **({} if met.get(kind) else {"note": PREMISE_NOTE}))
        outcomes[kind] = [p.outcome for p in j.points]
    judged = [k for k in LMC_KINDS if met.get(k) and _in_scope(setting, k)]
    counted = [o for k in judged for o in outcomes[k]]
    close, far = counted.count(PASS), counted.count(FAIL)
    # the kinds that meet the premise decide; with none, the in-scope kinds' median is shown, not deciding
    cases_of = judged or [k for k in LMC_KINDS if _in_scope(setting, k)]
    seeds = min(len(stats[k]) for k in cases_of)  # replicate r of every kind shares pair r's networks
    # median_high: for an even count the upper middle case, so that more than half of the cases lie at or below it
    medians = [statistics.median_high(v[r] for k in cases_of for v in deviation[k].values()) for r in range(seeds)]
    measure.expect("most cases close to 1: the median case's |E[coef_alpha] - 1| (over the layers, alphas and "
                   "pair kinds that meet the premise) is close to 0" + ("" if judged else " [premise not met]"),
                   CLOSE_TO_ONE, medians, Z3_SHARE_SOURCE,
                   noise=math.sqrt(_mean([case_noise[k][c] ** 2 for k in cases_of for c in case_noise[k]])),
                   decides=bool(judged),
                   note="per seed, the upper median over the cases; the test-set noise of one case's mean (RMS)"
                        + ("" if judged else "; " + PREMISE_NOTE))
    measure.values["median_case_deviation_per_seed"] = medians
    if judged:
        measure.expect_share(f"the share of the cases clearly close to 1 (recorded): {close} of {len(counted)}, "
                             f"{far} clearly not, {len(counted) - close - far} undecided", close, len(counted),
                             Z3_SHARE_SOURCE, above=MOST, decides=False,
                             note="cases decided per case by their seed interval (pooled spread); undecided cases "
                                  "count against the share: a lower bound")
    _render_z3(setting, measure, stats, premise, met, outcomes, (close, far, len(counted)))
    _skip_without_premise(met, premise, measure)


def _render_z3(setting: Setting, measure, stats: dict[str, list[dict[str, Any]]],
               premise: dict[str, dict[str, list[float]]], met: Mapping[str, bool], outcomes: dict[str, list[str]],
               counts: tuple[int, int, int]) -> None:
    sites = stats["spawned"][0]["sites"]
    coefs = {k: {s: {alpha_key(a): [x["coef_alpha"][s][alpha_key(a)]["mean"] for x in stats[k]] for a in ALPHAS}
                 for s in sites} for k in KINDS}
    measure.values.update({"sites": sites, "premise": premise, "premise_met": dict(met),
                           "coef_alpha_per_seed": coefs, "case_outcomes": outcomes,
                           "cases_close_far_counted": list(counts)})
    measure.thresholds.update({"close_to_one": [CLOSE_TO_ONE.clearly, CLOSE_TO_ONE.clearly_not], "most": MOST})
    panels = []
    for k in KINDS:
        ys, err = _bars({f"alpha={a:g}": {s: coefs[k][s][alpha_key(a)] for s in sites} for a in ALPHAS}, sites)
        panels.append(bar_panel(sites, ys, yerr=err, title=_tag(k, met) if k in LMC_KINDS else NAMES[k],
                                xlabel="layer", ylabel="E[coef_alpha] (mean, 95% t over seeds)"))
    measure.figure("coef", title=f"Z3 {setting.name}: E[coef_alpha]", panels=panels)
    close, far, total = counts
    all_means = [_mean(v) for k in LMC_KINDS for s in sites for v in coefs[k][s].values()]
    judged = [NAMES[k] for k in LMC_KINDS if met.get(k)]
    median = {k: statistics.median_high(abs(_mean(v) - 1) for s in sites for v in coefs[k][s].values())
              for k in LMC_KINDS}
    measure.summary = (f"E[coef] {_range(all_means)}; median case |E[coef] - 1|: " + ", ".join(
        f"{_tag(k, met)} {median[k]:.3f}" for k in LMC_KINDS) + "; " + (
        f"of the {total} cases of {', '.join(judged)} pairs: {close} clearly close to 1, {far} clearly not, "
        f"{total - close - far} undecided" if judged else "no pair kind meets the premise"))
