"""Claims Z1-Z3 and Z6-Z10: layerwise linear feature connectivity and its two conditions, measured
(Zhou et al. 2023, §4-§5, App. B).

Three kinds of pair of one recipe (App. B.1), all evaluated on the first 10k test examples:

* **spawned**: two children of network A spawned with different SGD seeds (App. B.1.1: an MLP "from a common
  initialization", a conv net after 5 epochs), the children claim S4 trains;
* **permuted** (``weight``, ``activation``): A and P_end[B] for the independent pairs of claim S3, P_end
  found by weight or activation matching at the end of training (App. B.1.2);
* **independent**: A and B unaligned, "two modes that are independently trained (not satisfying LMC)".

Zhou et al.'s interpolation is ``theta_alpha = alpha theta_A + (1 - alpha) theta_B`` with alpha in {0.25, 0.5,
0.75} (:mod:`lmccheck.llfc`).

**The LMC premise first.** The paper's claim is conditional: "whenever two trained networks satisfy LMC ...,
they also satisfy LLFC in nearly all the layers" (abstract). Every check of a claim about linearly connected
pairs (Z1-Z3, Z6-Z8) first records, per pair kind, whether its pairs are linearly connected (Definition 1):
the seed mean of the end-of-training test error barrier minus the test-set noise allowance of
:func:`claims.rules.connected_threshold`, with its t interval (``Below(0)``). The barriers are products other
checks build already (S3's end barriers of the permuted and independent pairs, S4's barrier of the children
spawned at t = 0), so the premise costs nothing. A pair kind whose premise does not PASS is still measured,
shown and labelled "premise not met"; its assertions are recorded with ``decides=False``. When no kind meets
the premise, the INCONCLUSIVE premises decide (the check is INCONCLUSIVE, with the seeds that would settle it);
when every kind clearly misses it, the check is skipped.

**"Negligible".** The paper's "close to 0", "negligible (compared to/with)", "much smaller" carry no number.
lmccheck reads each of them as an indifference zone on the ratio of the LMC pairs' quantity to its baseline
(:data:`NEGLIGIBLE`): PASS when the ratio's interval lies below 0.1, FAIL when it lies above 10^-1/2, else
INCONCLUSIVE (the reasons are in :data:`ZONE_REASON`). Ratios are paired per seed (the same replicate's pairs)
and carry the test-set noise of the means over examples.

**The setting is not the paper's.** The CPU tier's MLP (3 x 512, as App. B.1) is trained on Fashion-MNIST with
SGD (lr 0.05, momentum 0.9, batch 128, 5 epochs, cosine schedule); the paper trains on MNIST, its permuted pairs
with Adam (lr 1e-3) and its spawned pairs with Adam (lr 1.2e-4, batch 60, 30 epochs) (App. B.1.1-B.1.2).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fixtures import Lab
from fixtures.recipes import Setting, child_seeds
from lmccheck.commutativity_matching import commutativity_objective
from lmccheck.llfc import alpha_key, stable_rank
from lmccheck.figures import bar_panel, hist_panel, line_panel
from lmccheck.verdict import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Above,
    Below,
    Negligible,
    Within,
    binomial_se,
    judge,
    reading,
)

from .rules import (
    MeasurementBug,
    connected_threshold,
    mean_noise,
    seed_halfwidths,
    seed_means,
)
from .settings import CHILDREN_CPU_SEEDS, params

#: "close to 0", "negligible", "much smaller": the ratio to the baseline is clearly negligible below a tenth ...
CLEARLY_NEGLIGIBLE = 0.1
#: ... and clearly not above 10^-1/2
CLEARLY_NOT_NEGLIGIBLE = 10 ** -0.5
NEGLIGIBLE = Negligible(CLEARLY_NEGLIGIBLE, CLEARLY_NOT_NEGLIGIBLE)
ZONE_REASON = (
    "the paper gives no number, and its figures (bar charts and histograms) print no values to calibrate "
    "against; the authors' scripts (zzp1012/LLFC, scripts/LLFC.py) only write the per-layer means they plot. "
    "lmccheck reads the word in orders of magnitude: a ratio to the baseline below 0.1 (a decade under it) is "
    "clearly negligible; a ratio above 10^-1/2 = 0.316 (nearer the baseline than a decade below it: the same "
    "order of magnitude on a log scale) is clearly not; between the two, INCONCLUSIVE"
)
#: "c is close to 1": |E[coef] - 1| in the same zone, relative to the scale 1 itself
CLOSE_TO_ONE = Negligible(CLEARLY_NEGLIGIBLE, CLEARLY_NOT_NEGLIGIBLE)
#: "in most cases": more than half of the cases
MOST = 0.5
#: the logits' site (lmccheck.llfc.Sites.output): named, not taken as the last site, so no order is relied on
LOGITS = "head"
#: "nearly all the layers" (abstract): all but at most one layer in five, and never fewer than all but one
NEARLY_ALL_PER_EXCEPTION = 5
NEARLY_ALL_REASON = (
    '"nearly all the layers" (abstract; §4: "almost all the layers") gives no share. lmccheck reads it as all but at '
    "most one layer in five (about 80%), and at least all but one layer (so that 'nearly all' is never 'every'): "
    "with k such exceptions, the claim holds when the (k+1)-th largest of the layers' ratios is negligible. Per "
    "seed that order statistic is taken over the layers (each layer's largest ratio over the alphas, since §4 "
    'claims "different values of alpha" alike); it is judged over seeds with its t interval'
)
#: App. B.4: the stitched error "closely resemble[s] the error rates of the original models A and B": at most
#: 1.7 times the worse of A and B, the paper's own largest ratio so described, 1.67 rounded (Table 2: 11.84% vs
#: 7.1%; Table 1: 2.69% vs 1.9%, 1.42; Table 3: 13.35% vs 8.69%, 1.54)
STITCH_CLOSE_RATIO = 1.7
ALPHAS = (0.25, 0.5, 0.75)
METHODS = ("weight", "activation")
LMC_KINDS = ("spawned", *METHODS)
KINDS = (*LMC_KINDS, "independent")
NAMES = {"spawned": "spawned", "weight": "WM-aligned", "activation": "AM-aligned", "independent": "independent"}
#: where children are spawned: an MLP from the common initialization, a conv net after 5 epochs (App. B.1.1)
SPAWN_AT = {"mlp": 0.0}
SPAWN_AT_DEFAULT = 5.0
#: beyond the paper, next to Z7: Theorem 1's defect decomposition of each pair kind (seed 0, at alpha = 0.5, on
#: the first 1000 test examples: it runs in float64)
DECOMPOSITION_EXAMPLES = 1000
#: Eq. (9)'s objective is evaluated on the first 1000 training examples, as commutativity matching does
EQ9_EXAMPLES = 1000
#: Z9 compares the end of training with "the early stage of training (1 epoch indeed)"
EARLY_EPOCH = 1.0
#: pair kinds the paper does not run for an architecture (App. B.1.2: "VGG models are not used in the permutation
#: method due to their inability to achieve LMC"; ResNet-20: "Only weight matching is used"): measured, not deciding
BEYOND_PAPER = {"vgg16": METHODS, "resnet20": ("activation",)}
#: Fig. 19 compares Dist_com of LMC and not-LMC pairs for ResNet-20 on CIFAR-10, spawned and weight matching
FIG19 = {"arch": "resnet20", "dataset": "cifar10", "kinds": ("spawned", "weight")}
SETTINGS_CPU = ["mlp512-fmnist"]
SETTINGS_GPU = ["vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "resnet20x32-ln-cifar10", "vgg16-ln-fmnist",
                "resnet20x4-ln-fmnist"]
PARAMS = params(SETTINGS_CPU, SETTINGS_GPU)

PREMISE = reading(
    'the premise "whenever two trained networks satisfy LMC" (abstract) with Definition 1 (§3): '
    '"Err_D(alpha theta_A + (1 - alpha) theta_B) ~ Err_D(theta_A), for all alpha", no number. lmccheck\'s one '
    "definition of linearly connected (claims/rules.py connected_threshold): the end-of-training test error "
    "barrier below the Monte Carlo noise of the error, 2 binomial standard errors of the worse endpoint on the "
    "test examples (Sharma et al. §2.1); judged on the seed mean, with its t interval"
)
PREMISE_NOTE = ("premise not met: these pairs are not shown to be linearly connected, so the paper's claim says "
                "nothing about them; measured and shown, not deciding")
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
Z8_SOURCE = reading(
    'App. B.4: "the error rates of the stitched model on the test set closely resemble the error rates of the '
    'original models A and B, regardless of the dataset or model architecture" gives no number; lmccheck takes the '
    "largest stitched-to-original ratio that the paper's own Tables 1-3 call close: Table 2, Conv 3-1, 11.84% vs "
    "B's 7.1% = 1.67 (Table 1: 2.69% vs 1.9% = 1.42; Table 3: 13.35% vs 8.69% = 1.54), rounded to 1.7, against the "
    "worse of A and B, at every layer (the tables describe every layer so)")
Z9_SOURCE = reading(
    'App. B.5: "the stable ranks of weight matrices of the model after convergence are significantly smaller than '
    'those of the model in the early stage of training" (Fig. 22\'s caption: the early stage is "1 epoch indeed"). '
    'The paper gives no scale for "significantly": lmccheck reads it as a drop beyond the spread over networks '
    "(the paired drop's 95% t interval above 0), the weakest reading that is still a statistical claim")
Z10_SOURCE = reading(
    '§5.2, Eq. 9: "the weight matching (3) and activation matching (4) objectives ... directly correspond to the '
    'two factors in Equation (9). Therefore, we can interpret Git Re-Basin as a means to ensure commutativity". '
    "The paper gives no size for what matching achieves: lmccheck reads \"a means to ensure commutativity\" as "
    "matching lowering Eq. (9)'s objective and Dist_com below the unmatched pair's by more than the spread over "
    "seeds (paired, 95% t interval above 0)")


# ---------------------------------------------------------------------------- pairs and the LMC premise
def _pairs(lab: Lab, setting: Setting, n_seeds: int) -> dict[str, list[dict[str, Any]]]:
    """Per kind, one pair per seed: ``{"a", "b", "perm", "end", "n"}``; ``end`` is the checkpoint of S3's
    end-of-training barrier (None for the children: S4's barrier of them, at the end); ``n`` the setting's
    evaluation examples (every statistic and barrier of the pair is taken on them)."""
    cfg = setting.config
    pairs = lab.pairs(cfg, setting.replicates(n_seeds))
    spawned = setting.replicates(n_seeds, CHILDREN_CPU_SEEDS)
    at = setting.at(SPAWN_AT.get(cfg.arch, SPAWN_AT_DEFAULT))  # a smoke setting's nearest checkpoint
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for pair in pairs:
        if pair.replicate < spawned:
            seeds = child_seeds(pair.replicate)  # S4's A^1 and A^2
            out["spawned"].append({"a": lab.child(pair.a, at, seeds.a1), "b": lab.child(pair.a, at, seeds.a2),
                                   "perm": None, "end": None, "n": setting.eval_examples})
        end = pair.a.times[-1]
        for m in METHODS:
            out[m].append({"a": pair.a, "b": pair.b, "perm": lab.match(m, pair.a, pair.b), "end": end,
                           "n": setting.eval_examples})
        out["independent"].append({"a": pair.a, "b": pair.b, "perm": None, "end": end, "n": setting.eval_examples})
    return out


def _end_barrier(lab: Lab, setting: Setting, p: dict[str, Any]) -> Any:
    """The pair's end-of-training test barrier, as S3 (permuted, independent) and S4 (children) take it."""
    when = {} if p["end"] is None else {"time": p["end"], "split": "test"}
    return lab.barrier(p["a"], p["b"], perm=p["perm"], **setting.curve, **when)


def _premise(lab: Lab, setting: Setting, pairs: dict[str, list[dict[str, Any]]],
             kinds: Sequence[str] = KINDS) -> dict[str, dict[str, list[float]]]:
    """Per kind and seed: the end test error barrier and the largest barrier that is still test-set noise."""
    out = {}
    for kind in kinds:
        rows = [_end_barrier(lab, setting, p) for p in pairs[kind]]
        out[kind] = {"error_barrier": [float(r.error_barrier) for r in rows],
                     "threshold": [connected_threshold(max(r.error_endpoints), r.n_examples) for r in rows]}
    return out


def _judge_premise(measure, premise: dict[str, dict[str, list[float]]], setting: Setting) -> dict[str, bool]:
    """Record the premise of every kind in ``premise``; per LMC kind, whether it is met (PASS).

    The premise never decides the check, with one exception: when no pair kind meets it and some kind's premise
    is INCONCLUSIVE, those INCONCLUSIVE premises decide, so that the check reads INCONCLUSIVE (a conditional claim
    whose condition is undetermined is undetermined) with the seeds that would settle it. An INCONCLUSIVE
    assertion can only make the check INCONCLUSIVE."""
    contrasts = {k: [b - t for b, t in zip(d["error_barrier"], d["threshold"], strict=True)]
                 for k, d in premise.items()}
    lmc = [k for k in premise if k != "independent"]
    outcomes = {k: judge(_premise_name(k), Below(0.0), contrasts[k], PREMISE).outcome for k in lmc}
    undetermined = not any(o == PASS for k, o in outcomes.items() if _in_scope(setting, k))
    note = "end test error barrier minus the noise allowance, per seed"
    for kind in premise:
        if kind == "independent":
            measure.expect(_premise_name(kind), Above(0.0), contrasts[kind], PREMISE, decides=False, note=note)
            continue
        decides = undetermined and outcomes[kind] == INCONCLUSIVE and _in_scope(setting, kind)
        cap = (f"; the CPU tier has children for S4's {CHILDREN_CPU_SEEDS} replicates only, whatever --lmc-seeds says"
               if kind == "spawned" and not setting.gpu else "")
        measure.expect(_premise_name(kind), Below(0.0), contrasts[kind], PREMISE, decides=decides,
                       note=note + cap + ("; deciding only because no pair kind meets the premise: the claim cannot "
                                          "be judged until one does" if decides else ""))
    return {k: o == PASS for k, o in outcomes.items()}


def _premise_name(kind: str) -> str:
    if kind == "independent":
        return "premise: independent pairs are not linearly connected (the not-LMC baseline)"
    return f"premise: {NAMES[kind]} pairs are linearly connected (end test error barrier below test-set noise)"


def _tag(kind: str, met: Mapping[str, bool]) -> str:
    return NAMES[kind] if met.get(kind, False) else f"{NAMES[kind]} [premise not met]"


def _in_scope(setting: Setting, kind: str) -> bool:
    """Whether the paper runs pairs of ``kind`` for the setting's architecture (App. B.1.2)."""
    return kind not in BEYOND_PAPER.get(setting.config.arch, ())


def _decides(kind: str, met: Mapping[str, bool], setting: Setting) -> dict[str, Any]:
    """``decides`` and ``note`` of an assertion about pairs of ``kind``."""
    if not _in_scope(setting, kind):
        return {"decides": False, "note": f"beyond the paper: App. B.1.2 runs no {NAMES[kind]} "
                                          f"{setting.config.arch} pairs"}
    return {"decides": True} if met.get(kind, False) else {"decides": False, "note": PREMISE_NOTE}


def _skip_without_premise(met: Mapping[str, bool], premise: dict[str, dict[str, list[float]]], measure) -> None:
    """A check with no deciding assertion (every pair kind of the paper's clearly misses the premise) cannot judge
    the claim: skipped, after its values are recorded."""
    if not any(j.decides for j in measure.assertions):
        seen = "; ".join(f"{NAMES[k]} {_mean(premise[k]['error_barrier']):.2%} vs {_mean(premise[k]['threshold']):.2%}"
                         for k in met)
        pytest.skip(f"no pair kind of the paper's meets the LMC premise at this setting (end error barrier vs "
                    f"noise: {seen})")


# ---------------------------------------------------------------------------- small helpers
def _stat(lab: Lab, metric: str, p: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {"alphas": ALPHAS} if metric == "llfc" else {}
    return lab.features(metric, p["a"], p["b"], perm=p["perm"], n_examples=p["n"], **kw)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _mean_se(m: Mapping[str, float]) -> float:
    """The standard error of a mean over test examples (moments: mean, std, n)."""
    return float(m["std"]) / math.sqrt(m["n"]) if m["n"] > 1 else 0.0


def _ratio(x: Mapping[str, float], y: Mapping[str, float]) -> tuple[float, float]:
    """x's mean over y's and the ratio's test-set standard error (delta method, the two means' noise added as
    if independent)."""
    r = float(x["mean"]) / float(y["mean"]) if y["mean"] else math.inf
    return r, math.hypot(_mean_se(x), r * _mean_se(y)) / abs(float(y["mean"])) if y["mean"] else 0.0


def _rows(points: Mapping[str, Sequence[float]], order: Sequence[str]) -> list[list[float]]:
    """``{point: per-seed values}`` -> ``rows[seed][point]``, points in ``order`` (for seed_means / seed_halfwidths)."""
    cols = [points[p] for p in order]
    return [[c[s] for c in cols] for s in range(len(cols[0]))]


def _bars(series: Mapping[str, Mapping[str, Sequence[float]]], order: Sequence[str]
          ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per series ``{point: per-seed values}``: the seed means and their 95% t half-widths (error bars), per point
    in ``order`` (the bar panel's categories)."""
    rows = {k: _rows(v, order) for k, v in series.items()}
    return {k: seed_means(r) for k, r in rows.items()}, {k: seed_halfwidths(r) for k, r in rows.items()}


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.3g}-{max(values):.3g}"


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


# ---------------------------------------------------------------------------- Z8: stitching (App. B.4)
@pytest.mark.claim("Z8")
@pytest.mark.parametrize("setting", PARAMS)
def test_z8_stitching_without_a_stitching_layer_works_for_llfc_pairs(setting: Setting, lab: Lab, n_seeds: int,
                                                                     measure) -> None:
    """Zhou App. B.4: "given two neural networks A and B that satisfy LLFC, we evaluate the accuracy [sic: the
    paper spells it "arruacy"] of
    B_{>l} o A_{<=l} ... without finding a stitching layer ... the error rates of the stitched model on the test
    set closely resemble the error rates of the original models A and B, regardless of the dataset or model
    architecture" (spawned pairs only, Tables 1-3).

    For the spawned pairs, if they meet the LMC premise: at every layer, the stitched test error is at most 1.7
    times the worse of A and B (TOST's one side, 90% interval; the seed spread pooled over the layers, the
    binomial noise of both errors added)."""
    pairs = _pairs(lab, setting, n_seeds)
    premise = _premise(lab, setting, pairs, kinds=("spawned",))
    stats = [_stat(lab, "stitching", p) for p in pairs["spawned"]]
    met = _judge_premise(measure, premise, setting)
    sites = stats[0]["sites"]
    ratio: dict[str, list[float]] = {}
    noise: dict[str, float] = {}
    for s in sites:
        worse = [max(x["error_a"], x["error_b"]) for x in stats]
        ratio[s] = [x["error"][s] / w for x, w in zip(stats, worse, strict=True)]
        noise[s] = mean_noise([math.hypot(binomial_se(x["error"][s], x["n_examples"]),
                                          r * binomial_se(w, x["n_examples"])) / w
                               for x, w, r in zip(stats, worse, ratio[s], strict=True)])
    measure.expect(f"{_tag('spawned', met)}: stitched error at most {STITCH_CLOSE_RATIO:g} x the worse of A and B, "
                   "every layer", Within(upper=STITCH_CLOSE_RATIO), ratio, Z8_SOURCE, over="every", noise=noise,
                   pool=True, **_decides("spawned", met, setting))
    per_seed = {s: [x["error"][s] for x in stats] for s in sites}
    measure.values.update({"sites": sites, "premise": premise, "premise_met": met, "stitched_error_per_seed": per_seed,
                           "error_a_per_seed": [x["error_a"] for x in stats],
                           "error_b_per_seed": [x["error_b"] for x in stats], "ratio_per_seed": ratio})
    measure.thresholds.update({"stitch_close_ratio": STITCH_CLOSE_RATIO})
    worse_per_site = {s: [max(x["error_a"], x["error_b"]) for x in stats] for s in sites}
    ys, err = _bars({"stitched": per_seed, "worse of A, B": worse_per_site}, sites)
    measure.figure("stitching", title=f"Z8 {setting.name}: stitched B>l o A<=l ({_tag('spawned', met)} pairs)",
                   panels=[bar_panel(sites, ys, yerr=err, xlabel="layer l",
                                     ylabel="test error (mean, 95% t over seeds)")])
    measure.summary = (f"stitched error {_range([_mean(v) for v in per_seed.values()])} vs worse of A/B "
                       f"{_mean(worse_per_site[sites[0]]):.2%}; ratio {_range([_mean(v) for v in ratio.values()])} "
                       f"(bound {STITCH_CLOSE_RATIO:g}); {_tag('spawned', met)}")
    _skip_without_premise(met, premise, measure)


# ---------------------------------------------------------------------------- Z9: stable rank (App. B.5)
@pytest.mark.claim("Z9")
@pytest.mark.parametrize("setting", PARAMS)
def test_z9_trained_weights_have_lower_stable_rank_than_early_ones(setting: Setting, lab: Lab, n_seeds: int,
                                                                   measure) -> None:
    """Zhou App. B.5: "the stable ranks of weight matrices of the model after convergence are significantly smaller
    than those of the model in the early stage of training"; Fig. 22's caption: "the early stage of training (1
    epoch indeed)", with srnk(W) = ||W||_F^2 / ||W||_2^2.

    In every weight layer: the stable rank after 1 epoch minus the stable rank at the end, paired per network (A
    and B of every replicate, each with its own seeds), is above 0 with its t interval over the networks: the
    paper gives no scale for "significantly", so it is read as a drop beyond the spread over networks."""
    pairs = lab.pairs(setting.config, setting.replicates(n_seeds))
    spec = lab.spec(setting.config)
    layers = [n for n in spec.layers if pairs[0].a.final[f"{n}.weight"].dim() >= 2]
    ranks: dict[str, dict[str, list[float]]] = {"epoch_1": {n: [] for n in layers}, "end": {n: [] for n in layers}}
    for pair in pairs:
        for run in (pair.a, pair.b):
            for n in layers:
                ranks["epoch_1"][n].append(stable_rank(run.state_at(setting.at(EARLY_EPOCH))[f"{n}.weight"]))
                ranks["end"][n].append(stable_rank(run.final[f"{n}.weight"]))
    measure.expect("stable rank at the end below the stable rank after 1 epoch, every weight layer", Above(0.0),
                   {n: [e - f for e, f in zip(ranks["epoch_1"][n], ranks["end"][n], strict=True)] for n in layers},
                   Z9_SOURCE, over="every", note="n = networks (A and B of every replicate)")
    _render_z9(setting, lab, measure, pairs, layers, ranks)


def _spectrum_stable_rank(singular_values: list[float]) -> float:
    """sum(s^2) / max(s)^2 of a spectrum: the stable rank of the matrix it belongs to."""
    top = max(singular_values, default=0.0)
    return sum(v * v for v in singular_values) / (top * top) if top > 0 else 0.0


def _render_z9(setting: Setting, lab: Lab, measure, pairs: list, layers: list[str],
               ranks: dict[str, dict[str, list[float]]]) -> None:
    measure.values.update({"layers": layers, "per_network": ranks})
    # Fig. 20 and 21: singular values of the weights and of the post-activations over the test set, of network
    # A of the first replicate (an AM- and WM-aligned pair's), after 1 epoch and at the end (recorded, not asserted)
    a0 = pairs[0].a
    spec_of = {when: lab.features("spectra", a0, a0, time=t, n_examples=setting.eval_examples)
               for when, t in (("epoch 1", setting.at(EARLY_EPOCH)), ("end", None))}
    sites = list(spec_of["end"]["features"])
    feature_rank = {when: {n: _spectrum_stable_rank(sp["features"][n]) for n in sites} for when, sp in spec_of.items()}
    measure.values.update({"feature_sites": sites, "feature_stable_rank_seed0_a": feature_rank})
    curves = {when: {"weights": {k: v["singular_values"] for k, v in sp["weights"].items()},
                     "features": sp["features"]} for when, sp in spec_of.items()}

    def spectrum_panel(what: str, n: str, title: str) -> dict:
        return line_panel({when: (list(range(1, len(c[what][n]) + 1)), c[what][n]) for when, c in curves.items()},
                          title=title, xlabel="index", ylabel="singular value", yscale="log")

    ys, err = _bars({"epoch 1": ranks["epoch_1"], "end": ranks["end"]}, layers)
    measure.figure("stable_rank", title=f"Z9 {setting.name}: stable rank, epoch 1 vs end; weight spectra (Fig. 20)",
                   panels=[bar_panel(layers, ys, yerr=err, xlabel="layer",
                                     ylabel="stable rank (mean, 95% t over networks)"),
                           *[spectrum_panel("weights", n, f"singular values of W, {n} (A, seed 0)") for n in layers]])
    measure.figure("feature_spectra", title=f"Z9 {setting.name}: singular values of the post-activations over "
                   f"{lab.barrier_options.n_examples} test examples (Fig. 21)",
                   panels=[spectrum_panel("features", n, f"singular values of H, {n} (A, seed 0)") for n in sites])
    measure.summary = "mean stable rank, epoch 1 -> end: " + "; ".join(
        f"{n} {_mean(ranks['epoch_1'][n]):.1f} -> {_mean(ranks['end'][n]):.1f}" for n in layers)
