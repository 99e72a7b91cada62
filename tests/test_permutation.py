"""Permutation algebra (claim S2's laws) and spec checks."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmccheck.models import get_model
from lmccheck.permutation import (
    Permutation,
    PermutationSpec,
    check_spec,
    check_state,
    expected_random_fixed_fraction,
    partial,
    select_groups,
)

SMALL = {
    "mlp": dict(width=16, depth=3),
    "vgg11": dict(width=0.125),
    "vgg16": dict(width=0.125),
    "resnet20": dict(width=1),
}


def _model(name: str, norm: str = "layernorm", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = dict(SMALL[name])
    if name != "mlp" or norm != "layernorm":
        kw["norm"] = norm
    return get_model(name, in_channels=1, input_size=28, num_classes=10, **kw)


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


arch = st.sampled_from(sorted(SMALL))
seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=8, deadline=None)
@given(arch, seeds, seeds)
def test_inverse_and_compose_laws(name: str, s1: int, s2: int) -> None:
    model = _model(name)
    spec = model.permutation_spec()
    state = model.state_dict()
    p = Permutation.random(spec, state, s1)
    q = Permutation.random(spec, state, s2)
    ident = Permutation.identity(spec, state)
    # P^-1 o P = P o P^-1 = id
    assert p.inverse().compose(p) == ident
    assert p.compose(p.inverse()) == ident
    # compose order: (P o Q)[B] == P[Q[B]]
    _assert_states_equal(p.compose(q).apply(state), p.apply(q.apply(state)))
    # (P o Q)^-1 = Q^-1 o P^-1
    assert p.compose(q).inverse() == q.inverse().compose(p.inverse())
    _assert_states_equal(p.inverse().apply(p.apply(state)), dict(state))
    _assert_states_equal(ident.apply(state), dict(state))


@settings(max_examples=8, deadline=None)
@given(arch, seeds, seeds, seeds)
def test_slc_witness_gives_wlc_witness(name: str, sa: int, sb: int, sp: int) -> None:
    """Q(A,B) = Q'(A)^-1 o Q'(B) maps B where Q'(A)^-1 maps Q'(B)[B] (Sharma §4)."""
    a = _model(name, seed=sa % 1000)
    b = _model(name, seed=sb % 1000 + 1000)
    spec = a.permutation_spec()
    qa = Permutation.random(spec, a.state_dict(), sp)
    qb = Permutation.random(spec, b.state_dict(), sp + 1)
    q = qa.inverse().compose(qb)
    _assert_states_equal(q.apply(b.state_dict()), qa.inverse().apply(qb.apply(b.state_dict())))


def test_apply_does_not_mutate_and_equality() -> None:
    model = _model("mlp")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = model.permutation_spec()
    p = Permutation.random(spec, state, 3)
    out = p.apply(state)
    _assert_states_equal(state, dict(model.state_dict()))
    assert any(not torch.equal(out[k], state[k]) for k in state)
    assert p == Permutation(spec, {g: t.clone() for g, t in p.perms.items()})
    assert p != Permutation.identity(spec, state)


def test_fixed_points_and_agreement() -> None:
    model = _model("mlp")
    spec = model.permutation_spec()
    state = model.state_dict()
    ident = Permutation.identity(spec, state)
    fp = ident.fixed_points()
    assert fp.fraction == 1.0 and fp.total == 48 and fp.per_group == {"P0": 16, "P1": 16, "P2": 16}
    p = Permutation.random(spec, state, 1)
    # fixed points counted independently: positions i with p[i] == i, from a Python list
    want = {g: sum(int(v) == i for i, v in enumerate(t.tolist())) for g, t in p.perms.items()}
    assert p.fixed_points().per_group == want and p.fixed_points().total == sum(want.values())
    # agreement with a copy of p that differs by one transposition in one group: exactly 2 fewer
    q_perms = {g: t.clone() for g, t in p.perms.items()}
    q_perms["P1"][[3, 11]] = q_perms["P1"][[11, 3]]
    q = Permutation(spec, q_perms)
    agree = p.agreement(q)
    assert agree.per_group == {"P0": 16, "P1": 14, "P2": 16} and agree.total == 46
    assert agree.fraction == pytest.approx(46 / 48)
    # agreement is the fixed points of p^-1 o q (its documented meaning), for unrelated q too
    r = Permutation.random(spec, state, 2)
    assert p.agreement(r).per_group == p.inverse().compose(r).fixed_points().per_group
    assert p.agreement(r).per_group == {
        g: sum(a == b for a, b in zip(p.perms[g].tolist(), r.perms[g].tolist())) for g in p.perms
    }


def test_random_expectation_matches_exhaustive_and_empirical_means() -> None:
    """The 'random' baseline (1 fixed point per group) against independent computations."""
    # exhaustive: the mean number of fixed points over all n! permutations of n units
    for n in range(1, 7):
        perms = list(itertools.permutations(range(n)))
        mean = sum(sum(p[i] == i for i in range(n)) for p in perms) / len(perms)
        assert mean == pytest.approx(1.0, abs=1e-12)
        spec = PermutationSpec({"l.weight": ("g", None)})
        fp = Permutation.identity(spec, {"g": n}).fixed_points()
        assert fp.random_expectation == {"g": pytest.approx(mean)}
    # empirical: the mean over Permutation.random draws of a spec with groups of different sizes
    spec = PermutationSpec({"a.weight": ("A", None), "b.weight": ("B", "A"), "c.weight": ("C", "B")})
    sizes = {"A": 2, "B": 5, "C": 40}
    draws = 3000
    counts = {g: 0 for g in sizes}
    fractions = 0.0
    for seed in range(draws):
        fp = Permutation.random(spec, sizes, seed).fixed_points()
        for g in sizes:
            counts[g] += fp.per_group[g]
        fractions += fp.fraction
    d = fp.as_dict()
    for g in sizes:  # the count of fixed points has variance 1: the standard error is 1/sqrt(3000) ~ 0.018
        assert counts[g] / draws == pytest.approx(fp.random_expectation[g], abs=0.08)
        assert counts[g] / draws == pytest.approx(d["random_expectation_per_group"], abs=0.08)
    assert fractions / draws == pytest.approx(d["random_expectation_fraction"], abs=0.08 * 3 / 47)
    assert d["random_expectation_fraction"] == pytest.approx(expected_random_fixed_fraction(sizes))
    assert set(d["per_group"]) == set(sizes)


def test_save_load_roundtrip(tmp_path) -> None:
    model = _model("resnet20")
    spec = model.permutation_spec()
    p = Permutation.random(spec, model.state_dict(), 7)
    p.save(tmp_path / "p.safetensors")
    assert Permutation.load(tmp_path / "p.safetensors", spec) == p
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Permutation.load(tmp_path / "bad.safetensors", spec)
    with pytest.raises(FileNotFoundError):
        Permutation.load(tmp_path / "missing.safetensors", spec)


def test_not_a_bijection_is_rejected() -> None:
    model = _model("mlp")
    spec = model.permutation_spec()
    perms = Permutation.identity(spec, model.state_dict()).perms
    bad = dict(perms)
    bad["P1"] = torch.zeros(16, dtype=torch.long)
    with pytest.raises(ValueError, match="'P1' is not a bijection"):
        Permutation(spec, bad)
    bad["P1"] = torch.arange(16) + 1
    with pytest.raises(ValueError, match="not a bijection"):
        Permutation(spec, bad)
    with pytest.raises(KeyError, match="lacks group"):
        Permutation(spec, {"P0": perms["P0"]})


def test_apply_to_wrong_width_names_key() -> None:
    small, big = _model("mlp"), get_model("mlp", width=32)
    p = Permutation.random(small.permutation_spec(), small.state_dict(), 0)
    with pytest.raises(ValueError, match="layers.0.weight"):
        p.apply(big.state_dict())


def test_check_spec_names_missing_and_missized_axes() -> None:
    model = _model("vgg11", norm="batchnorm")
    spec = model.permutation_spec()
    check_spec(spec, model)
    axes = dict(spec.axes)
    del axes["features.0.norm.running_var"]
    with pytest.raises(ValueError, match="misses state-dict key 'features.0.norm.running_var'"):
        check_spec(PermutationSpec(axes), model)
    axes = dict(spec.axes)
    axes["fc2.weight"] = ("fc2", "conv0")  # wrong input group: sizes differ
    with pytest.raises(ValueError, match="fc2.weight"):
        check_spec(PermutationSpec(axes), model)
    axes = dict(spec.axes)
    axes["head.bias"] = (None, None)
    with pytest.raises(ValueError, match="2 axes for 'head.bias'"):
        check_spec(PermutationSpec(axes), model)


def test_check_state_errors() -> None:
    a, b = _model("mlp"), get_model("mlp", width=32)
    spec = a.permutation_spec()
    sa = dict(a.state_dict())
    with pytest.raises(ValueError, match="shape"):
        check_state(spec, b.state_dict(), name="B", reference=sa)
    missing = dict(sa)
    del missing["head.bias"]
    with pytest.raises(ValueError, match="missing key 'head.bias'"):
        check_state(spec, missing)
    nan = dict(sa)
    nan["layers.1.weight"] = sa["layers.1.weight"].clone()
    nan["layers.1.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layers\.1\.weight.*NaN"):
        check_state(spec, nan)


def test_resnet_spec_shares_stream_groups() -> None:
    spec = _model("resnet20").permutation_spec()
    stream0 = {k for k, _ in spec.groups["stream0"]}
    assert {"conv1.weight", "stages.0.0.conv2.weight", "stages.0.2.norm2.weight",
            "stages.1.0.shortcut.0.weight"} <= stream0
    assert spec.axes["stages.1.0.shortcut.0.weight"] == ("stream1", "stream0", None, None)
    assert spec.group_names[0] == "stream0"


@pytest.mark.parametrize(
    ("mode", "k", "expected"),
    [("bottom-up", 2, ["P0", "P1"]), ("top-down", 2, ["P2"]), ("put-in", 1, ["P1"]), ("leave-out", 1, ["P0", "P2"])],
)
def test_select_groups_and_partial(mode: str, k: int, expected: list[str]) -> None:
    model = _model("mlp")
    spec = model.permutation_spec()
    assert select_groups(spec, mode, k) == expected
    p = Permutation.random(spec, model.state_dict(), 1)
    q = Permutation.random(spec, model.state_dict(), 2)
    r = partial(p, q, expected)
    for g in spec.groups:
        assert torch.equal(r.perms[g], (p if g in expected else q).perms[g])
    with pytest.raises(ValueError, match="unknown partial mode"):
        select_groups(spec, "sideways", 1)
