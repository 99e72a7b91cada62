"""ResNet-20 for small images, with a width multiplier and a choice of norm."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from ..permutation import PermutationSpec
from .common import PermutableModel, SpecBuilder, check_norm, norm2d, scaled


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (1x1 conv shortcut when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = norm2d(norm, c_out)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias)
        self.norm2 = norm2d(norm, c_out)
        self.shortcut: nn.Module
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias), norm2d(norm, c_out)
            )
        else:
            self.shortcut = nn.Identity()
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet20(PermutableModel):
    """ResNet-20 (3 stages x 3 blocks; 16/32/64 channels at width 1).

    Each stage's residual stream shares one permutation group, as does the
    stem; a stage's projection shortcut maps the previous stream to the new.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        input_size: int = 32,
        num_classes: int = 10,
        width: float = 1.0,
        norm: str = "layernorm",
        blocks_per_stage: int = 3,
    ) -> None:
        super().__init__()
        del input_size  # global pooling makes the network size-agnostic
        self.norm_kind = check_norm(norm)
        c = scaled(16, width)
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=norm == "none")
        self.norm1 = norm2d(norm, c)
        self.act1 = nn.ReLU()
        stages = []
        c_in = c
        for s, base in enumerate((16, 32, 64)):
            c_out = scaled(base, width)
            blocks = [
                BasicBlock(c_in if i == 0 else c_out, c_out, 2 if (s > 0 and i == 0) else 1, norm)
                for i in range(blocks_per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.conv1(x)))
        for stage in self.stages:
            x = stage(x)
        return self.head(self.pool(x).flatten(1))

    def permutation_spec(self) -> PermutationSpec:
        b = SpecBuilder()
        b.dense("conv1", self.conv1, "stream0", None)
        b.norm("norm1", self.norm1, "stream0")
        b.activation("stream0", "act1")
        stream, n_streams = "stream0", 0
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(cast(Iterable[BasicBlock], stage)):  # a stage is a Sequential of blocks
                p = f"stages.{s}.{i}"
                inner = f"s{s}b{i}"
                out = stream
                if isinstance(block.shortcut, nn.Sequential):  # projection: a new stream
                    n_streams += 1
                    out = f"stream{n_streams}"
                b.dense(f"{p}.conv1", block.conv1, inner, stream)
                b.norm(f"{p}.norm1", block.norm1, inner)
                b.activation(inner, f"{p}.act1")
                b.dense(f"{p}.conv2", block.conv2, out, inner)
                b.norm(f"{p}.norm2", block.norm2, out)
                if isinstance(block.shortcut, nn.Sequential):
                    b.dense(f"{p}.shortcut.0", block.shortcut[0], out, stream, joins=f"{p}.conv2")
                    b.norm(f"{p}.shortcut.1", block.shortcut[1], out)
                # every block output writes the stream, in forward order: the last
                # one (the stage's last block) is what activation matching reads
                b.activation(out, f"{p}.act2")
                stream = out
        b.dense("head", self.head, None, stream)
        return b.build(self)
