"""What the checks of claims Z1-Z3 and Z6-Z10 share: the pairs they measure, the LMC premise, the reading of
"negligible" and the small helpers (Zhou et al. 2023: layerwise linear feature connectivity and its two
conditions, measured, §4-§5, App. B).

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

The checks: Z1-Z3 (LLFC) in :mod:`claims.test_z1_z3_llfc`; Z6, Z7 and Z10 (weak additivity, commutativity) in
:mod:`claims.test_z6_z7_z10_commutativity`; Z8 and Z9 (stitching, stable rank) in
:mod:`claims.test_z8_z9_stitching_rank`. Each quotes its own claim's sentences and thresholds. The helpers keep
their leading underscore: they are those checks' internals, imported by name by the three files only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fixtures import Lab
from fixtures.recipes import Setting, child_seeds
from lmccheck.verdict import (
    INCONCLUSIVE,
    PASS,
    Above,
    Below,
    Negligible,
    judge,
    reading,
)

from .rules import connected_threshold, seed_halfwidths, seed_means
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
#: the logits' site (lmccheck.llfc.Sites.output): named, not taken as the last site, so no order is relied on
LOGITS = "head"
ALPHAS = (0.25, 0.5, 0.75)
METHODS = ("weight", "activation")
LMC_KINDS = ("spawned", *METHODS)
KINDS = (*LMC_KINDS, "independent")
NAMES = {"spawned": "spawned", "weight": "WM-aligned", "activation": "AM-aligned", "independent": "independent"}
#: where children are spawned: an MLP from the common initialization, a conv net after 5 epochs (App. B.1.1)
SPAWN_AT = {"mlp": 0.0}
SPAWN_AT_DEFAULT = 5.0
#: pair kinds the paper does not run for an architecture (App. B.1.2: "VGG models are not used in the permutation
#: method due to their inability to achieve LMC"; ResNet-20: "Only weight matching is used"): measured, not deciding
BEYOND_PAPER = {"vgg16": METHODS, "resnet20": ("activation",)}
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
