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

from .rules import MC_NOISE_STDERRS, connected_threshold, mean_std
from .settings import describe, params

#: "the error barrier after aligning with P_end drops from around 70% (as measured between two differently
#: initialized networks after convergence) to 3-8% at any time t in training" (§5.1): at every t, the
#: aligned barrier is at most 8/70 of the unaligned barrier *after convergence*, the paper's own worst
#: ratio. The paper quantifies error barriers only; applying the same ratio to loss barriers is
#: lmccheck's reading of "the resulting loss barrier ... is highly reduced at all times t".
HIGHLY_REDUCED_RATIO = 8 / 70
METHODS = ("weight", "activation")
SPLITS = ("test", "train")
KINDS = ("loss", "error")


@pytest.mark.claim("S3")
@pytest.mark.parametrize("setting", params(
    ["mlp512-fmnist"], ["vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "vgg16-ln-fmnist"],
    findings={"mlp512-fmnist": (
        "at t = 0.25 epoch (5% of training) the aligned LOSS barrier is 12.1-14.3% of the converged unaligned one "
        "for seeds 0 and 1 (e.g. WM test, seed 1: 0.182 vs 1.273), above 8/70 = 11.4%; there WM's ERROR barrier of "
        "seed 1 fails too (test 2.6% vs 18.1%, ratio 0.144; train 0.145); every other error barrier passes "
        "(end: 21.5% -> 0.8% WM, 1.1% AM). Measured with `make claims`, 3 seeds, barriers in bf16."
    )},
))
def test_s3_end_permutation_aligns_trajectory(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """barrier(A_t, P_end[B_t]) <= 8/70 barrier(A_end, B_end) for every seed, split, loss and error, at every
    checkpoint where the unaligned pair is not already linearly connected; for WM and AM."""
    cfg = setting.config
    pairs = lab.pairs(cfg, n_seeds)
    times = pairs[0].a.times
    # raw[split][series][seed] -> list over times of (loss barrier, error barrier)
    raw: dict[str, dict[str, list[list[tuple[float, float]]]]] = {
        s: {m: [] for m in ("unaligned", *METHODS)} for s in SPLITS
    }
    # per split and seed: the unaligned error barrier's connectivity threshold at each checkpoint
    thresholds: dict[str, list[list[float]]] = {s: [] for s in SPLITS}
    curves_end: dict[str, dict[str, list[float]]] = {}
    for pair in pairs:
        perms = {m: lab.match(m, pair.a, pair.b) for m in METHODS}
        for split in SPLITS:
            for name in ("unaligned", *METHODS):
                row = []
                thr_row = []
                for t in times:
                    res = lab.barrier(pair.a, pair.b, time=t, perm=perms.get(name), split=split, n_examples=setting.eval_examples)
                    row.append((res.loss_barrier, res.error_barrier))
                    thr_row.append(connected_threshold(max(res.error_endpoints), res.n_examples))
                if name == "unaligned":
                    thresholds[split].append(thr_row)
                if pair.replicate == 0 and split == "test":  # the last res is at the end of training
                    curves_end[name] = {"alphas": res.alphas, "loss": res.loss, "error": res.error}
                raw[split][name].append(row)
        measure.seeds.append(pair.seeds)

    def stat(split: str, name: str, which: int) -> tuple[list[float], list[float]]:
        per_t = [[seed_row[i][which] for seed_row in raw[split][name]] for i in range(len(times))]
        ms = [mean_std(v) for v in per_t]
        return [m for m, _ in ms], [s for _, s in ms]

    summary: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    for split in SPLITS:
        summary[split] = {}
        for name in ("unaligned", *METHODS):
            lm, ls = stat(split, name, 0)
            em, es = stat(split, name, 1)
            summary[split][name] = {"loss_mean": lm, "loss_std": ls, "error_mean": em, "error_std": es}

    measure.values.update({
        "setting": describe(setting),
        "times_epochs": times,
        "barriers": summary,
        "per_seed": raw,
        "end_curves_seed0_test": curves_end,
        "test_acc_end": [p.a.final_metrics["test_acc"] for p in pairs] + [p.b.final_metrics["test_acc"] for p in pairs],
    })
    measure.thresholds.update({"highly_reduced_ratio": HIGHLY_REDUCED_RATIO, "mc_noise_stderrs": MC_NOISE_STDERRS})
    test = summary["test"]
    for which, label in (("loss", "loss barrier"), ("error", "error barrier")):
        measure.figure(
            f"{which}_barrier_vs_time",
            title=f"S3 {setting.name}: {label} vs training time",
            xlabel="training time (epochs)",
            ylabel=f"test {label}",
            series={
                "unaligned": (times, test["unaligned"][f"{which}_mean"]),
                "P_end weight matching": (times, test["weight"][f"{which}_mean"]),
                "P_end activation matching": (times, test["activation"][f"{which}_mean"]),
            },
            yerr={
                "unaligned": test["unaligned"][f"{which}_std"],
                "P_end weight matching": test["weight"][f"{which}_std"],
                "P_end activation matching": test["activation"][f"{which}_std"],
            },
        )
    measure.figure(
        "loss_vs_alpha_end",
        title=f"S3 {setting.name}: end of training, seed 0",
        xlabel="alpha",
        ylabel="test loss",
        series={name: (c["alphas"], c["loss"]) for name, c in curves_end.items()},
    )

    # every seed, split, loss and error, at every checkpoint where the unaligned pair is not linearly connected
    failures, checked, worst = [], {}, {m: 0.0 for m in METHODS}
    for split in SPLITS:
        for seed, pair in enumerate(pairs):
            unaligned = raw[split]["unaligned"][seed]
            idx = [i for i in range(len(times)) if unaligned[i][1] > thresholds[split][seed][i]]
            checked[f"{split}/seed{seed}"] = [times[i] for i in idx]
            for m in METHODS:
                for k, kind in enumerate(KINDS):
                    converged = unaligned[-1][k]  # the unaligned barrier after convergence
                    if converged <= 0:
                        continue  # nothing to reduce
                    for i in idx:
                        aligned = raw[split][m][seed][i][k]
                        ratio = aligned / converged
                        worst[m] = max(worst[m], ratio)
                        if not aligned <= HIGHLY_REDUCED_RATIO * converged:
                            failures.append(f"{m} {split} {kind} seed {seed} epoch {times[i]:g}: {aligned:.4f} vs "
                                            f"unaligned after convergence {converged:.4f} (ratio {ratio:.3f})")
    measure.values["checked_times"] = checked
    measure.values["worst_ratio"] = worst
    end = len(times) - 1
    measure.summary = (
        f"end: error barrier {pct(test['unaligned']['error_mean'][end])} -> "
        f"{pct(test['weight']['error_mean'][end])} (WM), {pct(test['activation']['error_mean'][end])} (AM); "
        f"worst aligned_t / unaligned_end over seeds, splits, loss and error where unaligned_t > MC noise: "
        + ", ".join(f"{m[:1].upper()}M {worst[m]:.3f}" for m in METHODS)
        + f" (pass <= {HIGHLY_REDUCED_RATIO:.3f})"
    )
    measure.values["failures"] = failures
    assert not failures, f"P_end does not reduce the barrier to 8/70 at {len(failures)} points: " + "; ".join(failures[:8])
