"""Masks, global magnitude / random pruning, retraining under a mask, mask transport, IMP's result types.

IMP itself is built level by level as store products (``imp_level`` in :mod:`lmccheck.kinds`, each level its own
SGD seed); ``fixtures.Lab.imp`` collects the levels into an :class:`ImpResult`.

Conventions:

* **Prunable weights** are the weights of the convolutional and linear layers
  (state-dict entries ending in ``.weight`` with two or more dimensions), the
  first layer included, *except the classifier head* (the layer producing the
  logits). This follows OpenLTH, whose default lottery recipes for VGG,
  ResNet and LeNet set ``pruning_layers_to_ignore='fc.weight'`` (the output
  layer); Frankle et al. / Sharma et al. (App. A, F) use OpenLTH. Biases and
  norm parameters are never pruned. :func:`prunable_keys` with
  ``include_head=True`` prunes the head too.
* A :data:`Mask` maps each prunable key to a bool tensor of the weight's
  shape (True = kept). Masks are CPU tensors.
* **Counts.** Pruning a ``fraction`` of the ``r`` remaining weights removes
  exactly ``round(fraction * r)`` of them (rounded half up), chosen globally
  over all prunable layers by smallest ``|w|``; ties are broken by position
  (the earlier key in the mask, then the earlier flat index, is pruned first),
  so pruning is deterministic. After ``L`` IMP levels of 20% the remaining count
  is ``r_L = r_{L-1} - round(0.2 r_{L-1})``, which stays within 2.5 weights of
  ``0.8**L`` times the prunable count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch
from torch import nn

from .data import Dataset
from .permutation import Permutation, PermutationSpec, permutation_spec, state_of
from .training import Run, TrainConfig, check_mask, train

__all__ = [
    "ImpLevel",
    "ImpResult",
    "Mask",
    "MaskStats",
    "apply_mask",
    "check_prune_once",
    "dense_mask",
    "magnitude_prune",
    "one_shot_prune",
    "permute_mask",
    "prunable_keys",
    "prune_once",
    "random_prune",
    "retrain_with_mask",
    "sparsity",
]

Mask = dict[str, torch.Tensor]
StateDict = Mapping[str, torch.Tensor]


# --------------------------------------------------------------------------- keys and masks
def prunable_keys(
    model_or_state: nn.Module | StateDict,
    spec: PermutationSpec | None = None,
    *,
    include_head: bool = False,
) -> list[str]:
    """The prunable weights of a model or state dict, in state-dict order.

    Conv and linear weights (``*.weight`` with ``dim >= 2``). The classifier
    head is excluded unless ``include_head``: with a spec (given, or taken from
    an lmccheck model) the head is the weight whose output axis is not
    permuted; without one, it is the last such weight in the state dict's
    order. That order is the model's for ``model.state_dict()``, but not for a
    state read back from a file (safetensors sorts the names, putting
    ``head.weight`` first): pass ``spec`` for any state that was stored.
    """
    if spec is None and isinstance(model_or_state, nn.Module) and hasattr(model_or_state, "permutation_spec"):
        spec = permutation_spec(model_or_state)
    state = state_of(model_or_state)
    keys = [k for k, v in state.items() if k.endswith(".weight") and v.dim() >= 2]
    if include_head or not keys:
        return keys
    if spec is not None:
        heads = {k for k in keys if k in spec.axes and spec.axes[k][0] is None}
        if heads:
            return [k for k in keys if k not in heads]
    return keys[:-1]


def dense_mask(state: StateDict, keys: Sequence[str] | None = None) -> Mask:
    """An all-True mask over ``keys`` (default: :func:`prunable_keys` of ``state``)."""
    keys = prunable_keys(state) if keys is None else list(keys)
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"state has no key {missing[0]!r} to build a mask for")
    return {k: torch.ones(state[k].shape, dtype=torch.bool) for k in keys}


@dataclass(frozen=True)
class MaskStats:
    """Fraction of weights remaining, overall and per layer (1.0 = dense)."""

    remaining: float
    per_layer: dict[str, float]
    kept: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "per_layer": dict(self.per_layer), "kept": self.kept, "total": self.total}


def sparsity(mask: Mapping[str, torch.Tensor]) -> MaskStats:
    """The fraction of weights a mask keeps, overall and per layer."""
    per_layer, kept, total = {}, 0, 0
    for k, m in mask.items():
        n, c = m.numel(), int(m.sum())
        per_layer[k] = c / n if n else 1.0
        kept += c
        total += n
    return MaskStats(kept / total if total else 1.0, per_layer, kept, total)


def apply_mask(state: StateDict, mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A new state with the masked weights set to exactly 0 (other entries copied)."""
    _check_mask_against(state, mask)
    out = {}
    for k, v in state.items():
        if k in mask:
            out[k] = torch.where(mask[k].to(v.device), v, torch.zeros((), dtype=v.dtype, device=v.device))
        else:
            out[k] = v.clone()
    return out


def _check_mask_against(state: StateDict, mask: Mapping[str, torch.Tensor]) -> None:
    check_mask(state, mask)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _check_fraction(name: str, f: float) -> float:
    f = float(f)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {f}")
    return f


def _prune_lowest(mask: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor], n_prune: int) -> Mask:
    """Remove the ``n_prune`` kept entries with the lowest score (ties: earliest position first, the
    positions taken in sorted key order, so the result does not depend on the mask's dict order)."""
    keys = sorted(mask)
    flat_mask = torch.cat([mask[k].reshape(-1).cpu() for k in keys])
    flat_scores = torch.cat([scores[k].detach().reshape(-1).cpu().double() for k in keys])
    alive = torch.nonzero(flat_mask).squeeze(1)
    n_prune = min(max(0, n_prune), alive.numel())
    new_flat = flat_mask.clone()
    if n_prune:
        order = torch.sort(flat_scores[alive], stable=True).indices  # stable: ties keep position order
        new_flat[alive[order[:n_prune]]] = False
    out, offset = {}, 0
    for k in keys:
        n = mask[k].numel()
        out[k] = new_flat[offset : offset + n].reshape(mask[k].shape).clone()
        offset += n
    return {k: out[k] for k in mask}  # the caller's order


def magnitude_prune(state: StateDict, mask: Mapping[str, torch.Tensor] | None = None, fraction: float = 0.2) -> Mask:
    """Globally prune ``round(fraction * remaining)`` of the remaining weights with smallest ``|w|``.

    ``mask`` selects the prunable weights and those still remaining (default:
    :func:`dense_mask` of ``state``). Returns a new mask; the inputs are unchanged.
    """
    fraction = _check_fraction("fraction", fraction)
    mask = dense_mask(state) if mask is None else mask
    _check_mask_against(state, mask)
    remaining = sparsity(mask).kept
    scores = {k: state[k].abs() for k in mask}
    return _prune_lowest(mask, scores, _round_half_up(fraction * remaining))


def random_prune(
    state: StateDict, mask: Mapping[str, torch.Tensor] | None = None, fraction: float = 0.2, seed: int = 0
) -> Mask:
    """Prune ``round(fraction * remaining)`` remaining weights chosen uniformly at random (global).

    The choice depends only on ``seed`` and the mask (not on the weights, nor on the order of the mask's keys:
    the scores are drawn key by key in sorted order, so a state read back from the store, whose names are
    sorted, and one in module order give the same mask).
    """
    fraction = _check_fraction("fraction", fraction)
    mask = dense_mask(state) if mask is None else mask
    _check_mask_against(state, mask)
    gen = torch.Generator().manual_seed(int(seed))
    scores = {k: torch.rand(mask[k].shape, generator=gen, dtype=torch.float64) for k in sorted(mask)}
    return _prune_lowest(mask, scores, _round_half_up(fraction * sparsity(mask).kept))


def one_shot_prune(
    state: StateDict,
    sparsity_remaining: float,
    keys: Sequence[str] | None = None,
    *,
    spec: PermutationSpec | None = None,
) -> Mask:
    """Keep the ``round(sparsity_remaining * N)`` largest-magnitude prunable weights, in one step.

    ``N`` is the number of prunable weights (``keys``, default :func:`prunable_keys` with ``spec``).
    E.g. ``sparsity_remaining=0.8**L`` matches IMP level ``L``.
    """
    s = _check_fraction("sparsity_remaining", sparsity_remaining)
    mask = dense_mask(state, prunable_keys(state, spec) if keys is None else keys)
    total = sparsity(mask).total
    scores = {k: state[k].abs() for k in mask}
    return _prune_lowest(mask, scores, total - _round_half_up(s * total))


PRUNE_METHODS = ("magnitude", "random")


def check_prune_once(fraction: float, method: str) -> float:
    """``fraction`` as a float, after checking it is a sparsity in [0, 1) and ``method`` a :data:`PRUNE_METHODS`."""
    if method not in PRUNE_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; use one of {', '.join(PRUNE_METHODS)}")
    p = float(fraction)
    if not 0.0 <= p < 1.0:
        raise ValueError(
            f"sparsity (the fraction of weights pruned) must be in [0, 1), got {fraction!r}; "
            "1 would remove every weight"
        )
    return p


def prune_once(
    state: StateDict,
    fraction: float,
    *,
    method: str = "magnitude",
    seed: int = 0,
    include_head: bool = False,
    keys: Sequence[str] | None = None,
    spec: PermutationSpec | None = None,
) -> Mask:
    """Prune ``round(fraction * N)`` of the ``N`` prunable weights of a dense ``state`` in one step, globally.

    ``method="magnitude"`` removes the smallest ``|w|``; ``"random"`` removes weights drawn uniformly with
    ``seed`` (the same count, so both reach the same sparsity). ``fraction`` is the *sparsity*, the fraction
    removed, in [0, 1) (Sharma et al. App. H.2's p). ``keys`` default to :func:`prunable_keys` of ``state``
    and ``spec`` (``include_head`` adds the classifier head: H.2 prunes "from all layers").
    """
    p = check_prune_once(fraction, method)
    keys = prunable_keys(state, spec, include_head=include_head) if keys is None else list(keys)
    mask = dense_mask(state, keys)
    if method == "magnitude":
        return magnitude_prune(state, mask, p)
    return random_prune(state, mask, p, seed=seed)


def permute_mask(perm: Permutation, mask: Mapping[str, torch.Tensor]) -> Mask:
    """``P[mask]``: the mask permuted like the weights it masks.

    ``perm.apply`` needs a full state dict; a mask has only the prunable keys,
    so this permutes each key along the axes the spec gives it.
    """
    out = {}
    for k, m in mask.items():
        axes = perm.spec.axes.get(k)
        if axes is None:
            raise ValueError(f"mask key {k!r} is not in the permutation spec; wrong architecture?")
        if len(axes) != m.dim():
            raise ValueError(f"spec gives {len(axes)} axes for {k!r} but the mask has shape {tuple(m.shape)}")
        t = m
        for ax, g in enumerate(axes):
            if g is None:
                continue
            p = perm.perms[g]
            if t.shape[ax] != p.numel():
                raise ValueError(f"mask {k!r} has size {t.shape[ax]} on axis {ax} but group {g!r} has "
                                 f"{p.numel()} units")
            t = torch.index_select(t, ax, p.to(t.device))
        out[k] = t.clone() if t is m else t
    return out


# --------------------------------------------------------------------------- retraining and IMP
def retrain_with_mask(
    config: TrainConfig,
    init_state: StateDict,
    mask: Mapping[str, torch.Tensor],
    start_epoch: float,
    *,
    sgd_seed: int | None = None,
    progress: bool | TextIO | None = None,
    data: Dataset | None = None,
) -> Run:
    """Apply ``mask`` to ``init_state`` (the rewound weights) and train it from ``start_epoch`` to the end.

    Used for IMP levels and the mask-transport experiment (a permuted mask on a
    rewound network). The run is checkpointed at ``start_epoch`` and at the end
    only; ``sgd_seed`` overrides the config's.
    """
    cfg = config.replace(checkpoints=(float(start_epoch), config.epochs))
    if sgd_seed is not None:
        cfg = cfg.replace(sgd_seed=int(sgd_seed))
    masked = apply_mask(init_state, mask)
    return train(cfg, init_state=masked, start_epoch=start_epoch, mask=dict(mask), progress=progress, data=data)


@dataclass
class ImpLevel:
    """One IMP level (0 = dense): its mask, rewound and retrained weights and metrics."""

    level: int
    mask: Mask
    rewound: dict[str, torch.Tensor]
    trained: dict[str, torch.Tensor]
    metrics: dict[str, float]
    remaining: float  # fraction of the prunable weights kept (1.0 at level 0)
    wall_time_s: float = 0.0
    run: Run | None = field(default=None, repr=False, compare=False)
    """The level's retrained run, when it came from a store (e.g. the fixture lab), so it can be measured."""


@dataclass
class ImpResult:
    """Iterative magnitude pruning with rewinding: one :class:`ImpLevel` per level."""

    config: TrainConfig
    rewind_epoch: float
    fraction: float
    levels: list[ImpLevel]
    dense_run: Run | None = field(default=None, repr=False)

    def __getitem__(self, level: int) -> ImpLevel:
        return self.levels[level]

    def __len__(self) -> int:
        return len(self.levels)

    @property
    def masks(self) -> list[Mask]:
        return [lv.mask for lv in self.levels]
