"""Barrier arithmetic: the alpha and simplex grids, Eq. (1) on a curve or a simplex, and the result records.

Pure Python (no torch): a barrier is the supremum over the grid of the curve minus the straight line (or plane)
through the endpoints' (vertices') values, Sharma et al. Eq. (1) and Def. 4.2. :mod:`lmccheck.interpolation`
evaluates the curves; this module turns them into barriers and records.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

__all__ = [
    "BarrierResult",
    "SimplexResult",
    "alpha_grid",
    "barrier_from_curve",
    "barrier_from_simplex",
    "simplex_grid",
]


# ---------------------------------------------------------------- barrier arithmetic
def alpha_grid(alphas: int | Sequence[float]) -> list[float]:
    """The alpha grid: ``n`` evenly spaced values in [0, 1] inclusive, or a checked sequence.

    A sequence must be strictly increasing, within [0, 1], and start at 0 and
    end at 1 (the barrier's line joins the endpoints).
    """
    if isinstance(alphas, bool):
        raise TypeError("alphas must be an int or a sequence of floats, not a bool")
    if isinstance(alphas, numbers.Integral):
        alphas = int(alphas)
        if alphas < 2:
            raise ValueError(f"need at least 2 alphas (the endpoints 0 and 1), got {alphas}")
        return [i / (alphas - 1) for i in range(alphas)]
    grid = [float(a) for a in cast(Sequence[float], alphas)]
    if len(grid) < 2:
        raise ValueError(f"need at least 2 alphas (the endpoints 0 and 1), got {grid}")
    for a in grid:
        if not (0.0 <= a <= 1.0):  # also rejects NaN
            raise ValueError(f"alpha {a} is outside [0, 1]; interpolation weights must lie in [0, 1]")
    if grid[0] != 0.0 or grid[-1] != 1.0:
        raise ValueError(
            "alphas must start at 0 and end at 1 (the endpoints define the barrier's line), "
            f"got {grid[0]} ... {grid[-1]}"
        )
    for prev, cur in zip(grid, grid[1:]):
        if cur <= prev:
            raise ValueError(f"alphas must be strictly increasing, got {prev} then {cur}")
    return grid


def barrier_from_curve(alphas: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Eq. (1): ``max_i values[i] - line(alphas[i])`` and the alpha where it is attained.

    ``line`` joins ``(alphas[0], values[0])`` and ``(alphas[-1], values[-1])``;
    endpoints count (difference exactly 0 there), so the barrier is >= 0.
    Ties go to the first (smallest) alpha.
    """
    a = [float(x) for x in alphas]
    v = [float(x) for x in values]
    if len(a) != len(v):
        raise ValueError(f"{len(a)} alphas but {len(v)} values")
    if len(a) < 2:
        raise ValueError("need at least 2 points (the endpoints) to compute a barrier")
    if any(y <= x for x, y in zip(a, a[1:])):
        raise ValueError("alphas must be strictly increasing")
    bad = [i for i, x in enumerate(v) if not math.isfinite(x)]
    if bad:
        raise ValueError(f"value at alpha={a[bad[0]]} is not finite ({v[bad[0]]})")
    a0, a1, v0, v1 = a[0], a[-1], v[0], v[-1]
    span = a1 - a0
    best, best_alpha = -math.inf, a0
    for x, y in zip(a, v):
        t = (x - a0) / span
        gap = y - ((1.0 - t) * v0 + t * v1)
        if gap > best:
            best, best_alpha = gap, x
    return best, best_alpha


def simplex_grid(n: int, resolution: int, edge_resolution: int | None = None) -> list[tuple[float, ...]]:
    """Barycentric weights ``c / resolution`` for all ``c`` in N^n with ``sum(c) == resolution``.

    Ordered with the first weight descending, so for ``n = 2`` the points are
    ``(1 - k/r, k/r)`` for ``k = 0..r`` (the pairwise alpha grid).

    With ``edge_resolution``, the points on the edges (at most two nonzero
    weights, the vertices included) come from the grid of that resolution
    instead, and only the rest (faces and interior) from ``resolution``: the
    edges then carry the pairwise grid of ``edge_resolution + 1`` alphas, while
    the interior, which costs one evaluation per point, stays coarse. Edge points
    come first, then the others.
    """
    if n < 1 or resolution < 1:
        raise ValueError(f"need n >= 1 and resolution >= 1, got n={n}, resolution={resolution}")
    if edge_resolution is not None and edge_resolution < 1:
        raise ValueError(f"edge_resolution must be >= 1 (or None for resolution), got {edge_resolution}")

    def comps(k: int, r: int) -> Iterator[tuple[int, ...]]:
        if k == 1:
            yield (r,)
            return
        for first in range(r, -1, -1):
            for rest in comps(k - 1, r - first):
                yield (first, *rest)

    def grid(r: int) -> list[tuple[float, ...]]:
        return [tuple(c / r for c in comp) for comp in comps(n, r)]

    if edge_resolution is None:
        return grid(resolution)
    on_edge = [w for w in grid(edge_resolution) if sum(x != 0.0 for x in w) <= 2]
    return on_edge + [w for w in grid(resolution) if sum(x != 0.0 for x in w) > 2]


def barrier_from_simplex(
    weights: Sequence[Sequence[float]], values: Sequence[float]
) -> tuple[float, tuple[float, ...]]:
    """Max over points of ``value - plane(weights)`` and the weights attaining it.

    ``plane(w) = sum_i w_i * value(vertex_i)``: the affine interpolation of the
    vertices' values. Every vertex (a point with weight 1 on one network) must
    be among the points. For two networks this is :func:`barrier_from_curve`.
    """
    if len(weights) != len(values):
        raise ValueError(f"{len(weights)} points but {len(values)} values")
    if not weights:
        raise ValueError("no points")
    n = len(weights[0])
    vertex: dict[int, float] = {}
    for w, v in zip(weights, values):
        if not math.isfinite(float(v)):
            raise ValueError(f"value at weights={tuple(w)} is not finite ({v})")
        for i, wi in enumerate(w):
            if wi == 1.0:
                vertex[i] = float(v)
    missing = [i for i in range(n) if i not in vertex]
    if missing:
        raise ValueError(f"the points do not include vertex {missing[0]} (weight 1 on network {missing[0]})")
    best, arg = -math.inf, tuple(float(x) for x in weights[0])
    for w, v in zip(weights, values):
        gap = float(v) - sum(float(wi) * vertex[i] for i, wi in enumerate(w))
        if gap > best:
            best, arg = gap, tuple(float(x) for x in w)
    return best, arg


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class BarrierResult:
    """Loss and error along the linear path from A (alpha=0) to B (alpha=1).

    ``loss`` is the mean cross-entropy and ``error`` the 0-1 error fraction at
    each alpha, on the same ``n_examples`` examples for every alpha.
    """

    alphas: list[float]
    loss: list[float]
    error: list[float]
    loss_barrier: float
    error_barrier: float
    loss_endpoints: tuple[float, float]
    error_endpoints: tuple[float, float]
    loss_argmax_alpha: float
    error_argmax_alpha: float
    n_examples: int
    split: str | None = None
    bn_reset: bool = False
    engine: str | None = None

    @classmethod
    def from_curves(
        cls,
        alphas: Sequence[float],
        loss: Sequence[float],
        error: Sequence[float],
        *,
        n_examples: int,
        split: str | None = None,
        bn_reset: bool = False,
        engine: str | None = None,
    ) -> BarrierResult:
        """Build a result (barriers and endpoints) from the two curves."""
        alphas, loss, error = [float(a) for a in alphas], [float(x) for x in loss], [float(x) for x in error]
        lb, la = barrier_from_curve(alphas, loss)
        eb, ea = barrier_from_curve(alphas, error)
        return cls(
            alphas=alphas,
            loss=loss,
            error=error,
            loss_barrier=lb,
            error_barrier=eb,
            loss_endpoints=(loss[0], loss[-1]),
            error_endpoints=(error[0], error[-1]),
            loss_argmax_alpha=la,
            error_argmax_alpha=ea,
            n_examples=int(n_examples),
            split=split,
            bn_reset=bn_reset,
            engine=engine,
        )

    def reversed(self) -> BarrierResult:
        """The same path walked from B (alpha=0) to A (alpha=1)."""
        return BarrierResult.from_curves(
            [1.0 - a for a in reversed(self.alphas)],
            list(reversed(self.loss)),
            list(reversed(self.error)),
            n_examples=self.n_examples,
            split=self.split,
            bn_reset=self.bn_reset,
            engine=self.engine,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (lists for tuples)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class SimplexResult:
    """Loss and error over convex combinations of N networks.

    ``weights[i]`` are the barycentric weights of point ``i`` (denominator
    ``resolution``). Barriers are relative to the plane through the vertices'
    values (:func:`barrier_from_simplex`).
    """

    weights: list[tuple[float, ...]]
    loss: list[float]
    error: list[float]
    loss_barrier: float
    error_barrier: float
    loss_argmax_weights: tuple[float, ...]
    error_argmax_weights: tuple[float, ...]
    vertex_loss: tuple[float, ...]
    vertex_error: tuple[float, ...]
    resolution: int
    n_examples: int
    split: str | None = None
    bn_reset: bool = False
    engine: str | None = None
    edge_resolution: int | None = None  # None: the edges are at ``resolution`` too

    def edge(self, i: int, j: int) -> BarrierResult:
        """The curve along the edge from vertex ``i`` (alpha = 0) to vertex ``j`` (alpha = 1), as a barrier.

        Its points are the simplex's own evaluations with weight only on ``i`` and ``j``; with
        ``edge_resolution = r`` they are the pairwise grid of ``r + 1`` alphas, evaluated exactly as
        :func:`barrier` evaluates that pair, so the two results agree to the bit.
        """
        n = len(self.vertex_loss)
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"an edge joins two different vertices among 0..{n - 1}, got ({i}, {j})")
        pts = sorted(
            (w[j], lo, er) for w, lo, er in zip(self.weights, self.loss, self.error)
            if all(x == 0.0 for k, x in enumerate(w) if k not in (i, j))
        )
        return BarrierResult.from_curves([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts],
                                         n_examples=self.n_examples, split=self.split, bn_reset=self.bn_reset,
                                         engine=self.engine)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (lists for tuples)."""
        d = dataclasses.asdict(self)
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, tuple):
                v = list(v)
            if isinstance(v, list) and v and isinstance(v[0], tuple):
                v = [list(w) for w in v]
            out[k] = v
        return out
