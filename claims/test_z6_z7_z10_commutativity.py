"""Claims Z6, Z7 and Z10: the two conditions of LLFC, measured (Zhou et al. 2023, §5, App. B.3): Z6, weak
additivity of the ReLU (Fig. 5-6); Z7, commutativity (Fig. 7, 16-19); Z10, weight and activation matching
establish commutativity (§5.2, Eq. 9).

The pair kinds, the LMC premise Z6 and Z7 record first, the reading of "negligible" and the setting:
:mod:`claims.llfc_pairs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest

from fixtures import Lab
from fixtures.recipes import Setting
from lmccheck.commutativity_matching import commutativity_objective
from lmccheck.figures import bar_panel, hist_panel
from lmccheck.verdict import Above, Below, reading

from .llfc_pairs import (
    CLEARLY_NEGLIGIBLE,
    CLEARLY_NOT_NEGLIGIBLE,
    KINDS,
    LMC_KINDS,
    LOGITS,
    METHODS,
    NAMES,
    NEGLIGIBLE,
    PARAMS,
    ZONE_REASON,
    _bars,
    _decides,
    _judge_premise,
    _mean,
    _pairs,
    _premise,
    _range,
    _ratio,
    _skip_without_premise,
    _stat,
    _tag,
)
from .rules import MeasurementBug, mean_noise

#: beyond the paper, next to Z7: Theorem 1's defect decomposition of each pair kind (seed 0, at alpha = 0.5, on
#: the first 1000 test examples: it runs in float64)
DECOMPOSITION_EXAMPLES = 1000
#: Eq. (9)'s objective is evaluated on the first 1000 training examples, as commutativity matching does
EQ9_EXAMPLES = 1000
#: Fig. 19 compares Dist_com of LMC and not-LMC pairs for ResNet-20 on CIFAR-10, spawned and weight matching
FIG19 = {"arch": "resnet20", "dataset": "cifar10", "kinds": ("spawned", "weight")}
Z6_SOURCE = reading(
    'Fig. 5 (§5.1): "at different layers, Dist_sigma(h~_A, h~_B) are negligible (and much smaller than the baseline '
    'Dist_sigma(h~_C, h~_D))"; Fig. 6: "the values of Dist_sigma(h~_C, h~_D_act) and Dist_sigma(h~_C, h~_D_wgt) are '
    'close to zero compared to Dist_sigma(h~_C, h~_D)" (h~: the pre-activations): the ratio of the mean Dist_sigma '
    'over the test examples to the '
    "independent pair's, in every layer shown. Zone: " + ZONE_REASON
)
Z7_SOURCE = reading(
    'Fig. 7 (§5.1): "for both spawning and permutation methods, Dist_com is negligible compared with Dist_W and '
    'Dist_H"; App. B.3, Fig. 16-18: "Dist_com is negligible compared with Dist_W and Dist_H, confirming the '
    'commutativity condition": Dist_com / min(Dist_W, Dist_H) in every layer after the first (App. B.3: "not '
    'conducted on the first Conv/Linear layer"). App. B.3 speaks of "modes that satisfy LLFC"; the pairs judged are '
    "those that meet the LMC premise, which the paper's claim says also satisfy LLFC (abstract: \"whenever two "
    'networks satisfy LMC, they also satisfy LLFC"). Zone: ' + ZONE_REASON
)
Z7_NOT_LMC_SOURCE = reading(
    'App. B.3, Fig. 19 (ResNet-20 on CIFAR-10, spawning and weight matching): "the values of Dist_com,LMC are '
    'negligible compared with Dist_com,not LMC": the ratio per layer, every layer. Zone: ' + ZONE_REASON
)
KAPPA_SOURCE = reading(
    "lmccheck's diagnostic, not the paper's (issue 25): Dist_com is second order in the pair's distance, so "
    "Dist_com / min(Dist_W, Dist_H) grows with how far apart a pair stays however well it commutes; kappa = "
    "Dist_com / (Dist_W Dist_H) normalizes by both factors. Recorded: kappa of the pair below the unaligned "
    "pair's (ratio < 1) in every layer"
)
Z10_SOURCE = reading(
    '§5.2, Eq. 9: "the weight matching (3) and activation matching (4) objectives ... directly correspond to the '
    'two factors in Equation (9). Therefore, we can interpret Git Re-Basin as a means to ensure commutativity". '
    "The paper gives no size for what matching achieves: lmccheck reads \"a means to ensure commutativity\" as "
    "matching lowering Eq. (9)'s objective and Dist_com below the unmatched pair's by more than the spread over "
    "seeds (paired, 95% t interval above 0)")


# ---------------------------------------------------------------------------- Z6: weak additivity (§5.1, Fig. 5-6)
@pytest.mark.claim("Z6")
@pytest.mark.parametrize("setting", PARAMS)
def test_z6_weak_additivity_holds_for_lmc_pairs(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """Zhou §5.1, Fig. 5: "at different layers, Dist_sigma(h~_A, h~_B) are negligible (and much smaller than the
    baseline Dist_sigma(h~_C, h~_D))"; Fig. 6: "the values of Dist_sigma(h~_C, h~_D_act) and
    Dist_sigma(h~_C, h~_D_wgt) are close to zero compared to Dist_sigma(h~_C, h~_D)" (h~: pre-activations).

    For each pair kind that meets the LMC premise, in every layer: the mean Dist_sigma over the test examples,
    over the independent pair's of the same replicate, is negligible (seed spread pooled over the layers).
    Dist_sigma is the max over alpha on a 25-point grid (§5.1's definition); Dist_sigma at alpha = 1/2 alone (what
    the authors' script scripts/weak_additivity.py plots) is recorded beside it, not deciding. "Every layer":
    §5.1 says "at different layers", of every layer its figures draw (unlike the abstract's "nearly all the
    layers" of LLFC itself). Examples where Dist_sigma is undefined (a zero feature vector against a nonzero one)
    are left out of the means and counted per layer (``undefined_examples``)."""
    pairs = _pairs(lab, setting, n_seeds)
    premise = _premise(lab, setting, pairs)
    stats = {k: [_stat(lab, "weak_additivity", p) for p in pairs[k]] for k in KINDS}
    met = _judge_premise(measure, premise, setting)
    sites = stats["independent"][0]["sites"]
    shown = [s for s in sites if _drawn_site(setting.config.arch, s)]
    ratios: dict[str, dict[str, list[float]]] = {}
    for kind in LMC_KINDS:
        points, noise = {}, {}
        for s in sites:
            rs = [_ratio(x["dist_sigma"][s], stats["independent"][r]["dist_sigma"][s])
                  for r, x in enumerate(stats[kind])]
            points[s], noise[s] = [v for v, _ in rs], mean_noise([se for _, se in rs])
        ratios[kind] = points
        measure.expect(f"{_tag(kind, met)}: mean Dist_sigma negligible next to the independent pairs', every layer"
                       + ("" if shown == sites else " the paper draws (the first conv of each block)"),
                       NEGLIGIBLE, {s: points[s] for s in shown}, Z6_SOURCE, over="every",
                       noise={s: noise[s] for s in shown}, pool=True, **_decides(kind, met, setting))
        if shown != sites:
            measure.expect(f"{_tag(kind, met)}: the same at every ReLU (recorded)", NEGLIGIBLE, points, Z6_SOURCE,
                           over="every", noise=noise, pool=True, decides=False,
                           note="lmccheck's addition: Fig. 6's caption computes Dist_sigma for ResNet-20 in the first "
                           "conv layer of each block only")
    means = {k: {s: [x["dist_sigma"][s]["mean"] for x in stats[k]] for s in sites} for k in KINDS}
    measure.values.update({"sites": sites, "premise": premise, "premise_met": dict(met),
                           "dist_sigma_per_seed": {k: [x["dist_sigma"] for x in stats[k]] for k in KINDS},
                           "dist_sigma_half_per_seed": {k: [x["dist_sigma_half"] for x in stats[k]] for k in KINDS},
                           "undefined_examples": {k: [{s: x["dist_sigma"][s]["undefined"] for s in sites}
                                                      for x in stats[k]] for k in KINDS},
                           "ratio_per_seed": ratios})
    measure.thresholds.update({"clearly_negligible": CLEARLY_NEGLIGIBLE,
                               "clearly_not_negligible": CLEARLY_NOT_NEGLIGIBLE})
    top = max(max(stats["independent"][0]["sample"][s]) for s in sites)
    ys, err = _bars({(_tag(k, met) if k in LMC_KINDS else NAMES[k]): means[k] for k in KINDS}, sites)
    measure.figure("dist_sigma", title=f"Z6 {setting.name}: Dist_sigma, LMC vs independent", panels=[
        bar_panel(sites, ys, yerr=err, title="mean over test examples (mean, 95% t over seeds)", xlabel="layer",
                  ylabel="E[Dist_sigma]", yscale="log"),
        *[hist_panel({k: stats[k][0]["sample"][s] for k in KINDS}, range=(0.0, max(top, 1e-9)),
                     title=f"{s}, seed 0", xlabel="Dist_sigma") for s in sites]])
    measure.summary = ("mean Dist_sigma over the independent pairs', per layer: " + "; ".join(
        f"{_tag(k, met)} {_range([_mean(v) for v in ratios[k].values()])}" for k in LMC_KINDS))
    _skip_without_premise(met, premise, measure)


def _drawn_site(arch: str, site: str) -> bool:
    """Whether the paper's figures draw ``site``: every layer, except on ResNet-20, where Dist_sigma (Fig. 6) and
    Dist_com, Dist_W (Fig. 7) "are calculated in the first Conv layer of each block" (``stages.i.j.conv1``, and
    the ReLU after it, ``stages.i.j.act1``)."""
    return not arch.startswith("resnet") or (site.startswith("stages.") and site.endswith((".act1", ".conv1")))


# ---------------------------------------------------------------------------- Z7, Z10: commutativity
def _commutativity(lab: Lab, pairs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {k: [_stat(lab, "commutativity", p) for p in pairs[k]] for k in KINDS}


NOT_FIG19 = {"decides": False, "note": "not the paper's comparison at this setting (Fig. 19: ResNet-20, CIFAR-10)"}


def _fig19_applies(setting: Setting, kind: str) -> bool:
    cfg = setting.config
    return cfg.arch == FIG19["arch"] and cfg.dataset == FIG19["dataset"] and kind in FIG19["kinds"]


@pytest.mark.claim("Z7")
@pytest.mark.parametrize("setting", PARAMS)
def test_z7_commutativity_holds_for_lmc_pairs(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """Zhou §5.1, Fig. 7: "for both spawning and permutation methods, Dist_com is negligible compared with Dist_W
    and Dist_H, which confirms the commutativity condition"; App. B.3 (Fig. 16-18) likewise; Fig. 19 (ResNet-20 on
    CIFAR-10, spawning and weight matching): "the values of Dist_com,LMC are negligible compared with
    Dist_com,not LMC".

    For each pair kind that meets the LMC premise, in every layer after the first: Dist_com / min(Dist_W, Dist_H)
    is negligible. Where Fig. 19 makes the comparison (ResNet-20, CIFAR-10; spawned and WM pairs), Dist_com over
    the independent pair's is negligible too; elsewhere that ratio is recorded, not deciding. kappa = Dist_com /
    (Dist_W Dist_H), matched against unaligned, is a recorded diagnostic. Dist_com is one number per pair over the
    test set (no per-example spread is recorded), so no test-set noise is added."""
    pairs = _pairs(lab, setting, n_seeds)
    premise = _premise(lab, setting, pairs)
    stats = _commutativity(lab, pairs)
    met = _judge_premise(measure, premise, setting)
    sites = stats["independent"][0]["sites"]

    def per_seed(kind: str, f: Any) -> dict[str, list[float]]:
        return {s: [f(x, stats["independent"][r], s) for r, x in enumerate(stats[kind])] for s in sites}

    ratios = {k: per_seed(k, lambda x, _i, s: x["dist_com"][s] / min(x["dist_w"][s], x["dist_h"][s])) for k in KINDS}
    not_lmc = {k: per_seed(k, lambda x, i, s: x["dist_com"][s] / i["dist_com"][s]) for k in LMC_KINDS}
    kappa = {k: per_seed(k, lambda x, _i, s: x["dist_com"][s] / (x["dist_w"][s] * x["dist_h"][s])) for k in KINDS}
    drawn = [s for s in sites if _drawn_site(setting.config.arch, s)]
    where = "" if drawn == sites else " the paper draws (the first conv of each block)"
    for kind in LMC_KINDS:
        measure.expect(f"{_tag(kind, met)}: Dist_com negligible next to Dist_W and Dist_H, every layer{where}",
                       NEGLIGIBLE, {s: ratios[kind][s] for s in drawn}, Z7_SOURCE, over="every", pool=True,
                       **_decides(kind, met, setting))
        if drawn != sites:
            measure.expect(f"{_tag(kind, met)}: the same at every layer after the first (recorded)", NEGLIGIBLE,
                           ratios[kind], Z7_SOURCE, over="every", pool=True, decides=False,
                           note="lmccheck's addition: Fig. 7's caption computes Dist_com for ResNet-20 in the first "
                           "conv layer of each block only")
        fig19 = _fig19_applies(setting, kind)
        measure.expect(f"{_tag(kind, met)}: Dist_com negligible next to the independent pairs', every layer{where}"
                       + ("" if fig19 else " (recorded: Fig. 19 makes it for ResNet-20 on CIFAR-10 only)"),
                       NEGLIGIBLE, {s: not_lmc[kind][s] for s in drawn}, Z7_NOT_LMC_SOURCE, over="every", pool=True,
                       **(_decides(kind, met, setting) if fig19 else NOT_FIG19))
        kappa_ratio = {s: [x / i for x, i in zip(kappa[kind][s], kappa["independent"][s])] for s in sites}
        measure.expect(f"{_tag(kind, met)}: kappa = Dist_com/(Dist_W Dist_H) below the unaligned pairs' (diagnostic)",
                       Below(1.0), kappa_ratio, KAPPA_SOURCE, over="every", pool=True, decides=False,
                       note="lmccheck's diagnostic, beyond the paper")
    decomposition = ({k: lab.features("decomposition", pairs[k][0]["a"], pairs[k][0]["b"], perm=pairs[k][0]["perm"],
                                      n_examples=min(DECOMPOSITION_EXAMPLES, setting.eval_examples),
                                      alphas=(0.5,))["per_layer"] for k in KINDS}
                     if _cm_applies(setting) else None)
    _render_z7(setting, measure, stats, premise, met, {"ratio": ratios, "not_lmc": not_lmc, "kappa": kappa},
               decomposition)
    _skip_without_premise(met, premise, measure)


def _render_z7(setting: Setting, measure, stats: dict[str, list[dict[str, Any]]],
               premise: dict[str, dict[str, list[float]]], met: Mapping[str, bool],
               derived: dict[str, dict[str, dict[str, list[float]]]], decomposition: dict | None) -> None:
    sites = stats["independent"][0]["sites"]
    raw = {k: {d: {s: [x[d][s] for x in stats[k]] for s in sites} for d in ("dist_com", "dist_w", "dist_h")}
           for k in KINDS}
    measure.values.update({"sites": sites, "premise": premise, "premise_met": dict(met), "distances_per_seed": raw,
                           **{f"{name}_per_seed": v for name, v in derived.items()},
                           "theorem1_decomposition_seed0_alpha_0.5": decomposition})
    measure.thresholds.update({"clearly_negligible": CLEARLY_NEGLIGIBLE,
                               "clearly_not_negligible": CLEARLY_NOT_NEGLIGIBLE})
    panels = []
    for k in KINDS:
        ys, err = _bars({"Dist_com": raw[k]["dist_com"], "Dist_W": raw[k]["dist_w"], "Dist_H": raw[k]["dist_h"]}, sites)
        panels.append(bar_panel(sites, ys, yerr=err, title=_tag(k, met) if k in LMC_KINDS else NAMES[k],
                                xlabel="layer", ylabel="distance (mean, 95% t over seeds)", yscale="log"))
    ys, err = _bars({(_tag(k, met) if k in LMC_KINDS else NAMES[k]): derived["kappa"][k] for k in KINDS}, sites)
    panels.append(bar_panel(sites, ys, yerr=err, title="kappa = Dist_com / (Dist_W Dist_H) (diagnostic)",
                            xlabel="layer", ylabel="kappa", yscale="log"))
    measure.figure("commutativity", title=f"Z7 {setting.name}: Dist_com vs Dist_W and Dist_H", panels=panels)
    if decomposition is not None:
        # the store returns the per-layer dict name-sorted ('head' first): back to forward order (an MLP's
        # layers.0, layers.1, ..., then the logits; the decomposition exists for MLPs only)
        layers = sorted(decomposition["spawned"],
                        key=lambda n: (n == LOGITS, 0 if n == LOGITS else int(n.split(".")[-1])))
        parts = ("llfc_error", "weak_additivity", "commutativity", "propagated")
        measure.figure("theorem1_decomposition", title=f"Z7 {setting.name}: Theorem 1's decomposition at alpha = 0.5 "
                       "(seed 0, beyond the paper)", panels=[
                           bar_panel(layers, {part: [decomposition[k][n]["0.5"][part] for n in layers]
                                              for part in parts},
                                     title=NAMES[k], xlabel="layer", ylabel="relative norm", yscale="log")
                           for k in KINDS])
    measure.summary = ("Dist_com / min(Dist_W, Dist_H) per layer: " + "; ".join(
        f"{_tag(k, met)} {_range([_mean(v) for v in derived['ratio'][k].values()])}" for k in LMC_KINDS)
        + "; over the independent pairs' Dist_com: " + ", ".join(
        f"{NAMES[k]} {_range([_mean(v) for v in derived['not_lmc'][k].values()])}" for k in LMC_KINDS))


@pytest.mark.claim("Z10")
@pytest.mark.parametrize("setting", PARAMS)
def test_z10_matching_establishes_commutativity(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """Zhou §5.2: "the weight matching (3) and activation matching (4) objectives ... directly correspond to the
    two factors in Equation (9). Therefore, we can interpret Git Re-Basin as a means to ensure commutativity."

    After weight matching and after activation matching, Eq. (9)'s objective sum_l ||(W_A - P W_B P^T)(H_A -
    P H_B)||_F^2 and Dist_com in every layer fall below the unmatched pair's (the same replicate's A and B), by
    more than the spread over seeds: the paired difference unmatched - matched is above 0 (t interval). Eq. (9)
    is implemented for ReLU MLPs without norm layers (the paper's architecture); conv nets are judged on Dist_com.
    Beyond the paper (§6's open question): commutativity matching, Eq. (9) minimized directly from AM's
    permutation, recorded against WM and AM on the same pairs (objective and end-of-training barriers)."""
    pairs = _pairs(lab, setting, n_seeds)
    stats = _commutativity(lab, pairs)
    sites = stats["independent"][0]["sites"]
    before = {s: [x["dist_com"][s] for x in stats["independent"]] for s in sites}
    after = {m: {s: [x["dist_com"][s] for x in stats[m]] for s in sites} for m in METHODS}
    eq9 = _eq9(lab, setting, pairs) if _cm_applies(setting) else None
    for m in METHODS:
        name = {"weight": "WM", "activation": "AM"}[m]
        if eq9 is not None:
            measure.expect(f"{name}: Eq. (9)'s objective falls below the unmatched pair's",
                           Above(0.0), [u - v for u, v in zip(eq9["unmatched"], eq9[m], strict=True)], Z10_SOURCE,
                           note=f"sum over the weight layers, on the first {EQ9_EXAMPLES} training examples")
        measure.expect(f"{name}: Dist_com falls below the unmatched pair's, every layer", Above(0.0),
                       {s: [u - v for u, v in zip(before[s], after[m][s], strict=True)] for s in sites},
                       Z10_SOURCE, over="every")
    cm = _commutativity_matching(lab, setting, pairs) if _cm_applies(setting) else None
    if cm is not None and eq9 is not None:
        _check_eq9(eq9, cm)
    _render_z10(setting, measure, sites, before, after, eq9, cm)


def _eq9(lab: Lab, setting: Setting, pairs: dict[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    """Per seed: Eq. (9)'s objective of A and B unmatched, and of A and P[B] for WM and AM (no product: a few
    matrix products of the first 1000 training examples' features, under a second per pair on a CPU)."""
    cfg = setting.config
    model = lab.model(cfg)
    data = lab.dataset(cfg.dataset).train.take(cfg.train_subset)
    out: dict[str, list[float]] = {"unmatched": [], **{m: [] for m in METHODS}}
    for i, p in enumerate(pairs["independent"]):
        sa, sb = p["a"].final, p["b"].final
        out["unmatched"].append(commutativity_objective(model, sa, sb, data, None, n_examples=EQ9_EXAMPLES))
        for m in METHODS:
            out[m].append(commutativity_objective(model, sa, sb, data, pairs[m][i]["perm"], n_examples=EQ9_EXAMPLES))
    return out


def _check_eq9(eq9: dict[str, list[float]], cm: dict[str, Any]) -> None:
    """Commutativity matching starts from AM's permutation on the same examples: its recorded initial objective
    is Eq. (9) at AM's, or one of the two computations is wrong."""
    for mine, theirs in zip(eq9["activation"], (o["objective_init"] for o in cm["objective"]), strict=True):
        if not math.isclose(mine, theirs, rel_tol=1e-6):
            raise MeasurementBug(f"Eq. (9) at AM's permutation is {mine:.6g} here but {theirs:.6g} in commutativity "
                                 "matching's record")


def _render_z10(setting: Setting, measure, sites: list[str], before: dict[str, list[float]],
                after: dict[str, dict[str, list[float]]], eq9: dict[str, list[float]] | None, cm: dict | None) -> None:
    measure.values.update({"sites": sites, "dist_com_unmatched_per_seed": before, "dist_com_matched_per_seed": after,
                           "eq9_objective_per_seed": eq9, "commutativity_matching": cm})
    series = {"unmatched": before, **{f"after {m}": after[m] for m in METHODS}}
    if cm is not None:
        series["after commutativity matching (beyond the paper)"] = cm["dist_com_per_seed_by_site"]
    ys, err = _bars(series, sites)
    panels = [bar_panel(sites, ys, yerr=err, title="Dist_com (mean, 95% t over seeds)", xlabel="layer",
                        ylabel="Dist_com", yscale="log")]
    if eq9 is not None:
        names = ["unmatched", *METHODS] + (["commutativity"] if cm is not None else [])
        rows = {**eq9, **({"commutativity": [o["objective_final"] for o in cm["objective"]]} if cm is not None else {})}
        ys, err = _bars({"Eq. (9) objective": {n: rows[n] for n in names}}, names)
        panels.append(bar_panel(names, ys, yerr=err, title=f"Eq. (9) objective ({EQ9_EXAMPLES} training examples)",
                                ylabel="sum_l ||(W_A - P W_B P^T)(H_A - P H_B)||_F^2", yscale="log"))
    if cm is not None:
        ys, err = _bars({m: {"test error barrier": [v[0] for v in vals], "test loss barrier": [v[1] for v in vals]}
                         for m, vals in cm["barrier"].items()}, ["test error barrier", "test loss barrier"])
        panels.append(bar_panel(["test error barrier", "test loss barrier"], ys, yerr=err,
                                title="end-of-training barriers (beyond the paper)", ylabel="barrier"))
    measure.figure("before_after", title=f"Z10 {setting.name}: Dist_com and Eq. (9) before and after matching",
                   panels=panels)
    measure.summary = "Dist_com: " + "; ".join(
        f"{s} {_mean(before[s]):.3g} -> WM {_mean(after['weight'][s]):.3g}, AM {_mean(after['activation'][s]):.3g}"
        for s in sites)
    if eq9 is not None:
        measure.summary += (f"; Eq. (9) {_mean(eq9['unmatched']):.3g} -> WM {_mean(eq9['weight']):.3g}, "
                            f"AM {_mean(eq9['activation']):.3g}")
    if cm is not None:
        b = {m: _mean([v[0] for v in vals]) for m, vals in cm["barrier"].items()}
        final = _mean([o["objective_final"] for o in cm["objective"]])
        measure.summary += (f"; commutativity matching (recorded): Eq. (9) {final:.3g}, test error barrier "
                            f"{b['commutativity']:.2%} vs WM {b['weight']:.2%}, AM {b['activation']:.2%}")


def _cm_applies(setting: Setting) -> bool:
    """Eq. (9) and commutativity matching are implemented for ReLU MLPs without norm layers (Eq. 9's architecture)."""
    return setting.config.arch == "mlp" and setting.config.model_kwargs.get("norm", "none") == "none"


def _commutativity_matching(lab: Lab, setting: Setting, pairs: dict[str, list[dict[str, Any]]]) -> dict:
    """Beyond the paper (§6's open question): a permutation that minimizes Eq. (9) directly, from AM's, against
    WM and AM on the same pairs: its objective, Dist_com and end-of-training test barriers (error, loss)."""
    out: dict = {"dist_com_per_seed": [], "objective": [], "barrier": {m: [] for m in (*METHODS, "commutativity")}}
    for p in pairs["weight"]:
        perm = lab.match("commutativity", p["a"], p["b"])
        out["dist_com_per_seed"].append(lab.features("commutativity", p["a"], p["b"], perm=perm,
                                                     n_examples=p["n"])["dist_com"])
        out["objective"].append({k: perm.stats[k] for k in (
            "objective_init", "objective_fw", "objective_final", "accepted_fw", "accepted_swaps", "local_optimum",
            "first_step_slope", "sweeps", "examples", "seconds")})
        for m, q in (("weight", lab.match("weight", p["a"], p["b"])),
                     ("activation", lab.match("activation", p["a"], p["b"])), ("commutativity", perm)):
            res = lab.barrier(p["a"], p["b"], perm=q, **setting.curve)
            out["barrier"][m].append((res.error_barrier, res.loss_barrier))
    sites = list(out["dist_com_per_seed"][0])
    out["dist_com_per_seed_by_site"] = {s: [d[s] for d in out["dist_com_per_seed"]] for s in sites}
    return out
