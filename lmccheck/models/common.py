"""Building blocks shared by the models: their base class, norms and a permutation-spec builder."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ..permutation import PermutationSpec

NORMS = ("layernorm", "batchnorm", "none")


class PermutableModel(nn.Module):
    """An lmccheck model: a module that declares its permutation symmetry (:meth:`permutation_spec`)."""

    def permutation_spec(self) -> PermutationSpec:
        """The state-dict axes that each permutation group of hidden units permutes, with the modules whose
        outputs carry each group (for activation matching) and the weight layers."""
        raise NotImplementedError(f"{type(self).__name__} declares no permutation spec")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return norm


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    if width <= 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    return max(1, int(round(channels * width)))


def norm2d(norm: str, channels: int) -> nn.Module:
    """A channel norm for conv features.

    ``layernorm`` normalizes each example over (C, H, W) with one affine weight
    and bias per channel (``GroupNorm`` with one group): it commutes with any
    permutation of the channels, as the permutation symmetry requires.
    """
    if norm == "layernorm":
        return nn.GroupNorm(1, channels)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def norm1d(norm: str, features: int) -> nn.Module:
    """A feature norm for fully connected layers (per-feature affine)."""
    if norm == "layernorm":
        return nn.LayerNorm(features)
    if norm == "batchnorm":
        return nn.BatchNorm1d(features)
    return nn.Identity()


class SpecBuilder:
    """Accumulates ``PermutationSpec.axes`` for a model, layer by layer."""

    def __init__(self) -> None:
        self.axes: dict[str, tuple[str | None, ...]] = {}
        self.activations: dict[str, list[str]] = {}
        self.layers: dict[str, list[str]] = {}
        self._layer: str | None = None

    def dense(self, name: str, module: nn.Module, out_g: str | None, in_g: str | None, *,
              joins: str | None = None) -> None:
        """A Linear or Conv layer: weight (out, in, ...), bias (out).

        Call in forward order: each call starts a new weight layer named ``name``, unless
        ``joins`` names an earlier layer whose output this one is added to (a projection
        shortcut joins the block's second conv).
        """
        w = cast(torch.Tensor, module.weight)  # a Linear's or Conv's parameter (nn.Module types it Tensor | Module)
        self.axes[f"{name}.weight"] = (out_g, in_g) + (None,) * (w.dim() - 2)
        keys = [f"{name}.weight"]
        if getattr(module, "bias", None) is not None:
            self.axes[f"{name}.bias"] = (out_g,)
            keys.append(f"{name}.bias")
        layer = name if joins is None else joins
        if joins is not None and joins not in self.layers:
            raise ValueError(f"{name} joins {joins!r}, which is not an earlier layer")
        self.layers.setdefault(layer, []).extend(keys)
        self._layer = layer

    def norm(self, name: str, module: nn.Module, g: str) -> None:
        """Norm parameters and running statistics follow their layer's group (and join its weight layer)."""
        if self._layer is None:
            raise ValueError(f"norm {name} comes before any weight layer")
        for pname, _ in module.named_parameters(recurse=False):
            self.axes[f"{name}.{pname}"] = (g,)
            self.layers[self._layer].append(f"{name}.{pname}")
        for bname, buf in module.named_buffers(recurse=False):
            self.axes[f"{name}.{bname}"] = (g,) if buf.dim() == 1 else (None,) * buf.dim()
            self.layers[self._layer].append(f"{name}.{bname}")

    def activation(self, g: str, module_name: str) -> None:
        """Record a module whose output carries group ``g``'s units.

        Call in forward order: activation matching reads the last module
        recorded for a group by default (the output of the group's last
        operation, Sharma et al. App. A) and all of them with ``stream="sum"``.
        """
        self.activations.setdefault(g, []).append(module_name)

    def build(self, model: nn.Module) -> PermutationSpec:
        # keep the state dict's order so depth order follows the network
        state_keys = list(model.state_dict().keys())
        ordered = {k: self.axes[k] for k in state_keys if k in self.axes}
        ordered.update({k: v for k, v in self.axes.items() if k not in ordered})
        return PermutationSpec(ordered, {g: tuple(v) for g, v in self.activations.items()},
                               {name: tuple(keys) for name, keys in self.layers.items()})
