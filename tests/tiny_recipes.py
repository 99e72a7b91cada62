"""A tiny MLP training recipe shared by the training and pruning tests (seconds to train)."""

from __future__ import annotations

from typing import Any

from lmccheck.training import TrainConfig


def tiny_config(**overrides: Any) -> TrainConfig:
    """mlp 32x2 on 512 Fashion-MNIST examples for 1 epoch; ``overrides`` replace fields."""
    base: dict[str, Any] = dict(
        arch="mlp",
        model_kwargs={"width": 32, "depth": 2},
        train_subset=512,
        epochs=1,
        batch_size=64,
        lr=0.05,
        warmup_epochs=0.25,
        checkpoints=(0, 0.25, 0.5),
        eval_examples=256,
    )
    base.update(overrides)
    return TrainConfig(**base)
