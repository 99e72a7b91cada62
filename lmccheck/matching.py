"""What the matchers share, and combining and comparing their permutations.

:mod:`lmccheck.weight_matching` (Greedy-SOBLAP) and
:mod:`lmccheck.activation_matching` both align network ``B`` onto network
``A`` (Sharma et al. 2024, appendix A; Ainsworth et al. 2023, git-re-basin).

Convention
----------
``weight_matching(spec, A, B)`` and ``activation_matching(model, A, B, data)``
return the :class:`~lmccheck.permutation.Permutation` ``P`` that maximizes the
similarity of ``A`` and ``P[B]``; align with ``P.apply(B)`` (``take``
semantics: hidden unit ``i`` of group ``g`` in ``P[B]`` is unit
``P.perms[g][i]`` of ``B``). If ``B = Q[A]`` exactly, the result is
``Q.inverse()``, so ``P.apply(B) == A``.

This module holds the helpers both matchers are built from: the checks of a
pair of state dicts (and of a starting permutation), the permuted entries on
one device in one compute dtype, one maximizing linear sum assignment on a
Gram matrix and the rule that accepts it (:data:`ACCEPT_RTOL`), and the
resulting :class:`~lmccheck.permutation.Permutation`; and, for the claims,
:func:`partial_permutation` (splicing two permutations group by group) and
:func:`fixed_point_stats` (where two permutations agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .permutation import (
    FixedPoints,
    Permutation,
    PermutationSpec,
    StateDict,
    check_spec,
    check_state,
    partial,
    select_groups,
)

__all__ = ["PARTIAL_MODES", "fixed_point_stats", "partial_permutation"]

#: A new assignment is accepted only if it raises the group's objective by more
#: than this fraction of its magnitude (guards against cycling on exact ties).
ACCEPT_RTOL = 1e-12

PARTIAL_MODES = ("bottom-up", "top-down", "put-in", "leave-out")


# --------------------------------------------------------------------------- #
# Checks and preparation of the inputs
# --------------------------------------------------------------------------- #
def _validate_pair(spec: PermutationSpec, state_a: StateDict, state_b: StateDict) -> None:
    """Raise ``ValueError`` naming the first bad key of either state."""
    if not isinstance(spec, PermutationSpec):
        raise TypeError(f"spec must be a PermutationSpec, got {type(spec).__name__}")
    for name, state in (("state_a", state_a), ("state_b", state_b)):
        if not isinstance(state, Mapping):
            raise TypeError(f"{name} must be a state dict (a mapping of names to tensors), got {type(state).__name__}")
        for key, t in state.items():
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{name}[{key!r}] is a {type(t).__name__}, not a tensor")
    check_state(spec, state_a, name="state_a")
    check_state(spec, state_b, name="state_b", reference=state_a, reference_name="state_a")
    check_spec(spec, state_a)


def _check_init(
    spec: PermutationSpec, init: Permutation | None, sizes: Mapping[str, int], name: str = "init"
) -> None:
    if init is None:
        return
    if not isinstance(init, Permutation):
        raise TypeError(f"{name} must be a Permutation, got {type(init).__name__}")
    if set(init.perms) != set(spec.groups):
        raise ValueError(f"{name} has different groups than the spec; was it found for another architecture?")
    for g, n in sizes.items():
        if init.perms[g].numel() != n:
            raise ValueError(
                f"{name} permutes {init.perms[g].numel()} units of group {g!r}, but the networks have {n}; "
                "was it found for another width?"
            )


def _permuted_keys(spec: PermutationSpec) -> list[str]:
    return [k for k, axes in spec.axes.items() if any(g is not None for g in axes)]


def _device_of(spec: PermutationSpec, state: StateDict) -> torch.device:
    for key in _permuted_keys(spec):
        return state[key].device
    return torch.device("cpu")


def _compute_dtype(spec: PermutationSpec, *states: StateDict) -> torch.dtype:
    """float64 if any permuted entry is float64, else float32 (bf16/fp16 are upcast)."""
    for state in states:
        for key in _permuted_keys(spec):
            if state[key].dtype == torch.float64:
                return torch.float64
    return torch.float32


def _prepare(
    spec: PermutationSpec, state: StateDict, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The permuted entries of ``state`` on ``device`` in ``dtype`` (never modified in place)."""
    return {k: state[k].detach().to(device=device, dtype=dtype) for k in _permuted_keys(spec)}


def _initial_perms(
    spec: PermutationSpec, sizes: Mapping[str, int], init: Permutation | None, device: torch.device
) -> dict[str, torch.Tensor]:
    if init is None:
        return {g: torch.arange(n, device=device) for g, n in sizes.items()}
    return {g: init.perms[g].to(device=device, dtype=torch.long).clone() for g in spec.groups}


# --------------------------------------------------------------------------- #
# One assignment step and the result
# --------------------------------------------------------------------------- #
def _to_numpy(gram: torch.Tensor, group: str) -> np.ndarray:
    """An n x n Gram matrix as a float64 numpy array on the CPU, checked finite."""
    g = gram.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(g).all():
        raise ValueError(
            f"the Gram matrix of group {group!r} is not finite (weights too large for float32?); "
            "pass float64 state dicts"
        )
    return g


def _lsa(g: np.ndarray) -> np.ndarray:
    """The column assigned to each row by a maximizing linear sum assignment."""
    rows, cols = linear_sum_assignment(g, maximize=True)
    if not np.array_equal(rows, np.arange(g.shape[0])):  # pragma: no cover - scipy returns sorted rows
        cols = cols[np.argsort(rows)]
    return cols


def _gain(g: np.ndarray, new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """(gain, scale): the Gram's trace under ``new`` minus under ``old``, and its magnitude."""
    ar = np.arange(g.shape[0])
    v_new = float(g[ar, new].sum())
    v_old = float(g[ar, old].sum())
    return v_new - v_old, max(abs(v_new), abs(v_old))


def _accept(gain: float, scale: float, new: np.ndarray, old: np.ndarray) -> bool:
    return gain > ACCEPT_RTOL * scale and not np.array_equal(new, old)


def _result(spec: PermutationSpec, perms: Mapping[str, torch.Tensor], stats: dict[str, Any]) -> Permutation:
    p = Permutation(spec, {g: perms[g].detach().cpu() for g in spec.groups})
    p.stats.update(stats)
    return p


# --------------------------------------------------------------------------- #
# Partial permutations and fixed points
# --------------------------------------------------------------------------- #
def partial_permutation(
    spec: PermutationSpec, p_selected: Permutation, p_rest: Permutation, mode: str, k: int
) -> Permutation:
    """Combine two permutations group by group (Sharma et al. App. H.3).

    Groups are counted in depth order from 0 (input side first). The groups
    chosen by ``mode`` take ``p_selected``; the others take ``p_rest``:

    * ``bottom-up``: groups ``0 .. k-1`` from ``p_selected`` (``P_t`` below
      the split point, ``P_end`` above it; ``k=0`` gives ``p_rest``);
    * ``top-down``: groups ``k ..`` from ``p_selected``;
    * ``put-in``: only group ``k`` from ``p_selected``;
    * ``leave-out``: every group except ``k`` from ``p_selected``.
    """
    for name, p in (("p_selected", p_selected), ("p_rest", p_rest)):
        if not isinstance(p, Permutation):
            raise TypeError(f"{name} must be a Permutation, got {type(p).__name__}")
        if set(p.perms) != set(spec.groups):
            raise ValueError(f"{name} has different groups than the spec")
    return partial(p_selected, p_rest, select_groups(spec, mode, k))


def fixed_point_stats(p: Permutation, q: Permutation) -> dict[str, Any]:
    """Units on which ``p`` and ``q`` agree, per group and in total.

    Keys: ``per_group``, ``sizes``, ``per_group_fraction``, ``total``,
    ``fraction``, and for comparison the expectation if one of them were
    uniformly random: ``random_expectation_per_group`` (1 fixed point per
    group), ``random_expectation_total`` (the number of groups) and
    ``random_expectation_fraction``.
    """
    agree: FixedPoints = p.agreement(q)
    out = agree.as_dict()
    out["random_expectation_total"] = float(len(agree.sizes))
    return out
