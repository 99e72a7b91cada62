"""The textbook Greedy-SOBLAP, the reference for :func:`lmccheck.weight_matching.weight_matching`.

Used by the unit tests (``tests/test_matching.py``) and the benchmarks
(``benchmarks/test_matching.py``), which compare the optimized implementation
with it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lmccheck.matching import _accept, _gain, _lsa, _result, _to_numpy
from lmccheck.permutation import Permutation, PermutationSpec, StateDict
from lmccheck.weight_matching import _objective, _permute_entry, _self_objective, _setup

__all__ = ["weight_matching_naive"]


def weight_matching_naive(
    spec: PermutationSpec,
    state_a: StateDict,
    state_b: StateDict,
    *,
    max_iter: int = 100,
    seed: int = 0,
    init: Permutation | None = None,
) -> Permutation:
    """Textbook Greedy-SOBLAP, the reference for :func:`lmccheck.weight_matching.weight_matching`.

    Every step rebuilds the group's Gram matrix from scratch, from B permuted
    by every other group's current permutation, and every sweep solves every
    group. Same random order, acceptance rule, checks and stats as
    :func:`weight_matching`; only the Grams' float32 round-off differs, so
    both normally return the same permutation.
    """
    t0 = time.perf_counter()
    spec, a, b, perms, sizes = _setup(spec, state_a, state_b, max_iter, init)
    names = list(spec.groups)
    initial = objective = _objective(spec, a, b, None if init is None else perms)
    history: list[float] = []
    rng = np.random.default_rng(seed)
    sweeps = solves = 0
    converged = not names
    while not converged and sweeps < max_iter:
        sweeps += 1
        changed = False
        for idx in rng.permutation(len(names)):
            g = names[idx]
            n = sizes[g]
            solves += 1
            gram = plain = None
            coupled: set[str] = set()
            for key, ax in spec.groups[g]:
                wb = _permute_entry(spec, key, b[key], perms, except_axis=ax)
                c = a[key].movedim(ax, 0).reshape(n, -1) @ wb.movedim(ax, 0).reshape(n, -1).T
                gram = c if gram is None else gram + c
                if sum(h == g for h in spec.axes[key]) > 1:
                    coupled.add(key)
                else:
                    plain = c if plain is None else plain + c
            assert gram is not None
            g_np = _to_numpy(gram, g)
            cols = _lsa(g_np)
            old = perms[g].cpu().numpy()
            if np.array_equal(cols, old):
                continue
            new = torch.as_tensor(cols, dtype=torch.long, device=perms[g].device)
            if coupled:
                p_np = np.zeros_like(g_np) if plain is None else _to_numpy(plain, g)
                gain, scale = _gain(p_np, cols, old)
                before = _self_objective(spec, sorted(coupled), a, b, perms)
                after = _self_objective(spec, sorted(coupled), a, b, {**perms, g: new})
                gain += after - before
                scale = max(scale, abs(before), abs(after))
            else:
                gain, scale = _gain(g_np, cols, old)
            if _accept(gain, scale, cols, old):
                perms[g] = new
                objective += gain
                changed = True
        history.append(objective)
        converged = not changed
    return _result(
        spec,
        perms,
        {
            "method": "weight-naive",
            "sweeps": sweeps,
            "objective": history,
            "initial_objective": initial,
            "final_objective": objective,
            "converged": converged,
            "solves": solves,
            "skipped": 0,
            "seed": seed,
            "wall_time": time.perf_counter() - t0,
        },
    )
