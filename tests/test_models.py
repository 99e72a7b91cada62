"""Models: registry, shapes, and exact permutation invariance (claim S1)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmccheck.data import load_dataset
from lmccheck.invariance import output_deviation, random_invariance_check
from lmccheck.models import get_model
from lmccheck.permutation import Permutation, check_spec

ARCHS = ("mlp", "vgg11", "vgg16", "resnet20")
NORMS = ("none", "layernorm", "batchnorm")
BASE_WIDTH = {"mlp": 512, "vgg11": 1.0, "vgg16": 1.0, "resnet20": 1.0}


def build(arch: str, norm: str, mult: int, shape: tuple[int, int], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    width = BASE_WIDTH[arch] * mult
    return get_model(arch, width=width, norm=norm, in_channels=shape[0], input_size=shape[1], num_classes=10)


@pytest.fixture(scope="module")
def fmnist_batch() -> torch.Tensor:
    return load_dataset("fashion-mnist").test.x[:6]


@pytest.mark.slow
@pytest.mark.parametrize("mult", [1, 2], ids=["1x", "2x"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", ARCHS)
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), train=st.booleans())
def test_s1_random_permutation_preserves_outputs(
    arch: str, norm: str, mult: int, seed: int, train: bool, fmnist_batch: torch.Tensor
) -> None:
    model = build(arch, norm, mult, (1, 28))
    if norm == "batchnorm":  # non-trivial running statistics
        model.train()
        with torch.no_grad():
            model(fmnist_batch)
    check_spec(model.permutation_spec(), model)
    perm = Permutation.random(model.permutation_spec(), model.state_dict(), seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dev, scale = output_deviation(model, perm, fmnist_batch, train=train)
    assert dev < 1e-4 and scale > 0
    # a copy of the model was used: weights and running statistics are untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("arch", ARCHS)
def test_cifar_shapes_and_invariance(arch: str) -> None:
    model = build(arch, "layernorm", 1, (3, 32)) if arch != "mlp" else build(arch, "none", 1, (3, 32))
    x = torch.randn(4, 3, 32, 32)
    assert model(x).shape == (4, 10)
    dev, _ = random_invariance_check(model, x, seed=5)
    assert dev < 1e-4


def test_permutation_changes_weights_but_not_function(fmnist_batch: torch.Tensor) -> None:
    """Guard against a vacuous S1: the permuted weights really differ."""
    model = build("resnet20", "layernorm", 1, (1, 28))
    perm = Permutation.random(model.permutation_spec(), model.state_dict(), 0)
    permuted = perm.apply(model.state_dict())
    for k, v in model.state_dict().items():
        if v.dim() >= 2 and any(g is not None for g in perm.spec.axes[k]):
            assert not torch.equal(permuted[k], v), k
    # a wrong permutation (one group of the residual stream left out) breaks the function
    keys = [k for k, _ in perm.spec.groups["stream1"]]
    assert len(keys) > 3
    wrong = permuted.copy()
    wrong[keys[0]] = model.state_dict()[keys[0]]
    m2 = build("resnet20", "layernorm", 1, (1, 28))
    m2.load_state_dict(wrong)
    model.eval(), m2.eval()
    with torch.no_grad():
        assert float((model(fmnist_batch) - m2(fmnist_batch)).abs().max()) > 1e-3


def test_registry_errors() -> None:
    with pytest.raises(KeyError, match="unknown model 'vgg19'.*available"):
        get_model("vgg19")
    with pytest.raises(ValueError, match="unknown norm"):
        get_model("vgg11", norm="groupnorm")
    with pytest.raises(ValueError, match="bad arguments for model 'mlp'"):
        get_model("mlp", colour="red")


def test_layernorm_is_per_channel() -> None:
    model = build("vgg11", "layernorm", 1, (1, 28))
    norm = model.features[0].norm
    assert norm.weight.shape == (64,) and norm.bias.shape == (64,)
