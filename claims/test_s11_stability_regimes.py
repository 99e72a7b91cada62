"""Claim S11: stability at initialization is neither necessary nor sufficient for permutation alignment
(Sharma et al. App. H.4, Fig. 6, Fig. 19-20).

H.4 trains VGG-16 on CIFAR-10 in two regimes: (1) "No learning rate warm-up; peak learning-rate set to 1e-3;
weight-decay coefficient set to 1e-4", and (2) "Single epoch of learning rate warm-up; peak learning-rate set
to 1e-1; weight-decay coefficient set to 0". In each regime it measures stability at initialization "w.r.t.
SGD noise, i.e. with same initialization but different data orders for SGD" (here: A and a child of A spawned
at t = 0 with another SGD seed, barrier at the end of training), and the barriers of the whole training
trajectory (A_t, P_end[B_t]) under the permutation P_end found at the end by weight matching (WM) and by
activation matching (AM).

Asserted, on the test error barrier (means over seeds; "linearly connected" is within the Monte Carlo noise
of the 0-1 error, :func:`claims.rules.connected_threshold`):

* regime 1, "models are stable at initialization ... From the plots, we can see that both activation
  matching and weight matching fail to find a permutation that leads to linear mode connectivity": the
  instability is within noise, and the end-of-training barrier under P_end is above noise for WM and for AM;
* regime 2, "models are not stable at initialization ... activation matching succeeds in finding a
  permutation that linearly connects the entire training trajectory": the instability is above noise, and
  the barrier under AM's P_end is within noise at every checkpoint.

The claim concerns VGG-16 on CIFAR-10, so it has GPU settings only (the paper's, and a Fashion-MNIST VGG-16
variant that runs offline); without CUDA it is skipped.
"""

from __future__ import annotations

import pytest

from fixtures import Lab
from fixtures.recipes import REGIMES_GPU, Regimes
from lmccheck.report import line_panel, pct

from .rules import MC_NOISE_STDERRS, connected_threshold, mean_std
from .settings import describe, params

METHODS = ("weight", "activation")
SHORT = {"weight": "WM", "activation": "AM"}
#: SGD seeds of the children spawned at t = 0 from A of replicate r: this plus r
CHILD_SGD_SEED_BASE = 7000


@pytest.mark.claim("S11")
@pytest.mark.parametrize("regimes", params([], list(REGIMES_GPU), cpu_table={}, gpu_table=REGIMES_GPU))
def test_s11_stability_at_init_is_neither_necessary_nor_sufficient(
    regimes: Regimes, lab: Lab, n_seeds: int, measure
) -> None:
    """Regime 1 is stable at init yet neither WM nor AM aligns it; regime 2 is unstable at init yet AM's
    P_end linearly connects its whole trajectory (test error, means over seeds)."""
    record: dict[str, dict[str, object]] = {}
    failures: list[str] = []
    panels = []
    for index, (setting, label) in enumerate(zip(regimes.settings, regimes.labels, strict=True), start=1):
        pairs = lab.pairs(setting.config, n_seeds)
        times = pairs[0].a.times
        instability, thresholds = [], []
        traj: dict[str, list[list[float]]] = {m: [] for m in METHODS}
        for pair in pairs:
            seed = CHILD_SGD_SEED_BASE + pair.replicate
            child = lab.child(pair.a, 0.0, seed)
            res = lab.barrier(pair.a, child)
            instability.append(res.error_barrier)
            thresholds.append(connected_threshold(max(res.error_endpoints), res.n_examples))
            for m in METHODS:
                p_end = lab.match(m, pair.a, pair.b)
                row = [lab.barrier(pair.a, pair.b, time=t, perm=p_end) for t in times]
                traj[m].append([r.error_barrier for r in row])
                thresholds += [connected_threshold(max(r.error_endpoints), r.n_examples) for r in row]
            measure.seeds.append({"regime": index, **pair.seeds, "sgd_seed_child_of_A": seed})
        thr = max(thresholds)
        inst = mean_std(instability)[0]
        curve = {m: [mean_std([s[i] for s in traj[m]])[0] for i in range(len(times))] for m in METHODS}
        if index == 1:
            if not inst <= thr:
                failures.append(f"regime 1 is not stable at init: instability {pct(inst)} > {pct(thr)}")
            for m in METHODS:
                if not curve[m][-1] > thr:
                    failures.append(f"regime 1: {SHORT[m]}'s P_end linearly connects the end of training "
                                    f"({pct(curve[m][-1])} <= {pct(thr)}); the paper finds it does not")
        else:
            if not inst > thr:
                failures.append(f"regime 2 is stable at init: instability {pct(inst)} <= {pct(thr)}")
            above = [(t, v) for t, v in zip(times, curve["activation"]) if not v <= thr]
            if above:
                failures.append(f"regime 2: AM's P_end leaves barriers above noise ({pct(thr)}) at t = "
                                + ", ".join(f"{t:g} ({pct(v)})" for t, v in above[:4]))
        record[f"regime{index}"] = {
            "setting": describe(setting), "label": label, "times_epochs": times,
            "instability_at_init": mean_std(instability), "instability_per_seed": instability,
            "trajectory_under_P_end": curve, "trajectory_per_seed": traj, "connected_threshold": thr,
        }
        panels.append(line_panel({f"P_end {SHORT[m]}": (times, curve[m]) for m in METHODS},
                                 title=f"regime {index}: {label}", xlabel="epoch t", ylabel="test error barrier",
                                 hlines={"instability at init": inst, "MC noise": thr}))
    measure.values.update({"regimes": record, "failures": failures})
    measure.thresholds.update({"mc_noise_stderrs": MC_NOISE_STDERRS})
    measure.figure("regimes", title=f"S11 {regimes.name}: stability at init vs alignment", panels=panels)
    r1, r2 = record["regime1"], record["regime2"]
    measure.summary = (
        f"regime 1: instability {pct(r1['instability_at_init'][0])}, end under P_end "  # type: ignore[index]
        + ", ".join(f"{SHORT[m]} {pct(r1['trajectory_under_P_end'][m][-1])}" for m in METHODS)  # type: ignore[index]
        + f"; regime 2: instability {pct(r2['instability_at_init'][0])}, max over t under AM's P_end "  # type: ignore[index]
        + pct(max(r2["trajectory_under_P_end"]["activation"]))  # type: ignore[index]
    )
    assert not failures, "; ".join(failures)
