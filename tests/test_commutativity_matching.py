"""Commutativity matching (Zhou et al. Eq. 9): the objective never increases, the 2-opt phase finds a planted
optimum that activation matching misses and stops only at a 2-opt local optimum, and the statistics are right."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from lmccheck.activation_matching import activation_matching
from lmccheck.commutativity_matching import (
    _dense,
    _features,
    _GroupRelaxation,
    _mlp_layers,
    _Problem,
    _SwapSearch,
    commutativity_matching,
    commutativity_objective,
    random_transpositions,
)
from lmccheck.models import get_model
from lmccheck.permutation import Permutation

GROUPS = ("P0", "P1", "P2")


def mlp(seed: int, width: int = 12, norm: str = "none") -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model("mlp", width=width, depth=3, norm=norm, in_channels=1, input_size=4, num_classes=3)


def inputs(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def reference_objective(a: dict, b: dict, x: torch.Tensor, perm: Permutation | None) -> float:
    """Eq. (9) written out on P[B] directly: sum_l ||(W_A - W'_B)(H_A - H'_B)||^2 in column form."""
    pb = perm.apply(b) if perm is not None else b
    ha, hb, total = x.reshape(len(x), -1).double().T, x.reshape(len(x), -1).double().T, 0.0
    for name in ("layers.0", "layers.1", "layers.2", "head"):
        wa, wb = a[f"{name}.weight"].double(), pb[f"{name}.weight"].double()
        total += float((((wa - wb) @ (ha - hb)) ** 2).sum())
        if name != "head":
            ha = (wa @ ha + a[f"{name}.bias"].double()[:, None]).relu()
            hb = (wb @ hb + pb[f"{name}.bias"].double()[:, None]).relu()
    return total


def test_the_objective_is_eq_9_and_never_increases() -> None:
    model, a, b, x = mlp(0), state(mlp(0)), state(mlp(1)), inputs()
    init = Permutation.identity(model.permutation_spec(), a)
    assert commutativity_objective(model, a, b, x, init) == pytest.approx(reference_objective(a, b, x, None), rel=1e-9)
    perm = commutativity_matching(model, a, b, x, init=init, sweeps=3, fw_steps=10)
    hist = perm.stats["objective"]
    assert all(later <= earlier for earlier, later in zip(hist, hist[1:]))
    assert perm.stats["objective_final"] == hist[-1] < hist[0] == perm.stats["objective_init"]  # it found better
    assert perm.stats["objective_final"] == pytest.approx(reference_objective(a, b, x, perm), rel=1e-9)
    assert perm.stats["accepted"] == perm.stats["accepted_fw"] + perm.stats["accepted_swaps"] > 0
    assert perm.stats["examples"] == 64 and perm.stats["start"] == "init"
    json.dumps(perm.stats)  # stored as a product's metadata


def test_a_permuted_copy_stays_exactly_aligned_and_activation_matching_is_the_default_start() -> None:
    model, a, x = mlp(0), state(mlp(0)), inputs()
    q = Permutation.random(model.permutation_spec(), a, 3)
    b = q.apply(a)
    exact = commutativity_matching(model, a, b, x, init=q.inverse())
    assert exact == q.inverse() and exact.stats["objective_final"] == 0.0
    default = commutativity_matching(model, a, b, x)  # from activation matching, which recovers the copy
    assert default == q.inverse() and default.stats["objective_init"] == 0.0


def test_clear_errors() -> None:
    a, x = state(mlp(0)), inputs()
    with pytest.raises(ValueError, match="norm='none'"):
        commutativity_matching(mlp(0, norm="layernorm"), state(mlp(0, norm="layernorm")),
                               state(mlp(1, norm="layernorm")), x)
    with pytest.raises(ValueError, match="network B"):
        commutativity_matching(mlp(0), a, state(mlp(1, width=16)), x)
    other = Permutation.identity(mlp(0, width=16).permutation_spec(), state(mlp(0, width=16)))
    with pytest.raises(ValueError, match="these networks' units"):
        commutativity_matching(mlp(0), a, state(mlp(1)), x, init=other)
    with pytest.raises(ValueError, match="sweeps"):
        commutativity_matching(mlp(0), a, state(mlp(1)), x, sweeps=0)
    with pytest.raises(ValueError, match="these networks' units"):
        commutativity_matching(mlp(0), a, state(mlp(1)), x, starts=[other])
    with pytest.raises(ValueError, match=r"order must list distinct group indices in 0\.\.2, got \[0, 0, 1\]"):
        commutativity_matching(mlp(0), a, state(mlp(1)), x, order=[0, 0, 1])


def test_with_two_opt_false_no_2_opt_pass_runs_and_no_local_optimum_is_claimed() -> None:
    model, a, b, x = mlp(0, width=8), state(mlp(0, width=8)), state(mlp(2, width=8)), inputs()
    stats = commutativity_matching(model, a, b, x, two_opt=False).stats
    assert stats["local_optimum"] is False and stats["accepted_swaps"] == 0 and stats["two_opt_passes"] == 0


# ------------------------------------------------------------------------------------------ the search
def planted(seed: int = 0) -> tuple[torch.nn.Module, dict, dict, torch.Tensor, Permutation]:
    """A pair whose Eq. (9) optimum is known: B = pi*^-1[A] with B's first layer replaced by a noisy copy.

    Every layer after the first has W_B' = W_A exactly at pi*, so each term of Eq. (9) vanishes there: J(pi*) = 0
    is the global minimum. The noise in the first layer moves B's features, so activation matching misses pi*.
    """
    model, a, x = mlp(seed, width=32), state(mlp(seed, width=32)), inputs()
    q = Permutation.random(model.permutation_spec(), a, seed + 10)
    b = q.apply(a)
    w = b["layers.0.weight"]
    b["layers.0.weight"] = w + 3.0 * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))
    return model, a, b, x, q.inverse()


def test_the_2_opt_phase_finds_a_planted_optimum_that_activation_matching_misses() -> None:
    model, a, b, x, star = planted()
    assert commutativity_objective(model, a, b, x, star) == 0.0
    am = activation_matching(model, a, b, x)
    assert am != star and commutativity_objective(model, a, b, x, am) > 0.0  # AM's permutation is not the optimum
    start = random_transpositions(star, 8, seed=0)  # 8 transpositions away from pi* in every group
    assert all(int((start.perms[g] != star.perms[g]).sum()) >= 8 for g in GROUPS)
    perm = commutativity_matching(model, a, b, x, init=start)
    assert perm == star and perm.stats["objective_final"] == 0.0 and perm != start
    assert perm.stats["objective_fw"] > 0.0 and perm.stats["accepted_swaps"] > 0  # the 2-opt phase got it there
    assert perm.stats["local_optimum"]


def test_j_never_increases_and_is_eq_9_at_the_result_for_every_start() -> None:
    model, a, b, x, star = planted(1)
    am = activation_matching(model, a, b, x)
    init = Permutation.identity(model.permutation_spec(), a)
    starts = [am, random_transpositions(star, 8, seed=1)]
    perm = commutativity_matching(model, a, b, x, init=init, starts=starts, barycenter=True)
    hist, records = perm.stats["objective"], perm.stats["starts"]
    assert all(later < earlier for earlier, later in zip(hist, hist[1:]))  # every recorded step strictly lower
    assert set(records) == {"init", "start1", "start2", "barycenter"}
    for name, start in (("init", init), ("start1", am), ("start2", starts[1])):
        assert records[name]["objective_start"] == pytest.approx(commutativity_objective(model, a, b, x, start),
                                                                 rel=1e-12)
    for r in records.values():
        assert r["objective_final"] <= r["objective_fw"] <= r["objective_start"] and r["local_optimum"]
    assert perm.stats["objective_init"] == records["init"]["objective_start"]
    best = min(r["objective_final"] for r in records.values())
    assert perm.stats["objective_final"] == best == records[perm.stats["start"]]["objective_final"] == hist[-1]
    assert perm.stats["objective_final"] == pytest.approx(commutativity_objective(model, a, b, x, perm), rel=1e-12)
    assert perm.stats["objective_final"] == pytest.approx(reference_objective(a, b, x, perm), rel=1e-9)
    json.dumps(perm.stats)


def swapped(perm: Permutation, group: str, i: int, j: int) -> Permutation:
    out = {g: p.clone() for g, p in perm.perms.items()}
    out[group][[i, j]] = out[group][[j, i]]
    return Permutation(perm.spec, out)


@pytest.mark.parametrize(("seed", "order"), [(2, (0, 1, 2)), (4, (0, 1, 2)), (3, (2, 1, 0))])
def test_no_single_transposition_improves_the_result(seed: int, order: tuple[int, ...]) -> None:
    """(3, (2, 1, 0)): a swap in a group changes its neighbours' terms, on both sides, which must be revisited."""
    model, a, b, x = mlp(0, width=8), state(mlp(0, width=8)), state(mlp(seed, width=8)), inputs()
    perm = commutativity_matching(model, a, b, x, order=order)
    assert perm.stats["local_optimum"] and perm.stats["accepted_swaps"] > 0
    value = perm.stats["objective_final"]
    tol = perm.stats["swap_tolerance"]["rtol"] * value + perm.stats["swap_tolerance"]["atol"]
    for g in GROUPS:
        for i, j in itertools.combinations(range(8), 2):
            assert commutativity_objective(model, a, b, x, swapped(perm, g, i, j)) >= value - tol, (g, i, j)


def test_the_swap_deltas_are_exact() -> None:
    """Every transposition's change of J, from the Gram matrices and after O(n^2) updates, against brute force."""
    model, a, b, x = mlp(0, width=7), state(mlp(0, width=7)), state(mlp(1, width=7)), inputs()
    names, groups = _mlp_layers(model)
    problem = _Problem(names, a, b, _features(model, a, x), _features(model, b, x), x)
    rng = np.random.default_rng(0)
    idx = [rng.permutation(7) for _ in groups]
    for g in range(len(groups)):
        current = [i.copy() for i in idx]
        search = _SwapSearch(problem, g, current)
        for i, j in [(int(u), int(v)) for u, v in rng.integers(0, 7, size=(10, 2)) if u != v]:
            search.swap(i, j)  # the updated matrices must describe the swapped permutation
        value, deltas = problem.total(current), search.deltas()
        for i, j in itertools.combinations(range(7), 2):
            trial = [c.copy() for c in current]
            trial[g][[i, j]] = trial[g][[j, i]]
            assert deltas[i, j] == pytest.approx(problem.total(trial) - value, abs=1e-9 * value)
            assert search.delta(i, j) == pytest.approx(deltas[i, j], abs=1e-12 * value)


@pytest.mark.parametrize("g", [0, 1])
def test_frank_wolfe_updates_its_terms_as_recomputing_them_from_p_would(g: int) -> None:
    """Each step updates U, V, U V^T (and term a's residual, for a group after the first) incrementally; that
    must equal recomputing them from the new P: several steps in one run end where chained one-step runs do."""
    model, a, b, x = mlp(0, width=8), state(mlp(0, width=8)), state(mlp(1, width=8)), inputs()
    names, groups = _mlp_layers(model)
    problem = _Problem(names, a, b, _features(model, a, x), _features(model, b, x), x)
    rng = np.random.default_rng(1)
    mats = [_dense(rng.permutation(8)) for _ in groups]
    relax = _GroupRelaxation(problem, g, mats)
    p, _, _, taken = relax.run(mats[g], 6)
    assert taken >= 3
    chained = mats[g]
    for _ in range(taken):
        chained = relax.run(chained, 1)[0]
    assert torch.allclose(p, chained, atol=1e-5)


def relaxed_slope(model: torch.nn.Module, a: dict, b: dict, x: torch.Tensor, perm: Permutation, g: int) -> float:
    """min_Q <grad J(P0), Q - P0> over permutations Q for group g, by autograd on Eq. (9) with dense matrices."""
    names, groups = _mlp_layers(model)
    problem = _Problem(names, a, b, _features(model, a, x), _features(model, b, x), x)
    mats = [torch.eye(len(perm.perms[h]), dtype=torch.float64)[perm.perms[h]] for h in groups]

    def term(layer: int, out: torch.Tensor | None, inp: torch.Tensor | None) -> torch.Tensor:
        hb, wb = problem.hb[layer], problem.wb[layer]
        if inp is not None:
            hb, wb = hb @ inp.T, wb @ inp.T
        if out is not None:
            wb = out @ wb
        return (((problem.ha[layer] - hb) @ (problem.wa[layer] - wb).T) ** 2).sum()

    full = [None, *mats, None]
    p = mats[g].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(term(g, p, full[g]) + term(g + 1, full[g + 2], p), p)
    rows, cols = linear_sum_assignment(grad.numpy())
    return min(float(grad[rows, cols].sum()), float((grad * mats[g]).sum())) - float((grad * mats[g]).sum())


@pytest.mark.slow
@pytest.mark.parametrize("order", [(0, 1, 2), (1, 2, 0), (2, 0, 1)])
def test_the_first_step_slope_is_recorded_for_every_start_and_group(order: tuple[int, ...]) -> None:
    model, a, b, x = mlp(0, width=8), state(mlp(0, width=8)), state(mlp(1, width=8)), inputs()
    am = activation_matching(model, a, b, x)
    starts = [random_transpositions(am, 2, seed=0)]
    perm = commutativity_matching(model, a, b, x, init=am, starts=starts, barycenter=True, order=order)
    slopes = perm.stats["first_step_slope"]
    assert set(slopes) == {"init", "start1", "barycenter"} and all(set(s) == set(GROUPS) for s in slopes.values())
    assert all(v <= 0.0 for s in slopes.values() for v in s.values()) and any(v < 0.0 for v in slopes["init"].values())
    for name, start in (("init", am), ("start1", starts[0])):  # the first group visited sees the start unchanged
        want = relaxed_slope(model, a, b, x, start, order[0])
        assert slopes[name][GROUPS[order[0]]] == pytest.approx(want, rel=1e-4, abs=1e-9)
    assert all(0.0 <= t <= 1.0 for s in perm.stats["first_step_length"].values() for t in s.values())
