"""Benchmarks of training throughput (examples per second).

The CPU cases train the 3x512 MLP of both papers on a 10k-example
Fashion-MNIST subset for one epoch at batch size 128 (79 optimizer steps),
which is the inner loop of the CPU-scale fixtures: plain SGD, Adam, and SGD
with a 50% mask (IMP retraining). The ``gpu`` cases (skipped without CUDA)
train VGG-16 (LayerNorm, bf16 autocast) and the MLP on the whole training set.

``benchmark.extra_info`` records ``examples_per_s`` (training examples per
second of wall time, checkpoint evaluation included: two checkpoints of 256
examples each) and the final training loss.

Run ``pytest benchmarks/test_training.py --benchmark-only``, or check that it
runs with ``--benchmark-disable``.
"""

from __future__ import annotations

import pytest
import torch

from lmccheck.data import load_dataset
from lmccheck.pruning import magnitude_prune
from lmccheck.training import TrainConfig, build_model, train

MLP512 = TrainConfig(
    arch="mlp",
    model_kwargs={"width": 512, "depth": 3},
    train_subset=10_000,
    epochs=1,
    batch_size=128,
    optimizer="sgd",
    lr=0.05,
    warmup_epochs=0.2,
    eval_examples=256,
)

CASES: dict[str, tuple[TrainConfig, bool]] = {  # name -> (config, masked)
    "mlp512-sgd": (MLP512, False),
    "mlp512-adam": (MLP512.replace(optimizer="adam", lr=1e-3), False),
    "mlp512-sgd-masked": (MLP512, True),
}
GPU_CASES: dict[str, TrainConfig] = {
    "gpu-mlp512-sgd": MLP512.replace(train_subset=None, device="cuda"),
    "gpu-vgg16-ln-bf16": TrainConfig(
        arch="vgg16", model_kwargs={"width": 1.0, "norm": "layernorm"}, train_subset=None, epochs=1,
        batch_size=128, lr=0.1, warmup_epochs=0.2, device="cuda", precision="bf16", eval_examples=256,
    ),
}


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion-mnist")


def _bench(benchmark, cfg: TrainConfig, data, mask=None, rounds: int = 3) -> None:
    runs = []

    def once() -> None:
        runs.append(train(cfg, mask=mask, progress=False, data=data))

    once()  # warm-up: first-call allocations, thread pools, CUDA context
    runs.clear()
    benchmark.pedantic(once, rounds=rounds, iterations=1)
    run = runs[-1]
    n = run.info["n_train"] * cfg.epochs
    best = min(r.wall_time_s for r in runs)
    benchmark.extra_info.update(
        examples_per_s=n / best,
        examples=n,
        steps=run.info["total_steps"],
        wall_time_s=best,
        final_train_loss=run.final_metrics["train_loss"],
        device=run.info["device"],
        precision=run.info["precision_used"],
        threads=torch.get_num_threads(),
    )
    assert run.final_metrics["train_loss"] < run.metrics_at(0)["train_loss"]


@pytest.mark.parametrize("case", list(CASES))
def test_training_throughput(benchmark, data, case):
    cfg, masked = CASES[case]
    mask = None
    if masked:
        state = build_model(cfg, data).state_dict()
        mask = magnitude_prune(state, None, 0.5)
    _bench(benchmark, cfg, data, mask)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_training_throughput_gpu(benchmark, data, case):
    _bench(benchmark, GPU_CASES[case], data, rounds=1)
