"""Weight matching: Greedy-SOBLAP (Sharma et al. 2024, Algorithm 1; Ainsworth et al. 2023).

``weight_matching(spec, A, B)`` returns the permutation ``P`` that aligns
``B`` onto ``A`` (convention: :mod:`lmccheck.matching`).

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
algorithm (``weight_matching_naive`` in ``tests/naive_matching.py`` is that
textbook version, kept as the reference), but

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
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .matching import (
    _accept,
    _check_init,
    _compute_dtype,
    _device_of,
    _gain,
    _initial_perms,
    _lsa,
    _permuted_keys,
    _prepare,
    _result,
    _to_numpy,
    _validate_pair,
)
from .permutation import Permutation, PermutationSpec, StateDict

__all__ = ["matching_objective", "weight_matching"]


# --------------------------------------------------------------------------- #
# The objective and small helpers
# --------------------------------------------------------------------------- #
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
        static = self.static[g]
        parts = [] if static is None else [static]
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
                big = g_np.shape[0] >= THREAD_MIN_SIZE
                job = pool.submit(_lsa, g_np) if pool is not None and big else _lsa(g_np)
                batch.append((sweep, g, g_np, job))
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

    Same result as ``weight_matching_naive`` (``tests/naive_matching.py``:
    the textbook algorithm, which solves every group in every sweep and
    rebuilds every Gram) up to
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
