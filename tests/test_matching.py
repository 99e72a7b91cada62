"""Weight matching (Greedy-SOBLAP), activation matching, partial permutations, fixed points.

Convention under test: ``weight_matching(spec, A, B)`` returns ``P`` with
``P.apply(B) ~ A``; for a planted ``B = Q[A]`` that is ``P == Q.inverse()``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from lmccheck.activation_matching import activation_matching, activation_modules
from lmccheck.data import Split
from lmccheck.matching import fixed_point_stats, partial_permutation
from lmccheck.models import get_model
from lmccheck.permutation import Permutation, PermutationSpec
from lmccheck.weight_matching import matching_objective, weight_matching

from naive_matching import weight_matching_naive

# small settings: (model name, kwargs, input shape (C, H, W))
SMALL = {
    "mlp": ("mlp", dict(width=48, depth=3, in_channels=1, input_size=8), (1, 8, 8)),
    "vgg16": ("vgg16", dict(width=0.125, in_channels=3, input_size=16), (3, 16, 16)),
    "resnet20x1": ("resnet20", dict(width=1, in_channels=3, input_size=16), (3, 16, 16)),
    "resnet20x2": ("resnet20", dict(width=2, in_channels=3, input_size=16), (3, 16, 16)),
}


def _model(case: str, seed: int = 0, **extra) -> torch.nn.Module:
    name, kw, _ = SMALL[case]
    torch.manual_seed(seed)
    return get_model(name, num_classes=10, **kw, **extra).eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _inputs(case: str, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *SMALL[case][2]), generator=gen)


def _noisy(state: dict[str, torch.Tensor], rel: float, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if rel and v.is_floating_point() and v.numel() > 1 and "running" not in k:
            v = v + rel * v.std() * torch.randn(v.shape, generator=gen)
        out[k] = v
    return out


def _planted(case: str, seed: int = 0, noise: float = 0.0, **extra):
    model = _model(case, seed, **extra)
    spec = model.permutation_spec()
    a = _state(model)
    if "batchnorm" in extra.values():  # make running statistics non-trivial
        gen = torch.Generator().manual_seed(seed + 7)
        for k in a:
            if k.endswith("running_mean"):
                a[k] = torch.randn(a[k].shape, generator=gen)
            elif k.endswith("running_var"):
                a[k] = torch.rand(a[k].shape, generator=gen) + 0.5
    q = Permutation.random(spec, a, seed + 1)
    b = _noisy(q.apply(a), noise, seed + 2)
    return model, spec, a, b, q


def _clone(state):
    return {k: v.clone() for k, v in state.items()}


def _assert_same_state(x, y):
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, msg=k)


# --------------------------------------------------------------------------- #
# Planted permutations
# --------------------------------------------------------------------------- #
@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.0, 1e-3])
@pytest.mark.parametrize("case", list(SMALL))
def test_weight_matching_recovers_planted_permutation(case: str, noise: float) -> None:
    _, spec, a, b, q = _planted(case, noise=noise)
    p = weight_matching(spec, a, b, seed=0)
    assert p == q.inverse()
    aligned = p.apply(b)
    for k in a:
        tol = 10 * noise * float(a[k].float().std().nan_to_num()) + 1e-12
        torch.testing.assert_close(aligned[k], a[k], rtol=0, atol=tol, msg=k)
    assert p.stats["converged"]
    assert p.stats["final_objective"] == pytest.approx(matching_objective(spec, a, b, p), rel=1e-5)


@pytest.mark.parametrize("case", ["vgg16", "resnet20x1"])
def test_weight_matching_batchnorm_buffers(case: str) -> None:
    _, spec, a, b, q = _planted(case, noise=1e-3, norm="batchnorm")
    assert any(k.endswith("num_batches_tracked") for k in a)
    p = weight_matching(spec, a, b, seed=3)
    assert p == q.inverse()
    key = "stages.1.0.norm1.running_mean" if "resnet" in case else "features.0.norm.running_mean"
    torch.testing.assert_close(p.apply(b)[key], a[key])


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_weight_matching_planted_property(model_seed: int, match_seed: int) -> None:
    torch.manual_seed(model_seed % 1000)
    model = get_model("mlp", width=24, depth=3, in_channels=1, input_size=6)
    spec = model.permutation_spec()
    a = _state(model)
    q = Permutation.random(spec, a, model_seed)
    p = weight_matching(spec, a, q.apply(a), seed=match_seed)
    assert p == q.inverse()


def _alive(model: torch.nn.Module, state, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per group, the units active (nonzero) on at least 10 samples of ``x``.

    Counted on the modules activation matching reads by default. Dead units
    carry no information, so any assignment among them is optimal; nearly
    dead ones are ties for the correlation.
    """
    spec = model.permutation_spec()
    model.load_state_dict(state)
    mods = dict(model.named_modules())
    counts = {g: torch.zeros(n) for g, n in spec.group_sizes(state).items()}
    handles = []
    for g, names in activation_modules(spec).items():
        for name in names:
            def hook(_m, _i, out, g=g):
                counts[g] += (out.movedim(1, -1).reshape(-1, out.shape[1]) != 0).sum(0)
            handles.append(mods[name].register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return {g: c >= 10 for g, c in counts.items()}


def _assert_recovered(p: Permutation, q: Permutation, alive: dict[str, torch.Tensor]) -> None:
    """``p == q.inverse()`` on every unit alive in A."""
    qi = q.inverse()
    for g, mask in alive.items():
        assert mask.float().mean() > 0.5, g
        assert torch.equal(p.perms[g][mask], qi.perms[g][mask]), g


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.0, 1e-3])
@pytest.mark.parametrize("case", list(SMALL))
def test_activation_matching_recovers_planted_permutation(case: str, noise: float) -> None:
    model, spec, a, b, q = _planted(case, noise=noise)
    x = _inputs(case, 64)
    p = activation_matching(model, a, b, x, batch_size=16)
    _assert_recovered(p, q, _alive(model, a, x))
    assert p.stats["examples"] == 64 and p.stats["batches"] == 4
    for g in spec.groups:
        assert p.stats["objective"][g] >= p.stats["identity_objective"][g]


def test_activation_matching_sum_over_stream_recovers_planted_permutation() -> None:
    model, spec, a, b, q = _planted("resnet20x1", noise=1e-3)
    x = _inputs("resnet20x1", 32)
    p = activation_matching(model, a, b, x, stream="sum")
    _assert_recovered(p, q, _alive(model, a, x))
    assert p.stats["stream"] == "sum"
    assert p.stats["modules"]["stream0"] == list(spec.activations["stream0"])
    # every sample of every module writing the stream is counted; one module per stream by default
    last = activation_matching(model, a, b, x)
    n_writers = len(spec.activations["stream1"])
    assert n_writers == 3
    assert p.stats["samples"]["stream1"] == n_writers * last.stats["samples"]["stream1"]
    assert p.stats["samples"]["s1b1"] == last.stats["samples"]["s1b1"]


@pytest.mark.slow
def test_activation_matching_correlation_and_batchnorm() -> None:
    model, spec, a, b, q = _planted("resnet20x1", noise=1e-3, norm="batchnorm")
    x = _inputs("resnet20x1", 48)
    p = activation_matching(model, a, b, Split(x, torch.zeros(48, dtype=torch.long)), batch_size=20, correlation=True)
    _assert_recovered(p, q, _alive(model, a, x))
    assert p.stats["correlation"] is True
    assert p.stats["examples"] == 48 and p.stats["batches"] == 3
    # correlation of a unit with itself is 1 (up to the noise)
    g = next(iter(spec.groups))
    assert p.stats["objective"][g] == pytest.approx(spec.group_sizes(a)[g], rel=1e-2)


def test_activation_matching_data_forms_and_batch_limit() -> None:
    model, spec, a, b, q = _planted("mlp")
    x = _inputs("mlp", 60)
    batches = [x[i : i + 10] for i in range(0, 60, 10)]
    p_list = activation_matching(model, a, b, batches, batches=3)
    assert p_list.stats["examples"] == 30 and p_list.stats["batches"] == 3
    p_pairs = activation_matching(model, a, b, [(t, torch.zeros(len(t))) for t in batches])
    assert p_pairs.stats["examples"] == 60
    p_tensor = activation_matching(model, a, b, x, batch_size=7)
    assert p_tensor.stats["batches"] == 9
    alive = _alive(model, a, x)
    for p in (p_list, p_pairs, p_tensor):
        _assert_recovered(p, q, alive)
    assert p_pairs == p_tensor
    with pytest.raises(ValueError, match="no examples"):
        activation_matching(model, a, b, [])
    with pytest.raises(ValueError, match="batch_size"):
        activation_matching(model, a, b, x, batch_size=0)


def test_activation_matching_leaves_model_alone() -> None:
    model, spec, a, b, _ = _planted("vgg16", norm="batchnorm")
    model.train()
    before = _state(model)
    a0, b0 = _clone(a), _clone(b)
    activation_matching(model, a, b, _inputs("vgg16", 8))
    assert model.training
    _assert_same_state(_state(model), before)
    assert not any(m._forward_hooks for m in model.modules())
    _assert_same_state(a, a0)
    _assert_same_state(b, b0)


# --------------------------------------------------------------------------- #
# Objective, determinism, function preservation, identity
# --------------------------------------------------------------------------- #
def _independent_pair(case: str, **extra):
    model = _model(case, 0, **extra)
    spec = model.permutation_spec()
    return model, spec, _state(model), _state(_model(case, 1, **extra))


@pytest.mark.parametrize("case", ["mlp", "vgg16", "resnet20x2"])
def test_objective_never_decreases(case: str) -> None:
    _, spec, a, b = _independent_pair(case)
    p = weight_matching(spec, a, b, seed=0)
    hist = p.stats["objective"]
    assert len(hist) == p.stats["sweeps"] >= 1
    assert all(y >= x for x, y in zip(hist, hist[1:], strict=False))
    identity = matching_objective(spec, a, b)
    assert p.stats["initial_objective"] == pytest.approx(identity, rel=1e-6)
    assert hist[0] >= identity
    final = matching_objective(spec, a, b, p)
    assert final >= identity
    assert final == pytest.approx(hist[-1], rel=1e-5)
    assert p.stats["solves"] + p.stats["skipped"] == p.stats["sweeps"] * len(spec.groups)


def test_converged_result_is_a_fixed_point() -> None:
    """Every group's assignment is optimal for its exact Gram given the others."""
    _, spec, a, b = _independent_pair("resnet20x1")
    p = weight_matching(spec, a, b, seed=1)
    assert p.stats["converged"]
    _assert_fixed_point(spec, a, b, p)


def _assert_fixed_point(spec: PermutationSpec, a, b, p: Permutation) -> None:
    """No group's assignment can be improved with the others held fixed (exact float64 Grams)."""
    perms = p.perms
    for g, members in spec.groups.items():
        n = perms[g].numel()
        gram = torch.zeros(n, n, dtype=torch.float64)
        for key, ax in members:
            wb = b[key].double()
            for ax2, h in enumerate(spec.axes[key]):
                if h is not None and ax2 != ax:
                    wb = wb.index_select(ax2, perms[h])
            gram += a[key].double().movedim(ax, 0).reshape(n, -1) @ wb.movedim(ax, 0).reshape(n, -1).T
        g_np = gram.numpy()
        _, cols = linear_sum_assignment(g_np, maximize=True)
        best = g_np[np.arange(n), cols].sum()
        cur = g_np[np.arange(n), perms[g].numpy()].sum()
        assert cur >= best - 1e-5 * abs(best), g


def test_same_seed_same_permutation() -> None:
    _, spec, a, b = _independent_pair("vgg16")
    p1 = weight_matching(spec, a, b, seed=5)
    p2 = weight_matching(spec, a, b, seed=5)
    assert p1 == p2
    assert p1.stats["objective"] == p2.stats["objective"]


@pytest.mark.slow
@pytest.mark.parametrize("correlation", [False, True])
def test_activation_matching_ignores_batching_and_data_order(correlation: bool) -> None:
    """Moments are sums over samples: batch size and data order do not change the result."""
    model, spec, a, b = _independent_pair("resnet20x1")
    x = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # any size: global pooling
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    ref = activation_matching(model, a, b, x, batch_size=24, correlation=correlation)
    for kw in (dict(batch_size=5), dict(batch_size=7, data=x[order]), dict(data=list(x[order].split(11)))):
        data = kw.pop("data", x)
        p = activation_matching(model, a, b, data, correlation=correlation, **kw)
        assert p.stats["samples"] == ref.stats["samples"]
        for g in spec.groups:
            assert p.stats["objective"][g] == pytest.approx(ref.stats["objective"][g], rel=1e-6), g
        if correlation:  # near-ties (assignments within ~1e-9 of each other) fall either way
            assert p.agreement(ref).fraction > 0.95, kw
        else:
            assert p == ref, kw
    # and the data does matter: other inputs give another permutation (between independent networks)
    other = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert activation_matching(model, a, b, other, correlation=correlation) != ref


@pytest.mark.parametrize(
    "case,extra", [("mlp", {}), ("vgg16", {}), ("resnet20x2", {}), ("resnet20x1", {"norm": "batchnorm"})]
)
def test_result_is_function_preserving(case: str, extra: dict) -> None:
    model, spec, a, b = _independent_pair(case, **extra)
    if extra:  # give BatchNorm non-trivial running statistics
        model.train()
        with torch.no_grad():
            model.load_state_dict(b)
            model(_inputs(case, 32, seed=4))
        b = _state(model)
        model.eval()
    x = _inputs(case, 8, seed=9)
    for p in (weight_matching(spec, a, b, seed=0), activation_matching(model, a, b, _inputs(case, 16))):
        model.load_state_dict(b)
        with torch.no_grad():
            ref = model(x)
        model.load_state_dict(p.apply(b))
        with torch.no_grad():
            out = model(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SMALL))
def test_matching_a_network_with_itself_gives_identity(case: str) -> None:
    model, spec, a, _, _ = _planted(case)
    ident = Permutation.identity(spec, a)
    p = weight_matching(spec, a, a)
    assert p == ident
    assert p.stats["sweeps"] == 1 and p.stats["converged"]
    x = _inputs(case, 64)
    _assert_recovered(activation_matching(model, a, a, x), ident, _alive(model, a, x))


def test_init_is_used_and_checked() -> None:
    _, spec, a, b, q = _planted("resnet20x1", noise=1e-3)
    p = weight_matching(spec, a, b, init=q.inverse())
    assert p == q.inverse()
    assert p.stats["sweeps"] == 1 and p.stats["converged"]
    assert p.stats["initial_objective"] == pytest.approx(p.stats["final_objective"])
    other = _model("resnet20x2").state_dict()
    with pytest.raises(ValueError, match="width"):
        weight_matching(spec, a, b, init=Permutation.identity(spec, spec.group_sizes(other)))


def test_max_iter_limits_sweeps() -> None:
    _, spec, a, b = _independent_pair("vgg16")
    p = weight_matching(spec, a, b, max_iter=1)
    assert p.stats["sweeps"] == 1
    assert not p.stats["converged"]
    with pytest.raises(ValueError, match="max_iter"):
        weight_matching(spec, a, b, max_iter=0)


def test_self_coupled_group_is_monotone() -> None:
    """A group acting on both axes of one entry (a recurrent weight): exact gains, monotone objective."""
    spec = PermutationSpec({"inp.weight": ("h", None), "rec.weight": ("h", "h"), "out.weight": (None, "h")})
    gen = torch.Generator().manual_seed(0)
    a = {"inp.weight": torch.randn(12, 5, generator=gen), "rec.weight": torch.randn(12, 12, generator=gen),
         "out.weight": torch.randn(3, 12, generator=gen)}
    q = Permutation.random(spec, a, 3)
    b = _noisy(q.apply(a), 1e-3, 1)
    for fn in (weight_matching, weight_matching_naive):
        p = fn(spec, a, b, seed=0)
        hist = p.stats["objective"]
        assert all(y >= x for x, y in zip(hist, hist[1:], strict=False))
        assert p == q.inverse()
        assert p.stats["final_objective"] == pytest.approx(hist[-1], rel=1e-6)
    b2 = {k: torch.randn(v.shape, generator=gen) for k, v in a.items()}
    p = weight_matching(spec, a, b2, seed=0)
    assert matching_objective(spec, a, b2, p) >= matching_objective(spec, a, b2)


def test_a_self_coupled_terms_gram_permutes_the_other_axis_written_out() -> None:
    """rec.weight = (h, h), the group on axis 1: its Gram term is sum_j A[j, i] B[p[j], k], with p (the current
    permutation of axis 0) taken on the axis before the group's own, written out in loops."""
    from lmccheck.weight_matching import _make_term

    spec = PermutationSpec({"rec.weight": ("h", "h")})
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 5, generator=gen, dtype=torch.float64), torch.randn(5, 5, generator=gen, dtype=torch.float64)
    p = torch.tensor([2, 0, 4, 1, 3])
    got = _make_term(spec, "h", "rec.weight", 1, a, b).full({"h": p})
    want = torch.tensor([[sum(float(a[j, i] * b[p[j], k]) for j in range(5)) for k in range(5)] for i in range(5)],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_cached_gram_contribution_updates_in_place_exactly(axis: int) -> None:
    """The in-place update after a few units moved equals a recomputation."""
    from lmccheck.weight_matching import _make_term, _SingleTerm

    spec = PermutationSpec({"w": ("g", "h", None, None)})
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 10, 3, 3, generator=gen), torch.randn(6, 10, 3, 3, generator=gen)
    group, dep = ("g", "h") if axis == 0 else ("h", "g")
    term = _make_term(spec, group, "w", axis, a, b)
    assert isinstance(term, _SingleTerm)
    n_dep = a.shape[1 - axis]
    p = torch.randperm(n_dep, generator=gen)
    versions = {"g": 0, "h": 0}
    term.current({dep: p}, versions)
    for step in range(1, 6):
        q = p.clone()
        swap = torch.randperm(n_dep, generator=gen)[:2]
        q[swap] = q[swap.flip(0)]  # two units move: an in-place update
        versions[dep] = step
        got = term.current({dep: q}, versions).clone()
        bq = b.index_select(1 - axis, q)
        expected = a.movedim(axis, 0).reshape(a.shape[axis], -1) @ bq.movedim(axis, 0).reshape(a.shape[axis], -1).T
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        p = q
    assert term.budget < 2 * n_dep  # the in-place path ran


# --------------------------------------------------------------------------- #
# Exact ties: duplicated and dead units
# --------------------------------------------------------------------------- #
#: Greedy-SOBLAP must stop within this many sweeps on the tied MLPs below (one
#: sweep that finds the assignment plus one that changes nothing, for planted
#: pairs; measured 3-6 for the independent pairs); ties must not make it cycle.
TIE_SWEEPS = 8


def _tied_mlp(seed: int, width: int = 12, depth: int = 3, n_copies: int = 4, n_dead: int = 3, shift: int = 0):
    """An MLP state whose hidden layers hold exact copies of one unit and dead units.

    In every hidden layer, ``n_copies`` units have the same incoming weights,
    bias and outgoing weights (exchanging them changes nothing), and
    ``n_dead`` units are all-zero (incoming, bias and outgoing): their rows and
    columns of every Gram matrix are equal, so the assignment problems have
    exact ties. ``shift`` moves the tied units to other positions.
    """
    torch.manual_seed(seed)
    model = get_model("mlp", width=width, depth=depth, in_channels=1, input_size=4)
    state = _state(model)
    for layer in range(depth):
        idx = torch.roll(torch.arange(width), shift * (layer + 1))
        src, copies, dead = idx[0], idx[1:n_copies], idx[n_copies : n_copies + n_dead]
        w, bias = state[f"layers.{layer}.weight"], state[f"layers.{layer}.bias"]
        out = state[f"layers.{layer + 1}.weight"] if layer + 1 < depth else state["head.weight"]
        w[copies], bias[copies] = w[src].clone(), bias[src].clone()
        out[:, copies] = out[:, src].clone()[:, None]
        w[dead], bias[dead], out[:, dead] = 0.0, 0.0, 0.0
    return model.permutation_spec(), state


def _assert_valid_permutation(p: Permutation, spec: PermutationSpec, state) -> None:
    for g, n in spec.group_sizes(state).items():
        assert torch.equal(torch.sort(p.perms[g]).values, torch.arange(n)), g


def _assert_monotone_and_converged(p: Permutation) -> None:
    hist = p.stats["objective"]
    assert p.stats["converged"]
    assert len(hist) == p.stats["sweeps"] <= TIE_SWEEPS
    assert hist[0] >= p.stats["initial_objective"] - 1e-6 * abs(p.stats["initial_objective"])
    assert all(y >= x for x, y in zip(hist, hist[1:], strict=False)), hist
    # the last sweep changed nothing
    assert len(hist) == 1 or hist[-1] == hist[-2]


@pytest.mark.parametrize("fn", [weight_matching, weight_matching_naive])
@pytest.mark.parametrize("seed", range(4))
def test_planted_ties_converge_to_the_optimum(fn, seed: int) -> None:
    """``B = Q[A]`` with duplicated and dead units: any tie-break is optimal and realigns B exactly."""
    spec, a = _tied_mlp(0)
    q = Permutation.random(spec, a, seed)
    b = q.apply(a)
    p = fn(spec, a, b, seed=seed)
    _assert_valid_permutation(p, spec, a)
    _assert_monotone_and_converged(p)
    assert p.stats["sweeps"] <= 2  # one sweep finds it, one confirms
    _assert_same_state(p.apply(b), a)  # P may differ from Q^-1, but only among exact copies
    # <A, P[B]> <= ||A|| ||B|| = ||A||^2 (Cauchy-Schwarz), reached here: the optimum
    best = matching_objective(spec, a, a)
    assert matching_objective(spec, a, b, p) == pytest.approx(best, rel=1e-12)
    assert p.stats["final_objective"] == pytest.approx(best, rel=1e-5)
    assert p.stats["final_objective"] > p.stats["initial_objective"]


@pytest.mark.parametrize("fn", [weight_matching, weight_matching_naive])
@pytest.mark.parametrize("seed", range(4))
def test_independent_ties_converge_monotonically(fn, seed: int) -> None:
    """Two different tied networks (ties in both, at different positions): no cycling."""
    spec, a = _tied_mlp(0)
    _, b = _tied_mlp(seed + 1, shift=seed + 1)
    p = fn(spec, a, b, seed=seed)
    _assert_valid_permutation(p, spec, a)
    _assert_monotone_and_converged(p)
    assert p.stats["final_objective"] == pytest.approx(matching_objective(spec, a, b, p), rel=1e-5)
    assert matching_objective(spec, a, b, p) > matching_objective(spec, a, b)
    _assert_fixed_point(spec, a, b, p)


# --------------------------------------------------------------------------- #
# Reference implementation
# --------------------------------------------------------------------------- #
def _reference(spec: PermutationSpec, a, b, seed: int, max_iter: int = 100) -> dict[str, torch.Tensor]:
    """Algorithm 1 written out: permute all of B, build G against it, compose the LSA result."""
    names = list(spec.groups)
    perms = {g: torch.arange(n) for g, n in spec.group_sizes(a).items()}
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for idx in rng.permutation(len(names)):
            g = names[idx]
            pb = Permutation(spec, perms).apply(b)
            n = perms[g].numel()
            gram = torch.zeros(n, n, dtype=torch.float64)
            for key, ax in spec.groups[g]:
                wa = a[key].double().movedim(ax, 0).reshape(n, -1)
                gram += wa @ pb[key].double().movedim(ax, 0).reshape(n, -1).T
            g_np = gram.numpy()
            _, cols = linear_sum_assignment(g_np, maximize=True)
            ar = np.arange(n)
            gain = g_np[ar, cols].sum() - np.trace(g_np)
            if gain > 1e-12 * abs(np.trace(g_np)) and not np.array_equal(cols, ar):
                perms[g] = perms[g][torch.as_tensor(cols)]
                changed = True
        if not changed:
            break
    return perms


def test_matches_reference_implementation() -> None:
    torch.manual_seed(0)
    model = get_model("mlp", width=64, depth=3, in_channels=1, input_size=8)
    spec = model.permutation_spec()
    a = _state(model)
    torch.manual_seed(1)
    b = _state(get_model("mlp", width=64, depth=3, in_channels=1, input_size=8))
    ref = Permutation(spec, _reference(spec, a, b, seed=2))
    ref_obj = matching_objective(spec, a, b, ref)
    fast = weight_matching(spec, a, b, seed=2)
    naive = weight_matching_naive(spec, a, b, seed=2)
    fast_obj = matching_objective(spec, a, b, fast)
    assert fast_obj >= ref_obj - 1e-6 * abs(ref_obj)
    assert fast_obj == pytest.approx(fast.stats["final_objective"], rel=1e-6)
    assert fast == naive
    assert fast.stats["sweeps"] == naive.stats["sweeps"]
    assert fast.stats["solves"] <= naive.stats["solves"]


@pytest.mark.parametrize("case", ["vgg16", "resnet20x2"])
def test_fast_equals_naive(case: str) -> None:
    _, spec, a, b = _independent_pair(case)
    fast = weight_matching(spec, a, b, seed=4)
    naive = weight_matching_naive(spec, a, b, seed=4)
    obj = matching_objective(spec, a, b, naive)
    assert matching_objective(spec, a, b, fast) >= obj - 1e-6 * abs(obj)
    assert fast.stats["solves"] <= naive.stats["solves"]
    assert fast == naive  # same steps; only float32 round-off could tell them apart


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def _corruptions(a):
    key = "layers.1.weight"
    missing = {k: v for k, v in a.items() if k != key}
    wrong_shape = {**a, key: a[key][:, :-1].clone()}
    nan = {**a, key: a[key].clone()}
    nan[key][0, 0] = float("nan")
    return key, {"missing": missing, "wrong shape": wrong_shape, "nan": nan}


@pytest.mark.parametrize("which", ["missing", "wrong shape", "nan"])
@pytest.mark.parametrize("side", ["a", "b"])
def test_bad_input_names_the_key(which: str, side: str) -> None:
    model, spec, a, b, _ = _planted("mlp")
    key, bad = _corruptions(a)
    x = _inputs("mlp", 4)
    args = (bad[which], b) if side == "a" else (a, bad[which])
    for call in (
        lambda: weight_matching(spec, *args),
        lambda: weight_matching_naive(spec, *args),
        lambda: matching_objective(spec, *args),
        lambda: activation_matching(model, *args, x),
    ):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            call()


def test_different_width_names_the_key() -> None:
    model, spec, a, _, _ = _planted("mlp")
    wide = _state(get_model("mlp", width=50, depth=3, in_channels=1, input_size=8))
    with pytest.raises(ValueError, match=r"layers\.0\.weight.*width"):
        weight_matching(spec, a, wide)
    with pytest.raises(ValueError, match=r"layers\.0\.weight"):
        activation_matching(model, a, wide, _inputs("mlp", 4))


def test_inputs_are_not_mutated() -> None:
    model, spec, a, b, q = _planted("resnet20x1", noise=1e-3, norm="batchnorm")
    a0, b0 = _clone(a), _clone(b)
    init = q.inverse()
    init0 = {g: p.clone() for g, p in init.perms.items()}
    weight_matching(spec, a, b, init=init)
    weight_matching_naive(spec, a, b)
    matching_objective(spec, a, b, init)
    activation_matching(model, a, b, _inputs("resnet20x1", 8))
    _assert_same_state(a, a0)
    _assert_same_state(b, b0)
    for g in init0:
        assert torch.equal(init.perms[g], init0[g])


# --------------------------------------------------------------------------- #
# Partial permutations, fixed points, the matchers' names, objective
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "mode,k,from_selected",
    [
        ("bottom-up", 0, []),
        ("bottom-up", 2, ["P0", "P1"]),
        ("top-down", 1, ["P1", "P2"]),
        ("put-in", 1, ["P1"]),
        ("leave-out", 1, ["P0", "P2"]),
    ],
)
def test_partial_permutation(mode: str, k: int, from_selected: list[str]) -> None:
    _, spec, a, _, _ = _planted("mlp")
    sel = Permutation.random(spec, a, 1)
    rest = Permutation.random(spec, a, 2)
    mixed = partial_permutation(spec, sel, rest, mode, k)
    for g in spec.groups:
        expected = sel if g in from_selected else rest
        assert torch.equal(mixed.perms[g], expected.perms[g]), g
    with pytest.raises(ValueError, match="unknown partial mode"):
        partial_permutation(spec, sel, rest, "sideways", 1)
    with pytest.raises(ValueError, match="outside"):
        partial_permutation(spec, sel, rest, "bottom-up", 9)


def test_fixed_point_stats() -> None:
    _, spec, a, _, _ = _planted("mlp")
    p = Permutation.random(spec, a, 1)
    same = fixed_point_stats(p, p)
    n = sum(spec.group_sizes(a).values())
    assert same["total"] == n and same["fraction"] == 1.0
    q_perms = {g: t.clone() for g, t in p.perms.items()}
    q_perms["P1"][[0, 1]] = q_perms["P1"][[1, 0]]  # disagree on two units of P1
    stats = fixed_point_stats(p, Permutation(spec, q_perms))
    assert stats["per_group"]["P1"] == spec.group_sizes(a)["P1"] - 2
    assert stats["per_group"]["P0"] == spec.group_sizes(a)["P0"]
    assert stats["total"] == n - 2
    assert math.isclose(stats["fraction"], (n - 2) / n)


@pytest.mark.parametrize("widths", [(5, 5, 5), (1, 3, 6)])
def test_fixed_point_random_expectation_is_the_exact_average(widths: tuple[int, ...]) -> None:
    """The ``random_expectation_*`` entries equal the average over *every* permutation.

    Small groups, so all permutations of each group are enumerated: the exact
    expectation for a uniformly random ``q``, computed from ``agreement`` itself.
    """
    spec = PermutationSpec({f"l{i}.weight": (f"g{i}", None) for i in range(len(widths))})
    sizes = {f"g{i}": w for i, w in enumerate(widths)}
    p = Permutation.random(spec, sizes, 0)
    stats = fixed_point_stats(p, p)
    per_group: dict[str, float] = {}
    for g, w in sizes.items():
        counts = [int((p.perms[g] == torch.tensor(q)).sum()) for q in itertools.permutations(range(w))]
        per_group[g] = sum(counts) / len(counts)
    total = sum(per_group.values())  # linearity: the groups are drawn independently
    assert stats["random_expectation_per_group"] == pytest.approx(per_group["g0"], rel=1e-12)
    for g in sizes:
        assert per_group[g] == pytest.approx(stats["random_expectation_per_group"], rel=1e-12), g
    assert stats["random_expectation_total"] == pytest.approx(total, rel=1e-12)
    assert stats["random_expectation_fraction"] == pytest.approx(total / sum(widths), rel=1e-12)


def test_matching_objective_is_trace_objective() -> None:
    _, spec, a, b = _independent_pair("mlp")
    p = Permutation.random(spec, a, 3)
    pb = p.apply(b)
    manual = sum(
        float((a[k].double() * pb[k].double()).sum()) for k, axes in spec.axes.items() if any(axes)
    )
    assert matching_objective(spec, a, b, p) == pytest.approx(manual, rel=1e-12)
    identity = Permutation.identity(spec, a)
    assert matching_objective(spec, a, b) == pytest.approx(matching_objective(spec, a, b, identity))


def test_matchers_do_what_their_names_say() -> None:
    """Each matcher aligns a planted pair and records the method its name says."""
    model, spec, a, b, q = _planted("mlp", noise=1e-3)
    x = _inputs("mlp", 64)
    found = {"weight": weight_matching(spec, a, b), "activation": activation_matching(model, a, b, x)}
    for name, p in found.items():
        assert p.stats["method"] == name
        _assert_recovered(p, q, _alive(model, a, x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors() -> None:
    model, spec, a, b, q = _planted("resnet20x2", noise=1e-3)
    ac = {k: v.cuda() for k, v in a.items()}
    bc = {k: v.cuda() for k, v in b.items()}
    assert weight_matching(spec, ac, bc) == q.inverse()
    assert activation_matching(model, ac, bc, _inputs("resnet20x2", 32).cuda()) == q.inverse()


# --------------------------------------------------------------------------- surviving mutants (make mutation)
def test_init_for_a_narrower_network_or_other_groups_is_refused() -> None:
    _, spec, a, b, _ = _planted("resnet20x2")
    narrow = _model("resnet20x1").state_dict()
    with pytest.raises(ValueError, match="width"):  # fewer units than the networks have
        weight_matching(spec, a, b, init=Permutation.identity(spec, spec.group_sizes(narrow)))
    deeper = PermutationSpec({**spec.axes, "extra.weight": ("extra", None)})
    sizes = {**spec.group_sizes(a), "extra": 3}
    with pytest.raises(ValueError, match="different groups"):  # more groups than the spec
        weight_matching(spec, a, b, init=Permutation.identity(deeper, sizes))


def test_partial_permutation_refuses_permutations_of_another_spec() -> None:
    _, spec, a, _, q = _planted("mlp")
    deeper = PermutationSpec({**spec.axes, "extra.weight": ("extra", None)})
    other = Permutation.identity(deeper, {**spec.group_sizes(a), "extra": 3})
    with pytest.raises(ValueError, match="different groups"):
        partial_permutation(spec, other, q, "bottom-up", 1)
    with pytest.raises(ValueError, match="different groups"):
        partial_permutation(spec, q, other, "bottom-up", 1)


def test_activation_matching_validates_batches_and_reports_the_identity_objective() -> None:
    model, spec, a, _, _ = _planted("mlp")
    x = _inputs("mlp", 40)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="batches"):
            activation_matching(model, a, a, x, batches=bad)  # type: ignore[arg-type]
    p = activation_matching(model, a, a, x, batch_size=10)
    # a network against itself: the identity is optimal, so its objective is the optimum, group by group
    for g in spec.groups:
        assert p.stats["identity_objective"][g] == pytest.approx(p.stats["objective"][g], rel=1e-9)
        assert p.stats["identity_objective"][g] != float(int(p.stats["identity_objective"][g]))
