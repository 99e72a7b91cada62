"""Multilayer perceptron: ``depth`` hidden layers of ``width`` ReLU units."""

from __future__ import annotations

import torch
from torch import nn

from ..permutation import PermutationSpec
from .common import PermutableModel, SpecBuilder, check_norm, norm1d


class MLP(PermutableModel):
    """``depth`` x ``width`` ReLU MLP (3 x 512 in both papers)."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        input_size: int = 28,
        num_classes: int = 10,
        width: int = 512,
        depth: int = 3,
        norm: str = "none",
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"mlp needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.norm_kind = check_norm(norm)
        d_in = in_channels * input_size * input_size
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        for i in range(depth):
            self.layers.append(nn.Linear(d_in if i == 0 else width, width))
            self.norms.append(norm1d(norm, width))
            self.acts.append(nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-activation features of every hidden layer."""
        x = x.flatten(1)
        feats = []
        for lin, nrm, act in zip(self.layers, self.norms, self.acts, strict=True):
            x = act(nrm(lin(x)))
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for lin, nrm, act in zip(self.layers, self.norms, self.acts, strict=True):
            x = act(nrm(lin(x)))
        return self.head(x)

    def permutation_spec(self) -> PermutationSpec:
        b = SpecBuilder()
        prev: str | None = None
        for i, (lin, nrm) in enumerate(zip(self.layers, self.norms, strict=True)):
            g = f"P{i}"
            b.dense(f"layers.{i}", lin, g, prev)
            b.norm(f"norms.{i}", nrm, g)
            b.activation(g, f"acts.{i}")
            prev = g
        b.dense("head", self.head, None, prev)
        return b.build(self)
