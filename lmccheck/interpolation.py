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

How a barrier is evaluated is one :class:`~lmccheck.barrier_options.BarrierOptions` object, resolved once for
the model and device (:class:`~lmccheck.barrier_options.ResolvedBarrier`); the evaluation itself is
:mod:`lmccheck.barrier_engine`, and the grids, Eq. (1) and the result records are :mod:`lmccheck.barrier_curves`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .barrier_curves import BarrierResult, SimplexResult, barrier_from_simplex, simplex_grid
from .barrier_engine import _autocast_context, _bn_reset, _bn_slices, _Engine, _mix_into, _model_device, _nonfinite_key
from .barrier_options import (
    DEFAULT_BN_BATCH_SIZE,
    DEFAULT_BN_BATCHES,
    DEFAULT_OPTIONS,
    BarrierOptions,
    ResolvedBarrier,
    _default_batch_size,
    auto_bf16,
)
from .data import Split
from .permutation import state_of

StateDict = Mapping[str, torch.Tensor]

__all__ = ["barrier", "evaluate", "lerp", "lerp_into", "reset_bn_stats", "simplex_barrier"]


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


def _resolved(
    model: nn.Module, options: BarrierOptions | ResolvedBarrier, device: str | torch.device | None
) -> ResolvedBarrier:
    if isinstance(options, ResolvedBarrier):
        if device is not None and torch.device(device) != options.device:
            raise ValueError(f"the options were resolved for {options.device}, not {device}: resolve them for "
                             "that device, or pass BarrierOptions")
        return options
    if not isinstance(options, BarrierOptions):
        raise TypeError(f"options must be BarrierOptions (or resolved ones), got {type(options).__name__}")
    return options.resolve(model, device if device is not None else _model_device(model))


def _run(
    model: nn.Module,
    states: Sequence[StateDict],
    names: Sequence[str],
    points: Sequence[Sequence[float]],
    labels: Sequence[str],
    data: Split,
    options: ResolvedBarrier,
    bn_data: Split | None,
) -> tuple[list[float], list[float], int]:
    """Shared body of :func:`barrier` and :func:`simplex_barrier`: check the inputs, evaluate every point."""
    if not isinstance(data, Split):
        raise TypeError(f"data must be an lmccheck.data.Split (e.g. load_dataset().test), got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the dataset is empty; pass a split with at least one example")
    states = [state_of(s) if isinstance(s, nn.Module) else s for s in states]
    _check_states(model.state_dict(), dict(zip(names, states)))
    if options.bn_reset:
        if bn_data is None:
            raise ValueError(
                "the model has BatchNorm layers, whose running statistics must be re-estimated at each "
                "alpha on training data: pass bn_data=<training split> (e.g. load_dataset().train), "
                "or BarrierOptions(bn_reset=False) to keep the interpolated statistics"
            )
        if not isinstance(bn_data, Split) or len(bn_data) == 0:
            raise ValueError("bn_data must be a non-empty Split of training data")
    engine = _Engine(model, states, data, options, bn_data)
    loss, error = engine.run(points)
    for label, lv in zip(labels, loss):
        if not math.isfinite(lv):
            raise ValueError(
                f"the loss is not finite ({lv}) at {label}{_nonfinite_key(states, names)}; "
                "the interpolated network's outputs overflow or the weights are damaged"
            )
    return loss, error, engine.n


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be an nn.Module (the architecture to load the states into), got {type(model).__name__}"
        )


def barrier(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    data: Split,
    options: BarrierOptions | ResolvedBarrier = DEFAULT_OPTIONS,
    *,
    bn_data: Split | None = None,
    device: str | torch.device | None = None,
    split: str | None = None,
) -> BarrierResult:
    """Loss and error barriers on the linear path from A (alpha=0) to B (alpha=1).

    ``model`` gives the architecture (it is deep-copied once; its weights are
    not touched). ``data`` is the split evaluated (its first
    ``options.n_examples``, the same for every alpha; ``None`` for all); pass
    ``split="train"`` / ``"test"`` to record its name. ``options``
    (:class:`~lmccheck.barrier_options.BarrierOptions`) says how: the alpha grid
    (a count of evenly spaced values in [0, 1] or an increasing sequence from 0
    to 1), the examples, the precision (bf16 autocast where it is fast by
    default), the BatchNorm re-estimation and the speed settings, which default
    to what measured fastest; options already resolved for this model are used
    as they are.

    BatchNorm models get their running statistics re-estimated at every alpha
    on the first ``bn_batches * bn_batch_size`` examples of ``bn_data`` (the
    training split) unless ``bn_reset=False``. ``device`` defaults to the
    model's.

    Raises ``ValueError`` for states that do not fit the model (naming the key),
    an empty dataset, a bad alpha grid, or a non-finite loss (naming the alpha).
    """
    _check_model(model)
    opts = _resolved(model, options, device)
    grid = opts.alphas
    loss, error, n = _run(model, [state_a, state_b], ["state_a", "state_b"], [(1.0 - a, a) for a in grid],
                          [f"alpha={a}" for a in grid], data, opts, bn_data)
    return BarrierResult.from_curves(grid, loss, error, n_examples=n, split=split, bn_reset=opts.bn_reset,
                                     engine=opts.engine)


def simplex_barrier(
    model: nn.Module,
    states: Sequence[StateDict],
    data: Split,
    options: BarrierOptions | ResolvedBarrier = DEFAULT_OPTIONS,
    *,
    resolution: int = 6,
    edge_resolution: int | None = None,
    bn_data: Split | None = None,
    device: str | torch.device | None = None,
    split: str | None = None,
) -> SimplexResult:
    """Loss and error over the simplex of convex combinations of N >= 2 networks.

    Points are :func:`~lmccheck.barrier_curves.simplex_grid` ``(len(states), resolution)``
    (``C(resolution + N - 1, N - 1)`` of them: 28 for 3 networks at the
    default resolution 6). The barrier is the maximum over points of the value
    minus the plane through the vertices' values, with the weights attaining
    it. With two states and ``resolution = r`` this is :func:`barrier` with
    ``r + 1`` alphas. ``edge_resolution`` evaluates the edges on a finer grid
    than the interior: with ``edge_resolution = 24`` each
    edge is the 25-alpha pairwise curve of Eq. (1), bit for bit
    (:meth:`~lmccheck.barrier_curves.SimplexResult.edge`), so the simplex barrier is at least every edge's
    barrier up to the rounding of the reference plane. ``options`` as in
    :func:`barrier` (their alpha grid is not used: the resolutions say where to evaluate).
    """
    _check_model(model)
    states = list(states)
    if len(states) < 2:
        raise ValueError(f"need at least 2 networks for a simplex, got {len(states)}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    opts = _resolved(model, options, device)
    points = simplex_grid(len(states), resolution, edge_resolution)
    loss, error, n = _run(model, states, [f"states[{i}]" for i in range(len(states))], points,
                          [f"weights={w}" for w in points], data, opts, bn_data)
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
        bn_reset=opts.bn_reset,
        engine=opts.engine,
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
