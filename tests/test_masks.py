"""Masked training: pruned weights stay exactly 0, whatever the optimizer does and across spawning.

``train(..., mask=)`` has three safeguards (lmccheck/training.py):

1. *initial masking*: the masked weights of ``init_state`` are zeroed before
   the first checkpoint;
2. *gradient masking*: the gradients of masked weights are zeroed before
   every ``optimizer.step()`` (so no momentum, Adam moments or weight decay
   build up on them);
3. *re-masking*: the masked weights are multiplied by the mask after every
   ``optimizer.step()``.

With the optimizers a :class:`TrainConfig` can ask for (SGD with momentum
and L2 weight decay, Adam with L2 weight decay) and a fresh optimizer state,
a weight that is 0 with a zero gradient never moves (decay of 0 is 0, and the
momentum/moment buffers start at 0), so safeguards 2 and 3 are each
sufficient on their own: removing one of them changes no weight, and no test
that only looks at trained weights through the public API can notice. Each is
therefore tested on its own by hooking the optimizer that ``train`` builds
(``lmccheck.training_loop._make_optimizer`` is monkeypatched to register
``torch.optim.Optimizer`` step hooks):

* re-masking: a *rogue* post-step hook moves every parameter, as an
  optimizer that moves zero-gradient weights would; only re-masking can bring
  the pruned weights back to 0;
* gradient masking: a pre-step hook records the gradients the optimizer sees;
  those of pruned weights must be exactly 0 at every step, and the optimizer
  state (momentum buffer, Adam moments) of pruned weights stays 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from lmccheck import training_loop
from lmccheck.data import load_dataset
from lmccheck.pruning import Mask, apply_mask, magnitude_prune, retrain_with_mask
from lmccheck.training import Run, TrainConfig, build_model, spawn, train

from tiny_recipes import tiny_config


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion-mnist")


def tiny(**kw) -> TrainConfig:
    return tiny_config(**kw)


def half_mask(state: dict[str, torch.Tensor]) -> Mask:
    """Prune half of the prunable weights (the hidden layers; not the head) by magnitude."""
    mask = magnitude_prune(state, None, 0.5)
    assert set(mask) == {"layers.0.weight", "layers.1.weight"}
    return mask


def assert_pruned_zero(run: Run, mask: Mask) -> None:
    """Every checkpoint of ``run`` has exactly 0 wherever ``mask`` is False."""
    for t in run.times:
        for k, m in mask.items():
            pruned = run.state_at(t)[k][~m]
            assert pruned.numel() > 0
            assert bool((pruned == 0).all()), (
                f"{k} at epoch {t}: {int((pruned != 0).sum())} pruned weights are non-zero")


def assert_same_mask(got: Mask | None, want: Mask) -> None:
    assert got is not None, "the run carries no mask"
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def kept_moved(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], mask: Mask) -> float:
    """The fraction of kept weights that differ between two states."""
    moved = sum(int((a[k][m] != b[k][m]).sum()) for k, m in mask.items())
    return moved / sum(int(m.sum()) for m in mask.values())


# --------------------------------------------------------------------------- spawning a pruned run
def test_spawn_from_masked_run_keeps_the_mask(data):
    """Children (and grandchildren) of a masked run keep its mask, in memory and in their record."""
    cfg = tiny(checkpoints=(0, 0.25, 0.5))
    dense = train(cfg, data=data)
    mask = half_mask(dense.final)
    parent = retrain_with_mask(cfg, dense.state_at(0.25), mask, 0.25, data=data)  # an IMP level
    assert_same_mask(parent.mask, mask)
    assert_pruned_zero(parent, mask)

    child = spawn(cfg, parent, 0.25, sgd_seed=7, data=data)
    assert child.times == [0.25, 0.5, 1.0] and child.config.sgd_seed == 7
    assert_same_mask(child.mask, mask)
    assert_pruned_zero(child, mask)
    assert all(torch.equal(child.state_at(0.25)[k], v) for k, v in parent.state_at(0.25).items())
    assert kept_moved(child.final, parent.final, mask) > 0.9  # a different SGD noise, really trained

    # the mask survives the store's record, and spawning from a stored parent
    tensors, meta = child.to_record()
    assert {n.removeprefix("mask/") for n in tensors if n.startswith("mask/")} == set(mask)
    stored = Run.from_record(child.config, tensors, json.loads(json.dumps(meta)))
    assert_same_mask(stored.mask, mask)
    grandchild = spawn(cfg, stored, 0.5, sgd_seed=8, data=data)
    assert grandchild.times == [0.5, 1.0]
    assert_same_mask(grandchild.mask, mask)
    assert_pruned_zero(grandchild, mask)
    assert kept_moved(grandchild.final, child.final, mask) > 0.9


# --------------------------------------------------------------------------- the safeguards, together
@pytest.mark.parametrize(
    "changes",
    [
        {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.05},
        {"optimizer": "adam", "lr": 3e-3, "momentum": 0.9, "weight_decay": 0.05},
    ],
    ids=["sgd-momentum-wd", "adam-wd"],
)
def test_pruned_weights_stay_zero_with_momentum_and_weight_decay(data, changes):
    """End to end, through the config only. Catches the removal of *both* safeguards 2 and 3
    (each one alone keeps the weights at 0 with these optimizers; see the module docstring)."""
    cfg = tiny(**changes)
    init = build_model(cfg, data).state_dict()
    mask = half_mask(init)
    run = train(cfg, init_state=apply_mask(init, mask), mask=mask, data=data)
    assert_pruned_zero(run, mask)
    assert kept_moved(run.final, run.state_at(0), mask) > 0.9
    # not vacuous: without the mask, the same start moves the would-be pruned weights
    free = train(cfg, init_state=apply_mask(init, mask), data=data)
    assert all(bool((free.final[k][~m] != 0).any()) for k, m in mask.items())


def test_initial_masking_zeroes_the_init_state(data):
    """Safeguard 1: an unmasked ``init_state`` is masked before the first checkpoint."""
    cfg = tiny()
    init = build_model(cfg, data).state_dict()
    mask = half_mask(init)
    assert all(bool((init[k][~m] != 0).all()) for k, m in mask.items())  # nothing pruned yet
    run = train(cfg, init_state=init, mask=mask, data=data)
    start = run.state_at(0)
    want = apply_mask(init, mask)
    assert all(torch.equal(start[k], want[k]) for k in want)  # pruned -> 0, the rest untouched
    assert_pruned_zero(run, mask)
    # the run keeps its own copy of the mask
    mask["layers.0.weight"].fill_(True)
    assert not bool(run.mask["layers.0.weight"].all())


# --------------------------------------------------------------------------- each safeguard on its own
def hook_optimizer(
    monkeypatch: pytest.MonkeyPatch,
    *,
    pre: Callable[[list[torch.nn.Parameter]], None] | None = None,
    post: Callable[[list[torch.nn.Parameter]], None] | None = None,
) -> list[torch.optim.Optimizer]:
    """Make ``train`` build its usual optimizer with step hooks ``pre``/``post(params)``; returns the optimizers
    built."""
    real = training_loop._make_optimizer
    built: list[torch.optim.Optimizer] = []

    def make(config: TrainConfig, params: list[torch.nn.Parameter], foreach: bool) -> torch.optim.Optimizer:
        opt = real(config, params, foreach)
        if pre is not None:
            opt.register_step_pre_hook(lambda o, args, kwargs: pre(params))
        if post is not None:
            opt.register_step_post_hook(lambda o, args, kwargs: post(params))
        built.append(opt)
        return opt

    monkeypatch.setattr(training_loop, "_make_optimizer", make)
    return built


def param_names(cfg: TrainConfig, data) -> list[str]:
    """Names of the parameters in the order ``train`` hands them to the optimizer."""
    return [n for n, p in build_model(cfg, data).named_parameters() if p.requires_grad]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_remasking_after_step_undoes_an_optimizer_that_moves_pruned_weights(data, monkeypatch, optimizer):
    """Safeguard 3 alone: an update that ignores the gradient (here +1e-3 on every parameter, every
    step) moves the pruned weights; only the re-masking after the step puts them back to 0."""
    cfg = tiny(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 3e-3)
    init = build_model(cfg, data).state_dict()
    mask = half_mask(init)
    steps = []

    def rogue(params: list[torch.nn.Parameter]) -> None:
        steps.append(1)
        with torch.no_grad():
            for p in params:
                p.add_(1e-3)

    hook_optimizer(monkeypatch, post=rogue)
    run = train(cfg, init_state=init, mask=mask, data=data)
    assert len(steps) == run.info["total_steps"] == 8  # the rogue update ran at every step
    assert_pruned_zero(run, mask)
    # the rogue update did reach the weights nobody masks (the head, the biases)
    assert not torch.equal(run.final["layers.0.bias"], run.state_at(0)["layers.0.bias"])


@pytest.mark.parametrize(
    "changes",
    [{"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.05},
     {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.05}],
    ids=["sgd", "adam"],
)
def test_optimizer_never_sees_a_gradient_on_pruned_weights(data, monkeypatch, changes):
    """Safeguard 2 alone: the gradients the optimizer steps with are exactly 0 on pruned weights,
    at every step, so its state (momentum buffer, Adam moments) stays 0 there too."""
    cfg = tiny(**changes)
    init = build_model(cfg, data).state_dict()
    mask = half_mask(init)
    names = param_names(cfg, data)
    index = {k: names.index(k) for k in mask}
    seen: list[dict[str, tuple[float, float]]] = []  # per step: (max |grad| pruned, max |grad| kept)

    def record(params: list[torch.nn.Parameter]) -> None:
        step = {}
        for k, m in mask.items():
            g = params[index[k]].grad
            assert g is not None and g.shape == m.shape
            step[k] = (float(g[~m].abs().max()), float(g[m].abs().max()))
        seen.append(step)

    built = hook_optimizer(monkeypatch, pre=record)
    run = train(cfg, init_state=init, mask=mask, data=data)
    assert len(seen) == run.info["total_steps"] == 8
    for step in seen:
        for k, (pruned, kept) in step.items():
            assert pruned == 0.0, f"the optimizer stepped with a non-zero gradient on pruned weights of {k}"
            assert kept > 0.0
    (opt,) = built
    params = opt.param_groups[0]["params"]
    buffers = ("momentum_buffer",) if cfg.optimizer == "sgd" else ("exp_avg", "exp_avg_sq")
    for k, m in mask.items():
        state = opt.state[params[index[k]]]
        for name in buffers:
            assert bool((state[name][~m] == 0).all()), f"{name} of pruned weights of {k}"
            assert bool((state[name][m] != 0).any())
    assert_pruned_zero(run, mask)


def test_hooked_optimizer_trains_like_the_real_one(data, monkeypatch):
    """The hooks themselves change nothing (so the two tests above test ``train``, not the hooks)."""
    cfg = tiny(weight_decay=0.05)
    init = build_model(cfg, data).state_dict()
    mask = half_mask(init)
    plain = train(cfg, init_state=init, mask=mask, data=data)
    hook_optimizer(monkeypatch, pre=lambda params: None, post=lambda params: None)
    hooked = train(cfg, init_state=init, mask=mask, data=data)
    assert all(torch.equal(plain.final[k], hooked.final[k]) for k in plain.final)
