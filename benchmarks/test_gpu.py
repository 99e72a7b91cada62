"""GPU benchmarks of the paper-scale tier (issue 16's targets on one H100); skipped without CUDA.

CIFAR-shaped synthetic data (3x32x32, 50k training and 10k test images, 10 classes): throughput does not
depend on the pixels, and the device machines cannot download CIFAR-10. Cases and targets:

| case | target |
|---|---|
| one training epoch, vgg16 1x LN, bf16 | <= 2 s |
| one training epoch, resnet20 1x LN, bf16 | <= 1.5 s |
| resnet20 4x / 16x, one epoch | recorded |
| resnet20 1x, 5 replicates trained together (``lmccheck.ensemble``) | <= 2x one replicate |
| weight matching, resnet20 32x (random-init pair) | <= 15 s |
| barrier, resnet20 16x, 25 alphas x 10k test images, bf16 | <= 20 s |

The targets are recorded in ``extra_info`` (``target_s``, ``meets_target``), not asserted: a slower card is
a measurement, not a failure. ``make gpu-check`` runs this file.

    pytest benchmarks/test_gpu.py --benchmark-only -m gpu
"""

from __future__ import annotations

import time

import pytest
import torch

from lmccheck.data import Dataset, Split
from lmccheck.ensemble import train_together
from lmccheck.barrier_options import BarrierOptions
from lmccheck.interpolation import barrier
from lmccheck.models import get_model
from lmccheck.permutation import permutation_spec
from lmccheck.training import TrainConfig, train
from lmccheck.weight_matching import weight_matching

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def cifar_shaped() -> Dataset:
    g = torch.Generator().manual_seed(0)
    train_split = Split(torch.randn(50_000, 3, 32, 32, generator=g), torch.randint(0, 10, (50_000,), generator=g))
    test_split = Split(torch.randn(10_000, 3, 32, 32, generator=g), torch.randint(0, 10, (10_000,), generator=g))
    return Dataset(name="cifar10", train=train_split, test=test_split, num_classes=10, in_channels=3, input_size=32,
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), augmentable=True)


def epoch_recipe(arch: str, width: float, **kw: object) -> TrainConfig:
    """One epoch of Sharma et al.'s App. D recipe (augmentation, bf16), two checkpoints of 1k examples."""
    base = dict(arch=arch, model_kwargs={"width": width, "norm": "layernorm"}, dataset="cifar10", epochs=1.0,
                batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_epochs=0.5, augment=True,
                device="cuda", precision="bf16", eval_examples=1000)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _record(benchmark, seconds: float, target: float | None, **extra: object) -> None:
    benchmark.extra_info.update(seconds=seconds, target_s=target, device=torch.cuda.get_device_name(), **extra)
    if target is not None:
        benchmark.extra_info["meets_target"] = seconds <= target


TRAIN_CASES = {"vgg16-1x": ("vgg16", 1.0, 2.0), "resnet20-1x": ("resnet20", 1.0, 1.5),
               "resnet20-4x": ("resnet20", 4.0, None), "resnet20-16x": ("resnet20", 16.0, None)}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_gpu_training_epoch(benchmark, cifar_shaped: Dataset, case: str) -> None:
    arch, width, target = TRAIN_CASES[case]
    cfg = epoch_recipe(arch, width)
    # warm-up: context, cuDNN autotuning
    train(cfg.replace(epochs=0.1, warmup_epochs=0.0), data=cifar_shaped, progress=False)
    runs: list = []
    benchmark.pedantic(lambda: runs.append(train(cfg, data=cifar_shaped, progress=False)), rounds=2, iterations=1)
    best = min(r.wall_time_s for r in runs)
    _record(benchmark, best, target, examples_per_s=50_000 / best, steps=runs[-1].info["total_steps"])


def test_gpu_replicates_trained_together(benchmark, cifar_shaped: Dataset) -> None:
    """5 replicates of resnet20 1x as one vmapped ensemble, against one replicate alone (target <= 2x)."""
    cfg = epoch_recipe("resnet20", 1.0)
    configs = [cfg.replace(init_seed=i, sgd_seed=100 + i) for i in range(5)]
    # warm-up
    train_together([c.replace(epochs=0.1, warmup_epochs=0.0) for c in configs], data=cifar_shaped, progress=False)
    train(cfg.replace(epochs=0.1, warmup_epochs=0.0), data=cifar_shaped, progress=False)
    single = train(cfg, data=cifar_shaped, progress=False).wall_time_s
    out: list = []
    benchmark.pedantic(lambda: out.append(train_together(configs, data=cifar_shaped, progress=False)), rounds=1,
                       iterations=1)
    together = out[-1][0].wall_time_s * len(configs)
    _record(benchmark, together, 2 * single, one_replicate_s=single, ratio=together / single, members=len(configs))


def test_gpu_weight_matching_resnet20_32x(benchmark) -> None:
    torch.manual_seed(0)
    model = get_model("resnet20", width=32.0, norm="layernorm", in_channels=3, input_size=32)
    spec = permutation_spec(model)
    # Gram matrices on the GPU (the states' device), each assignment on the CPU
    a = {k: v.to("cuda") for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    b = {k: v.to("cuda") for k, v in get_model("resnet20", width=32.0, norm="layernorm", in_channels=3,
                                                input_size=32).state_dict().items()}
    t = {}

    def once() -> None:
        t0 = time.perf_counter()
        p = weight_matching(spec, a, b, seed=0)
        t["s"] = time.perf_counter() - t0
        t["sweeps"] = p.stats["sweeps"]

    benchmark.pedantic(once, rounds=1, iterations=1)
    _record(benchmark, t["s"], 15.0, sweeps=t["sweeps"])


def test_gpu_barrier_resnet20_16x(benchmark, cifar_shaped: Dataset) -> None:
    make = lambda: get_model("resnet20", width=16.0, norm="layernorm", in_channels=3, input_size=32)  # noqa: E731
    torch.manual_seed(0)
    model = make()
    a = model.state_dict()
    torch.manual_seed(1)
    b = make().state_dict()
    options = BarrierOptions(alphas=25, n_examples=10_000, precision="bf16")
    barrier(model, a, b, cifar_shaped.test, options.replace(alphas=2, n_examples=1000), device="cuda")  # warm-up
    t = {}

    def once() -> None:
        t0 = time.perf_counter()
        res = barrier(model, a, b, cifar_shaped.test, options, device="cuda")
        torch.cuda.synchronize()
        t["s"] = time.perf_counter() - t0
        t["res"] = res

    benchmark.pedantic(once, rounds=1, iterations=1)
    _record(benchmark, t["s"], 20.0, loss_barrier=t["res"].loss_barrier)
