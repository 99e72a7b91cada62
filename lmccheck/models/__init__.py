"""Model registry: ``get_model(name, **kwargs)``.

Every model takes ``in_channels``, ``input_size`` and ``num_classes`` so it runs
on Fashion-MNIST (1x28x28) and CIFAR (3x32x32), and exposes
``permutation_spec()`` (:class:`PermutableModel`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .common import PermutableModel
from .mlp import MLP
from .resnet import ResNet20
from .vgg import VGG

MODELS: dict[str, Callable[..., PermutableModel]] = {
    "mlp": MLP,
    "vgg11": partial(VGG, "vgg11"),
    "vgg16": partial(VGG, "vgg16"),
    "resnet20": ResNet20,
}


def get_model(name: str, **kwargs: Any) -> PermutableModel:
    """Build a registered model. Unknown names raise ``KeyError`` listing the choices."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for model {name!r}: {e}") from None


__all__ = ["MLP", "MODELS", "VGG", "PermutableModel", "ResNet20", "get_model"]
