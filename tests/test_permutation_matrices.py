"""``Permutation.apply`` against explicit permutation matrices.

The algebra tests (inverse, compose) hold for any self-consistent ``apply``,
including a consistently wrong one (e.g. one that permutes rows with the
inverse permutation). Here the expected result is built independently, by
matrix products with explicit permutation matrices.

Convention (module docstring of :mod:`lmccheck.permutation`, "take"
semantics): ``P[B]`` has as hidden unit ``i`` of group ``g`` the unit
``P.perms[g][i]`` of ``B``. With ``P_g = torch.eye(n)[P.perms[g]]`` (row ``i``
is the basis vector ``e_{perms[g][i]}``), ``(P_g x)[i] = x[perms[g][i]]``, so

* a linear weight ``W`` (out, in) becomes ``P_out W P_inᵀ``;
* a conv weight (out, in, kh, kw) becomes ``P_out W[:, :, h, w] P_inᵀ`` for
  every spatial position ``(h, w)`` (the kernel itself is untouched);
* a bias, a norm weight/bias (LayerNorm, GroupNorm, BatchNorm) and the
  BatchNorm ``running_mean``/``running_var`` become ``P_g v``;
* an axis with no group (the input of the first layer, the classes of the
  head) gets the identity, and ``num_batches_tracked`` is left as it is.

The groups of each key are read from ``spec.axes`` (what the spec claims);
for the MLP they are also written out by hand, so that test does not trust
the spec at all.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmccheck.models import get_model
from lmccheck.permutation import Permutation

CASES = [
    ("mlp", {"width": 12, "depth": 3}),
    ("vgg11", {"width": 0.0625}),
    ("resnet20", {"width": 0.5}),
]
NORMS = ["none", "layernorm", "batchnorm"]


def perm_matrix(perm: torch.Tensor) -> torch.Tensor:
    """The matrix ``P`` with ``(P @ x)[i] == x[perm[i]]`` (rows of the identity, reordered)."""
    return torch.eye(perm.numel(), dtype=torch.float64)[perm]


def build(arch: str, kw: dict, norm: str) -> nn.Module:
    torch.manual_seed(0)
    model = get_model(arch, in_channels=3, input_size=8, num_classes=10, norm=norm, **kw)
    # make every entry distinguishable: random norm affines and BN statistics (not 1s and 0s)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(13)
    return model


def matrix(perm: Permutation, group: str | None, n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64) if group is None else perm_matrix(perm.perms[group])


def expected_entry(perm: Permutation, key: str, t: torch.Tensor, groups: tuple[str | None, ...]) -> torch.Tensor:
    """The permuted tensor by matrix products (float64, exact for permutations)."""
    if not t.is_floating_point():  # num_batches_tracked
        assert all(g is None for g in groups), key
        return t
    x = t.double()
    if t.dim() == 1:
        return matrix(perm, groups[0], t.shape[0]) @ x
    p_out = matrix(perm, groups[0], t.shape[0])
    p_in = matrix(perm, groups[1], t.shape[1])
    assert all(g is None for g in groups[2:]), f"{key}: a spatial axis is permuted"
    if t.dim() == 2:
        return p_out @ x @ p_in.T
    assert t.dim() == 4, key
    return torch.einsum("oi,ijhw,kj->okhw", p_out, x, p_in)  # P_out W[:, :, h, w] P_inᵀ


def check_against_matrices(perm: Permutation, state: dict[str, torch.Tensor], axes: dict) -> None:
    out = perm.apply(state)
    assert out.keys() == state.keys()
    for key, t in state.items():
        want = expected_entry(perm, key, t, axes[key])
        got = out[key]
        assert got.dtype == t.dtype and got.shape == t.shape, key
        assert torch.equal(got.double() if t.is_floating_point() else got, want), key


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("arch", "kw"), CASES, ids=[c[0] for c in CASES])
def test_apply_is_p_out_w_p_in_transposed(arch: str, kw: dict, norm: str) -> None:
    model = build(arch, kw, norm)
    spec = model.permutation_spec()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    perm = Permutation.random(spec, state, seed=5)
    # every group is a non-involution, so P and P^-1 differ on every group
    assert all(not torch.equal(p, torch.argsort(p)) for p in perm.perms.values())
    kinds = {type(m) for m in model.modules()}
    # the model has the kinds of tensors this test is about
    assert nn.Linear in kinds and (arch == "mlp" or nn.Conv2d in kinds)
    norm_kinds = {"none": set(), "layernorm": {nn.LayerNorm, nn.GroupNorm},
                  "batchnorm": {nn.BatchNorm1d, nn.BatchNorm2d}}
    assert kinds & {nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d} <= norm_kinds[norm]
    assert norm == "none" or kinds & norm_kinds[norm]
    if norm == "batchnorm":
        assert any(k.endswith("running_var") for k in state) and any(k.endswith("num_batches_tracked") for k in state)
    check_against_matrices(perm, state, dict(spec.axes))
    # the input is untouched
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("norm", NORMS)
def test_mlp_groups_written_out_by_hand(norm: str) -> None:
    """Same check with the groups of every key written here, not read from the spec."""
    model = build("mlp", {"width": 12, "depth": 3}, norm)
    state = dict(model.state_dict())
    perm = Permutation.random(model.permutation_spec(), state, seed=9)
    assert set(perm.perms) == {"P0", "P1", "P2"}
    axes: dict[str, tuple[str | None, ...]] = {}
    prev: str | None = None
    for i in range(3):
        g = f"P{i}"
        axes[f"layers.{i}.weight"] = (g, prev)
        axes[f"layers.{i}.bias"] = (g,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            axes[f"norms.{i}.{name}"] = (g,)
        axes[f"norms.{i}.num_batches_tracked"] = ()
        prev = g
    axes["head.weight"] = (None, "P2")
    axes["head.bias"] = (None,)
    check_against_matrices(perm, state, axes)


def test_conv_spatial_axes_untouched() -> None:
    """A conv weight's kernel is not reordered: each (h, w) slice is permuted on its own."""
    model = build("vgg11", {"width": 0.0625}, "none")
    state = dict(model.state_dict())
    perm = Permutation.random(model.permutation_spec(), state, seed=2)
    spec = model.permutation_spec()
    key = next(k for k, v in state.items() if v.dim() == 4 and spec.axes[k][:2] == ("conv1", "conv0"))
    w, pw = state[key], perm.apply(state)[key]
    po, pi = perm.perms["conv1"], perm.perms["conv0"]
    for h in range(3):
        for k in range(3):
            assert torch.equal(pw[:, :, h, k], w[:, :, h, k][po][:, pi])


def test_direction_matters() -> None:
    """The matrix check tells P from P^-1: applying P^-1 where P is expected fails it."""
    model = build("mlp", {"width": 12, "depth": 3}, "layernorm")
    spec = model.permutation_spec()
    state = dict(model.state_dict())
    perm = Permutation.random(spec, state, seed=5)
    out = perm.inverse().apply(state)
    wrong = [k for k, t in state.items() if not torch.equal(out[k].double(), expected_entry(perm, k, t, spec.axes[k]))]
    assert set(wrong) == {k for k, axes in spec.axes.items() if any(g is not None for g in axes)}
