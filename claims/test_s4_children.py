"""Claim S4: the permutation found between two parents aligns their children spawned after the onset of LMC.

Sharma et al. §5.1, Fig. 1 (right), Fig. 8 (col. 3): "*From the onset of linear mode
connectivity onward, we observe that the permutation P_end is able to align the
other child networks throughout training.*" The onset is "the first time t from
which pairs of children, on average, have no error barrier between them" (Frankle
et al.'s instability analysis). Figure: barrier vs spawn time: instability
(A_t^1 vs A_t^2), aligned children (A_t^1 vs P_end[B_t^1]), unaligned children,
and the aligned parents (A vs P_end[B]) as a horizontal line.

Children: for each pair replicate and spawn time t, two children of A (A_t^1, A_t^2:
the instability pair) and one of B (B_t^1), each with its own recorded SGD seed
and momentum reset at the spawn (Frankle et al.). Asserted on the test error
barrier, the quantity of the paper's statement ("error barrier between the child
networks"); loss barriers are recorded. Fig. 8's third column, A vs
P_end[B_t^1], is measured and asserted with the same rule.
"""

from __future__ import annotations

import pytest

from fixtures import Lab
from fixtures.recipes import Setting
from lmccheck.report import line_panel, pct

from .rules import MC_NOISE_STDERRS, connected_threshold, mean_std
from .settings import describe, params

METHODS = ("weight", "activation")
#: spawn times at CPU scale (epochs of the 5-epoch recipe): around the onset, which the MLP reaches early;
#: GPU settings spawn at every checkpoint before the end (Fig. 8's log axis)
CPU_SPAWN_TIMES = (0.0, 1.0, 2.0)
#: "P_end is able to align the other child networks": at every spawn time from the onset on, the mean
#: aligned-children error barrier exceeds the aligned parents' by at most MC noise plus
#: MC_NOISE_STDERRS standard errors of the seed-to-seed spread of that difference
#: "far below the unaligned one" (issue wording; the number is S3's, §5.1 on Fig. 1 left: "from around 70% ...
#: to 3-8%"): aligned children at most 8/70 of the unaligned children, plus MC noise, where the unaligned
#: children are not already connected
FAR_BELOW_RATIO = 8 / 70
#: replicates at CPU scale: children are the most expensive products of the CPU tier (3 per spawn time and
#: seed), so S4 runs 2 seeds there, recorded as such; GPU settings use --lmc-seeds
CPU_SEEDS = 2
#: the paper's replicates (App. D: "All results are averaged over 5 replicates")
PAPER_SEEDS = 5
#: SGD seeds of the children: replicate r's children A^1, A^2, B^1 use these plus 3r, 3r + 1, 3r + 2
CHILD_SGD_SEED_BASE = 3000


@pytest.mark.claim("S4")
@pytest.mark.parametrize("setting", params(
    ["mlp512-fmnist"],
    ["vgg16-ln-cifar10-instability", "resnet20x4-ln-cifar10-instability", "vgg16-ln-fmnist-instability"],
    group="children",  # a third of the CPU tier's training: beside the setting's other checks under xdist
))
def test_s4_end_permutation_aligns_children_after_onset(setting: Setting, lab: Lab, n_seeds: int, measure) -> None:
    """From the onset of LMC on, barrier(A_t^1, P_end[B_t^1]) and barrier(A, P_end[B_t^1]) stay close to
    barrier(A, P_end[B]) (mean over seeds), and the aligned children stay far below the unaligned ones (every
    seed); WM and AM."""
    cfg = setting.config
    n = setting.eval_examples
    seeds = n_seeds if setting.gpu else min(n_seeds, CPU_SEEDS)
    pairs = lab.pairs(cfg, seeds)
    end = cfg.epochs
    spawn_times = [t for t in pairs[0].a.times if t < end] if setting.gpu else list(CPU_SPAWN_TIMES)
    # per seed, per spawn time: (error, loss) barriers
    inst: list[list[tuple[float, float]]] = []
    unal: list[list[tuple[float, float]]] = []
    aligned: dict[str, list[list[tuple[float, float]]]] = {m: [] for m in METHODS}
    parent_child: dict[str, list[list[tuple[float, float]]]] = {m: [] for m in METHODS}  # A vs P_end[B_t^1]
    parents: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    thresholds: list[float] = []
    for pair in pairs:
        r = pair.replicate
        p_end = {m: lab.match(m, pair.a, pair.b) for m in METHODS}
        for m in METHODS:
            res = lab.barrier(pair.a, pair.b, perm=p_end[m], n_examples=n)
            parents[m].append((res.error_barrier, res.loss_barrier))
            thresholds.append(connected_threshold(max(res.error_endpoints), res.n_examples))
        row_i, row_u = [], []
        rows_a: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
        rows_pc: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
        child_seeds = {"A1": CHILD_SGD_SEED_BASE + 3 * r, "A2": CHILD_SGD_SEED_BASE + 3 * r + 1,
                       "B1": CHILD_SGD_SEED_BASE + 3 * r + 2}
        for t in spawn_times:
            a1, a2 = lab.child(pair.a, t, child_seeds["A1"]), lab.child(pair.a, t, child_seeds["A2"])
            b1 = lab.child(pair.b, t, child_seeds["B1"])
            res_i, res_u = lab.barrier(a1, a2, n_examples=n), lab.barrier(a1, b1, n_examples=n)
            row_i.append((res_i.error_barrier, res_i.loss_barrier))
            row_u.append((res_u.error_barrier, res_u.loss_barrier))
            thresholds += [connected_threshold(max(x.error_endpoints), x.n_examples) for x in (res_i, res_u)]
            for m in METHODS:
                res_a = lab.barrier(a1, b1, perm=p_end[m], n_examples=n)
                res_pc = lab.barrier(pair.a, b1, perm=p_end[m], n_examples=n)
                rows_a[m].append((res_a.error_barrier, res_a.loss_barrier))
                rows_pc[m].append((res_pc.error_barrier, res_pc.loss_barrier))
        inst.append(row_i)
        unal.append(row_u)
        for m in METHODS:
            aligned[m].append(rows_a[m])
            parent_child[m].append(rows_pc[m])
        measure.seeds.append({**pair.seeds, **{f"sgd_seed_child_{k}": v for k, v in child_seeds.items()}})

    thr = max(thresholds)
    k = len(spawn_times)
    inst_mean = [mean_std([row[i][0] for row in inst])[0] for i in range(k)]
    # the onset: the first spawn time from which the mean instability stays within MC noise
    onset_idx = next((i for i in range(k) if all(inst_mean[j] <= thr for j in range(i, k))), None)
    failures = []
    if onset_idx is None:
        failures.append(f"no onset of LMC among the spawn times {spawn_times}: mean instability "
                        + ", ".join(pct(x) for x in inst_mean) + f" (threshold {pct(thr)})")
    else:
        for m in METHODS:
            for series, what in ((aligned[m], "aligned children"), (parent_child[m], "A vs P_end[B_t^1]")):
                for i in range(onset_idx, k):
                    diffs = [series[s][i][0] - parents[m][s][0] for s in range(len(pairs))]
                    mean_d, std_d = mean_std(diffs)
                    allowed = thr + MC_NOISE_STDERRS * std_d / len(diffs) ** 0.5
                    if not mean_d <= allowed:
                        failures.append(f"{m}, t={spawn_times[i]:g}: {what} exceed the aligned parents by "
                                        f"{pct(mean_d)} on average (allowed {pct(allowed)})")
            for seed in range(len(pairs)):
                for i in range(onset_idx, k):
                    child, naive = aligned[m][seed][i][0], unal[seed][i][0]
                    if naive > thr and not child <= FAR_BELOW_RATIO * naive + thr:
                        failures.append(f"{m}, seed {seed}, t={spawn_times[i]:g}: aligned children {pct(child)} not "
                                        f"far below unaligned {pct(naive)}")

    def means(rows: list[list[tuple[float, float]]], which: int) -> tuple[list[float], list[float]]:
        ms = [mean_std([row[i][which] for row in rows]) for i in range(k)]
        return [a for a, _ in ms], [b for _, b in ms]

    measure.values.update({
        "setting": describe(setting),
        "seeds_used": len(pairs),
        "seeds_note": (
            f"{len(pairs)} of {n_seeds} requested seeds (CPU scale: children dominate the CPU budget)"
            if not setting.gpu and len(pairs) < n_seeds else None
        ) or (f"{len(pairs)} seeds, fewer than the paper's {PAPER_SEEDS}" if len(pairs) < PAPER_SEEDS else None),
        "spawn_times_epochs": spawn_times,
        "onset_epoch": None if onset_idx is None else spawn_times[onset_idx],
        "onset_resolved": onset_idx is not None and onset_idx > 0,
        "spawn_times_asserted": 0 if onset_idx is None else k - onset_idx,
        "connected_threshold": thr,
        "error_barrier": {
            "instability": means(inst, 0), "unaligned_children": means(unal, 0),
            **{f"aligned_children_{m}": means(aligned[m], 0) for m in METHODS},
            **{f"aligned_parents_{m}": mean_std([p[0] for p in parents[m]]) for m in METHODS},
        },
        "loss_barrier": {
            "instability": means(inst, 1), "unaligned_children": means(unal, 1),
            **{f"aligned_children_{m}": means(aligned[m], 1) for m in METHODS},
            **{f"aligned_parents_{m}": mean_std([p[1] for p in parents[m]]) for m in METHODS},
        },
        "parent_vs_aligned_child_B": {m: means(parent_child[m], 0) for m in METHODS},
        "per_seed": {"instability": inst, "unaligned": unal, "aligned": aligned, "parent_child": parent_child,
                     "parents": parents},
        "failures": failures,
    })
    measure.thresholds.update({"mc_noise_stderrs": MC_NOISE_STDERRS, "far_below_ratio": FAR_BELOW_RATIO})
    panels = []
    for which, name in ((0, "error"), (1, "loss")):
        series = {"instability A_t^1 vs A_t^2": (spawn_times, means(inst, which)[0]),
                  "unaligned children": (spawn_times, means(unal, which)[0])}
        series.update({f"aligned children ({m[0].upper()}M)": (spawn_times, means(aligned[m], which)[0])
                       for m in METHODS})
        series["A vs P_end[B_t^1] (WM)"] = (spawn_times, means(parent_child["weight"], which)[0])
        panels.append(line_panel(
            series, title=f"test {name} barrier", xlabel="spawn time t (epochs)", ylabel=f"test {name} barrier",
            styles={"instability A_t^1 vs A_t^2": "dashdot", "unaligned children": "dotted"},
            hlines={f"aligned parents ({m[0].upper()}M)": mean_std([p[which] for p in parents[m]])[0] for m in METHODS},
        ))
    measure.figure("children_vs_spawn_time", title=f"S4 {setting.name}: children aligned by the parents' P_end",
                   panels=panels)
    last = k - 1
    measure.summary = (
        f"onset {'none' if onset_idx is None else f'{spawn_times[onset_idx]:g} ep'}; at t={spawn_times[last]:g}: "
        f"aligned children {pct(means(aligned['weight'], 0)[0][last])} (WM), "
        f"{pct(means(aligned['activation'], 0)[0][last])} (AM) vs parents "
        f"{pct(mean_std([p[0] for p in parents['weight']])[0])} (WM), unaligned {pct(means(unal, 0)[0][last])}; "
        f"{len(pairs)} seeds; {0 if onset_idx is None else k - onset_idx} spawn times asserted"
    )
    assert not failures, f"{len(failures)} failures: " + "; ".join(failures[:6])
