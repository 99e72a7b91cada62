"""The step loop that :func:`~lmccheck.training.train` and :func:`~lmccheck.ensemble.train_together` share.

:func:`run_steps` is the one training loop: checkpoints at the scheduled
steps, the data order of each epoch, the batches, the learning rate, the
autocast forward, backward and masked optimizer step, the divergence checks,
the progress bar and the final checkpoint. A :class:`Stepper` supplies what
differs between training one network (``training._SingleStepper``) and a
vmapped ensemble of runs of one recipe (``ensemble._VmappedStepper``): the
model(s), the forward pass and loss of the members' batches, the parameters
the optimizer updates, each member's state and evaluation model, and the
:class:`~lmccheck.training.Run` of each member.

Beside the loop, this module holds what it follows: the step schedule
(:func:`steps_per_epoch`, :func:`checkpoint_step`, :func:`lr_at`), the SGD
noise (:func:`epoch_permutation`, the augmentation seeds), the checkpoint
evaluation (:func:`evaluate`) and :class:`TrainingDivergedError`. The
conventions they implement are listed in :mod:`lmccheck.training`.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import torch
from torch import nn
from torch.nn import functional as F

from .data import Dataset, augment_batch, load_dataset

if TYPE_CHECKING:  # training.py imports this module (train runs the loop): one direction at run time
    from .training import Run, StateDict, TrainConfig

__all__ = [
    "EVAL_BATCH_SIZE",
    "Stepper",
    "TrainingDivergedError",
    "checkpoint_step",
    "epoch_permutation",
    "evaluate",
    "lr_at",
    "run_steps",
    "steps_per_epoch",
]

EVAL_BATCH_SIZE = 2048  # examples per forward pass when evaluating
_TIME_TOL = 1e-9  # two checkpoint times closer than this (in epochs) are the same time


class TrainingDivergedError(ValueError):
    """The training loss became NaN or infinite."""


# --------------------------------------------------------------------------- schedule
def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps per epoch: ``ceil(n_train / batch_size)`` (the last batch may be smaller)."""
    return -(-int(n_train) // int(batch_size))


def checkpoint_step(t: float, spe: int) -> int:
    """The number of optimizer steps after which the checkpoint at ``t`` epochs is taken."""
    return int(math.floor(t * spe + 0.5))


def lr_at(config: TrainConfig, step: int, spe: int) -> float:
    """The learning rate used for optimizer step ``step`` (0-based) with ``spe`` steps per epoch."""
    total = checkpoint_step(config.epochs, spe)
    warm = checkpoint_step(config.warmup_epochs, spe)
    if step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        factor = 1.0
        if step >= 0.5 * total:
            factor *= 0.1
        if step >= 0.75 * total:
            factor *= 0.1
        return config.lr * factor
    # cosine from lr at the end of warmup to 0 at step `total`
    span = max(1, total - warm)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / span))


# --------------------------------------------------------------------------- randomness
def _mix(*parts: Any) -> int:
    """A 63-bit seed from the parts (stable across processes and platforms)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def epoch_permutation(sgd_seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of ``epoch`` (a CPU permutation of ``range(n)``) for ``sgd_seed``."""
    gen = torch.Generator().manual_seed(_mix("order", int(sgd_seed), int(epoch)))
    return torch.randperm(n, generator=gen)


# --------------------------------------------------------------------------- evaluation
def _autocast(device: torch.device, precision: str) -> Any:
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    precision: str = "fp32",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` (eval mode, no grad).

    The model's training mode is restored afterwards. Raises ``ValueError`` for no examples (a mean over none
    is undefined; a training config always evaluates at least one).
    """
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("no examples to evaluate: pass at least one (x and y of length >= 1)")
    device = x.device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.inference_mode(), _autocast(device, precision):
            for i in range(0, x.shape[0], batch_size):
                out = model(x[i : i + batch_size]).float()
                yb = y[i : i + batch_size]
                loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
                correct += (out.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    return float(loss_sum) / n, int(correct) / n


# --------------------------------------------------------------------------- the pieces of a step
def _progress_enabled(progress: bool | TextIO | None) -> bool:
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    if hasattr(progress, "write"):
        return True
    return bool(progress)


def _make_optimizer(config: TrainConfig, params: list[torch.Tensor], foreach: bool) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=config.lr, betas=(config.momentum, 0.999),
            weight_decay=config.weight_decay, foreach=foreach,
        )
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay, foreach=foreach,
    )


def _diverged(config: TrainConfig, step: int, spe: int, what: str) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"training diverged: {what} at step {step} (epoch {step / spe:.3f}) of {config.arch} "
        f"with lr={config.lr:g} ({config.optimizer}, {config.schedule} schedule, "
        f"warmup {config.warmup_epochs:g} epochs); lower the learning rate or lengthen the warmup"
    )


def _check_start(
    config: TrainConfig, start_epoch: float, has_init_state: bool, data: Dataset | None
) -> tuple[float, torch.device, Dataset]:
    """Validate a training request; the start time, the device and the (loaded) dataset."""
    config.validate()
    start_epoch = float(start_epoch)
    if not 0 <= start_epoch <= config.epochs:
        raise ValueError(f"start_epoch {start_epoch} is outside the recipe's [0, {config.epochs}] epochs")
    if start_epoch > 0 and not has_init_state:
        raise ValueError("start_epoch > 0 continues a run: pass the state at that time as init_state")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device is {config.device!r}, but CUDA is not available; use device='cpu'")
    if data is None:
        data = load_dataset(config.dataset)
    elif data.name != config.dataset:
        raise ValueError(f"data is {data.name!r} but the config trains on {config.dataset!r}")
    if config.train_subset is not None and config.train_subset > len(data.train):
        raise ValueError(
            f"train_subset={config.train_subset} exceeds the {len(data.train)} training examples "
            f"of {data.name!r}; use train_subset=None for all of them"
        )
    return start_epoch, device, data


def _schedule(config: TrainConfig, n_train: int, start_epoch: float) -> tuple[int, int, int, dict[int, list[float]]]:
    """Steps per epoch, the last and first step, and the checkpoint times taken after each step count."""
    spe = steps_per_epoch(n_train, config.batch_size)
    total = checkpoint_step(config.epochs, spe)
    first = checkpoint_step(start_epoch, spe)
    times = sorted({t for t in config.checkpoints if t >= start_epoch - _TIME_TOL} | {start_epoch})
    at_step: dict[int, list[float]] = {}
    for t in times:
        at_step.setdefault(checkpoint_step(t, spe), []).append(t)
    return spe, total, first, at_step


@dataclass
class _DeviceData:
    """The training subset and the two evaluation sets of a recipe, resident on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval_tr: torch.Tensor
    y_eval_tr: torch.Tensor
    x_eval_te: torch.Tensor
    y_eval_te: torch.Tensor
    device: torch.device

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @classmethod
    def load(cls, config: TrainConfig, data: Dataset, device: torch.device, channels_last: bool) -> _DeviceData:
        split = data.train.take(config.train_subset)
        x_train, y_train = split.x.to(device), split.y.to(device)
        if channels_last:
            x_train = x_train.contiguous(memory_format=torch.channels_last)
        test = data.test.take(config.eval_examples)
        x_eval_te, y_eval_te = test.x.to(device), test.y.to(device)
        if channels_last:
            x_eval_te = x_eval_te.contiguous(memory_format=torch.channels_last)
        n = config.eval_examples
        return cls(x_train, y_train, x_train[:n], y_train[:n], x_eval_te, y_eval_te, device)

    def metrics(self, model: nn.Module, config: TrainConfig, step: int, spe: int, total: int) -> dict[str, float]:
        """The checkpoint metrics of ``model`` after ``step`` steps; diverged when any is NaN/inf."""
        tr_loss, tr_acc = evaluate(model, self.x_eval_tr, self.y_eval_tr, precision=config.precision)
        te_loss, te_acc = evaluate(model, self.x_eval_te, self.y_eval_te, precision=config.precision)
        m = {
            "step": float(step),
            "epoch": step / spe,
            "lr": lr_at(config, step, spe) if step < total else 0.0,
            "train_loss": tr_loss,
            "train_acc": tr_acc,
            "test_loss": te_loss,
            "test_acc": te_acc,
        }
        if not all(math.isfinite(v) for v in m.values()):
            raise _diverged(config, step, spe, "the evaluation loss is NaN/inf")
        return m

    def info(self, precision_used: str, spe: int, total: int, first: int) -> dict[str, Any]:
        """``Run.info``: where and how the run was trained."""
        return {
            "device": str(self.device),
            "precision_used": precision_used,
            "n_train": self.n_train,
            "steps_per_epoch": spe,
            "total_steps": total,
            "start_step": first,
            "eval_train_examples": int(self.y_eval_tr.shape[0]),
            "eval_test_examples": int(self.y_eval_te.shape[0]),
            "torch": torch.__version__,
        }


def _masked_step(optimizer: torch.optim.Optimizer, mask_params: list[torch.Tensor],
                 mask_values: list[torch.Tensor]) -> None:
    """One optimizer step that keeps masked weights at exactly zero: no gradient (so no momentum or weight
    decay) on them before the step, and the weights re-masked after it."""
    if mask_params:
        pairs = [(p.grad, m) for p, m in zip(mask_params, mask_values, strict=True) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])
    optimizer.step()
    if mask_params:
        with torch.no_grad():
            torch._foreach_mul_(mask_params, mask_values)


def _sgd_batch(config: TrainConfig, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, pos: int, step: int,
               aug_gen: torch.Generator | None, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``pos`` of the epoch's order ``perm``, augmented with the noise of (``sgd_seed``, ``step``)."""
    bs = config.batch_size
    idx = perm[pos * bs : (pos + 1) * bs]
    # index_select, not x[idx]: the same rows, 2.5x faster on a CPU (0.11 vs 0.27 ms for 128 Fashion-MNIST images)
    xb, yb = torch.index_select(x, 0, idx), torch.index_select(y, 0, idx)
    if aug_gen is not None:
        aug_gen.manual_seed(_mix("augment", config.sgd_seed, step))
        xb = augment_batch(xb, aug_gen)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
    return xb, yb


def _make_bar(config: TrainConfig, n_steps: int, progress: bool | TextIO | None) -> Any:
    if not _progress_enabled(progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=n_steps,
        desc=f"train {config.arch} init={config.init_seed} sgd={config.sgd_seed}",
        unit="step",
        leave=False,
        file=progress if hasattr(progress, "write") else sys.stderr,
    )


# --------------------------------------------------------------------------- the loop
class Stepper(ABC):
    """What differs between training one network and several members of one recipe at once.

    :func:`run_steps` drives a stepper: it draws each member's batch, sets the
    learning rate, runs :meth:`forward` under autocast, backpropagates
    :meth:`loss` and steps the optimizer over :meth:`parameters`, keeping the
    masked weights at zero (``mask_params`` times ``mask_values``).
    """

    config: TrainConfig
    """The recipe the members share (the first member's config)."""
    members: list[TrainConfig]
    """One config per member (a single network: ``[config]``); they differ only in their seeds."""
    device: torch.device
    channels_last: bool
    """Whether the inputs (training batches, evaluation sets) are put in channels_last memory format."""
    together: bool
    """Several members trained at once: messages name the member, the bar says how many."""
    mask_params: list[torch.Tensor]
    """The masked parameters (as the optimizer holds them), and ``mask_values`` their multipliers."""
    mask_values: list[torch.Tensor]

    @abstractmethod
    def parameters(self) -> list[torch.Tensor]:
        """The tensors the optimizer updates, in the order it is given them."""

    @abstractmethod
    def stack(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and labels of one step from each member's ``(x, y)`` batch."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of :meth:`stack`'s inputs (run under autocast)."""

    @abstractmethod
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss to backpropagate, and each member's loss (a scalar or one value per member)."""

    @abstractmethod
    def state(self, i: int) -> StateDict:
        """Member ``i``'s state now, as CPU tensors (its checkpoint)."""

    @abstractmethod
    def for_evaluation(self, i: int, state: StateDict) -> nn.Module:
        """A model holding member ``i``'s ``state``, to evaluate."""

    @abstractmethod
    def runs(self, checkpoints: list[dict[float, StateDict]], metrics: list[dict[float, dict[str, float]]],
             info: dict[str, Any], start_epoch: float, wall_time_s: float) -> list[Run]:
        """Each member's :class:`~lmccheck.training.Run` from its checkpoints and metrics and the shared info."""


def run_steps(stepper: Stepper, start_epoch: float, data: Dataset, progress: bool | TextIO | None,
              t0: float) -> list[Run]:
    """Train ``stepper``'s members from ``start_epoch`` to the end of their recipe; each member's run.

    ``data`` is the loaded dataset, ``progress`` as for :func:`~lmccheck.training.train`, ``t0`` the
    ``time.perf_counter()`` at which the request started (the runs' wall time counts from there).
    Raises :class:`TrainingDivergedError` when a loss, a parameter or an evaluation becomes NaN or infinite.
    """
    config, members, device = stepper.config, stepper.members, stepper.device
    d = _DeviceData.load(config, data, device, stepper.channels_last)
    spe, total, first, at_step = _schedule(config, d.n_train, start_epoch)
    optimizer = _make_optimizer(config, stepper.parameters(), foreach=True)
    check_every = 1 if device.type == "cpu" else 25  # loss.item() syncs a GPU: check it now and then
    when = "" if check_every == 1 else f" (checked every {check_every} steps; it may have diverged earlier)"
    checkpoints: list[dict[float, StateDict]] = [{} for _ in members]
    metrics: list[dict[float, dict[str, float]]] = [{} for _ in members]

    def whose(i: int) -> str:
        return f"member {i}'s " if stepper.together else ""

    def take_checkpoint(step: int) -> None:
        for i, c in enumerate(members):
            state = stepper.state(i)
            for k, v in state.items():
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    raise _diverged(c, step, spe, f"{whose(i)}parameter {k!r} became NaN/inf")
            m = d.metrics(stepper.for_evaluation(i, state), c, step, spe, total)
            for t in at_step[step]:
                checkpoints[i][t] = state
                metrics[i][t] = m
            if bar is not None and not stepper.together:
                bar.set_postfix(test_acc=f"{m['test_acc']:.3f}", refresh=False)

    def check_loss(step: int, losses: torch.Tensor) -> None:
        for i, v in enumerate(losses.reshape(-1).tolist()):
            if not math.isfinite(v):
                raise _diverged(members[i], step, spe, f"{whose(i)}loss is {v}{when}")

    bar = _make_bar(config, total - first, progress)
    if bar is not None and stepper.together:
        bar.set_description(f"train {len(members)} x {config.arch} together")
    aug_gens = [torch.Generator(device=device) if config.augment else None for _ in members]
    perms: list[torch.Tensor] = []
    last: torch.Tensor | None = None
    try:
        for step in range(first, total):
            if step in at_step:
                take_checkpoint(step)
            epoch, pos = divmod(step, spe)
            if not perms or pos == 0:
                perms = [epoch_permutation(c.sgd_seed, epoch, d.n_train).to(device) for c in members]
            batches = [_sgd_batch(c, d.x_train, d.y_train, perm, pos, step, g, stepper.channels_last)
                       for c, perm, g in zip(members, perms, aug_gens, strict=True)]
            xb, yb = stepper.stack(batches)
            lr = lr_at(config, step, spe)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with _autocast(device, config.precision):
                out = stepper.forward(xb)
            loss, losses = stepper.loss(out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _masked_step(optimizer, stepper.mask_params, stepper.mask_values)
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
    return stepper.runs(checkpoints, metrics, info, start_epoch, wall)
