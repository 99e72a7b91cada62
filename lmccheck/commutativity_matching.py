"""Commutativity matching: a permutation that lowers Zhou et al.'s commutativity objective (Eq. 9) directly.

Zhou et al. §5.2 read weight and activation matching as two halves of one objective; §6 leaves open whether
enforcing commutativity itself does better. For an MLP with hidden permutations ``P_1 .. P_{L-1}`` (``P_0 =
P_L = I``), Eq. (9)'s objective is

    J(pi) = sum_l || (W_A^l - P_l W_B^l P_{l-1}^T) (H_A^{l-1} - P_{l-1} H_B^{l-1}) ||_F^2,

with ``H^0 = X`` in both networks (so the first term is 0). App. A.3 shows that each ``P_l`` enters two terms
as a quadratic assignment problem (a linear term and a bilinear cross term), NP-hard in general.
:func:`commutativity_matching` is a heuristic search, run from one or more starting permutations; for each:

1. **Relaxation.** Block-coordinate Frank-Wolfe on the Birkhoff polytope: each sweep (at most ``sweeps``; it
   stops after a sweep that changes nothing) visits the groups in order and, for one group with the others
   fixed, relaxes its permutation matrix to a doubly stochastic one and runs ``fw_steps`` Frank-Wolfe steps on
   Eq. (9) itself, the squared-norm form above (not the trace form that FAQ, Vogelstein et al., relaxes): the
   gradient in closed form, a linear assignment for the direction, an exact line search (the objective along
   the segment is a quartic in the step), then the nearest permutation (a linear assignment on the relaxed
   matrix). The rounded permutation replaces the group's only when ``J`` at it is strictly lower; the stats
   count visits whose rounding returned the group's permutation (``rounded_back``), gave a worse or equal one
   (``rejected_fw``) or a better one (``accepted_fw``). ``P.stats["first_step_slope"]`` records, per start and
   group, the slope of the first step, ``min_Q <grad J(P0), Q - P0>`` over permutations ``Q`` (minus the
   Frank-Wolfe gap at the start: 0 when the start is stationary for the relaxed group problem, negative when
   Frank-Wolfe has a descent direction there), and ``first_step_length`` the line-search step taken.
2. **2-opt.** For each group, the change of ``J`` under every transposition of two of its units (only the two
   terms of Eq. (9) that the group enters change; all ``n (n - 1) / 2`` changes of a group come from a few
   ``n x n`` Gram matrices, which a swap updates in ``O(n^2)``); improving swaps are taken, best first, each
   re-evaluated against the current state before it is applied, until none improves by more than the tolerance
   ``SWAP_RTOL * J + SWAP_ATOL * S`` (``S`` an upper bound on the size of the terms), checked on matrices
   rebuilt from scratch. A group is visited again after a neighbour changed. After each visit ``J`` is
   recomputed exactly (float64) and the visit is undone unless ``J`` strictly dropped. When the search ends
   because no group has an improving swap (``local_optimum``), the result is a 2-opt local optimum with respect
   to single transpositions within a group, up to that tolerance; nothing more is claimed (it need not be a
   global optimum, and is not claimed to be stationary for the relaxation).

Starts: ``init`` (activation matching's by default), any permutations passed as ``starts`` (e.g. weight
matching's, or perturbed ones from :func:`random_transpositions`), and optionally (``barycenter=True``) the
barycenter: every group's matrix at ``11^T / n``, ``sweeps`` sweeps of the same block-coordinate Frank-Wolfe
with all groups relaxed (a group's neighbours are relaxed matrices too), then every group rounded to the
nearest permutation, which is then searched like the others. The permutation with the lowest final ``J`` is
returned (the first start among ties, ``init`` first); ``J`` never increases along any start's search.

The features ``H`` are the post-activations of the first ``n_examples`` training examples, held in memory
(``n_examples x width`` per layer and network), which is what an MLP of lmccheck's CPU tier needs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .data import Split
from .activation_matching import activation_matching
from .permutation import Permutation, StateDict, check_state, permutation_spec, state_of

__all__ = ["commutativity_matching", "commutativity_objective", "random_transpositions"]

#: examples whose features enter the objective
DEFAULT_EXAMPLES = 1000
#: Frank-Wolfe steps per group and visit
DEFAULT_FW_STEPS = 20
#: a swap is taken only if it lowers J by more than SWAP_RTOL * J + SWAP_ATOL * S (S: see _Problem.scale)
SWAP_RTOL = 1e-9
SWAP_ATOL = 1e-13
#: 2-opt passes over the groups at most (a pass visits only groups whose neighbourhood changed)
DEFAULT_MAX_PASSES = 100


def _mlp_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """The weight layers (names, in order, head last) and the groups between them, for lmccheck's MLP."""
    from .models.mlp import MLP

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
    for i in range(len(cast(nn.ModuleList, model.layers))):  # an MLP's hidden layers (see _mlp_layers)
        h = (h @ state[f"layers.{i}.weight"].double().T + state[f"layers.{i}.bias"].double()).relu()
        out.append(h)
    return out


def _lap(score: np.ndarray, maximize: bool) -> np.ndarray:
    """The take-index vector ``q`` of the assignment optimizing ``sum_i score[i, q[i]]``."""
    rows, cols = linear_sum_assignment(score, maximize=maximize)
    out = np.empty(len(rows), dtype=np.int64)
    out[rows] = cols
    return out


class _Problem:
    """Eq. (9)'s data for one pair, in row form: features ``H`` (n, d), weights ``W`` (out, in), float64.

    A permutation of group ``g`` is a take-index vector ``idx`` (matrix ``P[i, idx[i]] = 1``); group ``g`` sits
    between weight layers ``g`` and ``g + 1``, and weight layer ``l`` reads the features ``H^l`` (``H^0 = X``).
    """

    def __init__(self, names: list[str], sa: StateDict, sb: StateDict, fa: list[torch.Tensor],
                 fb: list[torch.Tensor], x: torch.Tensor) -> None:
        self.wa = [sa[f"{n}.weight"].double() for n in names]
        self.wb = [sb[f"{n}.weight"].double() for n in names]
        x = x.reshape(len(x), -1).double()
        self.ha = [x, *fa]  # H^0 .. H^{L-1}
        self.hb = [x, *fb]
        self.n_groups = len(names) - 1
        self._np: dict[str, list[np.ndarray]] = {}
        self._gram: dict[tuple[str, int], np.ndarray] = {}

    def term(self, layer: int, out: torch.Tensor | None, inp: torch.Tensor | None) -> float:
        """|| (H_A - H_B P_in^T)(W_A - P_out W_B P_in^T)^T ||^2 for weight layer ``layer`` (None: identity)."""
        if layer == 0:
            return 0.0  # H^0 = X in both networks
        hb, wb = self.hb[layer], self.wb[layer]
        if inp is not None:
            hb, wb = hb[:, inp], wb[:, inp]
        if out is not None:
            wb = wb[out]
        return float((((self.ha[layer] - hb) @ (self.wa[layer] - wb).T) ** 2).sum())

    def total(self, idx: Sequence[torch.Tensor | np.ndarray]) -> float:
        """J for the groups' take-index vectors ``idx`` (exact, float64)."""
        full = [None, *(torch.as_tensor(i, dtype=torch.long) for i in idx), None]
        return sum(self.term(layer, full[layer + 1], full[layer]) for layer in range(len(self.wa)))

    def scale(self) -> float:
        """An upper bound on the size of every term: sum_l (|H_A| + |H_B|)^2 (|W_A| + |W_B|)^2 (Frobenius norms)."""
        return float(sum(((self.ha[k].norm() + self.hb[k].norm()) * (self.wa[k].norm() + self.wb[k].norm())) ** 2
                         for k in range(1, len(self.wa))))

    # -- numpy views and the Gram matrices that do not depend on any permutation (cached per group)
    def arrays(self, name: str) -> list[np.ndarray]:
        if name not in self._np:
            self._np[name] = [t.numpy() for t in getattr(self, name)]
        return self._np[name]

    def gram(self, kind: str, g: int) -> np.ndarray:
        """``aa`` = H_A^T H_A, ``ab`` = H_A^T H_B, ``bb`` = H_B^T H_B (features after group g), ``ww`` = W_A^T W_A,
        ``vv`` = W_B^T W_B (weights of the layer after group g); all n x n in group g's units."""
        key = (kind, g)
        if key not in self._gram:
            ha, hb, wa, wb = (self.arrays(n)[g + 1] for n in ("ha", "hb", "wa", "wb"))
            left, right = {"aa": (ha, ha), "ab": (ha, hb), "bb": (hb, hb), "ww": (wa, wa), "vv": (wb, wb)}[kind]
            self._gram[key] = left.T @ right
        return self._gram[key]


# ----------------------------------------------------------------------------------------- Frank-Wolfe
def _dense(idx: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The permutation matrix of a take-index vector, float32."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    m = torch.zeros(len(idx), len(idx), dtype=torch.float32)
    m[torch.arange(len(idx)), idx] = 1.0
    return m


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frobenius inner product <a, b>."""
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def _quartic_min(c: Sequence[float]) -> float:
    """argmin over [0, 1] of c0 + c1 t + c2 t^2 + c3 t^3 + c4 t^4 (the first minimizer among ties: 0 first)."""
    deriv = [4 * c[4], 3 * c[3], 2 * c[2], c[1]]
    while deriv and deriv[0] == 0.0:
        deriv = deriv[1:]
    ts = [0.0, 1.0]
    if len(deriv) > 1:
        ts += [float(r.real) for r in np.roots(deriv) if abs(r.imag) < 1e-9 and 0.0 < r.real < 1.0]
    values = [float(np.polyval(list(reversed(c)), t)) for t in ts]
    return ts[int(np.argmin(values))]


class _GroupRelaxation:
    """Eq. (9)'s two terms for group ``g`` as a function of its (relaxed) matrix ``P``, the neighbours fixed.

    Term a (weight layer g): ``||alpha - beta P^T||^2`` with ``D = H_A^g - H_B^g P_prev^T``, ``alpha = D W_A^T``,
    ``beta = D P_prev W_B^T`` (zero for the first group: ``H^0 = X``). Term b (weight layer g + 1):
    ``||U V^T||^2`` with ``U = H_A - H_B P^T``, ``V = W_A - W_B' P^T``, ``W_B' = P_next W_B``. float32.
    """

    def __init__(self, problem: _Problem, g: int, mats: list[torch.Tensor]) -> None:
        f = torch.float32
        prev = mats[g - 1] if g > 0 else None
        nxt = mats[g + 1] if g + 1 < problem.n_groups else None
        self.first = prev is None
        if prev is not None:
            d = (problem.ha[g] - problem.hb[g] @ prev.double().T).to(f)
            self.alpha = d @ problem.wa[g].to(f).T
            self.beta = (d @ prev) @ problem.wb[g].to(f).T
        self.ha, self.hb = problem.ha[g + 1].to(f), problem.hb[g + 1].to(f)
        self.wa = problem.wa[g + 1].to(f)
        self.wn = problem.wb[g + 1].to(f) if nxt is None else nxt @ problem.wb[g + 1].to(f)

    def run(self, p: torch.Tensor, steps: int) -> tuple[torch.Tensor, float, float, int]:
        """Frank-Wolfe from ``p``: the relaxed matrix, the first step's slope and length, steps taken."""
        p = p.clone()
        e = None if self.first else self.alpha - self.beta @ p.T
        u, v = self.ha - self.hb @ p.T, self.wa - self.wn @ p.T
        m = u @ v.T
        slope0, step0, taken = 0.0, 0.0, 0
        for k in range(steps):
            grad = -2.0 * (v.T @ (m.T @ self.hb) + (u.T @ m) @ self.wn)
            if e is not None:
                grad -= 2.0 * (e.T @ self.beta)
            g64 = grad.double().numpy()
            q = _lap(g64, maximize=False)
            rows = np.arange(len(q))
            at_p = float((g64 * p.double().numpy()).sum())
            slope = min(float(g64[rows, q].sum()), at_p) - at_p  # the minimum over Q includes P itself
            u1 = (self.ha - u) - self.hb[:, q]
            v1 = (self.wa - v) - self.wn[:, q]
            m1, m2 = u1 @ v.T + u @ v1.T, u1 @ v1.T
            c = [_dot(m, m), 2 * _dot(m, m1), _dot(m1, m1) + 2 * _dot(m, m2), 2 * _dot(m1, m2), _dot(m2, m2)]
            if e is not None:
                e1 = (self.alpha - e) - self.beta[:, q]
                c[0] += _dot(e, e)
                c[1] += 2 * _dot(e, e1)
                c[2] += _dot(e1, e1)
            t = _quartic_min(c) if slope < 0 else 0.0
            if k == 0:
                slope0, step0 = slope, t
            if t == 0.0:
                break
            p += t * (_dense(q) - p)
            u, v, m = u + t * u1, v + t * v1, m + t * m1 + (t * t) * m2
            if e is not None:
                e = e + t * e1
            taken += 1
        return p, slope0, step0, taken


# ----------------------------------------------------------------------------------------- 2-opt
def _pairwise(q: np.ndarray) -> np.ndarray:
    """``q[i, j] = Q_ii + Q_jj - Q_ij - Q_ji``, the quadratic form of ``Q`` at ``e_i - e_j``."""
    d = np.diag(q)
    return (d[:, None] + d[None, :]) - (q + q.T)


class _SwapSearch:
    """Exact changes of J under the transpositions of group ``g``'s units, the other groups fixed (float64).

    In group g's positions ``i`` (A's units), with ``B = H_B[:, idx]`` and ``G = W_B'[:, idx]`` the features and
    next-layer weights of the units B assigns to them: ``X = H_A^T B``, ``GB = B^T B``, ``GG = G^T G``,
    ``Y = G^T W_A``, ``K = H_A^T M G``, ``L = B^T M W_A`` (``M = U V^T`` of term b, written through these Grams)
    and ``Xa = alpha^T beta[:, idx]`` for term a. Swapping positions i and j changes term b's ``M`` by
    ``a e^T + d c^T`` (``a``, ``c``: differences of A's columns i and j; ``d``, ``e``: of B's and G's), hence

        dJ(i, j) = 2 q(Xa) + 2 (q(K) + q(L)) + q(GAA) q(GG) + q(GB) q(GW) + 2 q(X) q(Y)

    with ``q`` as in :func:`_pairwise`; a swap updates every matrix in O(n^2).
    """

    def __init__(self, problem: _Problem, g: int, idx: list[np.ndarray]) -> None:
        self.problem, self.g, self.groups = problem, g, idx
        self.gaa, self.gw = problem.gram("aa", g), problem.gram("ww", g)
        self.q_gaa, self.q_gw = _pairwise(self.gaa), _pairwise(self.gw)
        self.rebuild()

    def rebuild(self) -> None:
        """All matrices from scratch, at the current permutations."""
        p, g, idx = self.problem, self.g, self.groups[self.g]
        if g > 0:
            prev = self.groups[g - 1]
            d = p.arrays("ha")[g] - p.arrays("hb")[g][:, prev]
            alpha, beta = d @ p.arrays("wa")[g].T, d @ p.arrays("wb")[g][:, prev].T
            self.xa = alpha.T @ beta[:, idx]
        else:
            self.xa = None  # H^0 = X in both networks: term a is 0
        wn = p.arrays("wb")[g + 1]
        if g + 1 < p.n_groups:
            wn = wn[self.groups[g + 1]]
        self.x = p.gram("ab", g)[:, idx]
        self.gb = p.gram("bb", g)[np.ix_(idx, idx)]
        self.gg = p.gram("vv", g)[np.ix_(idx, idx)]  # W_B'^T W_B' = W_B^T W_B: P_next drops out
        self.y = (wn.T @ p.arrays("wa")[g + 1])[idx]
        self.k = (self.gaa - self.x) @ (self.y.T - self.gg)
        self.l = (self.x.T - self.gb) @ (self.gw - self.y)

    def deltas(self) -> np.ndarray:
        """The change of J for every transposition (i, j), an n x n symmetric matrix (diagonal 0)."""
        out = 2.0 * (_pairwise(self.k) + _pairwise(self.l)) + self.q_gaa * _pairwise(self.gg) \
            + _pairwise(self.gb) * self.q_gw + 2.0 * _pairwise(self.x) * _pairwise(self.y)
        if self.xa is not None:
            out += 2.0 * _pairwise(self.xa)
        return out

    def delta(self, i: int, j: int) -> float:
        """The change of J for the transposition (i, j), from the current matrices."""

        def q(m: np.ndarray) -> float:
            return float(m[i, i] + m[j, j] - m[i, j] - m[j, i])

        out = 2.0 * (q(self.k) + q(self.l)) + q(self.gaa) * q(self.gg) + q(self.gb) * q(self.gw) \
            + 2.0 * q(self.x) * q(self.y)
        return out + 2.0 * q(self.xa) if self.xa is not None else out

    def swap(self, i: int, j: int) -> None:
        """Apply the transposition of positions i and j to the group's permutation and every matrix."""
        x, y, gg, gb = self.x, self.y, self.gg, self.gb
        left = np.stack([x[:, i] - x[:, j], self.gaa[:, i] - self.gaa[:, j]], axis=1)
        self.k += left @ np.stack([y[:, i] - y[:, j], gg[i] - gg[j]])
        left = np.stack([x[i] - x[j], gb[:, i] - gb[:, j]], axis=1)
        self.l += left @ np.stack([y[i] - y[j], self.gw[i] - self.gw[j]])
        ij, ji = [i, j], [j, i]
        for m in (self.k, self.x, gb, gg) + (() if self.xa is None else (self.xa,)):
            m[:, ij] = m[:, ji]
        for m in (self.l, gb, gg, y):
            m[ij] = m[ji]
        perm = self.groups[self.g]
        perm[ij] = perm[ji]


def _two_opt_group(search: _SwapSearch, value: float, tol: Any, limit: int) -> tuple[int, bool]:
    """Improving swaps of one group, best first, each re-evaluated on the current matrices before it is applied.

    Stops when a round on freshly rebuilt matrices (no drift from the O(n^2) updates) applies no swap, or after
    ``limit`` swaps. Returns the swaps taken and whether it stopped because no swap improves by more than
    ``tol(J)`` (J as tracked by the deltas).
    """
    swaps, fresh, n = 0, True, len(search.groups[search.g])
    iu, ju = np.triu_indices(n, 1)
    while swaps < limit:
        vals = search.deltas()[iu, ju]
        cand = np.flatnonzero(vals < -tol(value))
        cand = cand[np.argsort(vals[cand], kind="stable")][: 4 * n]
        taken = 0
        for c in cand:
            i, j = int(iu[c]), int(ju[c])
            change = search.delta(i, j)
            if change < -tol(value):
                search.swap(i, j)
                value += change
                swaps, taken = swaps + 1, taken + 1
                if swaps >= limit:
                    break
        if taken == 0:
            if fresh:
                return swaps, cand.size == 0
            search.rebuild()
        fresh = taken == 0
    return swaps, False


# ----------------------------------------------------------------------------------------- driver
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


def commutativity_objective(model: nn.Module, state_a: StateDict | nn.Module, state_b: StateDict | nn.Module,
                            data: Split | torch.Tensor, perm: Permutation | None = None, *,
                            n_examples: int = DEFAULT_EXAMPLES) -> float:
    """Eq. (9)'s J for ``perm`` (None: the identity) on the first ``n_examples`` inputs of ``data``."""
    names, groups = _mlp_layers(model)
    sa, sb, x = _inputs(model, state_a, state_b, data, n_examples)
    problem = _Problem(names, sa, sb, _features(model, sa, x), _features(model, sb, x), x)
    if perm is None:
        return problem.total([torch.arange(int(sa[f"{n}.weight"].shape[0])) for n in names[:-1]])
    return problem.total([perm.perms[g] for g in groups])


def random_transpositions(perm: Permutation, swaps: int, seed: int) -> Permutation:
    """``perm`` with ``swaps`` random transpositions of two units applied in every group (a perturbed start)."""
    gen = np.random.default_rng(seed)
    out = {}
    for g, p in perm.perms.items():
        p = p.clone()
        for _ in range(swaps if len(p) > 1 else 0):
            i, j = gen.choice(len(p), size=2, replace=False)
            p[[i, j]] = p[[j, i]]
        out[g] = p
    return Permutation(perm.spec, out)


class _Search:
    """The search from one start (see the module docstring); records its own statistics."""

    def __init__(self, problem: _Problem, order: Sequence[int], tol: Any) -> None:
        self.problem, self.order, self.tol = problem, list(order), tol

    def barycenter(self, sizes: list[int], sweeps: int, fw_steps: int) -> list[np.ndarray]:
        """Every group at 11^T / n, block-coordinate Frank-Wolfe on all of them relaxed, then rounded."""
        mats = [torch.full((n, n), 1.0 / n) for n in sizes]
        for _ in range(sweeps):
            for g in self.order:
                mats[g] = _GroupRelaxation(self.problem, g, mats).run(mats[g], fw_steps)[0]
        return [_lap(m.double().numpy(), maximize=True) for m in mats]

    def run(self, idx: list[np.ndarray], names: list[str], *, sweeps: int, fw_steps: int, two_opt: bool,
            max_passes: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        problem = self.problem
        value = problem.total(idx)
        rec: dict[str, Any] = {"objective_start": value, "objective": [value], "first_step_slope": {},
                               "first_step_length": {}, "accepted_fw": 0, "rejected_fw": 0, "rounded_back": 0,
                               "sweeps": 0}
        # 1. the relaxation, per group from its current permutation
        for sweep in range(sweeps):
            changed = False
            for g in self.order:
                mats = [_dense(i) for i in idx]
                relaxed, slope, step, _ = _GroupRelaxation(problem, g, mats).run(mats[g], fw_steps)
                if sweep == 0:
                    rec["first_step_slope"][names[g]] = slope
                    rec["first_step_length"][names[g]] = step
                candidate = _lap(relaxed.double().numpy(), maximize=True)
                if np.array_equal(candidate, idx[g]):
                    rec["rounded_back"] += 1
                    continue
                trial = [*idx[:g], candidate, *idx[g + 1:]]
                new = problem.total(trial)
                if new < value:
                    idx, value, changed = trial, new, True
                    rec["accepted_fw"] += 1
                    rec["objective"].append(value)
                else:
                    rec["rejected_fw"] += 1
            rec["sweeps"] += 1
            if not changed:
                break
        rec["objective_fw"] = value
        rec["seconds_fw"] = time.perf_counter() - t0
        # 2. 2-opt
        t1 = time.perf_counter()
        idx = [i.copy() for i in idx]
        swaps = {names[g]: 0 for g in self.order}
        unsettled: set[int] = set()
        dirty, passes, reverted = set(self.order), 0, 0
        while two_opt and dirty and passes < max_passes:
            passes += 1
            for g in self.order:
                if g not in dirty:
                    continue
                dirty.discard(g)
                saved = idx[g].copy()
                n_swaps, done = _two_opt_group(_SwapSearch(problem, g, idx), value, self.tol, limit=50 * len(saved))
                if n_swaps == 0:  # done, or stalled: a candidate the re-evaluation did not confirm
                    (unsettled.discard if done else unsettled.add)(g)
                    continue
                new = problem.total(idx)
                if new < value:
                    value = new
                    swaps[names[g]] += n_swaps
                    rec["objective"].append(value)
                    dirty.update(h for h in (g - 1, g + 1) if 0 <= h < problem.n_groups)  # their terms changed
                    if not done:  # stopped by the cap, not at a local optimum of this group
                        dirty.add(g)
                    unsettled.discard(g)
                else:  # the tracked improvement did not survive the exact recomputation: undo the visit
                    idx[g] = saved
                    reverted += 1
                    unsettled.add(g)
        rec.update(objective_final=value, swaps=swaps, accepted_swaps=sum(swaps.values()), two_opt_passes=passes,
                   two_opt_reverted=reverted,
                   local_optimum=bool(two_opt and not dirty and not unsettled),
                   seconds_two_opt=time.perf_counter() - t1, seconds=time.perf_counter() - t0)
        rec["idx"] = idx
        return rec


def commutativity_matching(
    model: nn.Module,
    state_a: StateDict | nn.Module,
    state_b: StateDict | nn.Module,
    data: Split | torch.Tensor,
    *,
    init: Permutation | None = None,
    starts: Sequence[Permutation] = (),
    barycenter: bool = False,
    n_examples: int = DEFAULT_EXAMPLES,
    sweeps: int = 3,
    fw_steps: int = DEFAULT_FW_STEPS,
    order: Sequence[int] | None = None,
    two_opt: bool = True,
    max_passes: int = DEFAULT_MAX_PASSES,
) -> Permutation:
    """The permutation ``P`` (apply it to B) with the lowest Eq. (9) objective that the search finds.

    Searches (relaxation, then 2-opt; see the module docstring) from ``init`` (default: activation matching on
    the same ``data``), from every permutation in ``starts``, and, if ``barycenter``, from the rounded relaxation
    started at the barycenter. ``sweeps`` caps the Frank-Wolfe sweeps per start (a start stops when a sweep
    changes nothing), ``fw_steps`` the steps per group and visit; ``order`` the group order; ``two_opt=False``
    skips the 2-opt phase; ``max_passes`` caps its passes.

    ``P.stats``: ``objective`` (J along the returned start's search: its start, every accepted Frank-Wolfe step,
    every 2-opt group visit that was kept; never increasing), ``objective_init`` (J at ``init``),
    ``objective_fw`` and ``objective_final`` (J after the relaxation and at ``P``), ``accepted`` (= ``accepted_fw``
    + ``accepted_swaps``), ``sweeps``, ``rounded_back`` and ``rejected_fw`` (relaxation visits whose rounding
    returned the group's permutation, or gave one with J not lower),
    ``swaps`` (per group), ``two_opt_passes``, ``local_optimum`` (the 2-opt phase ended because no transposition
    within a group improves by more than the tolerance ``swap_tolerance``), ``start`` (the name of the start that
    won: ``init``, ``start1`` .. for ``starts``, ``barycenter``), ``first_step_slope`` and
    ``first_step_length`` (per start name, per group: ``min_Q <grad J(P0), Q - P0>`` over permutations and the
    line-search step, at the first Frank-Wolfe step of each group), ``starts`` (every start's record:
    ``objective_start``, ``objective_fw``, ``objective_final``, ...), ``examples``, ``seconds``.
    """
    t0 = time.perf_counter()
    names, groups = _mlp_layers(model)
    if sweeps < 1 or fw_steps < 1 or max_passes < 1:
        raise ValueError(f"need sweeps >= 1, fw_steps >= 1 and max_passes >= 1, got {sweeps}, {fw_steps}, "
                         f"{max_passes}")
    sa, sb, x = _inputs(model, state_a, state_b, data, n_examples)
    spec = permutation_spec(model)
    sizes = spec.group_sizes(sa)
    for p in [*([] if init is None else [init]), *starts]:
        if p.sizes != sizes:
            raise ValueError(f"a start permutes the groups {p.sizes} but the networks have {sizes}; pass a "
                             "permutation of these networks' units (e.g. activation matching's)")
    if init is None:
        init = activation_matching(model, sa, sb, x)
    order = list(order) if order is not None else list(range(len(groups)))
    if sorted(set(order)) != sorted(order) or any(not 0 <= g < len(groups) for g in order):
        raise ValueError(f"order must list distinct group indices in 0..{len(groups) - 1}, got {order}")
    problem = _Problem(names, sa, sb, _features(model, sa, x), _features(model, sb, x), x)
    scale = problem.scale()

    def tol(value: float) -> float:
        return SWAP_RTOL * abs(value) + SWAP_ATOL * scale

    search = _Search(problem, order, tol)
    begin = {"init": [init.perms[g].numpy().copy() for g in groups]}
    for k, p in enumerate(starts):
        begin[f"start{k + 1}"] = [p.perms[g].numpy().copy() for g in groups]
    if barycenter:
        begin["barycenter"] = search.barycenter([sizes[g] for g in groups], sweeps, fw_steps)
    records = {name: search.run(idx, groups, sweeps=sweeps, fw_steps=fw_steps, two_opt=two_opt,
                                max_passes=max_passes) for name, idx in begin.items()}
    best = min(records, key=lambda n: records[n]["objective_final"])  # the first among ties: init first
    rec = records[best]
    perm = Permutation(spec, {g: torch.from_numpy(i.copy()) for g, i in zip(groups, rec["idx"], strict=True)})
    keep = ("objective_start", "objective_fw", "objective_final", "accepted_fw", "rejected_fw", "rounded_back",
            "sweeps", "swaps",
            "accepted_swaps", "two_opt_passes", "two_opt_reverted", "local_optimum", "seconds_fw", "seconds_two_opt",
            "seconds")
    perm.stats = {
        "method": "commutativity", "start": best, "objective": rec["objective"],
        "objective_init": records["init"]["objective_start"], "objective_fw": rec["objective_fw"],
        "objective_final": rec["objective_final"], "accepted": rec["accepted_fw"] + rec["accepted_swaps"],
        **{k: rec[k] for k in ("accepted_fw", "rejected_fw", "accepted_swaps", "rounded_back", "sweeps", "swaps",
                               "two_opt_passes", "local_optimum")},
        "first_step_slope": {n: r["first_step_slope"] for n, r in records.items()},
        "first_step_length": {n: r["first_step_length"] for n, r in records.items()},
        "starts": {n: {k: r[k] for k in keep} for n, r in records.items()},
        "swap_tolerance": {"rtol": SWAP_RTOL, "atol": SWAP_ATOL * scale},
        "examples": int(len(x)), "fw_steps": fw_steps, "seconds": time.perf_counter() - t0,
    }
    return perm
