"""Exact permutation invariance of networks (Sharma et al. §2.2; claim S1)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .permutation import Permutation, check_spec, permutation_spec


def output_deviation(
    model: nn.Module, perm: Permutation, inputs: torch.Tensor, *, train: bool = False
) -> tuple[float, float]:
    """``(max |f_P[theta](x) - f_theta(x)|, max |f_theta(x)|)`` over ``inputs``: the deviation and the output's
    scale, against which a float32 tolerance is judged (claim S1).

    ``model`` holds theta. The model is copied, so its weights and BatchNorm
    running statistics are left as they were (train mode updates them).
    """
    check_spec(perm.spec, model)
    original = copy.deepcopy(model)
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(perm.apply(model.state_dict()))
    original.train(train)
    permuted.train(train)
    with torch.no_grad():
        y0 = original(inputs)
        y1 = permuted(inputs)
    return float((y0 - y1).abs().max()), float(y0.abs().max())


def random_invariance_check(
    model: nn.Module, inputs: torch.Tensor, seed: int, *, train: bool = False
) -> tuple[float, Permutation]:
    """Deviation under a uniformly random permutation drawn from ``seed``."""
    spec = permutation_spec(model)
    perm = Permutation.random(spec, model.state_dict(), seed)
    return output_deviation(model, perm, inputs, train=train)[0], perm
