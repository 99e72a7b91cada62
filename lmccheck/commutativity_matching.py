"""Commutativity matching: a permutation that enforces Zhou et al.'s commutativity (Eq. 9) directly.

Zhou et al. §5.2 read weight and activation matching as two halves of one objective; §6 leaves open whether
enforcing commutativity itself does better. For an MLP with hidden permutations ``P_1 .. P_{L-1}`` (``P_0 =
P_L = I``), Eq. (9)'s objective is

    J(pi) = sum_l || (W_A^l - P_l W_B^l P_{l-1}^T) (H_A^{l-1} - P_{l-1} H_B^{l-1}) ||_F^2,

with ``H^0 = X`` in both networks (so the first term is 0). App. A.3 shows that each ``P_l`` enters two terms
as a quadratic assignment problem (Koopmans-Beckmann terms, a linear term and a bilinear cross term), NP-hard.
:func:`commutativity_matching` is a local search from activation matching's permutation: each sweep visits
the groups in order and, for one group with the others fixed, runs Frank-Wolfe on the Birkhoff polytope (the
FAQ scheme of Vogelstein et al., which ``scipy.optimize.quadratic_assignment`` implements for a single
Koopmans-Beckmann term): the gradient of the relaxed objective (autograd), a linear assignment for the
direction, a line search over the step, and the nearest permutation (a linear assignment on the relaxed
matrix). A candidate replaces the group's permutation only when ``J`` at it is strictly lower, so ``J``
never increases; ``P.stats["objective"]`` records it after every accepted step.

The features ``H`` are the post-activations of the first ``n_examples`` training examples, held in memory
(``n_examples x width`` per layer and network), which is what an MLP of lmccheck's CPU tier needs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .data import Split
from .matching import activation_matching
from .permutation import Permutation, StateDict, check_state, permutation_spec, state_of

__all__ = ["commutativity_matching", "commutativity_objective"]

#: examples whose features enter the objective
DEFAULT_EXAMPLES = 1000
#: Frank-Wolfe steps per group and visit
DEFAULT_FW_STEPS = 20
#: the group objective along a Frank-Wolfe segment is a polynomial of degree 4 in the step (a product of two
#: factors linear in P, squared): 5 evaluations determine it, and its minimum is read on a fine grid
_FIT_AT = np.linspace(0.0, 1.0, 5)
_GRID = np.linspace(0.0, 1.0, 201)


def _mlp_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """The weight layers (names, in order, head last) and the groups between them, for lmccheck's MLP."""
    from .models.mlp import MLP  # noqa: PLC0415

    if not isinstance(model, MLP) or any(not isinstance(n, nn.Identity) for n in model.norms):
        raise ValueError("commutativity matching is implemented for lmccheck's ReLU MLPs without norm layers "
                         "(norm='none'), the architecture of Eq. (9)")
    spec = model.permutation_spec()
    names = [f"layers.{i}" for i in range(len(model.layers))] + ["head"]
    groups = [spec.axes[f"{n}.weight"][0] for n in names[:-1]]
    return names, [g for g in groups if g is not None]


def _features(model: nn.Module, state: StateDict, x: torch.Tensor) -> list[torch.Tensor]:
    """Post-activations of every hidden layer, rows = examples (float64)."""
    h = x.reshape(len(x), -1).double()
    out = []
    for i in range(len(model.layers)):
        h = (h @ state[f"layers.{i}.weight"].double().T + state[f"layers.{i}.bias"].double()).relu()
        out.append(h)
    return out


def _matrix(idx: torch.Tensor) -> torch.Tensor:
    """The permutation matrix of a take-index vector: (P x)_i = x_{idx[i]}."""
    m = torch.zeros(len(idx), len(idx), dtype=torch.float64)
    m[torch.arange(len(idx)), idx] = 1.0
    return m


class _Problem:
    """Eq. (9)'s terms for one pair, in row form: features (n, d), weights (out, in)."""

    def __init__(self, names: list[str], sa: StateDict, sb: StateDict, fa: list[torch.Tensor],
                 fb: list[torch.Tensor], x: torch.Tensor, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype
        self.wa = [sa[f"{n}.weight"].to(dtype) for n in names]
        self.wb = [sb[f"{n}.weight"].to(dtype) for n in names]
        x = x.reshape(len(x), -1).to(dtype)
        self.ha = [x, *(f.to(dtype) for f in fa)]  # H^0 .. H^{L-1}
        self.hb = [x, *(f.to(dtype) for f in fb)]

    def term(self, layer: int, p_out: torch.Tensor | None, p_in: torch.Tensor | None) -> torch.Tensor:
        """|| (H_A - H_B P_in^T)(W_A - P_out W_B P_in^T)^T ||^2 for weight layer ``layer`` (None: identity)."""
        hb, wb = self.hb[layer], self.wb[layer]
        if p_in is not None:
            hb = hb @ p_in.T
            wb = wb @ p_in.T
        if p_out is not None:
            wb = p_out @ wb
        return (((self.ha[layer] - hb) @ (self.wa[layer] - wb).T) ** 2).sum()

    def total(self, mats: list[torch.Tensor | None]) -> float:
        """J for per-group matrices ``mats`` (group g sits between weight layers g and g + 1)."""
        full = [None, *mats, None]
        return float(sum(self.term(layer, full[layer + 1], full[layer]) for layer in range(len(self.wa))))

    def group(self, g: int, p: torch.Tensor, mats: list[torch.Tensor | None]) -> torch.Tensor:
        """The two terms in which group ``g``'s matrix ``p`` appears, the other groups at ``mats``."""
        full = [None if m is None else m.to(self.dtype) for m in (None, *mats, None)]
        full[g + 1] = p
        return self.term(g, full[g + 1], full[g]) + self.term(g + 1, full[g + 2], full[g + 1])


def _lap(score: torch.Tensor, maximize: bool) -> torch.Tensor:
    rows, cols = linear_sum_assignment(score.detach().cpu().numpy(), maximize=maximize)
    out = np.empty(len(rows), dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out)


def commutativity_objective(model: nn.Module, state_a: StateDict | nn.Module, state_b: StateDict | nn.Module,
                            data: Split | torch.Tensor, perm: Permutation | None = None, *,
                            n_examples: int = DEFAULT_EXAMPLES) -> float:
    """Eq. (9)'s J for ``perm`` (None: the identity) on the first ``n_examples`` inputs of ``data``."""
    names, groups = _mlp_layers(model)
    sa, sb, x = _inputs(model, state_a, state_b, data, n_examples)
    problem = _Problem(names, sa, sb, _features(model, sa, x), _features(model, sb, x), x)
    mats = [None if perm is None else _matrix(perm.perms[g]) for g in groups]
    return problem.total(mats)


def _inputs(model: nn.Module, state_a: StateDict | nn.Module, state_b: StateDict | nn.Module,
            data: Split | torch.Tensor, n_examples: int) -> tuple[StateDict, StateDict, torch.Tensor]:
    sa = state_of(state_a) if isinstance(state_a, nn.Module) else dict(state_a)
    sb = state_of(state_b) if isinstance(state_b, nn.Module) else dict(state_b)
    spec = permutation_spec(model)
    check_state(spec, sa, name="network A")
    check_state(spec, sb, name="network B", reference=sa, reference_name="network A")
    if n_examples < 1:
        raise ValueError(f"n_examples must be positive, got {n_examples}")
    x = data.x if isinstance(data, Split) else data
    if not isinstance(x, torch.Tensor) or len(x) == 0:
        raise ValueError("data must be a non-empty Split or tensor of inputs")
    return {k: v.cpu() for k, v in sa.items()}, {k: v.cpu() for k, v in sb.items()}, x[:n_examples].cpu()


def commutativity_matching(
    model: nn.Module,
    state_a: StateDict | nn.Module,
    state_b: StateDict | nn.Module,
    data: Split | torch.Tensor,
    *,
    init: Permutation | None = None,
    n_examples: int = DEFAULT_EXAMPLES,
    sweeps: int = 3,
    fw_steps: int = DEFAULT_FW_STEPS,
    order: Sequence[int] | None = None,
) -> Permutation:
    """The permutation ``P`` (apply it to B) that locally minimizes Eq. (9)'s commutativity objective.

    ``init`` is the starting permutation (default: activation matching on the same ``data``). ``P.stats``
    records ``objective`` (J after the start and after every accepted step, never increasing),
    ``objective_init``, ``objective_final``, ``accepted`` (steps kept), ``sweeps`` run, ``examples`` and
    ``seconds``. Stops early when a sweep changes nothing.
    """
    t0 = time.perf_counter()
    names, groups = _mlp_layers(model)
    if sweeps < 1 or fw_steps < 1:
        raise ValueError(f"need sweeps >= 1 and fw_steps >= 1, got {sweeps}, {fw_steps}")
    sa, sb, x = _inputs(model, state_a, state_b, data, n_examples)
    spec = permutation_spec(model)
    if init is None:
        init = activation_matching(model, sa, sb, x)
    else:
        sizes = spec.group_sizes(sa)
        if init.sizes != sizes:
            raise ValueError(f"init permutes the groups {init.sizes} but the networks have {sizes}; pass a "
                             "permutation of these networks' units (e.g. activation matching's)")
    fa, fb = _features(model, sa, x), _features(model, sb, x)
    problem = _Problem(names, sa, sb, fa, fb, x)  # float64: the accept / reject decisions
    search = _Problem(names, sa, sb, fa, fb, x, torch.float32)  # float32: the relaxed search
    idx = [init.perms[g].clone() for g in groups]
    mats: list[torch.Tensor | None] = [_matrix(i) for i in idx]
    best = problem.total(mats)
    history, accepted, done = [best], 0, 0
    for _ in range(sweeps):
        changed = False
        for g in (order if order is not None else range(len(groups))):
            current = mats[g]
            assert current is not None
            relaxed = current.to(torch.float32)
            for _step in range(fw_steps):
                p = relaxed.clone().requires_grad_(True)
                value = search.group(g, p, mats)
                (grad,) = torch.autograd.grad(value, p)
                direction = _matrix(_lap(grad, maximize=False)).to(torch.float32)
                with torch.no_grad():
                    ys = [float(search.group(g, relaxed + float(t) * (direction - relaxed), mats)) for t in _FIT_AT]
                curve = np.polyval(np.polyfit(_FIT_AT, ys, 4), _GRID)
                step = float(_GRID[int(np.argmin(curve))])
                if step == 0.0:
                    break
                relaxed = relaxed + step * (direction - relaxed)
            candidate = _lap(relaxed, maximize=True)  # the nearest permutation
            trial = list(mats)
            trial[g] = _matrix(candidate)
            value = problem.total(trial)
            if value < best:
                mats, best, idx[g] = trial, value, candidate
                history.append(best)
                accepted += 1
                changed = True
        done += 1
        if not changed:
            break
    perm = Permutation(spec, dict(zip(groups, idx, strict=True)))
    perm.stats = {"method": "commutativity", "objective": history, "objective_init": history[0],
                  "objective_final": best, "accepted": accepted, "sweeps": done, "examples": int(len(x)),
                  "fw_steps": fw_steps, "seconds": time.perf_counter() - t0}
    return perm

