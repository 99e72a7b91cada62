"""Linear interpolation between networks and the loss / error barriers along it.

Convention: ``alpha = 0`` is network A and ``alpha = 1`` is network B,

    theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B,

for every floating-point parameter and buffer; integer buffers (BatchNorm's
``num_batches_tracked``) are copied from A. (Sharma et al. Eq. (1) and Zhou
et al. Definition 1 write ``alpha A + (1 - alpha) B``: their alpha is
``1 - alpha`` here. Barriers do not depend on the direction; argmax alphas
map by ``1 - alpha``.)

The barrier is Sharma et al. Eq. (1): the supremum over the alpha grid of the
curve minus the straight line between its endpoints, for the mean
cross-entropy loss and for the 0-1 error. The grid includes both endpoints,
where the difference is exactly 0, so a barrier is never negative (Eq. (1)'s
sup over the open interval, floored at 0). The papers use 25 evenly spaced alphas in [0, 1] and 10k
examples (Sharma et al. App. D); those are the defaults.

BatchNorm networks get their running statistics re-estimated on training data
at every alpha (``bn_reset``; on by default when the model has BatchNorm
layers), since the interpolated weights make the interpolated running
statistics meaningless. LayerNorm and norm-free networks need nothing.

Evaluation engine (``barrier`` / ``simplex_barrier``): the model is deep-copied
once per call and every interpolated network is written in place into that one
copy (``torch.lerp(..., out=...)``); data are moved to the device once and
evaluated under ``torch.inference_mode`` in large batches, with bf16 autocast
where it is fast (:func:`auto_bf16`; loss always in float32). Two engines: ``"loop"`` (one forward pass per
alpha) and ``"vmap"`` (``torch.func.functional_call`` vectorized over a chunk
of alphas). For MLPs the first layer is shortcut exactly: its output is linear
in alpha, so it is computed once for each endpoint and interpolated
(``first_layer_shortcut``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import cpus
from .data import Split
from .permutation import state_of

StateDict = Mapping[str, torch.Tensor]

__all__ = [
    "BarrierOptions",
    "BarrierResult",
    "SimplexResult",
    "alpha_grid",
    "auto_bf16",
    "barrier",
    "barrier_from_curve",
    "barrier_from_simplex",
    "evaluate",
    "has_batchnorm",
    "lerp",
    "lerp_into",
    "reset_bn_stats",
    "simplex_barrier",
    "simplex_grid",
]

ENGINES = ("auto", "loop", "vmap")
DEFAULT_ALPHAS = 25
DEFAULT_N_EXAMPLES = 10_000
DEFAULT_BN_BATCHES = 20
DEFAULT_BN_BATCH_SIZE = 500


# ---------------------------------------------------------------- interpolation
@torch.no_grad()
def lerp(state_a: StateDict, state_b: StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * A + alpha * B`` for every floating entry; integers from A.

    ``alpha = 0`` gives A and ``alpha = 1`` gives B exactly. Both states must
    have the same keys and shapes (``ValueError`` naming the first that differs).
    """
    _check_pair(state_a, state_b)
    w = (1.0 - float(alpha), float(alpha))
    out: dict[str, torch.Tensor] = {}
    for key, a in state_a.items():
        if a.is_floating_point():
            out[key] = _mix_into(torch.empty_like(a), [a, state_b[key].to(a)], w)
        else:
            out[key] = a.clone()
    return out


def _mix_into(out: torch.Tensor, tensors: Sequence[torch.Tensor], w: Sequence[float]) -> torch.Tensor:
    """``out = sum_i w[i] * tensors[i]``, exact at the vertices.

    A weight of exactly 1 copies that tensor (so ``alpha = 0`` is A bit for
    bit, even when B holds NaN); zero weights are skipped; two nonzero weights
    ``(1 - a, a)`` use ``torch.lerp`` with weight ``a``, so a point on an edge of
    a simplex is computed exactly as the pairwise path along that edge.
    """
    for i, wi in enumerate(w):
        if wi == 1.0:
            return out.copy_(tensors[i])
    terms = [(t, float(wi)) for t, wi in zip(tensors, w) if wi != 0.0]
    if len(terms) == 2:  # a point on an edge: the same arithmetic as the pairwise path along that edge
        return torch.lerp(terms[0][0], terms[1][0], terms[1][1], out=out)
    torch.mul(terms[0][0], terms[0][1], out=out)
    for t, wi in terms[1:]:
        out.add_(t, alpha=wi)
    return out


@torch.no_grad()
def lerp_into(model: nn.Module, state_a: StateDict, state_b: StateDict, alpha: float) -> nn.Module:
    """Write ``lerp(state_a, state_b, alpha)`` into ``model``'s own tensors, in place.

    No new tensors are kept and no module is built; the model's device and
    dtypes are kept. Returns ``model``. A state that is the model's own
    ``state_dict()`` shares its storage and is overwritten too.
    """
    targets = model.state_dict()
    _check_states(targets, {"state_a": state_a, "state_b": state_b})
    w = (1.0 - float(alpha), float(alpha))
    for key, t in targets.items():
        a, b = state_a[key], state_b[key]
        if not t.is_floating_point():
            t.copy_(a)
        elif a.dtype == t.dtype and b.dtype == t.dtype and a.device == t.device and b.device == t.device:
            _mix_into(t, [a, b], w)
        else:
            _mix_into(t, [a.to(t), b.to(t)], w)
    return model


def _check_pair(state_a: StateDict, state_b: StateDict) -> None:
    for key in state_a:
        if key not in state_b:
            raise ValueError(
                f"state_b is missing key {key!r} that state_a has; are both networks the same architecture?"
            )
    for key in state_b:
        if key not in state_a:
            raise ValueError(f"state_b has key {key!r} that state_a lacks; are both networks the same architecture?")
    for key, a in state_a.items():
        if a.shape != state_b[key].shape:
            raise ValueError(
                f"{key!r} has shape {tuple(a.shape)} in state_a but {tuple(state_b[key].shape)} in state_b; "
                "the networks differ in architecture or width"
            )


def _check_states(reference: StateDict, states: Mapping[str, StateDict]) -> None:
    """Every state has exactly the model's keys, shapes and kinds (float vs integer)."""
    for name, state in states.items():
        if not isinstance(state, Mapping):
            raise TypeError(f"{name} must be a state dict (a mapping of names to tensors), got {type(state).__name__}")
        for key in reference:
            if key not in state:
                raise ValueError(
                    f"{name} is missing key {key!r} that the model has; are the model and the "
                    "states the same architecture (and norm)?"
                )
        for key in state:
            if key not in reference:
                raise ValueError(
                    f"{name} has key {key!r} that the model does not have; are the model and the "
                    "states the same architecture (and norm)?"
                )
        for key, ref in reference.items():
            t = state[key]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}[{key!r}] is a {type(t).__name__}, not a tensor")
            if t.shape != ref.shape:
                raise ValueError(
                    f"{key!r} has shape {tuple(t.shape)} in {name} but {tuple(ref.shape)} in the model; "
                    "the networks differ in architecture or width"
                )
            if t.is_floating_point() != ref.is_floating_point():
                raise ValueError(f"{key!r} is {t.dtype} in {name} but {ref.dtype} in the model")


# ---------------------------------------------------------------- BatchNorm
def _bn_modules(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers that keep running statistics."""
    return bool(_bn_modules(model))


def _bn_reset(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    before: Callable[[int], None] | None = None,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> None:
    """Recompute BatchNorm running statistics as the average over ``inputs``.

    Only the BatchNorm layers run in train mode (the rest of the network stays
    as it is, so dropout or the like does not add noise); their momentum is set
    to None (cumulative average) and restored afterwards, as is each layer's mode.
    """
    bns = _bn_modules(model)
    if not bns:
        return
    saved = [(m, m.momentum, m.training) for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for i, x in enumerate(inputs):
                if before is not None:
                    before(i)
                with context():
                    model(x)
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)


def reset_bn_stats(
    model: nn.Module,
    data: Split | torch.Tensor,
    *,
    batches: int = DEFAULT_BN_BATCHES,
    batch_size: int = DEFAULT_BN_BATCH_SIZE,
) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics on ``data``, in place.

    Uses the first ``batches`` full batches of ``batch_size`` examples in
    order (deterministic, so permuted networks see the same batches). Statistics are the plain
    average over the batches (momentum None). Models without BatchNorm are
    returned unchanged. Returns ``model``.
    """
    x = data.x if isinstance(data, Split) else data
    device = _model_device(model)
    _bn_reset(model, [b.to(device) for b in _bn_slices(x, batches, batch_size)])
    return model


def _bn_slices(x: torch.Tensor, batches: int, batch_size: int) -> list[torch.Tensor]:
    """Up to ``batches`` full batches of ``x`` in order (one short batch if ``x`` is smaller).

    Full batches only, so every batch weighs the same in the average and no
    batch of one example (which BatchNorm rejects in train mode) occurs.
    """
    if batches < 1 or batch_size < 1:
        raise ValueError(f"need batches >= 1 and batch_size >= 1, got batches={batches}, batch_size={batch_size}")
    if len(x) < 2:
        raise ValueError(
            f"BatchNorm statistics need at least 2 examples to re-estimate from, got {len(x)}; "
            "pass more training data (bn_data)"
        )
    full = min(batches, len(x) // batch_size)
    if full == 0:
        return [x]
    return [x[i * batch_size : (i + 1) * batch_size] for i in range(full)]


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
    grid = [float(a) for a in alphas]
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


# ---------------------------------------------------------------- evaluation engine
def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def auto_bf16(device: str | torch.device) -> bool:
    """``precision="auto"``: bf16 autocast on CUDA, and on a CPU that computes bf16 natively
    (:func:`~lmccheck.cpus.native_bf16`: there it halves a barrier's time; elsewhere it would be up to 16x slower
    than fp32, so fp32)."""
    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and cpus.native_bf16())


def _autocast_context(device: torch.device, enabled: bool) -> Callable[[], AbstractContextManager[Any]]:
    if not enabled:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _is_conv_net(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _default_batch_size(model: nn.Module, device: torch.device) -> int:
    """The batch size that measured fastest, and robust on a busy machine.

    CPU, 2 cores: for the MLP 3x512 (with the shortcut) 1k-row batches were
    ~5% faster than 10k on an idle machine but 2-4x slower on a loaded one
    (every batch is a few more OpenMP parallel regions), so 10k; ResNet-20 in
    channels_last took the same time at 64 and 128 images per batch (one
    thread), 25% more at 256 and 70% more at 512, and small batches collapse
    under load, so 128. On CUDA, large batches fill the GPU.
    """
    if device.type != "cuda":
        return 128 if _is_conv_net(model) else 10_000
    return 4096 if _is_conv_net(model) else 10_000


def _first_layer(model: nn.Module) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None:
    """The first weighted layer of a known model, and the input it sees.

    Only layers followed by a norm / nonlinearity (never by another linear
    layer's parameters) are listed: their output is exactly linear in alpha.
    """
    from .models.mlp import MLP
    from .models.resnet import ResNet20
    from .models.vgg import VGG

    if isinstance(model, MLP):
        return "layers.0", lambda x: x.flatten(1)
    if isinstance(model, ResNet20):
        return "conv1", lambda x: x
    if isinstance(model, VGG):
        return f"features.{model.block_index[0]}.conv", lambda x: x
    return None


def _is_mlp(model: nn.Module) -> bool:
    from .models.mlp import MLP

    return isinstance(model, MLP)


def _default_shortcut(model: nn.Module) -> bool:
    """On for MLPs, where the first layer is the most expensive one (784 inputs).

    For conv nets the first conv is cheap and its cached outputs are large.
    """
    return _is_mlp(model)


class _Mixture(nn.Module):
    """Stands in for the first layer: the convex combination of its cached endpoint outputs.

    The first layer's output is linear in its weights, so at weights ``w`` it
    is ``sum_i w_i z_i`` with ``z_i`` its output under network ``i``. ``mix``
    holds ``w`` (a buffer, so ``functional_call``/``vmap`` can batch it) and
    ``z`` the endpoint outputs for the current batch.
    """

    def __init__(self, n: int, device: torch.device) -> None:
        super().__init__()
        self.register_buffer("mix", torch.zeros(n, device=device), persistent=False)
        self.z: list[torch.Tensor] = []
        self.point: tuple[float, ...] | None = None  # the weights as floats (loop engine)

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        if self.point is not None:
            return _mix_into(torch.empty_like(self.z[0]), self.z, self.point)
        w = self.mix.to(self.z[0].dtype)  # batched over points under vmap
        if len(self.z) == 2:
            out = torch.lerp(self.z[0], self.z[1], w[1])
            return torch.where(w[1] == 0, self.z[0], torch.where(w[1] == 1, self.z[1], out))
        out = self.z[0] * w[0]
        for i in range(1, len(self.z)):
            out = out + self.z[i] * w[i]
        return out


class _Engine:
    """One working copy of the model, evaluated at many convex combinations of states."""

    @torch.no_grad()
    def __init__(
        self,
        model: nn.Module,
        states: Sequence[StateDict],
        data: Split,
        *,
        n_examples: int | None,
        batch_size: int | None,
        bn_reset: bool,
        bn_data: Split | None,
        bn_batches: int,
        bn_batch_size: int,
        device: torch.device,
        autocast: bool,
        shortcut: bool,
        channels_last: bool,
    ) -> None:
        self.device = device
        self.context = _autocast_context(device, autocast)
        self.acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.work = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        if channels_last:
            self.work = self.work.to(memory_format=torch.channels_last)
        # data: moved to the device once, cut into batches once
        split = data.take(n_examples)
        self.n = len(split)
        bs = batch_size or _default_batch_size(model, device)
        self.batches = list(zip(self._batched(split.x, bs), self._batched(split.y, bs)))
        self.bn_reset = bn_reset
        self.bn_inputs: list[torch.Tensor] = []
        if bn_reset:
            assert bn_data is not None
            slices = _bn_slices(bn_data.x, bn_batches, bn_batch_size)
            self.bn_inputs = [self._batched(b, len(b))[0] for b in slices]
        self.stub: _Mixture | None = None
        self.eval_z: list[list[torch.Tensor]] = []
        self.bn_z: list[list[torch.Tensor]] = []
        skip = self._install_shortcut(model, states) if shortcut else set()
        self.mlp_fast = self.stub is not None and _is_mlp(model) and not autocast
        self.buffers: list[torch.Tensor] = []
        # the states on the device, in the working copy's dtypes and memory formats
        self.targets = dict(self.work.state_dict())
        self.states = [
            {k: torch.empty_like(t).copy_(s[k]) for k, t in self.targets.items() if k not in skip} for s in states
        ]
        self.float_keys = [k for k, t in self.targets.items() if t.is_floating_point()]
        for k, t in self.targets.items():
            if not t.is_floating_point():
                t.copy_(self.states[0][k])  # integer buffers come from the first state

    def _batched(self, t: torch.Tensor, size: int) -> list[torch.Tensor]:
        t = t.to(self.device)
        if t.dim() == 4:
            t = t.contiguous(memory_format=self.memory_format)
        return [t[i : i + size] for i in range(0, len(t), size)]

    def _install_shortcut(self, model: nn.Module, states: Sequence[StateDict]) -> set[str]:
        """Replace the first layer by the mixture of its cached outputs; return its state keys."""
        found = _first_layer(model)
        assert found is not None
        name, prep = found
        first = self.work.get_submodule(name)
        self.eval_z = self._first_outputs(first, name, states, [prep(x) for x, _ in self.batches])
        self.bn_z = self._first_outputs(first, name, states, [prep(x) for x in self.bn_inputs])
        self.stub = _Mixture(len(states), self.device)
        self.work.set_submodule(name, self.stub)
        return {f"{name}.{k}" for k in first.state_dict()}

    def _first_outputs(
        self, first: nn.Module, name: str, states: Sequence[StateDict], inputs: list[torch.Tensor]
    ) -> list[list[torch.Tensor]]:
        """Per input batch, the first layer's output under each state."""
        layer = copy.deepcopy(first)
        keys = list(layer.state_dict())
        out: list[list[torch.Tensor]] = [[] for _ in inputs]
        for s in states:
            layer.load_state_dict({k: s[f"{name}.{k}"] for k in keys})
            with torch.inference_mode(), self.context():
                for i, x in enumerate(inputs):
                    out[i].append(layer(x))
        return out

    # -- setting a point -----------------------------------------------------
    @torch.no_grad()
    def set_point(self, w: Sequence[float]) -> None:
        """Write ``sum_i w_i * state_i`` into the working copy."""
        w = tuple(float(x) for x in w)
        for k in self.float_keys:
            _mix_into(self.targets[k], [s[k] for s in self.states], w)
        if self.stub is not None:
            self.stub.point = w
        if self.bn_reset:
            _bn_reset(self.work, self.bn_inputs, before=self._feed_bn, context=self.context)

    def _feed_bn(self, i: int) -> None:
        if self.stub is not None:
            self.stub.z = self.bn_z[i]

    # -- loop engine -----------------------------------------------------------
    def run_loop(self, points: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
        losses, errors = [], []
        for w in points:
            self.set_point(w)
            loss = torch.zeros((), dtype=self.acc_dtype, device=self.device)
            err = torch.zeros((), dtype=torch.int64, device=self.device)
            with torch.inference_mode():
                for i, (x, y) in enumerate(self.batches):
                    if self.stub is not None:
                        self.stub.z = self.eval_z[i]
                    if self.mlp_fast:
                        logits = self._mlp_forward()
                    else:
                        with self.context():
                            logits = self.work(x)
                    loss += F.cross_entropy(logits.float(), y, reduction="sum").to(self.acc_dtype)
                    err += (logits.argmax(1) != y).sum()
            losses.append(loss)
            errors.append(err)
        return self._finish(losses, errors)

    def _mlp_forward(self) -> torch.Tensor:
        """``MLP.forward`` after the (shortcut) first layer, into two reused buffers.

        The same operations as ``MLP.forward`` (the reference test checks it
        to 1e-5) without allocating a new activation per layer: ``addmm`` into
        a preallocated buffer and an in-place ReLU. CPU / no autocast only.
        """
        work, stub = self.work, self.stub
        assert stub is not None
        z = stub.z
        n, width = z[0].shape
        if not self.buffers or self.buffers[0].shape[0] < n or self.buffers[0].shape[1] != width:
            self.buffers = [torch.empty(n, width, dtype=z[0].dtype, device=z[0].device) for _ in range(2)]
        assert stub.point is not None
        h = _mix_into(self.buffers[0][:n], z, stub.point)
        for j, (lin, nrm, act) in enumerate(zip(work.layers, work.norms, work.acts, strict=True)):
            if j > 0:
                out = self.buffers[j % 2][:n]
                if out.shape[1] != lin.out_features:
                    out = torch.empty(n, lin.out_features, dtype=h.dtype, device=h.device)
                if lin.bias is not None:
                    torch.addmm(lin.bias, h, lin.weight.t(), out=out)
                else:
                    torch.mm(h, lin.weight.t(), out=out)
                h = out
            h = nrm(h)
            h = torch.relu_(h) if isinstance(act, nn.ReLU) else act(h)
        return work.head(h)

    # -- vmap engine -----------------------------------------------------------
    def run_vmap(self, points: Sequence[Sequence[float]], chunk: int) -> tuple[list[float], list[float]]:
        from torch.func import functional_call

        work = self.work

        def fn(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(work, params, (x,))

        batched = torch.vmap(fn, in_dims=(0, None))
        losses, errors = [], []
        with torch.inference_mode():
            if self.stub is not None:
                self.stub.point = None
            for start in range(0, len(points), chunk):
                part = [tuple(float(x) for x in w) for w in points[start : start + chunk]]
                params = self._stacked(part)
                k = len(part)
                loss = torch.zeros(k, dtype=self.acc_dtype, device=self.device)
                err = torch.zeros(k, dtype=torch.int64, device=self.device)
                for i, (x, y) in enumerate(self.batches):
                    if self.stub is not None:
                        self.stub.z = self.eval_z[i]
                    with self.context():
                        logits = batched(params, x)  # (k, B, C)
                    ce = F.cross_entropy(logits.float().flatten(0, 1), y.repeat(k), reduction="none")
                    loss += ce.view(k, -1).sum(1).to(self.acc_dtype)
                    err += (logits.argmax(-1) != y).sum(1)
                losses.extend(loss.unbind())
                errors.extend(err.unbind())
        return self._finish(losses, errors)

    def _stacked(self, part: Sequence[tuple[float, ...]]) -> dict[str, torch.Tensor]:
        """Parameters of every point of a chunk, stacked on a leading axis."""
        params: dict[str, torch.Tensor] = {}
        for k in self.float_keys:
            s = [st[k] for st in self.states]
            out = torch.empty((len(part), *s[0].shape), dtype=s[0].dtype, device=s[0].device)
            for j, w in enumerate(part):
                _mix_into(out[j], s, w)
            params[k] = out
        if self.stub is not None:
            params[self._stub_name() + ".mix"] = torch.tensor(part, device=self.device)
        return params

    def _stub_name(self) -> str:
        for name, m in self.work.named_modules():
            if m is self.stub:
                return name
        raise AssertionError("shortcut module not found")

    def _finish(self, losses: list[torch.Tensor], errors: list[torch.Tensor]) -> tuple[list[float], list[float]]:
        loss = torch.stack(losses).tolist()
        err = torch.stack(errors).tolist()
        return [v / self.n for v in loss], [e / self.n for e in err]


def _nonfinite_key(states: Sequence[StateDict], names: Sequence[str]) -> str:
    for name, s in zip(names, states):
        for key, t in s.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"; {name}[{key!r}] contains NaN or infinite values"
    return ""


def _choose_engine(engine: str, bn_reset: bool) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "vmap" and bn_reset:
        raise ValueError(
            "engine='vmap' cannot re-estimate BatchNorm statistics at each alpha; use engine='loop' "
            "(or 'auto'), or pass bn_reset=False"
        )
    if engine != "auto":
        return engine
    # Measured on CPU (one thread, shared machine): MLP 3x512, 25 alphas x 10k,
    # loop 3.4 s vs vmap 5.9 s (both with the shortcut; 6.3 vs 7.4 s without);
    # ResNet-20 x1, 5 alphas x 1k: loop (channels_last) 5 s vs vmap 11 s. On
    # CUDA the loop's large batches already fill the GPU (not measured here).
    return "loop"


def _run(
    model: nn.Module,
    states: Sequence[StateDict],
    names: Sequence[str],
    points: Sequence[Sequence[float]],
    data: Split,
    *,
    labels: Sequence[str],
    n_examples: int | None,
    batch_size: int | None,
    bn_reset: bool | None,
    bn_data: Split | None,
    bn_batches: int,
    bn_batch_size: int,
    device: str | torch.device | None,
    autocast: bool | None,
    engine: str,
    first_layer_shortcut: bool | None,
    channels_last: bool | None,
    vmap_chunk: int | None,
) -> tuple[list[float], list[float], int, bool, str]:
    """Shared body of :func:`barrier` and :func:`simplex_barrier`."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be an nn.Module (the architecture to load the states into), got {type(model).__name__}"
        )
    if not isinstance(data, Split):
        raise TypeError(f"data must be an lmccheck.data.Split (e.g. load_dataset().test), got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the dataset is empty; pass a split with at least one example")
    if n_examples is not None and n_examples < 1:
        raise ValueError(f"n_examples must be positive (or None for all), got {n_examples}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    states = [state_of(s) if isinstance(s, nn.Module) else s for s in states]
    _check_states(model.state_dict(), dict(zip(names, states)))
    dev = torch.device(device) if device is not None else _model_device(model)
    use_autocast = auto_bf16(dev) if autocast is None else bool(autocast)
    do_bn = has_batchnorm(model) if bn_reset is None else bool(bn_reset)
    if do_bn and not has_batchnorm(model):
        do_bn = False  # nothing to reset
    if do_bn:
        if bn_data is None:
            raise ValueError(
                "the model has BatchNorm layers, whose running statistics must be re-estimated at each "
                "alpha on training data: pass bn_data=<training split> (e.g. load_dataset().train), "
                "or bn_reset=False to keep the interpolated statistics"
            )
        if not isinstance(bn_data, Split) or len(bn_data) == 0:
            raise ValueError("bn_data must be a non-empty Split of training data")
        if bn_batches < 1 or bn_batch_size < 1:
            raise ValueError(f"need bn_batches >= 1 and bn_batch_size >= 1, got {bn_batches}, {bn_batch_size}")
    shortcut = _default_shortcut(model) if first_layer_shortcut is None else bool(first_layer_shortcut)
    if shortcut and _first_layer(model) is None:
        raise ValueError(
            f"first_layer_shortcut is available for lmccheck's mlp, vgg and resnet20 models, not "
            f"{type(model).__name__}; pass first_layer_shortcut=False"
        )
    chosen = _choose_engine(engine, do_bn)
    if channels_last is None:  # measured ~25% faster for ResNet-20 on CPU
        channels_last = _is_conv_net(model) and dev.type == "cpu" and chosen == "loop"
    eng = _Engine(
        model,
        states,
        data,
        n_examples=n_examples,
        batch_size=batch_size,
        bn_reset=do_bn,
        bn_data=bn_data,
        bn_batches=bn_batches,
        bn_batch_size=bn_batch_size,
        device=dev,
        autocast=use_autocast,
        shortcut=shortcut,
        channels_last=channels_last,
    )
    if chosen == "vmap":
        loss, error = eng.run_vmap(points, vmap_chunk or len(points))
    else:
        loss, error = eng.run_loop(points)
    for label, lv in zip(labels, loss):
        if not math.isfinite(lv):
            raise ValueError(
                f"the loss is not finite ({lv}) at {label}{_nonfinite_key(states, names)}; "
                "the interpolated network's outputs overflow or the weights are damaged"
            )
    return loss, error, eng.n, do_bn, chosen


# ---------------------------------------------------------------- options
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class BarrierOptions:
    """How a barrier is evaluated, split into what changes the numbers and what only changes speed.

    *Numbers* (part of every stored measurement's key, after :meth:`resolve`):
    ``n_examples``, ``alphas``, ``bn_reset`` with ``bn_batches`` and
    ``bn_batch_size``, and ``precision``. *Speed* (never part of a key):
    ``engine``, ``batch_size``, ``first_layer_shortcut``, ``channels_last`` and
    ``vmap_chunk``. The CLI and the fixture lab both start from
    ``BarrierOptions()``, and ``--lmc-barrier-precision`` defaults to the same
    ``auto``.

    ``precision="auto"`` is bf16 autocast on CUDA and on a CPU with native bf16,
    fp32 elsewhere (:func:`auto_bf16`); claims that compare barriers for exact
    equality ask for ``"fp32"``.
    ``bn_batches=None`` re-estimates BatchNorm statistics on as many training
    examples as are evaluated, at most ``DEFAULT_BN_BATCHES * bn_batch_size``.
    """

    n_examples: int | None = DEFAULT_N_EXAMPLES
    alphas: int | tuple[float, ...] = DEFAULT_ALPHAS
    bn_reset: bool | None = None
    bn_batches: int | None = None
    bn_batch_size: int = DEFAULT_BN_BATCH_SIZE
    precision: str = "auto"
    engine: str = "auto"
    batch_size: int | None = None
    first_layer_shortcut: bool | None = None
    channels_last: bool | None = None
    vmap_chunk: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not isinstance(self.alphas, int):
            object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if self.n_examples is not None and self.n_examples < 1:
            raise ValueError(f"n_examples must be positive (or None for all), got {self.n_examples}")
        if self.bn_batches is not None and self.bn_batches < 1:
            raise ValueError(f"bn_batches must be positive (or None for the default), got {self.bn_batches}")
        if self.bn_batch_size < 1:
            raise ValueError(f"bn_batch_size must be positive, got {self.bn_batch_size}")

    def replace(self, **changes: Any) -> BarrierOptions:
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def autocast(self, device: str | torch.device) -> bool:
        """Whether bf16 autocast is on for ``device``."""
        if self.precision == "auto":
            return auto_bf16(device)
        return self.precision == "bf16"

    def resolved_bn_batches(self) -> int:
        """BatchNorm re-estimation batches: as many examples as evaluated, at most the default 10k."""
        if self.bn_batches is not None:
            return int(self.bn_batches)
        cap = DEFAULT_BN_BATCHES * self.bn_batch_size
        n = cap if self.n_examples is None else min(self.n_examples, cap)
        return max(1, math.ceil(n / self.bn_batch_size))

    def resolve(self, model: nn.Module, device: str | torch.device) -> dict[str, Any]:
        """The options that change the numbers, resolved for ``model`` on ``device`` (JSON-able).

        This is what a stored measurement's key holds. BatchNorm options appear
        only when statistics are re-estimated, so they do not split the keys of
        networks without BatchNorm.
        """
        do_bn = has_batchnorm(model) if self.bn_reset is None else bool(self.bn_reset)
        return {
            "n_examples": self.n_examples,
            "alphas": alpha_grid(self.alphas),
            "bn_reset": do_bn,
            "bn_batches": self.resolved_bn_batches() if do_bn else None,
            "bn_batch_size": self.bn_batch_size if do_bn else None,
            "precision": "bf16" if self.autocast(device) else "fp32",
            "device_type": torch.device(device).type,
        }

    def barrier_kwargs(self, device: str | torch.device) -> dict[str, Any]:
        """Keyword arguments for :func:`barrier` / :func:`simplex_barrier` (all but ``alphas``)."""
        return {
            "n_examples": self.n_examples,
            "bn_reset": self.bn_reset,
            "bn_batches": self.resolved_bn_batches(),
            "bn_batch_size": self.bn_batch_size,
            "device": device,
            "autocast": self.autocast(device),
            "engine": self.engine,
            "batch_size": self.batch_size,
            "first_layer_shortcut": self.first_layer_shortcut,
            "channels_last": self.channels_last,
            "vmap_chunk": self.vmap_chunk,
        }


#: the fields of :class:`BarrierOptions` that change the measured numbers
BARRIER_NUMBER_FIELDS = ("n_examples", "alphas", "bn_reset", "bn_batches", "bn_batch_size", "precision")
#: the fields of :class:`BarrierOptions` that only change speed
BARRIER_SPEED_FIELDS = ("engine", "batch_size", "first_layer_shortcut", "channels_last", "vmap_chunk")


def barrier(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    data: Split,
    *,
    alphas: int | Sequence[float] = DEFAULT_ALPHAS,
    n_examples: int | None = DEFAULT_N_EXAMPLES,
    batch_size: int | None = None,
    bn_reset: bool | None = None,
    bn_data: Split | None = None,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int = DEFAULT_BN_BATCH_SIZE,
    device: str | torch.device | None = None,
    autocast: bool | None = None,
    engine: str = "auto",
    first_layer_shortcut: bool | None = None,
    channels_last: bool | None = None,
    vmap_chunk: int | None = None,
    split: str | None = None,
) -> BarrierResult:
    """Loss and error barriers on the linear path from A (alpha=0) to B (alpha=1).

    ``model`` gives the architecture (it is deep-copied once; its weights are
    not touched). ``data`` is the split evaluated (its first ``n_examples``,
    the same for every alpha; ``None`` for all); pass ``split="train"`` /
    ``"test"`` to record its name. ``alphas`` is a count of evenly spaced
    values in [0, 1] or an increasing sequence from 0 to 1.

    BatchNorm models get their running statistics re-estimated at every alpha
    on the first ``bn_batches * bn_batch_size`` examples of ``bn_data`` (the
    training split) unless ``bn_reset=False``. ``device`` defaults to the
    model's; ``autocast`` (bf16) defaults to :func:`auto_bf16`; ``engine`` is
    ``"loop"``, ``"vmap"`` or ``"auto"`` (fastest measured). ``batch_size``,
    ``first_layer_shortcut``, ``channels_last`` and ``vmap_chunk`` default to
    what measured fastest.

    Raises ``ValueError`` for states that do not fit the model (naming the key),
    an empty dataset, a bad alpha grid, or a non-finite loss (naming the alpha).
    """
    grid = alpha_grid(alphas)
    loss, error, n, do_bn, chosen = _run(
        model,
        [state_a, state_b],
        ["state_a", "state_b"],
        [(1.0 - a, a) for a in grid],
        data,
        labels=[f"alpha={a}" for a in grid],
        n_examples=n_examples,
        batch_size=batch_size,
        bn_reset=bn_reset,
        bn_data=bn_data,
        bn_batches=bn_batches,
        bn_batch_size=bn_batch_size,
        device=device,
        autocast=autocast,
        engine=engine,
        first_layer_shortcut=first_layer_shortcut,
        channels_last=channels_last,
        vmap_chunk=vmap_chunk,
    )
    return BarrierResult.from_curves(grid, loss, error, n_examples=n, split=split, bn_reset=do_bn, engine=chosen)


def simplex_barrier(
    model: nn.Module,
    states: Sequence[StateDict],
    data: Split,
    *,
    resolution: int = 6,
    edge_resolution: int | None = None,
    n_examples: int | None = DEFAULT_N_EXAMPLES,
    batch_size: int | None = None,
    bn_reset: bool | None = None,
    bn_data: Split | None = None,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int = DEFAULT_BN_BATCH_SIZE,
    device: str | torch.device | None = None,
    autocast: bool | None = None,
    engine: str = "auto",
    first_layer_shortcut: bool | None = None,
    channels_last: bool | None = None,
    vmap_chunk: int | None = None,
    split: str | None = None,
) -> SimplexResult:
    """Loss and error over the simplex of convex combinations of N >= 2 networks.

    Points are :func:`simplex_grid` ``(len(states), resolution)``
    (``C(resolution + N - 1, N - 1)`` of them: 28 for 3 networks at the
    default resolution 6). The barrier is the maximum over points of the value
    minus the plane through the vertices' values, with the weights attaining
    it. With two states and ``resolution = r`` this is :func:`barrier` with
    ``r + 1`` alphas. ``edge_resolution`` evaluates the edges on a finer grid
    than the interior (:func:`simplex_grid`): with ``edge_resolution = 24`` each
    edge is the 25-alpha pairwise curve of Eq. (1), bit for bit
    (:meth:`SimplexResult.edge`), so the simplex barrier is at least every edge's
    barrier up to the rounding of the reference plane. Other arguments as in
    :func:`barrier`.
    """
    states = list(states)
    if len(states) < 2:
        raise ValueError(f"need at least 2 networks for a simplex, got {len(states)}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    points = simplex_grid(len(states), resolution, edge_resolution)
    loss, error, n, do_bn, chosen = _run(
        model,
        states,
        [f"states[{i}]" for i in range(len(states))],
        points,
        data,
        labels=[f"weights={w}" for w in points],
        n_examples=n_examples,
        batch_size=batch_size,
        bn_reset=bn_reset,
        bn_data=bn_data,
        bn_batches=bn_batches,
        bn_batch_size=bn_batch_size,
        device=device,
        autocast=autocast,
        engine=engine,
        first_layer_shortcut=first_layer_shortcut,
        channels_last=channels_last,
        vmap_chunk=vmap_chunk,
    )
    lb, la = barrier_from_simplex(points, loss)
    eb, ea = barrier_from_simplex(points, error)
    vertices = [next(j for j, w in enumerate(points) if w[i] == 1.0) for i in range(len(states))]
    return SimplexResult(
        weights=points,
        loss=loss,
        error=error,
        loss_barrier=lb,
        error_barrier=eb,
        loss_argmax_weights=la,
        error_argmax_weights=ea,
        vertex_loss=tuple(loss[j] for j in vertices),
        vertex_error=tuple(error[j] for j in vertices),
        resolution=resolution,
        n_examples=n,
        split=split,
        bn_reset=do_bn,
        engine=chosen,
        edge_resolution=edge_resolution,
    )


# ---------------------------------------------------------------- plain evaluation
def evaluate(
    model: nn.Module,
    data: Split,
    *,
    n_examples: int | None = None,
    batch_size: int | None = None,
    autocast: bool | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and 0-1 error of ``model`` (in eval mode) on ``data``.

    Runs on the model's device; the model's mode is restored afterwards.
    """
    if len(data) == 0:
        raise ValueError("the dataset is empty; pass a split with at least one example")
    dev = _model_device(model)
    ctx = _autocast_context(dev, auto_bf16(dev) if autocast is None else bool(autocast))
    split = data.take(n_examples) if n_examples is not None else data
    bs = batch_size or _default_batch_size(model, dev)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    err = torch.zeros((), dtype=torch.int64, device=dev)
    try:
        with torch.inference_mode():
            for i in range(0, len(split), bs):
                x, y = split.x[i : i + bs].to(dev), split.y[i : i + bs].to(dev)
                with ctx():
                    logits = model(x)
                loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
                err += (logits.argmax(1) != y).sum()
    finally:
        for m, training in modes:
            m.training = training
    n = len(split)
    return float(loss) / n, int(err) / n
