"""Weight matching (Greedy-SOBLAP) and activation matching.

Both matchers align network ``B`` onto network ``A`` (Sharma et al. 2024,
appendix A; Ainsworth et al. 2023, git-re-basin).

Convention
----------
``weight_matching(spec, A, B)`` and ``activation_matching(model, A, B, data)``
return the :class:`~lmccheck.permutation.Permutation` ``P`` that maximizes the
similarity of ``A`` and ``P[B]``; align with ``P.apply(B)`` (``take``
semantics: hidden unit ``i`` of group ``g`` in ``P[B]`` is unit
``P.perms[g][i]`` of ``B``). If ``B = Q[A]`` exactly, the result is
``Q.inverse()``, so ``P.apply(B) == A``.

Objective
---------
The weight-matching objective is the trace objective
``sum_k <A_k, P[B]_k>`` over the state-dict entries ``k`` with at least one
permuted axis (:func:`matching_objective`); entries without a permuted axis add
a constant and are left out. Maximizing it minimizes ``||A - P[B]||^2``.

Greedy-SOBLAP (Algorithm 1) is coordinate ascent: each sweep visits the groups
in a random order (seeded) and replaces one group's permutation by the solution
of a linear sum assignment problem on its Gram matrix, the other groups held
fixed. :func:`weight_matching` computes exactly the steps of the textbook
algorithm (:func:`weight_matching_naive` is that textbook version, kept as the
reference), but

* skips a group whose Gram matrix cannot have changed since it was last solved
  (none of the groups it depends on changed), since solving it again would
  return the assignment it already has;
* caches every per-parameter Gram contribution and recomputes one only when a
  permutation it depends on changed -- in place, at a fraction of the cost,
  when that permutation moved only some units;
* solves consecutive groups whose Grams do not depend on each other
  concurrently (scipy releases the GIL), applying the results in order;
* tracks the objective in O(n) per step from the Gram matrix.

Both versions accept a new assignment only when it strictly improves the
objective, so the objective never decreases and ties never cycle. They return
the same permutation up to float32 round-off in the Gram matrices (in practice
the same).

Activation matching
-------------------
One linear sum assignment per group, in depth order, on the cross-moments of
the two networks' activations (App. A). A group reads the output of its last
operation (:func:`activation_modules`): the ReLU after a layer and its norm,
and for a ResNet residual stream the output of the stage's last block
(``stream="last"``, the default); ``stream="sum"`` sums the moments over every
module that writes the stream instead.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .data import Split
from .permutation import (
    FixedPoints,
    Permutation,
    PermutationSpec,
    StateDict,
    check_spec,
    check_state,
    partial,
    permutation_spec,
    select_groups,
)

__all__ = [
    "MATCHERS",
    "PARTIAL_MODES",
    "STREAM_MODES",
    "activation_matching",
    "activation_modules",
    "fixed_point_stats",
    "matching_objective",
    "partial_permutation",
    "weight_matching",
    "weight_matching_naive",
]

#: A new assignment is accepted only if it raises the group's objective by more
#: than this fraction of its magnitude (guards against cycling on exact ties).
ACCEPT_RTOL = 1e-12

PARTIAL_MODES = ("bottom-up", "top-down", "put-in", "leave-out")

#: See :data:`STREAM_MODES`.
StreamMode = Literal["last", "sum"]


# --------------------------------------------------------------------------- #
# Validation and small helpers
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


def _permute_entry(
    spec: PermutationSpec, key: str, t: torch.Tensor, perms: Mapping[str, torch.Tensor], except_axis: int | None = None
) -> torch.Tensor:
    """``t`` with every permuted axis but ``except_axis`` gathered by ``perms``."""
    for ax, g in enumerate(spec.axes[key]):
        if g is not None and ax != except_axis:
            t = t.index_select(ax, perms[g])
    return t


def _objective(
    spec: PermutationSpec,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    perms: Mapping[str, torch.Tensor] | None,
) -> float:
    """``sum_k <A_k, P[B]_k>`` over the permuted entries (``perms=None``: identity), accumulated in float64."""
    total = 0.0
    for key in _permuted_keys(spec):
        bp = b[key] if perms is None else _permute_entry(spec, key, b[key], perms)
        total += float(torch.sum(a[key] * bp, dtype=torch.float64))
    return total


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


def _check_iter(max_iter: int) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")


def _self_objective(
    spec: PermutationSpec,
    keys: Iterable[str],
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    perms: Mapping[str, torch.Tensor],
) -> float:
    """Exact objective of the entries on which one group acts on several axes."""
    return _objective(PermutationSpec({k: spec.axes[k] for k in keys}), a, b, perms)


# --------------------------------------------------------------------------- #
# Weight matching: Gram contributions
# --------------------------------------------------------------------------- #
#: A cached single-dependency contribution is updated in place when at most this
#: fraction of its dependency's units moved, and recomputed otherwise; and it is
#: recomputed after in-place updates worth ``INCREMENTAL_BUDGET`` recomputations.
INCREMENTAL_FRACTION = 0.6
INCREMENTAL_BUDGET = 2
#: Assignment problems at least this large are solved in a worker thread, so
#: that independent groups are solved concurrently (smaller ones inline).
THREAD_MIN_SIZE = 192
#: Groups of this many units get column offsets that warm-start their next
#: assignment problem (``_Greedy.update_shift``; measured to pay off there).
SHIFT_SIZES = range(128, 1025)


class _Term:
    """The contribution of one (state key, axis) of a group to the group's Gram.

    ``a @ b_perm.T``, where ``a`` is A's entry with the group's axis first,
    flattened to ``(n, -1)``, and ``b_perm`` is B's entry likewise arranged,
    with the current permutations of the entry's *other* permuted axes
    (``deps``) applied. Cached; recomputed only when a dependency changed.
    """

    def __init__(self, spec: PermutationSpec, group: str, key: str, axis: int, a: torch.Tensor, b: torch.Tensor):
        self.group, self.key, self.axis = group, key, axis
        axes = spec.axes[key]
        self.n = int(a.shape[axis])
        self.others = tuple((j + 1 if j < axis else j, h) for j, h in enumerate(axes) if h is not None and j != axis)
        self.deps = tuple(dict.fromkeys(h for _, h in self.others))
        self.self_coupled = group in self.deps
        self.a_full, self.b_full = a, b
        self.value: torch.Tensor | None = None
        self.stamp: tuple[int, ...] | None = None

    @property
    def static(self) -> bool:
        return not self.deps

    def full(self, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = self.b_full.movedim(self.axis, 0)
        for dim, h in self.others:
            x = x.index_select(dim, perms[h])
        a = self.a_full.movedim(self.axis, 0).reshape(self.n, -1)
        return a @ x.reshape(self.n, -1).T

    def current(self, perms: Mapping[str, torch.Tensor], versions: Mapping[str, int]) -> torch.Tensor:
        stamp = tuple(versions[h] for h in self.deps)
        if self.value is None or stamp != self.stamp:
            self.value = self.full(perms)
            self.stamp = stamp
        return self.value


class _SingleTerm(_Term):
    """A term with exactly one other permuted axis, of another group ``h``.

    A is kept as an ``(n, n_h * rest)`` matrix (a view when the group's axis
    is 0 and ``h``'s is 1, as for the output rows of a weight) and B as a
    contiguous ``(n_h, rest, n)`` block, so permuting ``h`` gathers whole
    rows of B and the contribution is one product ``a @ b[p_h]``. When ``h``'s
    permutation moves only the units ``S``, the cached contribution is
    updated in place, ``C += a[:, S] @ (b[p_new[S]] - b[p_old[S]])``, at
    ``|S| / n_h`` of the cost of a recomputation. After updates worth
    ``INCREMENTAL_BUDGET`` recomputations it is recomputed, which bounds
    float32 round-off drift.
    """

    def __init__(self, spec: PermutationSpec, group: str, key: str, axis: int, a: torch.Tensor, b: torch.Tensor):
        super().__init__(spec, group, key, axis, a, b)
        self.a_full = self.b_full = None  # type: ignore[assignment]
        ((_, self.dep),) = self.others
        dep_axis = next(j for j, h in enumerate(spec.axes[key]) if h == self.dep and j != axis)
        rest = [d for d in range(a.dim()) if d not in (axis, dep_axis)]
        self.nh = int(a.shape[dep_axis])
        self.a = a.permute([axis, dep_axis, *rest]).reshape(self.n, -1)  # a view for (axis, dep) = (0, 1)
        self.b = b.permute([dep_axis, *rest, axis]).reshape(self.nh, -1, self.n).contiguous()
        self.used: torch.Tensor | None = None
        self.budget = 0

    def full(self, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.a @ self.b.index_select(0, perms[self.dep]).reshape(-1, self.n)

    def current(self, perms: Mapping[str, torch.Tensor], versions: Mapping[str, int]) -> torch.Tensor:
        stamp = (versions[self.dep],)
        if self.value is not None and stamp == self.stamp:
            return self.value
        p = perms[self.dep]
        moved = None if self.used is None else torch.nonzero(p != self.used).flatten()
        small = moved is not None and moved.numel() <= min(INCREMENTAL_FRACTION * self.nh, self.budget)
        if self.value is not None and small:
            assert moved is not None
            if moved.numel():
                assert self.used is not None
                delta = self.b.index_select(0, p[moved]) - self.b.index_select(0, self.used[moved])
                a_s = self.a.view(self.n, self.nh, -1).index_select(1, moved).reshape(self.n, -1)
                self.value.addmm_(a_s, delta.reshape(-1, self.n))
                self.budget -= moved.numel()
        else:
            self.value = self.full(perms)
            self.budget = INCREMENTAL_BUDGET * self.nh
        self.used = p
        self.stamp = stamp
        return self.value


def _make_term(spec: PermutationSpec, group: str, key: str, axis: int, a: torch.Tensor, b: torch.Tensor) -> _Term:
    others = [h for j, h in enumerate(spec.axes[key]) if h is not None and j != axis]
    if len(others) == 1 and others[0] != group:
        return _SingleTerm(spec, group, key, axis, a, b)
    return _Term(spec, group, key, axis, a, b)


class _Greedy:
    """State of one Greedy-SOBLAP run (the fast implementation)."""

    def __init__(
        self,
        spec: PermutationSpec,
        a: Mapping[str, torch.Tensor],
        b: Mapping[str, torch.Tensor],
        perms: dict[str, torch.Tensor],
    ) -> None:
        self.spec, self.a, self.b, self.perms = spec, a, b, perms
        self.names = list(spec.groups)
        self.versions = dict.fromkeys(self.names, 0)
        self.solved_at: dict[str, tuple[int, ...] | None] = dict.fromkeys(self.names, None)
        self.terms: dict[str, list[_Term]] = {}
        self.static: dict[str, torch.Tensor | None] = {}
        for g, members in spec.groups.items():
            terms = [_make_term(spec, g, key, ax, a[key], b[key]) for key, ax in members]
            static = None
            for t in terms:
                if t.static:
                    c = t.full(perms)
                    static = c if static is None else static.add_(c)
            self.static[g] = static
            self.terms[g] = [t for t in terms if not t.static]
        self.deps = {g: tuple(dict.fromkeys(h for t in self.terms[g] for h in t.deps)) for g in self.names}
        self.self_keys = {g: sorted({t.key for t in self.terms[g] if t.self_coupled}) for g in self.names}
        # reused per-group buffers: the Gram on the device, and its float64 CPU copy for scipy
        self.buf: dict[str, torch.Tensor] = {}
        self.host: dict[str, torch.Tensor] = {}
        # per group, column offsets subtracted from its Gram before the LSA (see ``shifted``)
        self.shift: dict[str, np.ndarray] = {}
        self.solves = self.skipped = 0

    def stamp(self, g: str) -> tuple[int, ...]:
        return tuple(self.versions[h] for h in self.deps[g])

    def independent(self, g: str, h: str) -> bool:
        return g != h and h not in self.deps[g] and g not in self.deps[h]

    def gram(self, g: str, plain_only: bool = False) -> torch.Tensor:
        """The group's Gram matrix (``plain_only``: without self-coupled terms, in a new tensor)."""
        parts = [] if self.static[g] is None else [self.static[g]]
        parts += [t.current(self.perms, self.versions) for t in self.terms[g] if not (plain_only and t.self_coupled)]
        if plain_only:
            n = self.perms[g].numel()
            return torch.stack(parts).sum(0) if parts else torch.zeros(n, n, device=self.perms[g].device)
        out = self.buf.get(g)
        if out is None:
            out = self.buf[g] = torch.empty_like(parts[0])
        out.copy_(parts[0])
        for c in parts[1:]:
            out.add_(c)
        return out

    def host_gram(self, g: str) -> np.ndarray:
        """The group's Gram as a float64 numpy array (a reused buffer), checked finite."""
        gram = self.gram(g)
        host = self.host.get(g)
        if host is None:
            host = self.host[g] = torch.empty(gram.shape, dtype=torch.float64)
        host.copy_(gram)
        g_np = host.numpy()
        shift = self.shift.get(g)
        if shift is not None:
            g_np -= shift[None, :]
        if not np.isfinite(g_np.sum()):
            raise ValueError(
                f"the Gram matrix of group {g!r} is not finite (weights too large for float32?); "
                "pass float64 state dicts"
            )
        return g_np

    def update_shift(self, g: str, g_np: np.ndarray, cols: np.ndarray) -> None:
        """Column offsets that make the next, similar assignment problem of ``g`` cheaper.

        Subtracting ``v[j]`` from column ``j`` changes every assignment's total
        by the same ``sum(v)``, so the solution is unchanged; with ``v`` close
        to the dual variables of the last solution (one relaxation step from
        it), most rows find their column at once and scipy's shortest
        augmenting paths stay short.
        """
        ar = np.arange(len(cols))
        v = (g_np - g_np[ar, cols][:, None]).max(axis=0)
        old = self.shift.get(g)
        self.shift[g] = v if old is None else old + v

    def finish(self, g: str, g_np: np.ndarray, cols: np.ndarray) -> float | None:
        """Apply the solution of group ``g`` if it strictly improves; return the gain."""
        if len(cols) in SHIFT_SIZES:
            self.update_shift(g, g_np, cols)
        old = self.perms[g].cpu().numpy()
        if np.array_equal(cols, old):
            return None
        new = torch.as_tensor(cols, dtype=torch.long, device=self.perms[g].device)
        if self.self_keys[g]:
            gain, scale = _gain(_to_numpy(self.gram(g, plain_only=True), g), cols, old)
            before = _self_objective(self.spec, self.self_keys[g], self.a, self.b, self.perms)
            after = _self_objective(self.spec, self.self_keys[g], self.a, self.b, {**self.perms, g: new})
            gain += after - before
            scale = max(scale, abs(before), abs(after))
        else:
            gain, scale = _gain(g_np, cols, old)
        if not _accept(gain, scale, cols, old):
            return None
        self.perms[g] = new
        self.versions[g] += 1
        return gain

    def run(
        self, rng: np.random.Generator, max_iter: int, pool: ThreadPoolExecutor | None
    ) -> tuple[list[float], bool]:
        """Sweep until a sweep changes nothing or ``max_iter`` sweeps ran.

        Returns the objective gain of every sweep and whether it converged.

        Visits the groups of each sweep in a fresh random order, skipping a
        group when none of the permutations its Gram depends on changed since
        it was last solved. Consecutive solves whose Grams do not depend on
        each other (also across a sweep boundary, once the sweep is known to
        continue) run concurrently (scipy releases the GIL) and are applied
        in order: exactly the result of solving them one after the other.
        """
        gains: list[float] = []
        changed: list[bool] = []
        batch: list[tuple[int, str, np.ndarray, Future[np.ndarray] | np.ndarray]] = []

        def flush() -> None:
            for sweep, g, g_np, job in batch:
                cols = job.result() if isinstance(job, Future) else job
                gain = self.finish(g, g_np, cols)
                if gain is not None:
                    gains[sweep] += gain
                    changed[sweep] = True
            batch.clear()

        converged = not self.names
        while not converged and len(gains) < max_iter:
            sweep = len(gains)
            gains.append(0.0)
            changed.append(False)
            for idx in rng.permutation(len(self.names)):
                g = self.names[idx]
                if any(not self.independent(g, h) for _, h, _, _ in batch):
                    flush()
                stamp = self.stamp(g)
                if self.solved_at[g] == stamp:
                    self.skipped += 1  # nothing its Gram depends on changed: same solution
                    continue
                self.solved_at[g] = stamp
                self.solves += 1
                g_np = self.host_gram(g)
                threaded = pool is not None and g_np.shape[0] >= THREAD_MIN_SIZE
                batch.append((sweep, g, g_np, pool.submit(_lsa, g_np) if threaded else _lsa(g_np)))
            if not changed[sweep] or sweep + 1 == max_iter:
                flush()  # whether another sweep runs depends on the pending solves
            converged = not changed[sweep]
        flush()
        return gains, converged


def weight_matching(
    spec: PermutationSpec,
    state_a: StateDict,
    state_b: StateDict,
    *,
    max_iter: int = 100,
    seed: int = 0,
    init: Permutation | None = None,
) -> Permutation:
    """Greedy-SOBLAP weight matching: the permutation ``P`` maximizing ``sum <A, P[B]>``.

    Align with ``P.apply(state_b)``. Each sweep visits the groups in a random
    order drawn from ``numpy.random.default_rng(seed)`` and solves, for each
    group whose Gram matrix may have changed, a maximizing linear sum
    assignment against the current permutations of the other groups; a
    solution is accepted when it strictly improves the objective. Stops after
    a sweep that changes nothing (``converged``) or after ``max_iter`` sweeps.
    Starts from ``init`` (default: the identity).

    Grams are computed on the tensors' device in float32 (float64 if the
    weights are float64); only the n x n Gram goes to the CPU for scipy.

    ``P.stats`` holds ``sweeps``, ``objective`` (the trace objective after each
    sweep; never decreasing), ``initial_objective`` (of ``init``),
    ``final_objective`` (of the result; tracked from the Gram matrices, equal
    to :func:`matching_objective` up to float32 round-off), ``converged``,
    ``solves`` and ``skipped`` (assignment problems solved / skipped as
    unchanged), ``wall_time`` (seconds), ``seed`` and ``method``.

    Same result as :func:`weight_matching_naive` (the textbook algorithm,
    which solves every group in every sweep and rebuilds every Gram) up to
    float32 round-off in the Grams; faster because it skips solves whose Gram
    did not change, caches per-parameter Gram contributions (updated in place
    when a few units moved), and solves independent groups concurrently.

    Raises ``ValueError`` naming the first offending key when a state misses a
    key, has a wrong shape or width, or holds NaN/inf. Inputs are not modified.
    """
    t0 = time.perf_counter()
    spec, a, b, perms, sizes = _setup(spec, state_a, state_b, max_iter, init)
    run = _Greedy(spec, a, b, perms)
    initial = objective = _objective(spec, a, b, None if init is None else perms)
    history: list[float] = []
    rng = np.random.default_rng(seed)
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        gains, converged = run.run(rng, max_iter, pool)
    for gain in gains:
        objective += gain
        history.append(objective)
    sweeps = len(gains)
    return _result(
        spec,
        run.perms,
        {
            "method": "weight",
            "sweeps": sweeps,
            "objective": history,
            "initial_objective": initial,
            "final_objective": objective,
            "converged": converged,
            "solves": run.solves,
            "skipped": run.skipped,
            "seed": seed,
            "wall_time": time.perf_counter() - t0,
        },
    )


def _setup(
    spec: PermutationSpec, state_a: StateDict, state_b: StateDict, max_iter: int, init: Permutation | None
) -> tuple[PermutationSpec, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, int]]:
    """Validate inputs; the permuted entries on A's device in the compute dtype; initial perms."""
    _validate_pair(spec, state_a, state_b)
    _check_iter(max_iter)
    sizes = spec.group_sizes(state_a)
    _check_init(spec, init, sizes)
    device = _device_of(spec, state_a)
    dtype = _compute_dtype(spec, state_a, state_b)
    a = _prepare(spec, state_a, device, dtype)
    b = _prepare(spec, state_b, device, dtype)
    return spec, a, b, _initial_perms(spec, sizes, init, device), sizes


def weight_matching_naive(
    spec: PermutationSpec,
    state_a: StateDict,
    state_b: StateDict,
    *,
    max_iter: int = 100,
    seed: int = 0,
    init: Permutation | None = None,
) -> Permutation:
    """Textbook Greedy-SOBLAP, the reference for :func:`weight_matching`.

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


def matching_objective(
    spec: PermutationSpec, state_a: StateDict, state_b: StateDict, perm: Permutation | None = None
) -> float:
    """The trace objective ``sum_k <A_k, P[B]_k>`` (identity when ``perm`` is None).

    Sums over the state-dict entries with at least one permuted axis, in
    float64; the others add a constant independent of ``P``.
    """
    _validate_pair(spec, state_a, state_b)
    sizes = spec.group_sizes(state_a)
    _check_init(spec, perm, sizes, name="perm")
    device = _device_of(spec, state_a)
    a = _prepare(spec, state_a, device, torch.float64)
    b = _prepare(spec, state_b, device, torch.float64)
    return _objective(spec, a, b, _initial_perms(spec, sizes, perm, device))


# --------------------------------------------------------------------------- #
# Activation matching
# --------------------------------------------------------------------------- #
def _batches(data: Any, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Input batches on ``device``: a Split or tensor is sliced; an iterable yields batches."""
    if isinstance(data, Split):
        data = data.x
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            raise ValueError("data must hold a batch dimension; got a scalar tensor")
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size].to(device, non_blocking=True)
        return
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a Split, a tensor or an iterable of input batches, got {type(data).__name__}")
    for item in data:
        if isinstance(item, (tuple, list)):  # (inputs, labels) pairs
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"data yielded a {type(item).__name__}; expected input tensors (or (x, y) pairs)")
        yield item.to(device, non_blocking=True)


def _as_samples(out: torch.Tensor, module: str, *, copy: bool) -> torch.Tensor:
    """Activations ``(N, C, *spatial)`` -> ``(N * prod(spatial), C)`` float32.

    Every spatial position is a sample. With ``copy`` the result never shares
    memory with ``out`` (so later in-place operations of the network cannot
    change it).
    """
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ValueError(
            f"module {module!r} must output one tensor (N, C, ...) to be matched, got "
            f"{type(out).__name__}{'' if not isinstance(out, torch.Tensor) else f' of shape {tuple(out.shape)}'}"
        )
    x = out.detach().float().movedim(1, -1).reshape(-1, out.shape[1])
    if copy and x.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        x = x.clone()
    return x


@dataclass
class _Moments:
    """Streaming sums for the cross-covariance / correlation of one group."""

    cross: torch.Tensor  # sum_s a_s b_s^T (n x n, float64)
    sum_a: torch.Tensor
    sum_b: torch.Tensor
    sq_a: torch.Tensor
    sq_b: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, n: int, device: torch.device) -> _Moments:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(n, n), z(n), z(n), z(n), z(n))

    def add(self, xa: torch.Tensor, xb: torch.Tensor) -> None:
        self.cross += xa.T @ xb
        self.sum_a += xa.sum(0)
        self.sum_b += xb.sum(0)
        self.sq_a += (xa * xa).sum(0)
        self.sq_b += (xb * xb).sum(0)
        self.count += xa.shape[0]

    def gram(self, correlation: bool) -> torch.Tensor:
        if not correlation:
            return self.cross
        n = max(self.count, 1)
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        cov = self.cross / n - torch.outer(mean_a, mean_b)
        std_a = (self.sq_a / n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sq_b / n - mean_b**2).clamp_min(0).sqrt()
        denom = torch.outer(std_a, std_b)
        return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))


#: How :func:`activation_matching` reads a group whose ``spec.activations``
#: lists several modules (a residual stream): ``"last"`` hooks only the last
#: one in forward order (Sharma et al. App. A), ``"sum"`` hooks every one and
#: sums their moments.
STREAM_MODES: tuple[StreamMode, ...] = ("last", "sum")


def _check_stream(stream: str) -> str:
    if stream not in STREAM_MODES:
        raise ValueError(f"unknown stream mode {stream!r}; use one of {', '.join(map(repr, STREAM_MODES))}")
    return stream


def activation_modules(spec: PermutationSpec, stream: StreamMode = "last") -> dict[str, tuple[str, ...]]:
    """Per group (depth order), the modules whose outputs activation matching reads.

    ``spec.activations[group]`` lists, in forward order, every module whose
    output carries the group's units. ``stream="last"`` (the default) keeps
    only the last of them: the output of the last operation of the group
    (Sharma et al. App. A), e.g. the ReLU after a layer, or the output of the
    last block of a ResNet stage for the stage's residual stream.
    ``stream="sum"`` keeps all of them (for a residual stream: the stem or
    projection-block output and every block output of the stage), whose
    moments :func:`activation_matching` sums. Groups listing one module read
    the same module in both modes.

    Raises ``ValueError`` for an unknown mode or a group without activations.
    """
    _check_stream(stream)
    out: dict[str, tuple[str, ...]] = {}
    for g in spec.groups:
        names = tuple(spec.activations.get(g, ()))
        if not names:
            raise ValueError(
                f"permutation spec names no activation module for group {g!r}; "
                "activation matching needs spec.activations for every group"
            )
        out[g] = names[-1:] if stream == "last" else names
    return out


def _activation_owner(spec: PermutationSpec, model: nn.Module, stream: str) -> dict[str, str]:
    """module name -> group for the modules :func:`activation_modules` picks, checked against the model."""
    modules = dict(model.named_modules())
    owner: dict[str, str] = {}
    for g, names in activation_modules(spec, stream).items():
        for m in names:
            if m not in modules:
                raise ValueError(f"spec.activations[{g!r}] names module {m!r}, which the model does not have")
            if m in owner:
                raise ValueError(f"module {m!r} is listed as the activation of groups {owner[m]!r} and {g!r}")
            owner[m] = g
    return owner


def _model_copy(model: nn.Module, state: StateDict, device: torch.device) -> nn.Module:
    m = copy.deepcopy(model).to(device)
    m.load_state_dict({k: v.to(device) for k, v in state.items()})
    return m.eval()


def activation_matching(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    data: Split | torch.Tensor | Iterable[torch.Tensor],
    *,
    batches: int | None = None,
    batch_size: int = 500,
    correlation: bool = False,
    stream: StreamMode = "last",
    device: str | torch.device | None = None,
) -> Permutation:
    """Activation matching: per group, the assignment maximizing the activations' similarity.

    ``model`` gives the architecture and its permutation spec
    (``model.permutation_spec()``); it is copied, never modified. ``state_a``
    and ``state_b`` are loaded into two copies in eval mode (BatchNorm uses
    running statistics) and run on the same inputs under
    ``torch.inference_mode()``. ``data`` is a :class:`~lmccheck.data.Split`
    or a tensor of inputs (sliced in ``batch_size`` batches), or an iterable
    of input batches (or ``(x, y)`` pairs); ``batches`` caps the number of
    batches. Activations are accumulated batch by batch (only sums are kept),
    so the result does not depend on the batching or the order of the data
    (up to float round-off).

    Which activations a group reads (:func:`activation_modules`): the outputs
    of the modules ``spec.activations[group]`` lists, in forward order; conv
    outputs count each spatial position as a sample.

    * ``stream="last"`` (default; Sharma et al. App. A, "the output of the
      last operation that occurs in a given permutation"): only the last
      listed module, e.g. the ReLU after a layer and its norm; for a ResNet
      residual stream (one group per stage) the output of the stage's last
      block.
    * ``stream="sum"``: every listed module, their moments summed; for a
      residual stream that is the stem (or projection block) output and
      every block output of the stage, each sample of each module counting
      once. Other groups list one module and read it in both modes.

    The Gram of a group is ``sum_s a_s b_s^T`` (``correlation=False``: the
    inner product, i.e. minimizing the L2 distance) or the Pearson correlation
    matrix (``correlation=True``). One maximizing assignment per group, in
    depth order. Align with ``P.apply(state_b)`` (convention of
    :func:`weight_matching`).

    ``P.stats``: ``examples``, ``batches``, ``samples`` (per group),
    ``objective`` and ``identity_objective`` (per group: the Gram's trace
    under ``P`` and under the identity, divided by the samples when
    ``correlation`` is False, i.e. mean matched inner product per sample),
    ``correlation``, ``stream``, ``modules`` (per group, the hooked module
    names), ``wall_time``, ``method``.
    """
    t0 = time.perf_counter()
    _check_stream(stream)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    spec = permutation_spec(model)
    _validate_pair(spec, state_a, state_b)
    check_spec(spec, model)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batches is not None and (not isinstance(batches, int) or batches < 1):
        raise ValueError(f"batches must be None or a positive integer, got {batches!r}")
    dev = torch.device(device) if device is not None else _device_of(spec, state_a)
    owner = _activation_owner(spec, model, stream)
    sizes = spec.group_sizes(state_a)
    moments = {g: _Moments.zeros(n, dev) for g, n in sizes.items()}
    model_a = _model_copy(model, state_a, dev)
    model_b = _model_copy(model, state_b, dev)
    examples, n_batches = _stream(model_a, model_b, owner, moments, sizes, _batches(data, batch_size, dev), batches)
    if examples == 0:
        raise ValueError("data yielded no examples; activation matching needs inputs")

    perms: dict[str, torch.Tensor] = {}
    objective: dict[str, float] = {}
    identity: dict[str, float] = {}
    for g in spec.groups:  # depth order; each group's activations depend on its permutation only
        m = moments[g]
        g_np = _to_numpy(m.gram(correlation), g)
        cols = _lsa(g_np)
        perms[g] = torch.as_tensor(cols, dtype=torch.long)
        norm = 1.0 if correlation else float(max(m.count, 1))
        ar = np.arange(len(cols))
        objective[g] = float(g_np[ar, cols].sum()) / norm
        identity[g] = float(np.trace(g_np)) / norm
    stats = {
        "method": "activation",
        "examples": examples,
        "batches": n_batches,
        "samples": {g: moments[g].count for g in spec.groups},
        "objective": objective,
        "identity_objective": identity,
        "correlation": correlation,
        "stream": stream,
        "modules": {g: list(names) for g, names in activation_modules(spec, stream).items()},
        "wall_time": time.perf_counter() - t0,
    }
    return _result(spec, perms, stats)


def _stream(
    model_a: nn.Module,
    model_b: nn.Module,
    owner: Mapping[str, str],
    moments: Mapping[str, _Moments],
    sizes: Mapping[str, int],
    inputs: Iterator[torch.Tensor],
    max_batches: int | None,
) -> tuple[int, int]:
    """Run both models batch by batch; accumulate per-group moments from hooks."""
    stash: dict[str, list[torch.Tensor]] = {m: [] for m in owner}

    def hook_a(name: str) -> Callable[..., None]:
        def fn(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            x = _as_samples(out, name, copy=True)
            if x.shape[1] != sizes[owner[name]]:
                raise ValueError(
                    f"module {name!r} outputs {x.shape[1]} channels but group {owner[name]!r} has "
                    f"{sizes[owner[name]]} units; the spec's activation module is wrong"
                )
            stash[name].append(x)

        return fn

    def hook_b(name: str) -> Callable[..., None]:
        def fn(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if not stash[name]:
                raise RuntimeError(f"module {name!r} ran more often in network B than in network A")
            moments[owner[name]].add(stash[name].pop(0), _as_samples(out, name, copy=False))

        return fn

    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    handles = [mods_a[m].register_forward_hook(hook_a(m)) for m in owner]
    handles += [mods_b[m].register_forward_hook(hook_b(m)) for m in owner]
    examples = n = 0
    try:
        with torch.inference_mode():
            for x in inputs:
                if max_batches is not None and n >= max_batches:
                    break
                model_a(x)
                model_b(x)
                for v in stash.values():
                    v.clear()
                examples += int(x.shape[0])
                n += 1
    finally:
        for h in handles:
            h.remove()
    return examples, n


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


#: Matchers by name, for the CLI.
MATCHERS: dict[str, Callable[..., Permutation]] = {
    "weight": weight_matching,
    "activation": activation_matching,
}
