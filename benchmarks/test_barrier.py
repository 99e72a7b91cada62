"""Barrier evaluation speed: the engine (``lmccheck.interpolation.barrier``) vs a naive loop.

Paper setting (Sharma et al. App. D): 25 evenly spaced alphas. Cases:

- MLP 3x512 on 10k Fashion-MNIST test examples (target on 2 CPU cores:
  naive ~3.4 s -> engine <= 2.0 s);
- ResNet-20 (width 1, LayerNorm) on 1k CIFAR-shaped random images
  (target: naive ~37 s -> engine <= 25 s).

The naive reference builds a new model per alpha, loads ``lerp(A, B, alpha)``
and evaluates it plainly in one batch. Untrained random-init pairs: the time
does not depend on the weights' values.

    pytest benchmarks/test_barrier.py --benchmark-only
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmccheck.data import Split, load_dataset
from lmccheck.barrier_curves import BarrierResult, alpha_grid
from lmccheck.barrier_options import BarrierOptions
from lmccheck.interpolation import barrier, lerp
from lmccheck.models import get_model

ALPHAS = 25


def _pair(make: Callable[[], nn.Module]) -> tuple[nn.Module, dict, dict]:
    torch.manual_seed(0)
    a = make()
    torch.manual_seed(1)
    b = make()
    return a, a.state_dict(), b.state_dict()


def naive_barrier(make: Callable[[], nn.Module], a: dict, b: dict, data: Split) -> list[float]:
    """Reference: a new model per alpha, ``load_state_dict(lerp(...))``, one plain forward."""
    losses = []
    for alpha in alpha_grid(ALPHAS):
        model = make()
        model.load_state_dict(lerp(a, b, alpha))
        model.eval()
        with torch.no_grad():
            logits = model(data.x)
            losses.append(float(F.cross_entropy(logits, data.y)))
            float((logits.argmax(1) != data.y).float().mean())
    return losses


def _check(result: BarrierResult | list[float]) -> None:
    curve = result.loss if isinstance(result, BarrierResult) else result
    assert len(curve) == ALPHAS and all(math.isfinite(v) for v in curve)


# ---------------------------------------------------------------- MLP 3x512, 10k examples
def _mlp() -> nn.Module:
    return get_model("mlp", width=512, depth=3, norm="none")


@pytest.fixture(scope="module")
def mlp_case() -> tuple[nn.Module, dict, dict, Split]:
    model, a, b = _pair(_mlp)
    return model, a, b, load_dataset().test.take(10_000)


@pytest.mark.benchmark(group="barrier-mlp3x512-25x10k")
def test_barrier_mlp_engine(benchmark, mlp_case) -> None:  # type: ignore[no-untyped-def]
    model, a, b, data = mlp_case
    options = BarrierOptions(alphas=ALPHAS)
    result = benchmark.pedantic(lambda: barrier(model, a, b, data, options), rounds=3, iterations=1)
    _check(result)
    assert result.n_examples == 10_000


@pytest.mark.benchmark(group="barrier-mlp3x512-25x10k")
def test_barrier_mlp_naive(benchmark, mlp_case) -> None:  # type: ignore[no-untyped-def]
    model, a, b, data = mlp_case
    _check(benchmark.pedantic(lambda: naive_barrier(_mlp, a, b, data), rounds=3, iterations=1))


# ---------------------------------------------------------------- ResNet-20 1x LayerNorm, 1k examples
def _resnet() -> nn.Module:
    return get_model("resnet20", width=1.0, norm="layernorm", in_channels=3, input_size=32)


@pytest.fixture(scope="module")
def resnet_case() -> tuple[nn.Module, dict, dict, Split]:
    model, a, b = _pair(_resnet)
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(1000, 3, 32, 32, generator=g), torch.randint(0, 10, (1000,), generator=g))
    return model, a, b, data


@pytest.mark.benchmark(group="barrier-resnet20-25x1k")
def test_barrier_resnet20_engine(benchmark, resnet_case) -> None:  # type: ignore[no-untyped-def]
    model, a, b, data = resnet_case
    result = benchmark.pedantic(
        lambda: barrier(model, a, b, data, BarrierOptions(alphas=ALPHAS, n_examples=1000)), rounds=3, iterations=1
    )
    _check(result)


@pytest.mark.benchmark(group="barrier-resnet20-25x1k")
def test_barrier_resnet20_naive(benchmark, resnet_case) -> None:  # type: ignore[no-untyped-def]
    model, a, b, data = resnet_case
    _check(benchmark.pedantic(lambda: naive_barrier(_resnet, a, b, data), rounds=1, iterations=1))


# ---------------------------------------------------------------- fp32 vs bf16 autocast on the CPU tier's MLPs
@pytest.fixture(scope="module", params=[3, 6], ids=["mlp3x512", "mlp6x512"])
def mlp_depth_case(request) -> tuple[nn.Module, dict, dict, Split, int]:  # type: ignore[no-untyped-def]
    depth = request.param
    model, a, b = _pair(lambda: get_model("mlp", width=512, depth=depth, norm="none"))
    return model, a, b, load_dataset().test.take(10_000), depth


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_barrier_mlp_precision(benchmark, mlp_depth_case, precision: str) -> None:  # type: ignore[no-untyped-def]
    """The CPU tier's barrier in fp32 (the fast MLP path) and with bf16 autocast (the budget lever).

    Measured (AVX512-BF16 CPU, 2 cores, random-init pair): mlp 3x512 2.19 s -> 0.98 s, mlp 6x512 4.49 s -> 2.16 s.
    ``extra_info`` records the error barrier, so the two precisions can be compared.
    """
    model, a, b, data, depth = mlp_depth_case
    benchmark.group = f"barrier-mlp{depth}x512-precision"
    result = benchmark.pedantic(lambda: barrier(model, a, b, data, BarrierOptions(alphas=ALPHAS, precision=precision)),
                                rounds=2, iterations=1, warmup_rounds=1)
    _check(result)
    benchmark.extra_info["error_barrier"] = result.error_barrier
    benchmark.extra_info["loss_barrier"] = result.loss_barrier
