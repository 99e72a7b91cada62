"""VGG-11 / VGG-16 for small images, with a width multiplier and a choice of norm."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ..permutation import PermutationSpec
from .common import PermutableModel, SpecBuilder, check_norm, norm2d, scaled

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class ConvBlock(nn.Module):
    """3x3 conv -> norm -> ReLU."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none")
        self.norm = norm2d(norm, c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class VGG(PermutableModel):
    """VGG with global average pooling and a two-hidden-layer classifier.

    Max-pools are skipped once the feature map is 1x1, so the same network
    runs on 28x28 (Fashion-MNIST) and 32x32 (CIFAR) inputs.
    """

    def __init__(
        self,
        variant: str = "vgg16",
        *,
        in_channels: int = 3,
        input_size: int = 32,
        num_classes: int = 10,
        width: float = 1.0,
        norm: str = "layernorm",
    ) -> None:
        super().__init__()
        if variant not in CONFIGS:
            raise KeyError(f"unknown VGG variant {variant!r}; choose one of {sorted(CONFIGS)}")
        self.norm_kind = check_norm(norm)
        self.block_index: list[int] = []  # positions of the conv blocks in self.features
        layers: list[nn.Module] = []
        c, size = in_channels, input_size
        for item in CONFIGS[variant]:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            block = ConvBlock(c, scaled(int(item), width), norm)
            self.block_index.append(len(layers))
            layers.append(block)
            c = block.conv.out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = scaled(512, width)
        self.fc1 = nn.Linear(c, hidden)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        x = self.act2(self.fc2(self.act1(self.fc1(x))))
        return self.head(x)

    def permutation_spec(self) -> PermutationSpec:
        b = SpecBuilder()
        prev: str | None = None
        for i, j in enumerate(self.block_index):
            block = cast(ConvBlock, self.features[j])  # block_index holds the ConvBlocks' positions
            g = f"conv{i}"
            b.dense(f"features.{j}.conv", block.conv, g, prev)
            b.norm(f"features.{j}.norm", block.norm, g)
            b.activation(g, f"features.{j}.act")
            prev = g
        b.dense("fc1", self.fc1, "fc1", prev)
        b.activation("fc1", "act1")
        b.dense("fc2", self.fc2, "fc2", "fc1")
        b.activation("fc2", "act2")
        b.dense("head", self.head, None, "fc2")
        return b.build(self)
