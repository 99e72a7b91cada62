"""Claim S3: one permutation found at the end of training aligns the whole SGD trajectory.

Sharma et al. §5.1, Fig. 1 (left), Fig. 8: "we apply weight or activation
matching after training, and observe that the resulting loss barrier between
independent SGD iterates is highly reduced at all times t" -- the error barrier
"drops from around 70% ... to 3-8% at any time t in training". Figure:
barrier vs training time, unpermuted vs P_end (WM and AM).
"""

from __future__ import annotations

import pytest

from fixtures import Lab
from fixtures.recipes import Setting
from lmccheck.report import pct

from lmccheck.verdict import Above, paper

from .rules import HIGHLY_REDUCED_RATIO, contrast_noise, error_barrier_se, seed_halfwidths, seed_means
from .settings import params

#: the bound, :data:`claims.rules.HIGHLY_REDUCED_RATIO` (8/70, §5.1's worst case), judged on seed means ("All
#: results are averaged over 5 replicates", App. D)
SOURCE = paper("the error barrier after aligning with P_end drops from around 70% (as measured between two "
               "differently initialized networks after convergence) to 3-8% at any time t in training; "
               "All results are averaged over 5 replicates", "§5.1, Fig. 1 left; App. D")
METHODS = ("weight", "activation")
SPLITS = ("test", "train")
SERIES = ("unaligned", *METHODS)


@pytest.mark.claim("S3")
@pytest.mark.parametrize("setting", params(
    ["mlp512-fmnist"], ["vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "vgg16-ln-fmnist"],
))
def test_s3_end_permutation_aligns_trajectory(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """At every checkpoint t, for WM and AM and on test and train data: the seed mean of
    8/70 * error_barrier(A_end, B_end) - error_barrier(A_t, P_end[B_t]) is above 0 (paired per seed, the spread
    pooled over the checkpoints, the test-set noise of both barriers added). The loss barriers are recorded,
    not judged: the paper quantifies the error only."""
    pairs = lab.pairs(setting.config, setting.replicates(n_seeds))
    times = pairs[0].a.times
    data = _collect(setting, lab, pairs, times)
    end = len(times) - 1
    for split in SPLITS:
        unaligned_end = [row[end] for row in data["error"][split]["unaligned"]]
        noise_end = [row[end] for row in data["error_se"][split]["unaligned"]]
        for m in METHODS:
            aligned = data["error"][split][m]
            contrast = {f"t={t:g}": [HIGHLY_REDUCED_RATIO * unaligned_end[s] - aligned[s][i] for s in range(len(pairs))]
                        for i, t in enumerate(times)}
            noise = {f"t={t:g}": contrast_noise([HIGHLY_REDUCED_RATIO * x for x in noise_end],
                                                [row[i] for row in data["error_se"][split][m]])
                     for i, t in enumerate(times)}
            measure.expect(f"{METHOD_NAMES[m]} {split}: error barrier under P_end <= 8/70 of the converged unaligned",
                           Above(0.0), contrast, SOURCE, over="every", noise=noise, pool=True)
    _render(setting, measure, data, times)


METHOD_NAMES = {"weight": "WM", "activation": "AM"}


def _collect(setting: Setting, lab: Lab, pairs: list, times: list[float]) -> dict:
    """Per split, series and seed, the loss and error barriers at every checkpoint (and the error barrier's
    test-set noise); the end-of-training curves of seed 0."""
    out: dict = {k: {s: {n: [] for n in SERIES} for s in SPLITS} for k in ("loss", "error", "error_se")}
    curves_end: dict[str, dict[str, list[float]]] = {}
    for pair in pairs:
        perms = {m: lab.match(m, pair.a, pair.b) for m in METHODS}
        for split in SPLITS:
            for name in SERIES:
                rows = [lab.barrier(pair.a, pair.b, time=t, perm=perms.get(name), split=split,
                                    **setting.curve) for t in times]
                out["loss"][split][name].append([r.loss_barrier for r in rows])
                out["error"][split][name].append([r.error_barrier for r in rows])
                out["error_se"][split][name].append([error_barrier_se(r) for r in rows])
                if pair.replicate == 0 and split == "test":
                    curves_end[name] = {"alphas": rows[-1].alphas, "loss": rows[-1].loss, "error": rows[-1].error}
    out["end_curves_seed0_test"] = curves_end
    out["test_acc_end"] = ([p.a.final_metrics["test_acc"] for p in pairs]
                           + [p.b.final_metrics["test_acc"] for p in pairs])
    return out


def _render(setting: Setting, measure, data: dict, times: list[float]) -> None:
    """Values, figures (seed means with 95% t intervals over seeds) and the summary line."""
    measure.values.update({"times_epochs": times, "per_seed": {k: data[k] for k in ("loss", "error", "error_se")},
                           "end_curves_seed0_test": data["end_curves_seed0_test"],
                           "test_acc_end": data["test_acc_end"]})
    measure.thresholds.update({"highly_reduced_ratio": HIGHLY_REDUCED_RATIO})
    labels = {"unaligned": "unaligned", "weight": "P_end weight matching", "activation": "P_end activation matching"}
    for which, label in (("loss", "loss barrier"), ("error", "error barrier")):
        rows = data[which]["test"]
        measure.figure(
            f"{which}_barrier_vs_time",
            title=f"S3 {setting.name}: {label} vs training time (mean, 95% t interval over seeds)",
            xlabel="training time (epochs)",
            ylabel=f"test {label}",
            series={labels[n]: (times, seed_means(rows[n])) for n in SERIES},
            yerr={labels[n]: seed_halfwidths(rows[n]) for n in SERIES},
        )
    measure.figure(
        "loss_vs_alpha_end",
        title=f"S3 {setting.name}: end of training, seed 0",
        xlabel="alpha",
        ylabel="test loss",
        series={name: (c["alphas"], c["loss"]) for name, c in data["end_curves_seed0_test"].items()},
    )
    test = {n: seed_means(data["error"]["test"][n]) for n in SERIES}
    measure.summary = (
        f"end: test error barrier {pct(test['unaligned'][-1])} -> {pct(test['weight'][-1])} (WM), "
        f"{pct(test['activation'][-1])} (AM); bound at every t: 8/70 of the converged unaligned barrier = "
        f"{pct(HIGHLY_REDUCED_RATIO * test['unaligned'][-1])}"
    )
