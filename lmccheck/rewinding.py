"""Partial rewinding (Sharma et al. App. H.3): which weight layers a hybrid network takes from time t.

H.3 weight-matches *partially rewound* networks: "we rewind the weights of the
first k layers (exclusive) of two networks to A_t and B_t, keeping the
remaining weights at their values from the end of training". The split point
``k`` indexes **weight layers in forward order** (a conv or linear layer with
the norm applied to its output; a projection shortcut joins the layer its
output is added to), counted from 0, not permutation groups: a ResNet stream
group spans a whole stage, so a group index is not a depth. The layers come
from :attr:`lmccheck.permutation.PermutationSpec.layers`.

The four modes (Fig. 17's caption) choose the layers taken from time t:

* ``bottom-up``: layers ``0 .. k-1`` (``k = 0``: none, the end of training;
  ``k = L``: all, time t);
* ``top-down``: layers ``k ..`` ("the opposite of bottom-up");
* ``put-in``: only layer ``k``;
* ``leave-out``: every layer except ``k``.

Weight matching the two hybrids then gives a permutation "analogous to
permuting the first k layers according to P_t, and the remainder according to
P_end". :func:`lmccheck.matching.partial_permutation` is that analogy taken
literally (it splices ``P_t`` and ``P_end`` group by group, without re-solving
the group at the split); the hybrids are the paper's method.
"""

from __future__ import annotations

from .permutation import PermutationSpec

__all__ = ["MODES", "weight_layers", "rewound_layers", "rewound_keys", "split_fraction"]

#: the partial-rewinding modes of App. H.3 / Fig. 17, in the paper's order
MODES = ("bottom-up", "top-down", "put-in", "leave-out")


def weight_layers(spec: PermutationSpec) -> list[tuple[str, tuple[str, ...]]]:
    """The weight layers of ``spec`` in forward order: ``(name, state-dict keys)``.

    Raises ``ValueError`` for a spec without layers (hand-built specs list only axes).
    """
    if not spec.layers:
        raise ValueError(
            "this permutation spec lists no weight layers (PermutationSpec.layers is empty); "
            "partial rewinding needs them: use an lmccheck model's permutation_spec(), or pass "
            "layers={name: keys} in forward order when you build the spec by hand"
        )
    return [(name, tuple(keys)) for name, keys in spec.layers.items()]


def rewound_layers(spec: PermutationSpec, mode: str, k: int) -> list[str]:
    """The names of the layers that ``mode`` with split point ``k`` takes from time t."""
    names = [name for name, _ in weight_layers(spec)]
    n = len(names)
    if mode not in MODES:
        raise ValueError(f"unknown partial-rewinding mode {mode!r}; use one of {', '.join(MODES)}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"the split point k must be an int (a weight-layer index), got {k!r}")
    top = n if mode in ("bottom-up", "top-down") else n - 1
    if not 0 <= k <= top:
        raise ValueError(f"{mode} needs a split point k in 0..{top} for a network of {n} weight layers, got {k}")
    if mode == "bottom-up":
        return names[:k]
    if mode == "top-down":
        return names[k:]
    if mode == "put-in":
        return [names[k]]
    return names[:k] + names[k + 1 :]


def rewound_keys(spec: PermutationSpec, mode: str, k: int) -> list[str]:
    """The state-dict keys that ``mode`` with split point ``k`` takes from time t (the rest: the end)."""
    chosen = set(rewound_layers(spec, mode, k))
    return [key for name, keys in weight_layers(spec) if name in chosen for key in keys]


def split_fraction(spec: PermutationSpec, k: int) -> float:
    """Split point ``k`` as a fraction of the depth in weight layers (the paper's k = 8 of VGG-16 is 0.5)."""
    n = len(weight_layers(spec))
    if not 0 <= k <= n:
        raise ValueError(f"split point k={k} outside 0..{n} for a network of {n} weight layers")
    return k / n
