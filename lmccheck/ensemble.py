"""Several runs of one recipe trained together, as one vmapped ensemble.

Independent replicates, spawned children and IMP retrainings of one recipe
differ only in their seeds (and their starting state or mask). On a GPU, one
small network rarely fills the device; :func:`train_together` stacks the
members' parameters (``torch.func.stack_module_state``) and runs one
``vmap``-ed ``functional_call`` forward and backward per step for all of them.

Each member keeps what makes it the run it is: its ``init_seed`` (or its
``init_state``), its own data order and augmentation noise (from its
``sgd_seed``, exactly as :func:`lmccheck.training.train` draws them), its
mask, its checkpoints and metrics. The optimizer (SGD with momentum and
weight decay, or Adam) updates every element independently, so a member's
update is the one it would get alone. What differs from separate runs is the
order of floating-point reductions in the batched kernels, so results agree
with :func:`~lmccheck.training.train` to rounding (the tests compare them on
small MLPs on the CPU), not bit for bit. Each :class:`~lmccheck.training.Run`
is stored under its own recipe's key, like a run trained alone.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from .data import Dataset
from .training import (
    Run,
    StateDict,
    TrainConfig,
    _autocast,
    _check_init_state,
    _check_mask,
    _check_start,
    _DeviceData,
    _diverged,
    _make_bar,
    _make_optimizer,
    _masked_step,
    _schedule,
    _sgd_batch,
    build_model,
    epoch_permutation,
    lr_at,
)

__all__ = ["SEED_FIELDS", "train_together"]

#: the recipe fields that may differ between the members of one ensemble
SEED_FIELDS = ("init_seed", "sgd_seed")


def _shared_recipe(configs: Sequence[TrainConfig]) -> TrainConfig:
    if not configs:
        raise ValueError("train_together needs at least one config")
    first = configs[0]
    base = {k: v for k, v in first.recipe().items() if k not in SEED_FIELDS}
    for i, c in enumerate(configs[1:], start=1):
        other = {k: v for k, v in c.recipe().items() if k not in SEED_FIELDS}
        diff = sorted(k for k in base if base[k] != other.get(k))
        if diff:
            raise ValueError(
                f"member {i} differs from member 0 in {', '.join(diff)}: an ensemble trains one recipe whose "
                f"members differ only in {' and '.join(SEED_FIELDS)}; train the others separately"
            )
        if c.device != first.device:
            raise ValueError(f"member {i} trains on {c.device!r}, member 0 on {first.device!r}: use one device")
    return first


def _per_member(value: object, n: int, what: str) -> list:
    if value is None:
        return [None] * n
    values = list(value)  # type: ignore[call-overload]
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} given for {n} members (one per member, or None)")
    return values


def train_together(
    configs: Sequence[TrainConfig],
    *,
    init_states: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    start_epoch: float = 0.0,
    masks: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    progress: bool | TextIO | None = None,
    data: Dataset | None = None,
) -> list[Run]:
    """Train ``configs`` (one recipe, different seeds) together; the same runs :func:`train` gives each.

    ``init_states`` and ``masks`` give each member what :func:`train`'s ``init_state`` and ``mask`` give
    one run (None, or one entry per member; with masks, every member masks the same parameters, for
    example IMP retrainings of one level). ``start_epoch`` is shared (spawned children of one time).
    Models with BatchNorm are refused (their running statistics are state the ensemble would share).

    Raises ``ValueError`` for recipes that differ in more than their seeds, and
    :class:`~lmccheck.training.TrainingDivergedError` naming the member whose loss became NaN or infinite.
    """
    config = _shared_recipe(configs)
    n = len(configs)
    inits = _per_member(init_states, n, "init_states")
    member_masks = _per_member(masks, n, "masks")
    has_init = [s is not None for s in inits]
    if any(has_init) and not all(has_init):
        raise ValueError("init_states: give a state for every member or for none")
    start_epoch, device, data = _check_start(config, start_epoch, all(has_init), data)
    t0 = time.perf_counter()

    # -- members -----------------------------------------------------------------
    models: list[nn.Module] = []
    for c, init in zip(configs, inits, strict=True):
        m = build_model(c, data)
        if init is not None:
            _check_init_state(m, init)
            m.load_state_dict({k: v.detach().cpu() for k, v in init.items()})
        models.append(m)
    if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in models[0].modules()):
        raise ValueError(f"{config.arch} with BatchNorm cannot train as an ensemble (its running statistics "
                         "are shared state); train the members one by one with lmccheck.training.train")
    masked_names = [sorted(_check_mask(models[0], mk)) if mk is not None else [] for mk in member_masks]
    if any(names != masked_names[0] for names in masked_names):
        raise ValueError("masks: every member must mask the same parameters (give all masks or none)")
    for m, mk in zip(models, member_masks, strict=True):
        if mk is not None:
            _check_mask(m, mk)
    for m in models:
        m.to(device)
    params, buffers = stack_module_state(models)  # leaves of shape (members, ...)
    base = copy.deepcopy(models[0]).to("meta")
    mask_names = masked_names[0]
    mask_params = [params[k] for k in mask_names]
    mask_values = [torch.stack([mk[k] for mk in member_masks]).to(device=device, dtype=params[k].dtype)
                   for k in mask_names]
    if mask_params:
        with torch.no_grad():
            torch._foreach_mul_(mask_params, mask_values)

    def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    batched = torch.vmap(forward)

    # -- data and schedule ---------------------------------------------------------
    d = _DeviceData.load(config, data, device, channels_last=False)
    spe, total, first, at_step = _schedule(config, d.n_train, start_epoch)
    optimizer = _make_optimizer(config, list(params.values()), foreach=True)
    check_every = 1 if device.type == "cpu" else 25
    when = "" if check_every == 1 else f" (checked every {check_every} steps; it may have diverged earlier)"
    checkpoints: list[dict[float, StateDict]] = [{} for _ in configs]
    metrics: list[dict[float, dict[str, float]]] = [{} for _ in configs]
    eval_model = copy.deepcopy(models[0])
    state_keys = list(eval_model.state_dict())  # a run's state: train()'s keys, in its order
    stacked = {**params, **buffers}
    del models

    def take_checkpoint(step: int) -> None:
        for i, c in enumerate(configs):
            state = {k: stacked[k][i].detach().to("cpu", copy=True) for k in state_keys}
            for k, v in state.items():
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    raise _diverged(c, step, spe, f"member {i}'s parameter {k!r} became NaN/inf")
            eval_model.load_state_dict(state)
            m = d.metrics(eval_model, c, step, spe, total)
            for t in at_step[step]:
                checkpoints[i][t] = state
                metrics[i][t] = m

    def check_loss(step: int, losses: torch.Tensor) -> None:
        values = losses.tolist()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise _diverged(configs[i], step, spe, f"member {i}'s loss is {v}{when}")

    bar = _make_bar(config, total - first, progress)
    if bar is not None:
        bar.set_description(f"train {n} x {config.arch} together")
    aug_gens = [torch.Generator(device=device) for _ in configs] if config.augment else [None] * n
    perms: list[torch.Tensor] = []
    last: torch.Tensor | None = None
    try:
        for step in range(first, total):
            if step in at_step:
                take_checkpoint(step)
            epoch, pos = divmod(step, spe)
            if not perms or pos == 0:
                perms = [epoch_permutation(c.sgd_seed, epoch, d.n_train).to(device) for c in configs]
            batches = [_sgd_batch(c, d.x_train, d.y_train, perm, pos, step, g, False)
                       for c, perm, g in zip(configs, perms, aug_gens, strict=True)]
            xb = torch.stack([x for x, _ in batches])
            yb = torch.stack([y for _, y in batches])
            lr = lr_at(config, step, spe)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with _autocast(device, config.precision):
                out = batched(params, buffers, xb)
            # each member's mean loss; their sum has each member's gradient in its slice
            losses = F.cross_entropy(out.float().flatten(0, 1), yb.flatten(), reduction="none").view(n, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            _masked_step(optimizer, mask_params, mask_values)
            last = losses.detach()
            if (step + 1 - first) % check_every == 0:
                check_loss(step, last)
            if bar is not None:
                bar.update(1)
        if last is not None:
            check_loss(total - 1, last)
        if total in at_step:
            take_checkpoint(total)
    finally:
        if bar is not None:
            bar.close()

    wall = time.perf_counter() - t0
    info = d.info(config.precision if device.type == "cuda" else "fp32", spe, total, first)
    info["trained_together"] = n
    return [
        Run(config=c, checkpoints=checkpoints[i], metrics=metrics[i], wall_time_s=wall / n, start_epoch=start_epoch,
            mask={k: v.detach().cpu().clone() for k, v in member_masks[i].items()} if member_masks[i] else None,
            info={**info, "member": i})
        for i, c in enumerate(configs)
    ]
