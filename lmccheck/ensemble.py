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
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO, TypeVar

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from .data import Dataset
from .training import Run, StateDict, TrainConfig, _check_init_state, _check_mask, build_model
from .training_loop import Stepper, _check_start, run_steps

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


T = TypeVar("T")


def _per_member(value: Sequence[T | None] | None, n: int, what: str) -> list[T | None]:
    if value is None:
        return [None] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} given for {n} members (one per member, or None)")
    return values


class _VmappedStepper(Stepper):
    """The members' parameters stacked (``stack_module_state``) and one ``vmap``-ed forward for all of them."""

    together = True
    channels_last = False

    def __init__(self, configs: Sequence[TrainConfig], data: Dataset, device: torch.device,
                 inits: list[Mapping[str, torch.Tensor] | None],
                 member_masks: list[Mapping[str, torch.Tensor] | None]) -> None:
        config = configs[0]
        models: list[nn.Module] = []
        for c, init in zip(configs, inits, strict=True):
            model = build_model(c, data)
            if init is not None:
                _check_init_state(model, init)
                model.load_state_dict({k: v.detach().cpu() for k, v in init.items()})
            models.append(model)
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
        self.mask_params = [params[k] for k in mask_names]
        given = [mk for mk in member_masks if mk is not None]  # every member's, when mask_names is not empty
        self.mask_values = [torch.stack([mk[k] for mk in given]).to(device=device, dtype=params[k].dtype)
                            for k in mask_names]
        if self.mask_params:
            with torch.no_grad():
                torch._foreach_mul_(self.mask_params, self.mask_values)

        def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (x,))

        self.batched = torch.vmap(forward)
        self.params, self.buffers = params, buffers
        self.eval_model = copy.deepcopy(models[0])
        self.state_keys = list(self.eval_model.state_dict())  # a run's state: train()'s keys, in its order
        self.stacked = {**params, **buffers}
        self.config, self.members, self.device, self.member_masks = config, list(configs), device, member_masks

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def stack(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batched(self.params, self.buffers, x)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # each member's mean loss; their sum has each member's gradient in its slice
        n = len(self.members)
        losses = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(n, -1).mean(1)
        return losses.sum(), losses

    def state(self, i: int) -> StateDict:
        return {k: self.stacked[k][i].detach().to("cpu", copy=True) for k in self.state_keys}

    def for_evaluation(self, i: int, state: StateDict) -> nn.Module:
        self.eval_model.load_state_dict(state)
        return self.eval_model

    def runs(self, checkpoints: list[dict[float, StateDict]], metrics: list[dict[float, dict[str, float]]],
             info: dict[str, Any], start_epoch: float, wall_time_s: float) -> list[Run]:
        n = len(self.members)
        info = {**info, "trained_together": n}
        masks = [{k: v.detach().cpu().clone() for k, v in mk.items()} if mk else None for mk in self.member_masks]
        return [
            Run(config=c, checkpoints=checkpoints[i], metrics=metrics[i], wall_time_s=wall_time_s / n,
                start_epoch=start_epoch, mask=masks[i], info={**info, "member": i})
            for i, c in enumerate(self.members)
        ]


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
    :class:`~lmccheck.training_loop.TrainingDivergedError` naming the member whose loss became NaN or infinite.
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
    stepper = _VmappedStepper(configs, data, device, inits, member_masks)
    return run_steps(stepper, start_epoch, data, progress, t0)
