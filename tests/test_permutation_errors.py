"""Error paths, exact statistics and small contracts of :mod:`lmccheck.permutation`.

Written against the survivors of a mutation run (``mutation/permutation.txt``):
every error path is triggered and its message checked for what a user needs
(the offending group or key, what is wrong, and where the message has one, the
fix); the fixed-point statistics are compared with values worked out by hand
on tiny permutations; the depth order of groups is checked on a hand-built
spec; and ``apply``'s output must not alias its input.

Some tests use groups of 300 units: CPython caches the ints -5..256, so a size
comparison written with ``is`` instead of ``==`` passes for small widths and
fails only for large ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
import torch
from torch import nn

from lmccheck.models import get_model
from lmccheck.permutation import (
    FixedPoints,
    Permutation,
    PermutationSpec,
    check_spec,
    check_state,
    depth_order,
    expected_random_fixed_fraction,
    partial,
    permutation_spec,
    select_groups,
)

ONE = PermutationSpec({"w": ("g",)})  # one group; Permutation() does not check sizes against a state

# four groups in a chain: G0 -> G1 -> G2 -> G3
CHAIN = PermutationSpec(
    {
        "l0.weight": ("G0", None),
        "l1.weight": ("G1", "G0"),
        "l2.weight": ("G2", "G1"),
        "l3.weight": ("G3", "G2"),
        "head.weight": (None, "G3"),
    }
)
CHAIN_NAMES = ["G0", "G1", "G2", "G3"]


def _mlp(width: int = 8, depth: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return get_model("mlp", width=width, depth=depth, input_size=4)  # 16 input features


def _msg(excinfo: pytest.ExceptionInfo) -> str:
    """The message itself (``str(KeyError)`` adds quotes around it)."""
    return str(excinfo.value.args[0])


# -- _check_bijection (through Permutation) ----------------------------------


@pytest.mark.parametrize(
    ("perm", "shape"),
    [(torch.tensor(0), "()"), (torch.tensor([[0, 1], [2, 3]]), "(2, 2)")],
    ids=["0-D", "2-D"],
)
def test_bijection_must_be_1d(perm: torch.Tensor, shape: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"permutation of group 'g' must be 1-D, got shape {shape}")):
        Permutation(ONE, {"g": perm})


@pytest.mark.parametrize(
    "perm",
    [torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 1], dtype=torch.float64), torch.tensor([True, False])],
    ids=["float32", "float64", "bool"],
)
def test_bijection_must_hold_integers(perm: torch.Tensor) -> None:
    # the values would form a valid permutation once cast: only the dtype is wrong
    with pytest.raises(ValueError, match=re.escape(f"permutation of group 'g' must hold integers, got {perm.dtype}")):
        Permutation(ONE, {"g": perm})


@pytest.mark.parametrize(
    ("values", "detail"),
    [
        ([0, 0, 2], "0..2 (index 0 appears 2 times)"),  # first bad index is a duplicate
        ([0, 2, 2], "0..2 (index 1 appears 0 times)"),  # first bad index is missing, a later one doubled
        ([0, 1, 3, 3], "0..3 (index 2 appears 0 times)"),
        ([1, 1], "0..1 (index 0 appears 0 times)"),  # no index appears exactly once
        ([0, 0, 0], "0..2 (index 0 appears 3 times)"),
    ],
)
def test_bijection_duplicates_name_group_range_and_first_bad_index(values: list[int], detail: str) -> None:
    with pytest.raises(ValueError) as e:
        Permutation(ONE, {"g": torch.tensor(values)})
    msg = _msg(e)
    assert f"permutation of group 'g' is not a bijection of {detail}" in msg
    assert msg.endswith("every index must appear exactly once")


@pytest.mark.parametrize("values", [[-1, 1, 2], [0, -1, 1], [0, 1, 5], [0, 1, 3], [3, 1, 2]])
def test_bijection_out_of_range_is_rejected(values: list[int]) -> None:
    # no duplicates among the values: only the range check can catch these
    assert len(set(values)) == len(values)
    with pytest.raises(ValueError) as e:
        Permutation(ONE, {"g": torch.tensor(values)})
    msg = _msg(e)
    assert "permutation of group 'g' is not a bijection of 0..2" in msg
    # the message names the offending value (the smallest if negative, else the largest) and a likely cause
    bad = min(values) if min(values) < 0 else max(values)
    assert f"value {bad} is outside that range" in msg and "wider or narrower network" in msg
    assert "appears" not in msg


def test_bijection_accepts_valid_integer_dtypes_and_lists() -> None:
    for perm in ([2, 0, 1], torch.tensor([2, 0, 1], dtype=torch.int32), torch.tensor([2, 0, 1], dtype=torch.uint8)):
        p = Permutation(ONE, {"g": perm})
        assert p.perms["g"].dtype == torch.long and p.perms["g"].tolist() == [2, 0, 1]
    assert Permutation(ONE, {"g": torch.tensor([0])}).perms["g"].tolist() == [0]


# -- Permutation construction errors ----------------------------------------


def test_unknown_group_names_the_first_one() -> None:
    perms = {"G0": [0], "G1": [0], "G2": [0], "G3": [0], "zz": [0], "yy": [0]}
    with pytest.raises(KeyError) as e:
        Permutation(CHAIN, perms)
    assert _msg(e) == "permutation has group 'zz' that the spec does not define"


def test_missing_group_names_the_first_in_depth_order() -> None:
    with pytest.raises(KeyError) as e:
        Permutation(CHAIN, {"G0": [0], "G3": [0]})
    assert _msg(e) == "permutation lacks group 'G1' of the spec"


# -- PermutationSpec.groups: depth order ------------------------------------

# B first shows up on an input axis (head.weight) before any group's output axis;
# C is the first group on an output axis; D never appears on an output axis.
ODD = PermutationSpec(
    {
        "head.weight": (None, "B"),
        "c.weight": ("C", None),
        "b.weight": ("B", "C"),
        "b.bias": ("B",),
        "x.weight": (None, "D"),
    }
)


def test_groups_in_depth_order_with_all_members() -> None:
    groups = ODD.groups
    assert list(groups) == ["C", "B", "D"]  # output-axis order first, then the never-output group
    assert groups == {
        "C": (("c.weight", 0), ("b.weight", 1)),
        "B": (("head.weight", 1), ("b.weight", 0), ("b.bias", 0)),
        "D": (("x.weight", 1),),
    }
    assert ODD.group_names == ["C", "B", "D"] == depth_order(ODD)
    assert ODD.keys_of("B") == ["b.bias", "b.weight", "head.weight"]


def test_group_sizes_and_identity_from_state() -> None:
    state = {
        "head.weight": torch.zeros(5, 3),
        "c.weight": torch.zeros(2, 7),
        "b.weight": torch.zeros(3, 2),
        "b.bias": torch.zeros(3),
        "x.weight": torch.zeros(6, 4),
    }
    check_spec(ODD, state)
    assert ODD.group_sizes(state) == {"C": 2, "B": 3, "D": 4}
    assert Permutation.identity(ODD, state).sizes == {"C": 2, "B": 3, "D": 4}


def test_select_groups_follows_depth_order_of_hand_spec() -> None:
    assert select_groups(ODD, "bottom-up", 1) == ["C"]
    assert select_groups(ODD, "top-down", 2) == ["D"]


# -- select_groups bounds and modes -----------------------------------------


@pytest.mark.parametrize(
    ("mode", "k", "expected"),
    [
        ("bottom-up", 0, []),
        ("bottom-up", 4, CHAIN_NAMES),
        ("top-down", 0, CHAIN_NAMES),
        ("top-down", 4, []),
        ("put-in", 0, ["G0"]),
        ("put-in", 3, ["G3"]),
        ("leave-out", 0, ["G1", "G2", "G3"]),
        ("leave-out", 2, ["G0", "G1", "G3"]),
        ("leave-out", 3, ["G0", "G1", "G2"]),
    ],
)
def test_select_groups_edges(mode: str, k: int, expected: list[str]) -> None:
    assert select_groups(CHAIN, mode, k) == expected


@pytest.mark.parametrize("mode", ["bottom-up", "top-down", "put-in", "leave-out"])
@pytest.mark.parametrize("k", [-1, 5])
def test_select_groups_rejects_k_outside_range(mode: str, k: int) -> None:
    with pytest.raises(ValueError, match=re.escape(f"split point k={k} outside 0..4 for 4 groups")):
        select_groups(CHAIN, mode, k)


@pytest.mark.parametrize("mode", ["put-in", "leave-out"])
def test_single_group_modes_reject_k_equal_to_group_count(mode: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{mode} needs k < 4")):
        select_groups(CHAIN, mode, 4)


@pytest.mark.parametrize("mode", ["bottom", "", "topdown", "top-down-ish", "Put-in"])
def test_select_groups_rejects_near_miss_modes(mode: str) -> None:
    # "bottom" sorts before "bottom-up", "topdown" after "top-down": typos must not pass
    with pytest.raises(ValueError) as e:
        select_groups(CHAIN, mode, 1)
    assert _msg(e) == f"unknown partial mode {mode!r}; use bottom-up, top-down, put-in or leave-out"


def test_partial_unknown_group_names_the_first_sorted() -> None:
    sizes = dict.fromkeys(CHAIN_NAMES, 3)
    p, q = Permutation.random(CHAIN, sizes, 0), Permutation.random(CHAIN, sizes, 1)
    with pytest.raises(KeyError) as e:
        partial(p, q, ["G1", "zz", "aa"])
    assert _msg(e) == "unknown group 'aa'"


# -- check_spec ---------------------------------------------------------------


def test_check_spec_accepts_its_model() -> None:
    model = _mlp()
    check_spec(model.permutation_spec(), model)
    check_spec(model.permutation_spec(), model.state_dict())


def test_check_spec_names_first_missing_key_with_its_shape_and_fix() -> None:
    model = _mlp()
    axes = dict(model.permutation_spec().axes)
    del axes["layers.0.bias"], axes["head.bias"]
    with pytest.raises(ValueError) as e:
        check_spec(PermutationSpec(axes), model)
    assert _msg(e) == (
        "permutation spec misses state-dict key 'layers.0.bias' (shape (8,)); every parameter and "
        "buffer must be listed in spec.axes, with None for unpermuted axes"
    )


def test_check_spec_names_first_extra_key() -> None:
    model = _mlp()
    axes = {**model.permutation_spec().axes, "ghost.a": ("P0",), "ghost.b": (None,)}
    with pytest.raises(ValueError) as e:
        check_spec(PermutationSpec(axes), model)
    assert _msg(e) == "permutation spec names 'ghost.a', which the model does not have"


@pytest.mark.parametrize(("axes", "n"), [(("P1",), 1), (("P1", "P0", None), 3)])
def test_check_spec_rejects_wrong_number_of_axes(axes: tuple, n: int) -> None:
    model = _mlp()
    spec = PermutationSpec({**model.permutation_spec().axes, "layers.1.weight": axes})
    with pytest.raises(ValueError) as e:
        check_spec(spec, model)
    assert _msg(e) == f"permutation spec gives {n} axes for 'layers.1.weight', but it has shape (8, 8) (2 axes)"


def test_check_spec_size_mismatch_after_an_unpermuted_axis() -> None:
    # P0 wrongly put on the 16 input features of layers.0.weight (after a None axis);
    # it is seen there first (size 16), then on layers.0.bias (size 8)
    model = _mlp()
    spec = PermutationSpec({**model.permutation_spec().axes, "layers.0.weight": (None, "P0")})
    with pytest.raises(ValueError) as e:
        check_spec(spec, model)
    assert _msg(e) == (
        "group 'P0' acts on axis 0 of 'layers.0.bias' (size 8) and on axis 1 of 'layers.0.weight' "
        "(size 16); all its axes must have the same size"
    )


def test_check_spec_size_mismatch_smaller_first() -> None:
    model = _mlp()
    spec = PermutationSpec({**model.permutation_spec().axes, "head.weight": ("P1", None)})  # 10 != 8
    with pytest.raises(ValueError, match=re.escape("group 'P1' acts on axis 0 of 'head.weight' (size 10)")):
        check_spec(spec, model)


# -- check_state --------------------------------------------------------------


def test_check_state_accepts_same_architecture() -> None:
    a, b = _mlp(seed=0), _mlp(seed=1)
    spec = a.permutation_spec()
    check_state(spec, b.state_dict(), name="B", reference=a.state_dict(), reference_name="A")
    check_state(spec, a.state_dict())


@pytest.mark.parametrize("width", [4, 16], ids=["narrower", "wider"])
def test_check_state_shape_mismatch_names_key_both_shapes_and_names(width: int) -> None:
    a, b = _mlp(), _mlp(width=width)
    with pytest.raises(ValueError) as e:
        check_state(a.permutation_spec(), b.state_dict(), name="B", reference=a.state_dict(), reference_name="A")
    assert _msg(e) == (
        f"'layers.0.weight' has shape ({width}, 16) in B but (8, 16) in A; "
        "the networks differ in architecture or width"
    )


def test_check_state_missing_and_extra_keys() -> None:
    model = _mlp()
    spec, state = model.permutation_spec(), dict(model.state_dict())
    missing = {k: v for k, v in state.items() if k not in ("layers.1.bias", "head.weight")}
    with pytest.raises(ValueError) as e:
        check_state(spec, missing, name="B")
    assert _msg(e) == (
        "B is missing key 'layers.1.bias' expected by the permutation spec; are both networks the same architecture?"
    )
    with pytest.raises(ValueError) as e:
        check_state(spec, {**state, "extra.weight": torch.zeros(2)}, name="B")
    assert _msg(e) == (
        "B has key 'extra.weight' that the permutation spec does not know; are both networks the same architecture?"
    )


def test_check_state_non_finite() -> None:
    model = _mlp()
    spec, state = model.permutation_spec(), dict(model.state_dict())
    bad = {**state, "head.bias": state["head.bias"].clone()}
    bad["head.bias"][3] = float("inf")
    with pytest.raises(ValueError) as e:
        check_state(spec, bad, name="B")
    assert _msg(e) == (
        "B['head.bias'] contains NaN or infinite values; the network diverged or the checkpoint is damaged")
    check_state(spec, bad, finite=False)


def test_check_state_options_are_keyword_only() -> None:
    model = _mlp()
    with pytest.raises(TypeError):
        check_state(model.permutation_spec(), model.state_dict(), "B")  # type: ignore[misc]


# -- permutation_spec ---------------------------------------------------------


def test_permutation_spec_of_lmccheck_and_foreign_models() -> None:
    model = _mlp()
    assert permutation_spec(model).axes == model.permutation_spec().axes
    with pytest.raises(TypeError) as e:
        permutation_spec(nn.Linear(3, 2))
    msg = _msg(e)
    assert msg.startswith("Linear has no permutation_spec()")
    assert "build a PermutationSpec by hand" in msg


# -- apply --------------------------------------------------------------------


def test_apply_output_does_not_alias_input() -> None:
    model = _mlp()
    spec = model.permutation_spec()
    state = dict(model.state_dict())
    before = {k: v.clone() for k, v in state.items()}
    for p in (Permutation.identity(spec, state), Permutation.random(spec, state, 0)):
        out = p.apply(state)
        assert out.keys() == state.keys()
        for t in out.values():
            t.add_(1.0)  # writing into the result must leave the input alone
        for k in state:
            assert torch.equal(state[k], before[k]), k
    # head.bias has no permuted axis: the case where no index_select makes a copy
    assert spec.axes["head.bias"] == (None,)


def test_apply_names_first_missing_key() -> None:
    model = _mlp()
    spec = model.permutation_spec()
    state = {k: v for k, v in model.state_dict().items() if k not in ("layers.0.bias", "layers.1.bias")}
    p = Permutation.identity(spec, model.state_dict())
    with pytest.raises(ValueError) as e:
        p.apply(state)
    assert _msg(e) == "state dict is missing key 'layers.0.bias' named by the permutation spec"


@pytest.mark.parametrize("width", [4, 16], ids=["narrower", "wider"])
def test_apply_to_other_width_is_rejected(width: int) -> None:
    model = _mlp()
    p = Permutation.random(model.permutation_spec(), model.state_dict(), 0)
    with pytest.raises(ValueError) as e:
        p.apply(_mlp(width=width).state_dict())
    assert _msg(e) == (
        f"'layers.0.weight' has size {width} on axis 0, but group 'P0' permutes 8 units; wrong architecture or width?"
    )


# -- large groups (sizes beyond the small-int cache) ---------------------------


def test_large_groups_compare_sizes_by_value() -> None:
    n = 300
    spec = PermutationSpec({"a.weight": ("g", None), "a.bias": ("g",), "b.weight": (None, "g")})
    gen = torch.Generator().manual_seed(0)
    state = {
        "a.weight": torch.randn(n, 2, generator=gen),
        "a.bias": torch.randn(n, generator=gen),
        "b.weight": torch.randn(3, n, generator=gen),
    }
    check_spec(spec, state)
    p, q = Permutation.random(spec, state, 0), Permutation.random(spec, state, 1)
    out = p.compose(q).apply(state)  # (P o Q)[B] == P[Q[B]]: unit i is unit q[p[i]] of B
    idx = q.perms["g"][p.perms["g"]]
    assert torch.equal(out["a.bias"], state["a.bias"][idx])
    assert torch.equal(out["b.weight"], state["b.weight"][:, idx])
    assert p.agreement(p).per_group == {"g": n}
    bad = torch.arange(n)
    bad[-1] = n  # one past the end, no duplicates
    with pytest.raises(ValueError, match=re.escape(f"permutation of group 'g' is not a bijection of 0..{n - 1}")):
        Permutation(spec, {"g": bad})


# -- _same_spec and __eq__ ----------------------------------------------------

SMALL = PermutationSpec({"w": ("a", None)})
BIG = PermutationSpec({"w": ("a", None), "v": ("b", "a")})


def _pair() -> tuple[Permutation, Permutation]:
    small = Permutation(SMALL, {"a": [1, 0, 2]})
    big = Permutation(BIG, {"a": [1, 0, 2], "b": [0, 1]})  # same perm of the shared group
    return small, big


def test_permutations_of_different_specs_are_unequal() -> None:
    small, big = _pair()
    assert small != big and not (small == big)
    assert big != small and not (big == small)
    assert small == Permutation(SMALL, {"a": torch.tensor([1, 0, 2])})
    assert small != Permutation(SMALL, {"a": [0, 1, 2]})


@pytest.mark.parametrize("op", ["compose", "agreement"])
def test_different_group_sets_are_rejected(op: str) -> None:
    small, big = _pair()
    for x, y in ((small, big), (big, small)):
        with pytest.raises(ValueError) as e:
            getattr(x, op)(y)
        assert _msg(e) == "permutations belong to different specs (their groups differ)"


@pytest.mark.parametrize("op", ["compose", "agreement"])
def test_different_group_sizes_are_rejected(op: str) -> None:
    three = Permutation(SMALL, {"a": [2, 0, 1]})
    four = Permutation(SMALL, {"a": [3, 2, 0, 1]})
    for x, y, nx, ny in ((three, four, 3, 4), (four, three, 4, 3)):
        with pytest.raises(ValueError) as e:
            getattr(x, op)(y)
        assert _msg(e) == f"group 'a' has {nx} units in one permutation and {ny} in the other"


# -- FixedPoints: values by hand --------------------------------------------

AB = PermutationSpec({"x.weight": ("a", None), "y.weight": ("b", "a")})


def test_fixed_points_and_fractions_by_hand() -> None:
    # a = [1, 0, 2]: only unit 2 is fixed; b = [0, 1, 3, 2]: units 0 and 1 are fixed
    p = Permutation(AB, {"a": [1, 0, 2], "b": [0, 1, 3, 2]})
    fp = p.fixed_points()
    assert fp.per_group == {"a": 1, "b": 2}
    assert fp.sizes == {"a": 3, "b": 4}
    assert fp.total == 3
    assert fp.fraction == pytest.approx(3 / 7)
    assert fp.per_group_fraction == {"a": pytest.approx(1 / 3), "b": pytest.approx(1 / 2)}
    assert fp.random_expectation == {"a": 1.0, "b": 1.0}
    assert fp.as_dict() == {
        "per_group": {"a": 1, "b": 2},
        "sizes": {"a": 3, "b": 4},
        "per_group_fraction": {"a": pytest.approx(1 / 3), "b": pytest.approx(1 / 2)},
        "total": 3,
        "fraction": pytest.approx(3 / 7),
        "random_expectation_per_group": 1.0,
        "random_expectation_fraction": pytest.approx(2 / 7),
    }
    assert expected_random_fixed_fraction(fp.sizes) == pytest.approx(2 / 7)
    assert expected_random_fixed_fraction({"a": 2, "b": 5, "c": 40}) == pytest.approx(3 / 47)


def test_agreement_by_hand() -> None:
    p = Permutation(AB, {"a": [1, 0, 2], "b": [0, 1, 3, 2]})
    q = Permutation(AB, {"a": [0, 1, 2], "b": [0, 1, 2, 3]})
    agree = p.agreement(q)
    assert agree.per_group == {"a": 1, "b": 2} and agree.total == 3
    assert agree.per_group_fraction == {"a": pytest.approx(1 / 3), "b": pytest.approx(1 / 2)}
    r = Permutation(AB, {"a": [2, 1, 0], "b": [1, 0, 2, 3]})  # p and r agree on no unit of a, on none of b
    assert p.agreement(r).per_group == {"a": 0, "b": 0}
    assert p.agreement(r).fraction == 0.0


def test_random_expectation_against_exhaustive_enumeration() -> None:
    """Mean fixed points over every pair of permutations of 2 and 3 units, computed directly."""
    spec = PermutationSpec({"x.weight": ("a", None), "y.weight": ("b", "a")})
    sizes = {"a": 2, "b": 3}
    pairs = list(itertools.product(itertools.permutations(range(2)), itertools.permutations(range(3))))
    assert len(pairs) == 12
    counts = {"a": 0, "b": 0}
    fraction_sum = 0.0
    for pa, pb in pairs:
        fp = Permutation(spec, {"a": list(pa), "b": list(pb)}).fixed_points()
        by_hand = {"a": sum(pa[i] == i for i in range(2)), "b": sum(pb[i] == i for i in range(3))}
        assert fp.per_group == by_hand
        assert fp.fraction == pytest.approx((by_hand["a"] + by_hand["b"]) / 5)
        counts["a"] += by_hand["a"]
        counts["b"] += by_hand["b"]
        fraction_sum += fp.fraction
    assert {g: c / 12 for g, c in counts.items()} == fp.random_expectation == {"a": 1.0, "b": 1.0}
    assert fraction_sum / 12 == pytest.approx(fp.as_dict()["random_expectation_fraction"])
    assert fraction_sum / 12 == pytest.approx(expected_random_fixed_fraction(sizes))
    assert fraction_sum / 12 == pytest.approx(2 / 5)


def test_single_unit_group() -> None:
    # one unit: every permutation is the identity, so the expected fixed fraction is exactly 1
    fp = Permutation.identity(ONE, {"w": torch.zeros(1)}).fixed_points()
    assert fp.per_group == {"g": 1} and fp.fraction == 1.0
    assert fp.as_dict()["random_expectation_fraction"] == 1.0
    assert expected_random_fixed_fraction({"g": 1}) == 1.0
    assert Permutation.identity(ONE, {"g": 5}).sizes == {"g": 5}


def test_spec_without_groups() -> None:
    spec = PermutationSpec({"w": (None, None)})
    assert spec.groups == {}
    for sizes in ({}, {"w": torch.zeros(2, 2)}):
        p = Permutation.identity(spec, sizes)
        assert p.perms == {} and p.sizes == {}
        fp = p.fixed_points()
        assert fp.total == 0 and fp.fraction == 0.0
        assert fp.as_dict()["random_expectation_fraction"] == 0.0


# -- immutability -------------------------------------------------------------


def test_spec_and_fixed_points_are_frozen() -> None:
    spec = _mlp().permutation_spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.axes = {}  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.activations = {}  # type: ignore[misc]
    fp = FixedPoints({"g": 1}, {"g": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        fp.per_group = {"g": 3}  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fp.sizes = {"g": 1}  # type: ignore[misc]
    assert fp.per_group == {"g": 1} and fp.fraction == pytest.approx(1 / 3)
