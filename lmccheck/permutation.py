"""Permutation symmetries of networks: specs, permutations and their algebra.

A :class:`PermutationSpec` says, for every entry of a model's state dict, which
permutation group acts on each of its axes (``None`` for an axis that is never
permuted, such as the input features of the first layer or the classes of the
head). A :class:`Permutation` holds one index tensor per group.

Convention ("take" semantics, as in git-re-basin): applying ``P`` to ``B`` gives
``P[B]`` whose hidden unit ``i`` of group ``g`` is unit ``P.perms[g][i]`` of
``B``. Composition ``(P.compose(Q))[B] == P[Q[B]]``: ``Q`` is applied first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]

__all__ = [
    "PermutationSpec",
    "Permutation",
    "FixedPoints",
    "check_layers",
    "check_spec",
    "check_state",
    "permutation_spec",
    "state_of",
]


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation group acts on which axis of every state-dict entry.

    ``axes[key]`` has one entry per dimension of the tensor ``key``: a group
    name, or ``None``. Every entry of the model's state dict appears, so a
    forgotten layer is detected by :func:`check_spec`.

    ``activations[group]`` names, in forward order, the modules whose outputs
    carry the group's units: for most groups one module, the last operation
    of the group (e.g. the ReLU after a layer and its norm); for a residual
    stream every module writing the stream (the stem or projection block, then
    every block output of the stage). Activation matching reads the last one
    by default, the output of the last operation of the group (Sharma et al.
    App. A), or sums over all of them (``stream="sum"``; see
    :func:`lmccheck.activation_matching.activation_modules`).
    """

    axes: Mapping[str, tuple[str | None, ...]]
    activations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    layers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Weight layers in forward order: a name (the conv or linear module) -> its state-dict
    keys (weight, bias, and those of the norm applied to its output). A projection shortcut
    joins the layer whose output it is added to. Used by partial rewinding
    (:mod:`lmccheck.rewinding`); empty for hand-built specs. When given, they partition the
    entries of ``axes`` (:func:`check_layers`, at construction)."""

    def __post_init__(self) -> None:
        check_layers(self)

    @cached_property
    def groups(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """Groups in depth order, each with the (key, axis) pairs it acts on.

        Depth order is the order in which a group first appears as the output
        axis (axis 0) of a state-dict entry, following the state dict's order.
        """
        order: list[str] = []
        members: dict[str, list[tuple[str, int]]] = {}
        for key, axes in self.axes.items():
            for ax, g in enumerate(axes):
                if g is None:
                    continue
                members.setdefault(g, []).append((key, ax))
                if ax == 0 and g not in order:
                    order.append(g)
        for g in members:  # groups that never appear on an output axis
            if g not in order:
                order.append(g)
        return {g: tuple(members[g]) for g in order}

    @property
    def group_names(self) -> list[str]:
        """Group names in depth order (input side first)."""
        return list(self.groups)

    def group_sizes(self, state: StateDict) -> dict[str, int]:
        """The size of every group, read from ``state``."""
        sizes = {}
        for g, members in self.groups.items():
            key, ax = members[0]
            sizes[g] = int(state[key].shape[ax])
        return sizes

    def keys_of(self, group: str) -> list[str]:
        """State-dict keys touched by ``group``."""
        return sorted({k for k, _ in self.groups[group]})


def state_of(model_or_state: nn.Module | StateDict) -> dict[str, torch.Tensor]:
    """The state dict of a module, or the mapping itself."""
    if isinstance(model_or_state, nn.Module):
        return dict(model_or_state.state_dict())
    return dict(model_or_state)


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation spec of a registered lmccheck model."""
    fn = getattr(model, "permutation_spec", None)
    if fn is None:
        raise TypeError(
            f"{type(model).__name__} has no permutation_spec(); lmccheck models "
            "(lmccheck.models.get_model) provide one. For your own model, build a "
            "PermutationSpec by hand."
        )
    return fn()


def check_spec(spec: PermutationSpec, model_or_state: nn.Module | StateDict) -> None:
    """Check that ``spec`` covers a model exactly.

    Raises ``ValueError`` naming the first state-dict key that the spec misses,
    names wrongly, gives the wrong number of axes, or whose permuted axis has
    a size that differs from the rest of its group.
    """
    state = state_of(model_or_state)
    missing = [k for k in state if k not in spec.axes]
    if missing:
        raise ValueError(
            f"permutation spec misses state-dict key {missing[0]!r} "
            f"(shape {tuple(state[missing[0]].shape)}); every parameter and buffer "
            "must be listed in spec.axes, with None for unpermuted axes"
        )
    extra = [k for k in spec.axes if k not in state]
    if extra:
        raise ValueError(
            f"permutation spec names {extra[0]!r}, which the model does not have"
        )
    sizes: dict[str, tuple[int, str, int]] = {}
    for key, axes in spec.axes.items():
        t = state[key]
        if len(axes) != t.dim():
            raise ValueError(
                f"permutation spec gives {len(axes)} axes for {key!r}, "
                f"but it has shape {tuple(t.shape)} ({t.dim()} axes)"
            )
        for ax, g in enumerate(axes):
            if g is None:
                continue
            n = int(t.shape[ax])
            if g not in sizes:
                sizes[g] = (n, key, ax)
            elif sizes[g][0] != n:
                n0, k0, a0 = sizes[g]
                raise ValueError(
                    f"group {g!r} acts on axis {ax} of {key!r} (size {n}) and on "
                    f"axis {a0} of {k0!r} (size {n0}); all its axes must have the same size"
                )


def check_layers(spec: PermutationSpec) -> None:
    """Where ``spec.layers`` is given, its layers partition the state dict: every entry in exactly one layer
    (partial rewinding takes whole layers, so an entry in none, such as a forgotten projection shortcut, would
    silently stay at the end of training in every hybrid)."""
    if not spec.layers:
        return
    owner: dict[str, str] = {}
    for name, keys in spec.layers.items():
        for key in keys:
            if key not in spec.axes:
                raise ValueError(f"permutation spec layer {name!r} names {key!r}, which spec.axes does not list")
            if key in owner:
                raise ValueError(f"permutation spec puts {key!r} in two layers, {owner[key]!r} and {name!r}")
            owner[key] = name
    missing = [k for k in spec.axes if k not in owner]
    if missing:
        raise ValueError(
            f"permutation spec's layers miss state-dict entry {missing[0]!r}: every entry belongs to one weight "
            "layer (a projection shortcut to the layer its output is added to, a norm to the layer it follows)"
        )


def check_state(
    spec: PermutationSpec,
    state: StateDict,
    *,
    name: str = "state",
    reference: StateDict | None = None,
    reference_name: str = "reference",
    finite: bool = True,
) -> None:
    """Validate a state dict against a spec (and optionally a second state).

    Raises ``ValueError`` naming the first offending key: a key missing from
    the state, an extra key, a shape that differs from ``reference``, or a
    non-finite value.
    """
    for key in spec.axes:
        if key not in state:
            raise ValueError(
                f"{name} is missing key {key!r} expected by the permutation spec; "
                "are both networks the same architecture?"
            )
    for key in state:
        if key not in spec.axes:
            raise ValueError(
                f"{name} has key {key!r} that the permutation spec does not know; "
                "are both networks the same architecture?"
            )
    if reference is not None:
        for key in spec.axes:
            a, b = reference[key], state[key]
            if a.shape != b.shape:
                raise ValueError(
                    f"{key!r} has shape {tuple(b.shape)} in {name} but "
                    f"{tuple(a.shape)} in {reference_name}; the networks differ "
                    "in architecture or width"
                )
    if finite:
        for key, t in state.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"{name}[{key!r}] contains NaN or infinite values; "
                    "the network diverged or the checkpoint is damaged"
                )


def _check_bijection(group: str, p: torch.Tensor) -> torch.Tensor:
    if p.dim() != 1:
        raise ValueError(f"permutation of group {group!r} must be 1-D, got shape {tuple(p.shape)}")
    if p.is_floating_point() or p.dtype == torch.bool:
        raise ValueError(f"permutation of group {group!r} must hold integers, got {p.dtype}")
    p = p.to(torch.long)
    n = p.numel()
    if n and (int(p.min()) < 0 or int(p.max()) >= n):
        value = int(p.min()) if int(p.min()) < 0 else int(p.max())
        raise ValueError(
            f"permutation of group {group!r} is not a bijection of 0..{n - 1}: value {value} is outside that "
            "range; every index must appear exactly once (was it built for a wider or narrower network?)"
        )
    if n and torch.unique(p).numel() != n:
        seen = torch.bincount(p, minlength=n)
        bad = int(torch.nonzero(seen != 1)[0]) if bool((seen != 1).any()) else -1
        raise ValueError(
            f"permutation of group {group!r} is not a bijection of 0..{n - 1} "
            f"(index {bad} appears {int(seen[bad]) if bad >= 0 else '?'} times); "
            "every index must appear exactly once"
        )
    return p


@dataclass(frozen=True)
class FixedPoints:
    """Fixed points of a permutation (or shared assignments of two)."""

    per_group: dict[str, int]
    sizes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.per_group.values())

    @property
    def fraction(self) -> float:
        n = sum(self.sizes.values())
        return self.total / n if n else 0.0

    @property
    def per_group_fraction(self) -> dict[str, float]:
        return {g: self.per_group[g] / self.sizes[g] for g in self.per_group}

    @property
    def random_expectation(self) -> dict[str, float]:
        """Expected fixed points of a uniformly random permutation: one per group."""
        return {g: 1.0 for g in self.sizes}

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_group": dict(self.per_group),
            "sizes": dict(self.sizes),
            "per_group_fraction": self.per_group_fraction,
            "total": self.total,
            "fraction": self.fraction,
            "random_expectation_per_group": 1.0,
            "random_expectation_fraction": len(self.sizes) / max(1, sum(self.sizes.values())),
        }


class Permutation:
    """One permutation per group of a :class:`PermutationSpec`."""

    def __init__(self, spec: PermutationSpec, perms: Mapping[str, torch.Tensor]):
        unknown = [g for g in perms if g not in spec.groups]
        if unknown:
            raise KeyError(f"permutation has group {unknown[0]!r} that the spec does not define")
        missing = [g for g in spec.groups if g not in perms]
        if missing:
            raise KeyError(f"permutation lacks group {missing[0]!r} of the spec")
        self.spec = spec
        self.perms: dict[str, torch.Tensor] = {
            g: _check_bijection(g, torch.as_tensor(perms[g]).detach().cpu()) for g in spec.groups
        }
        self.stats: dict[str, Any] = {}

    # -- construction ------------------------------------------------------
    @classmethod
    def identity(cls, spec: PermutationSpec, sizes: Mapping[str, int] | StateDict) -> Permutation:
        """The identity; ``sizes`` is a group->size map or a state dict."""
        sizes = _sizes(spec, sizes)
        return cls(spec, {g: torch.arange(n) for g, n in sizes.items()})

    @classmethod
    def random(
        cls, spec: PermutationSpec, sizes: Mapping[str, int] | StateDict, seed: int
    ) -> Permutation:
        """A uniformly random permutation of every group, from ``seed``."""
        sizes = _sizes(spec, sizes)
        gen = torch.Generator().manual_seed(int(seed))
        return cls(spec, {g: torch.randperm(n, generator=gen) for g, n in sizes.items()})

    # -- algebra -----------------------------------------------------------
    def apply(self, state: StateDict) -> dict[str, torch.Tensor]:
        """``P[state]``: a new state dict; the input is not modified."""
        missing = [k for k in self.spec.axes if k not in state]
        if missing:
            raise ValueError(f"state dict is missing key {missing[0]!r} named by the permutation spec")
        out: dict[str, torch.Tensor] = {}
        for key, t in state.items():
            axes = self.spec.axes.get(key)
            if axes is None:
                raise ValueError(f"state dict has key {key!r} that the permutation spec does not know")
            for ax, g in enumerate(axes):
                if g is None:
                    continue
                p = self.perms[g]
                if t.shape[ax] != p.numel():
                    raise ValueError(
                        f"{key!r} has size {t.shape[ax]} on axis {ax}, but group {g!r} "
                        f"permutes {p.numel()} units; wrong architecture or width?"
                    )
                t = torch.index_select(t, ax, p.to(t.device))
            out[key] = t if t is not state[key] else t.clone()
        return out

    def inverse(self) -> Permutation:
        """``P^-1`` with ``P.inverse()[P[B]] == B``."""
        return Permutation(self.spec, {g: torch.argsort(p) for g, p in self.perms.items()})

    def compose(self, other: Permutation) -> Permutation:
        """``self o other``: ``self.compose(other)[B] == self[other[B]]`` (other first)."""
        self._same_spec(other)
        return Permutation(self.spec, {g: other.perms[g][self.perms[g]] for g in self.perms})

    __matmul__ = compose

    def _same_spec(self, other: Permutation) -> None:
        if set(self.perms) != set(other.perms):
            raise ValueError("permutations belong to different specs (their groups differ)")
        for g in self.perms:
            if self.perms[g].numel() != other.perms[g].numel():
                raise ValueError(
                    f"group {g!r} has {self.perms[g].numel()} units in one permutation "
                    f"and {other.perms[g].numel()} in the other"
                )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Permutation):
            return NotImplemented
        return set(self.perms) == set(other.perms) and all(
            torch.equal(self.perms[g], other.perms[g]) for g in self.perms
        )

    def __hash__(self) -> int:  # pragma: no cover - permutations are mutable-free but unhashable by value
        raise TypeError("Permutation is not hashable")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{g}:{p.numel()}" for g, p in self.perms.items())
        return f"Permutation({sizes})"

    @property
    def sizes(self) -> dict[str, int]:
        return {g: p.numel() for g, p in self.perms.items()}

    # -- statistics --------------------------------------------------------
    def fixed_points(self) -> FixedPoints:
        """Units mapped to themselves, per group and in total."""
        return FixedPoints(
            {g: int((p == torch.arange(p.numel())).sum()) for g, p in self.perms.items()},
            self.sizes,
        )

    def agreement(self, other: Permutation) -> FixedPoints:
        """Units on which two permutations agree (fixed points of ``self^-1 o other``)."""
        self._same_spec(other)
        return FixedPoints(
            {g: int((self.perms[g] == other.perms[g]).sum()) for g in self.perms}, self.sizes
        )

    # -- persistence -------------------------------------------------------
    def save(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
        """Save to a safetensors file (one int64 tensor per group), atomically."""
        from safetensors.torch import save_file

        from .fileio import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(
                {g: p.contiguous() for g, p in self.perms.items()},
                str(tmp),
                metadata={"format": "lmccheck.permutation", **(metadata or {})},
            )

    @classmethod
    def load(cls, path: str | Path, spec: PermutationSpec) -> Permutation:
        """Load a permutation saved by :meth:`save` and check it against ``spec``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no permutation file at {path}")
        try:
            perms = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors permutation file: {e}") from e
        return cls(spec, perms)


def _sizes(spec: PermutationSpec, sizes: Mapping[str, int] | StateDict) -> dict[str, int]:
    vals = list(sizes.values())
    if vals and isinstance(vals[0], torch.Tensor):
        return spec.group_sizes(cast(StateDict, sizes))  # tensors: a state dict
    return {g: int(sizes[g]) for g in spec.groups}


def depth_order(spec: PermutationSpec) -> list[str]:
    """The spec's groups from input to output."""
    return spec.group_names


def select_groups(spec: PermutationSpec, mode: str, k: int) -> list[str]:
    """Groups chosen by a partial-alignment mode (Sharma et al. App. H.3).

    ``k`` counts groups in depth order from 0. ``bottom-up``: groups ``< k``;
    ``top-down``: groups ``>= k``; ``put-in``: only group ``k``; ``leave-out``:
    every group except ``k``.
    """
    names = depth_order(spec)
    if not 0 <= k <= len(names):
        raise ValueError(f"split point k={k} outside 0..{len(names)} for {len(names)} groups")
    if mode == "bottom-up":
        return names[:k]
    if mode == "top-down":
        return names[k:]
    if mode in ("put-in", "leave-out"):
        if k == len(names):
            raise ValueError(f"{mode} needs k < {len(names)}")
        return [names[k]] if mode == "put-in" else names[:k] + names[k + 1 :]
    raise ValueError(f"unknown partial mode {mode!r}; use bottom-up, top-down, put-in or leave-out")


def partial(
    selected: Permutation, rest: Permutation, groups: Iterable[str]
) -> Permutation:
    """A permutation taking ``groups`` from ``selected`` and the others from ``rest``."""
    selected._same_spec(rest)
    chosen = set(groups)
    unknown = chosen - set(selected.perms)
    if unknown:
        raise KeyError(f"unknown group {sorted(unknown)[0]!r}")
    return Permutation(
        selected.spec,
        {g: (selected.perms[g] if g in chosen else rest.perms[g]) for g in selected.perms},
    )


def expected_random_fixed_fraction(sizes: Mapping[str, int]) -> float:
    """Expected fraction of fixed points of a uniformly random permutation."""
    n = sum(sizes.values())
    return len(sizes) / n if n else math.nan
