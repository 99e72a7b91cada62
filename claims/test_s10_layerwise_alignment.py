"""Claim S10: weight matching aligns lower layers earlier (Sharma et al. §6, App. H.3, Fig. 5 right, Fig. 17-18).

H.3's method is *partial rewinding*: "we rewind the weights of the first k layers
(exclusive) of two networks to A_t and B_t, keeping the remaining weights at their
values from the end of training". The two hybrids are weight-matched, and the
permutation found, P_hyb, aligns the *end-of-training* networks: the measured
quantity is the barrier of A_end and P_hyb[B_end]. Four modes choose the layers
taken from time t (Fig. 17's caption): bottom-up (layers < k), top-down (layers
>= k, "the opposite of bottom-up"), put-in (only layer k) and leave-out (all but
layer k). ``k`` counts weight layers in forward order (:mod:`lmccheck.rewinding`).

Asserted on the test error barrier (H.3's statements are about error barriers;
loss barriers are recorded and plotted), on means over seeds (the paper's figures
average its replicates), within MC noise (``connected_threshold``):

* "at all rewind times, the error barriers of every type of partially rewound
  permutation is bounded between that of applying P_t entirely ... and applying
  P_end entirely": every (t, mode, k);
* "as the number k of input layers to rewind increases, the error barriers at all
  rewind times increase": bottom-up over k at every rewind time (k = 0 is P_end,
  k = L is P_t), which must rise overall at the earliest t;
* "the time at which each bottom-up permutation achieves the same error barrier as
  P_end also increases with k" (Fig. 5 right), where there are enough rewind times;
* "rewinding the output layers (top-down) of the network does not increase error
  barrier as much as rewinding the input layers (bottom-up)", at the midpoint.

Top-down follows Fig. 17's caption ("uses P_t for the layers k and after"); the
body text's "first k layers (inclusive) are from A_end" would shift it by one.
The spread of P_end's barrier when weight matching is re-solved with another sweep
order is recorded beside the verdict: it is not part of any tolerance.

The literal reading of "analogous to permuting the first k layers according to
P_t, and the remainder according to P_end" (:func:`lmccheck.matching.partial_permutation`,
which splices the two permutations group by group) is recorded as a second
series at GPU scale, where it is cheap next to the rest; it is not asserted.
"""

from __future__ import annotations

import math

import pytest

from fixtures import Lab
from fixtures.recipes import Setting
from lmccheck.matching import partial_permutation
from lmccheck.permutation import PermutationSpec
from lmccheck.report import line_panel, pct
from lmccheck.rewinding import MODES, split_fraction, weight_layers

from .rules import (
    MC_NOISE_STDERRS,
    connected_threshold,
    decreasing_steps,
    first_time_within,
    mean_std,
    outside_band,
)
from .settings import describe, params

#: rewind times t at CPU scale (epochs of the 5-epoch recipe): early and mid-training, where WM's P_t still
#: differs from P_end (S12: few shared fixed points before the end); GPU settings use every checkpoint in
#: (0, end) from 1 epoch on
CPU_REWIND_TIMES = (0.5, 2.0)
GPU_FIRST_REWIND = 1.0
#: replicates at CPU scale: every point is one weight matching and one 10k-example barrier of the MLP with
#: 6 hidden layers (7 weight layers), so S10 runs 2 seeds there, recorded as such; GPU settings use --lmc-seeds
CPU_SEEDS = 2
#: the paper's split points as fractions of depth: VGG-16 "at the midpoint k = 8" and "the first layers up
#: to k = 4" of its 16 weight layers
PAPER_SPLIT_FRACTIONS = {"k=4 of VGG-16": 4 / 16, "k=8 of VGG-16 (midpoint)": 8 / 16}
#: GPU split points, as fractions of the depth in weight layers, for every mode
GPU_SPLIT_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 3 / 4)
#: "the time at which each bottom-up permutation achieves the same error barrier as P_end also increases
#: with k" needs a time axis: asserted where there are at least this many rewind times (GPU settings)
MIN_TIMES_FOR_ONSET = 3


def split_points(n_layers: int, gpu: bool) -> dict[str, list[int]]:
    """The split points k of each mode. CPU: bottom-up at the first, middle and second-to-last layer (the
    trend needs several k), the other modes at the midpoint (the paper's comparison of bottom-up and top-down
    "at the midpoint"; put-in at k = 0 would be bottom-up at k = 1 again, the same hybrids, and leave-out at
    k = 0 top-down at k = 1). GPU: the fractions above, every mode."""
    mid = n_layers // 2
    if not gpu:
        return {"bottom-up": [1, mid, n_layers - 2], "top-down": [mid], "put-in": [mid], "leave-out": [mid]}
    ks = sorted({max(1, min(n_layers - 1, round(f * n_layers))) for f in GPU_SPLIT_FRACTIONS})
    return {m: list(ks) for m in MODES}


def _layer_groups_align(spec: PermutationSpec) -> bool:
    """Whether weight layer j (before the head) outputs group j, so that a layer index is a group index."""
    layers = weight_layers(spec)
    groups = spec.group_names
    if len(groups) != len(layers) - 1:
        return False
    return all(spec.axes[keys[0]][0] == g for (_, keys), g in zip(layers, groups))


@pytest.mark.claim("S10")
@pytest.mark.parametrize("setting", params(
    ["mlp512x6-fmnist"], ["vgg16-ln-cifar10", "resnet20x4-ln-cifar10"],
    # No known finding at CPU scale since the default make claims builds on 2 workers (1 thread each): in the
    # networks one 2-thread process trains, hybrids fell below P_end by 0.8-1.3 points (MC noise 0.6%, WM's own
    # spread 0.6-1.0%), a verdict at the noise margin: see the README's claims table.
))
def test_s10_weight_matching_aligns_lower_layers_earlier(setting: Setting, lab: Lab, n_seeds: int,
                                                          measure) -> None:
    """Partially rewound weight matching: every mode's end-of-training error barrier lies between P_end's
    and P_t's (every seed, t, mode and k), and the bottom-up barrier does not decrease with k (mean over t
    and seeds)."""
    cfg = setting.config
    n = setting.eval_examples
    seeds = n_seeds if setting.gpu else min(n_seeds, CPU_SEEDS)
    pairs = lab.pairs(cfg, seeds)
    end = cfg.epochs
    times = ([t for t in pairs[0].a.times if setting.at(GPU_FIRST_REWIND) <= t < end] if setting.gpu
             else list(CPU_REWIND_TIMES))
    spec = lab.spec(pairs[0].a)
    layers = weight_layers(spec)
    n_layers = len(layers)
    ks = split_points(n_layers, setting.gpu)
    spliced = setting.gpu and _layer_groups_align(spec)

    # [seed][t] -> (error, loss); partial[mode][k][seed][t]; spliced series likewise
    p_end_b: list[tuple[float, float]] = []
    p_t_b: list[list[tuple[float, float]]] = []
    partial: dict[str, dict[int, list[list[tuple[float, float]]]]] = {m: {k: [] for k in ks[m]} for m in MODES}
    splice: dict[str, dict[int, list[list[tuple[float, float]]]]] = {m: {k: [] for k in ks[m]} for m in MODES}
    thresholds: list[float] = []

    def eb(pair, perm) -> tuple[float, float]:  # end-of-training barrier of A and perm[B]
        r = lab.barrier(pair.a, pair.b, perm=perm, n_examples=n)
        return r.error_barrier, r.loss_barrier

    for pair in pairs:
        p_end = lab.match("weight", pair.a, pair.b)
        ref = lab.barrier(pair.a, pair.b, perm=p_end, n_examples=n)
        thresholds.append(connected_threshold(max(ref.error_endpoints), ref.n_examples))
        p_end_b.append((ref.error_barrier, ref.loss_barrier))
        row_t = []
        for m in MODES:
            for k in ks[m]:
                partial[m][k].append([])
                splice[m][k].append([])
        for t in times:
            p_t = lab.match("weight", pair.a, pair.b, time=t)
            row_t.append(eb(pair, p_t))
            for m in MODES:
                for k in ks[m]:
                    p_hyb = lab.match("weight", lab.rewound_product(pair.a, t, m, k),
                                      lab.rewound_product(pair.b, t, m, k))
                    partial[m][k][-1].append(eb(pair, p_hyb))
                    if spliced:
                        splice[m][k][-1].append(eb(pair, partial_permutation(spec, p_t, p_end, m, k)))
        p_t_b.append(row_t)
        measure.seeds.append(pair.seeds)
    thr = max(thresholds)

    # the spread of weight matching itself: P_end re-solved with another sweep order (recorded, not a tolerance)
    wm_seed_spread = [abs(eb(p, lab.match("weight", p.a, p.b, seed=1))[0] - p_end_b[r][0]) for r, p in enumerate(pairs)]

    def seed_mean(rows: list[list[tuple[float, float]]], j: int = 0) -> list[float]:
        """Per rewind time, the mean over seeds of the error (j=0) or loss (j=1) barrier."""
        return [mean_std([r[i][j] for r in rows])[0] for i in range(len(times))]

    p_end_mean = mean_std([b[0] for b in p_end_b])[0]
    p_t_mean = seed_mean(p_t_b)
    part_mean = {m: {k: seed_mean(partial[m][k]) for k in ks[m]} for m in MODES}
    failures: list[str] = []
    # (a) "at all rewind times, the error barriers of every type of partially rewound permutation is bounded
    # between that of applying P_t entirely ... and applying P_end entirely" (figures: means over replicates)
    n_points = n_outside = 0
    for i, t in enumerate(times):
        for m in MODES:
            for k in ks[m]:
                n_points += 1
                e = part_mean[m][k][i]
                if outside_band(e, p_end_mean, p_t_mean[i], thr):
                    n_outside += 1
                    failures.append(f"t={t:g}, {m} k={k}: error barrier {pct(e)} outside [P_end {pct(p_end_mean)}, "
                                    f"P_t {pct(p_t_mean[i])}] +- {pct(thr)}")
    # (b) "as the number k of input layers to rewind increases, the error barriers at all rewind times
    # increase": bottom-up over k at every rewind time, k = 0 being P_end and k = L being P_t; the curve must
    # rise overall (P_t above P_end) at the earliest rewind time, or there is nothing to resolve
    bu_k = [0, *ks["bottom-up"], n_layers]
    bu_curves = [[p_end_mean] + [part_mean["bottom-up"][k][i] for k in ks["bottom-up"]] + [p_t_mean[i]]
                 for i in range(len(times))]
    for i, t in enumerate(times):
        for j in decreasing_steps(bu_curves[i], thr):
            failures.append(f"t={t:g}: bottom-up barrier falls from k={bu_k[j]} ({pct(bu_curves[i][j])}) to "
                            f"k={bu_k[j + 1]} ({pct(bu_curves[i][j + 1])}), by more than MC noise {pct(thr)}")
    if not p_t_mean[0] - p_end_mean > thr:
        failures.append(f"at the earliest rewind time t={times[0]:g}, P_t ({pct(p_t_mean[0])}) is not above P_end "
                        f"({pct(p_end_mean)}): there is no gap for the layers to resolve")
    # "the time at which each bottom-up permutation achieves the same error barrier as P_end also increases
    # with k" (Fig. 5 right): needs a time axis, asserted with at least MIN_TIMES_FOR_ONSET rewind times
    onset = {k: first_time_within(times, part_mean["bottom-up"][k], p_end_mean + thr) for k in ks["bottom-up"]}
    onset_asserted = len(times) >= MIN_TIMES_FOR_ONSET
    if onset_asserted:
        as_num = [math.inf if onset[k] is None else onset[k] for k in ks["bottom-up"]]
        if decreasing_steps(as_num, 0.0):
            failures.append(f"the time from which bottom-up reaches P_end does not grow with k: {onset}")
    # "rewinding the output layers (top-down) of the network does not increase error barrier as much as
    # rewinding the input layers (bottom-up)", at the midpoint, on average over rewind times
    mid = ks["top-down"][len(ks["top-down"]) // 2]
    mid_bu = mean_std(part_mean["bottom-up"][mid])[0] if mid in ks["bottom-up"] else None
    mid_td = mean_std(part_mean["top-down"][mid])[0]
    if mid_bu is not None and mid_td > mid_bu + thr:
        failures.append(f"at the midpoint k={mid}, top-down ({pct(mid_td)}) is above bottom-up ({pct(mid_bu)})")
    p_end_loss = mean_std([b[1] for b in p_end_b])[0]
    measure.values.update({
        "setting": describe(setting),
        "rewind_times_epochs": times,
        "weight_layers": [{"k": j, "layer": name, "keys": list(keys), "depth_fraction": split_fraction(spec, j)}
                          for j, (name, keys) in enumerate(layers)],
        "n_weight_layers": n_layers,
        "split_points": ks,
        "paper_split_fractions": PAPER_SPLIT_FRACTIONS,
        "seeds_note": (f"{len(pairs)} seeds (CPU budget; the paper averages 5 replicates)" if not setting.gpu
                       else f"{len(pairs)} seeds"),
        "split_note": "test split only (10k examples); the paper also shows the train split",
        "P_end": {"error": [b[0] for b in p_end_b], "loss": [b[1] for b in p_end_b], "error_mean": p_end_mean},
        "P_end_wm_seed_spread": wm_seed_spread,
        "P_t": {"error_mean": p_t_mean, "loss_mean": seed_mean(p_t_b, 1), "per_seed": p_t_b},
        "partial": {m: {str(k): {"error_mean": part_mean[m][k], "loss_mean": seed_mean(partial[m][k], 1),
                                 "per_seed": partial[m][k]} for k in ks[m]} for m in MODES},
        "spliced_partial_permutation": ({m: {str(k): {"error_mean": seed_mean(splice[m][k])} for k in ks[m]}
                                         for m in MODES} if spliced else
                                        "not measured (CPU budget, or layer and group indices differ)"),
        "bottom_up_over_k": {"k": bu_k, "error_mean_per_t": bu_curves},
        "bottom_up_reaches_P_end_from_t": {str(k): v for k, v in onset.items()},
        "onset_trend_asserted": onset_asserted,
        "midpoint": {"k": mid, "bottom_up": mid_bu, "top_down": mid_td},
        "connected_threshold": thr,
        "failures": failures,
    })
    measure.thresholds.update({"mc_noise_stderrs": MC_NOISE_STDERRS, "min_times_for_onset": MIN_TIMES_FOR_ONSET})

    def panel(m: str, j: int) -> dict:
        series = {f"k={k}": (times, seed_mean(partial[m][k], j)) for k in ks[m]}
        series["P_t"] = (times, seed_mean(p_t_b, j))
        series["P_end"] = (times, [p_end_mean if j == 0 else p_end_loss] * len(times))
        return line_panel(series, title=f"{m} ({'error' if j == 0 else 'loss'})", xlabel="rewind epoch t",
                          ylabel=f"test {'error' if j == 0 else 'loss'} barrier at the end",
                          styles={"P_t": "dotted", "P_end": "dotted"})

    measure.figure(
        "partial_rewinding",
        title=f"S10 {setting.name}: end-of-training barrier under WM of partially rewound networks (Fig. 17-18)",
        panels=[panel(m, j) for j in (0, 1) for m in MODES],
    )
    measure.summary = (
        "bottom-up over k=" + ",".join(str(k) for k in bu_k) + " (P_end .. P_t): "
        + "; ".join(f"t={t:g}: " + " -> ".join(pct(v) for v in bu_curves[i]) for i, t in enumerate(times))
        + f"; midpoint k={mid}: top-down {pct(mid_td)} vs bottom-up {pct(mid_bu) if mid_bu is not None else '-'}; "
        f"{n_outside} of {n_points} (t, mode, k) outside [P_end, P_t] +- {pct(thr)}; "
        f"WM seed spread of P_end {', '.join(pct(x) for x in wm_seed_spread)}"
    )
    assert not failures, f"{len(failures)} failures: " + "; ".join(failures[:6])
