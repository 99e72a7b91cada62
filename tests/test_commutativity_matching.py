"""Commutativity matching (Zhou et al. Eq. 9): the objective never increases, and it aligns what it should."""

from __future__ import annotations

import pytest
import torch

from lmccheck.commutativity_matching import commutativity_matching, commutativity_objective
from lmccheck.models import get_model
from lmccheck.permutation import Permutation


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
    assert perm.stats["accepted"] == len(hist) - 1 and perm.stats["examples"] == 64


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
