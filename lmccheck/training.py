"""Training with checkpoints, spawning, and separate seeds for init and SGD noise.

The functions here are pure *compute*: they take a :class:`TrainConfig` (the
recipe) and return a :class:`Run` holding CPU state dicts and JSON-able
metrics. They know nothing about caching; the fixture store keys products by
:meth:`TrainConfig.recipe` and stores :meth:`Run.to_record`.

Conventions (the decisions a reader needs to reproduce a run):

* **Seeds.** ``init_seed`` alone determines the initial weights (the model is
  built on the CPU under :func:`torch.random.fork_rng`, so the global RNG is
  untouched and the init is the same on every device). ``sgd_seed`` alone
  determines the SGD noise: the data order (a fresh random permutation of the
  training examples every epoch, drawn from a generator seeded by
  ``(sgd_seed, epoch)``) and the augmentation noise (seeded by
  ``(sgd_seed, step)``). Because the noise is a function of the seed and the
  position in training only, a run continued from its own checkpoint at time
  ``t`` with the same ``sgd_seed`` sees exactly the batches the uninterrupted
  run saw after ``t``.
* **Steps.** ``steps_per_epoch = ceil(n_train / batch_size)``: nothing is
  dropped; the last batch of an epoch is smaller when ``batch_size`` does not
  divide ``n_train``. A checkpoint at time ``t`` epochs is the state after
  ``round(t * steps_per_epoch)`` optimizer steps (rounded half up); training
  runs ``round(epochs * steps_per_epoch)`` steps.
* **Learning rate.** Set per step: linear warmup from ``lr / W`` at step 0 to
  ``lr`` at step ``W - 1`` (``W = round(warmup_epochs * steps_per_epoch)``),
  then ``cosine`` (half cosine from ``lr`` to 0 over the remaining steps),
  ``step`` (x0.1 at 50% and again at 75% of all steps) or ``constant``.
  See :func:`~lmccheck.training_loop.lr_at`.
* **Continuing** (``init_state`` + ``start_epoch``; spawning and IMP
  rewinding) restores only the weights: the optimizer state (SGD momentum
  buffer, Adam moments) starts at zero, as in OpenLTH's rewinding, where every
  retraining level builds a fresh optimizer. The learning-rate schedule
  continues at ``start_epoch``.
* **Precision.** ``bf16`` means bfloat16 autocast for forward passes on CUDA
  (parameters, gradients and optimizer state stay fp32). On the CPU there is no
  autocast: a ``bf16`` recipe trains in fp32 there (``Run.info`` records the
  precision actually used).
* **Weight decay** (L2, added to the gradient) applies to every parameter,
  biases and norm parameters included, as in OpenLTH.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch
from torch import nn
from torch.nn import functional as F

from .data import DATASETS, Dataset
from .models import MODELS, PermutableModel, get_model
from .training_loop import _TIME_TOL, Stepper, _check_start, run_steps

__all__ = [
    "FrozenKwargs",
    "Run",
    "TrainConfig",
    "build_model",
    "spawn",
    "train",
]

StateDict = dict[str, torch.Tensor]
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("fp32", "bf16")
DATASET_KWARGS = ("in_channels", "input_size", "num_classes")


# --------------------------------------------------------------------------- config
class FrozenKwargs(dict[str, Any]):
    """An immutable, hashable ``str -> scalar`` dict with sorted keys.

    It is a real ``dict`` (so ``**kwargs``, ``json.dumps`` and
    ``dataclasses.asdict`` work), but every mutating method raises.
    """

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        pairs = dict(items)
        for k, v in pairs.items():
            if not isinstance(k, str):
                raise ValueError(f"model_kwargs keys must be strings, got {k!r}")
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise ValueError(
                    f"model_kwargs[{k!r}] = {v!r} is a {type(v).__name__}; only str, int, float, "
                    "bool or None values can be part of a recipe"
                )
        super().__init__(sorted(pairs.items()))

    def _immutable(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("model_kwargs is frozen; use TrainConfig.replace(model_kwargs=...)")

    __setitem__ = __delitem__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable  # type: ignore[assignment]
    __ior__ = _immutable  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenKwargs, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenKwargs({dict(self)!r})"


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. Everything but ``device`` determines the result.

    Values are normalized on construction (floats become floats, checkpoint
    times are sorted and always include 0 and ``epochs``), so equal recipes
    compare, hash and serialize equally. Call :meth:`validate` (``train`` does)
    to check the values.
    """

    arch: str
    """Model name for :func:`lmccheck.models.get_model` (``mlp``, ``vgg11``, ``vgg16``, ``resnet20``)."""
    model_kwargs: Mapping[str, Any] = field(default_factory=FrozenKwargs)
    """Architecture arguments (e.g. ``width``, ``depth``, ``norm``); not the dataset's
    ``in_channels``/``input_size``/``num_classes``, which come from the dataset.
    Accepts a dict or (key, value) pairs; stored as a :class:`FrozenKwargs`."""
    dataset: str = "fashion-mnist"
    """Dataset name for :func:`lmccheck.data.load_dataset`."""
    train_subset: int | None = None
    """Number of training examples used (the first n of the training split); None: all."""
    epochs: float = 10.0
    """Training length in epochs (passes over the training subset); may be fractional."""
    batch_size: int = 128
    """Examples per optimizer step."""
    optimizer: str = "sgd"
    """``sgd`` (with ``momentum``) or ``adam`` (beta1 = ``momentum``, beta2 = 0.999)."""
    lr: float = 0.05
    """Peak learning rate (reached at the end of warmup)."""
    momentum: float = 0.9
    """SGD momentum (dimensionless); Adam's beta1."""
    weight_decay: float = 0.0
    """L2 penalty coefficient added to the gradient (per unit weight), all parameters."""
    warmup_epochs: float = 0.0
    """Length of the linear learning-rate warmup, in epochs."""
    schedule: str = "cosine"
    """After warmup: ``cosine`` (to 0 at the end), ``step`` (x0.1 at 50% and 75% of all steps) or ``constant``."""
    augment: bool = False
    """Random crops (4 px padding) and horizontal flips; only for augmentable datasets (CIFAR-like)."""
    init_seed: int = 0
    """Seed of the initialization (integer)."""
    sgd_seed: int = 0
    """Seed of the SGD noise: data order and augmentation (integer), separate from ``init_seed``."""
    checkpoints: tuple[float, ...] = (0.0,)
    """Times, in epochs, at which the state is saved and evaluated; 0 and ``epochs`` are always added."""
    device: str = "cpu"
    """Where to train (``cpu``, ``cuda``, ``cuda:1``); not part of :meth:`recipe`."""
    precision: str = "fp32"
    """``fp32``, or ``bf16`` autocast on CUDA (on the CPU ``bf16`` trains in fp32)."""
    eval_examples: int = 10_000
    """Number of examples (first n of the training subset and of the test split) for the
    train/test metrics at each checkpoint."""

    def __post_init__(self) -> None:
        kw = self.model_kwargs
        if not isinstance(kw, FrozenKwargs):
            if isinstance(kw, Mapping):
                kw = FrozenKwargs(kw)
            else:
                try:
                    kw = FrozenKwargs(tuple(kw))
                except (TypeError, ValueError) as e:
                    raise ValueError(f"model_kwargs must be a dict or (key, value) pairs: {e}") from None
        setter = object.__setattr__
        setter(self, "model_kwargs", kw)
        try:
            setter(self, "epochs", float(self.epochs))
            times = {float(t) for t in self.checkpoints} | {0.0, self.epochs}
        except (TypeError, ValueError) as e:
            raise ValueError(f"epochs and checkpoint times must be numbers (epochs): {e}") from None
        setter(self, "checkpoints", tuple(sorted(times)))
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs"):
            setter(self, name, float(getattr(self, name)))

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], device: str = "cpu") -> TrainConfig:
        """The config of a :meth:`recipe` (e.g. read back from the store), on ``device``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(recipe) - fields)
        if unknown:
            raise ValueError(f"recipe has unknown field {unknown[0]!r}; was it written by another lmccheck version?")
        kw = dict(recipe)
        if "checkpoints" in kw:
            kw["checkpoints"] = tuple(kw["checkpoints"])
        return cls(**kw, device=device)

    # -- identity -------------------------------------------------------------
    def recipe(self) -> dict[str, Any]:
        """Everything that determines the result, as JSON-able values (``device`` excluded)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "device":
                continue
            v = getattr(self, f.name)
            if f.name == "model_kwargs":
                v = dict(v)
            elif f.name == "checkpoints":
                v = list(v)
            out[f.name] = v
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"TrainConfig has no field {unknown[0]!r}")
        if "epochs" in changes and "checkpoints" not in changes:
            # the old end time was added automatically; do not carry it over
            changes["checkpoints"] = tuple(t for t in self.checkpoints if t != self.epochs)
        return dataclasses.replace(self, **changes)

    # -- checks ---------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad value and how to fix it."""
        if self.arch not in MODELS:
            raise ValueError(f"unknown arch {self.arch!r}; available: {', '.join(sorted(MODELS))}")
        clash = [k for k in DATASET_KWARGS if k in self.model_kwargs]
        if clash:
            raise ValueError(
                f"model_kwargs sets {clash[0]!r}, which comes from the dataset; remove it "
                f"(set dataset= instead)"
            )
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; available: {', '.join(DATASETS)}")
        if self.augment and not DATASETS[self.dataset].augmentable:
            raise ValueError(
                f"augment=True, but {self.dataset!r} takes no augmentation (only CIFAR-like "
                "datasets do); set augment=False"
            )
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        for t in self.checkpoints:
            if not math.isfinite(t) or t < 0:
                raise ValueError(f"checkpoint time {t} is negative or not finite; times are epochs in [0, epochs]")
            if t > self.epochs:
                raise ValueError(
                    f"checkpoint time {t} is beyond the last epoch ({self.epochs}); "
                    "drop it or train longer"
                )
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_examples", self.eval_examples)
        if self.train_subset is not None:
            _positive_int("train_subset", self.train_subset)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        for name in ("init_seed", "sgd_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an int, got {v!r}")
        try:
            torch.device(self.device)
        except RuntimeError as e:
            raise ValueError(f"bad device {self.device!r}: {e}") from None
        try:  # check the architecture arguments without allocating or drawing random numbers
            with torch.device("meta"):
                get_model(self.arch, **self.model_kwargs)
        except (KeyError, TypeError, ValueError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ValueError(f"bad model_kwargs {dict(self.model_kwargs)} for arch {self.arch!r}: {msg}") from None


def _positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


# --------------------------------------------------------------------------- model
def build_model(config: TrainConfig, data: Dataset | Mapping[str, int]) -> PermutableModel:
    """The initialized model of ``config`` (on the CPU), seeded by ``init_seed`` only.

    ``data`` is the dataset or its ``model_kwargs``. The global RNG is left as it was.
    """
    ds_kwargs = data.model_kwargs if isinstance(data, Dataset) else dict(data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        return get_model(config.arch, **config.model_kwargs, **ds_kwargs)



# --------------------------------------------------------------------------- run
@dataclass
class Run:
    """The product of :func:`train`: states and metrics at the checkpoint times.

    ``checkpoints`` and ``metrics`` map a time in epochs to a state dict of CPU
    tensors and to ``{"step", "epoch", "lr", "train_loss", "train_acc",
    "test_loss", "test_acc"}``. A continued run (``start_epoch > 0``) has
    checkpoints only at ``start_epoch`` and the requested times after it.
    """

    config: TrainConfig
    checkpoints: dict[float, StateDict]
    metrics: dict[float, dict[str, float]]
    wall_time_s: float
    start_epoch: float = 0.0
    mask: dict[str, torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def times(self) -> list[float]:
        """Checkpoint times in epochs, ascending."""
        return sorted(self.checkpoints)

    @property
    def final(self) -> StateDict:
        """The state at the end of training."""
        return self.checkpoints[self.times[-1]]

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.metrics[self.times[-1]]

    def state_at(self, t: float) -> StateDict:
        """The state at time ``t`` epochs; ``KeyError`` listing the available times otherwise."""
        return self.checkpoints[_find_time(self.checkpoints, t, "run")]

    def metrics_at(self, t: float) -> dict[str, float]:
        return self.metrics[_find_time(self.metrics, t, "run")]

    # -- storage ----------------------------------------------------------------
    def to_record(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)`` for the store: flat tensor names ``ckpt/<time>/<key>``
        (and ``mask/<key>``), JSON-able meta. Inverse: :meth:`from_record`."""
        tensors = {f"ckpt/{t!r}/{k}": v for t, s in self.checkpoints.items() for k, v in s.items()}
        if self.mask is not None:
            tensors.update({f"mask/{k}": v for k, v in self.mask.items()})
        meta = {
            "metrics": {repr(t): m for t, m in self.metrics.items()},
            "times": [float(t) for t in self.times],
            "wall_time_s": self.wall_time_s,
            "start_epoch": self.start_epoch,
            "info": self.info,
        }
        return tensors, meta

    @classmethod
    def from_record(cls, config: TrainConfig, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Run:
        """Rebuild a run from :meth:`to_record`'s output."""
        ckpts: dict[float, StateDict] = {float(t): {} for t in meta["times"]}
        mask: dict[str, torch.Tensor] = {}
        for name, v in tensors.items():
            kind, _, rest = name.partition("/")
            if kind == "ckpt":
                t, _, key = rest.partition("/")
                ckpts.setdefault(float(t), {})[key] = v
            elif kind == "mask":
                mask[rest] = v
        return cls(
            config=config,
            checkpoints=ckpts,
            metrics={float(t): dict(m) for t, m in meta["metrics"].items()},
            wall_time_s=float(meta.get("wall_time_s") or 0.0),
            start_epoch=float(meta.get("start_epoch", 0.0)),
            mask=mask or None,
            info=dict(meta.get("info", {})),
        )


def _find_time(table: Mapping[float, Any], t: float, what: str) -> float:
    for key in table:
        if abs(key - float(t)) <= _TIME_TOL:
            return key
    avail = ", ".join(f"{k:g}" for k in sorted(table))
    raise KeyError(f"no checkpoint at epoch {t:g} in this {what}; available times: {avail}")



# --------------------------------------------------------------------------- training
def _check_init_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            f"init_state lacks {missing[0]!r}; it must be a full state dict of the config's "
            "architecture (same arch, model_kwargs and dataset)"
        )
    extra = [k for k in state if k not in own]
    if extra:
        raise ValueError(f"init_state has key {extra[0]!r} that the model does not have; wrong arch?")
    for k, v in own.items():
        s = state[k]
        if tuple(s.shape) != tuple(v.shape):
            raise ValueError(
                f"init_state[{k!r}] has shape {tuple(s.shape)} but the model expects "
                f"{tuple(v.shape)}; wrong width or dataset?"
            )
        if s.is_floating_point() and not bool(torch.isfinite(s).all()):
            raise ValueError(f"init_state[{k!r}] contains NaN or infinite values")


def check_mask(tensors: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], what: str = "the state") -> None:
    """Raise ``ValueError`` if ``mask`` names a key ``tensors`` lacks, is not bool, or has the wrong shape."""
    for k, m in mask.items():
        if k not in tensors:
            raise ValueError(f"mask names {k!r}, which {what} does not have; wrong architecture?")
        if m.dtype != torch.bool:
            raise ValueError(f"mask[{k!r}] must be a bool tensor, got {m.dtype}")
        if tuple(m.shape) != tuple(tensors[k].shape):
            raise ValueError(
                f"mask[{k!r}] has shape {tuple(m.shape)} but the weight has {tuple(tensors[k].shape)}: the mask "
                "comes from another architecture or width; take it from a network of this one"
            )


def _check_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    check_mask(params, mask, "the model's parameters")
    return {k: params[k] for k in mask}


def _cpu_state(model: nn.Module) -> StateDict:
    return {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }



class _SingleStepper(Stepper):
    """One network: its own forward pass and mean loss; channels_last for a conv net on CUDA."""

    together = False

    def __init__(self, config: TrainConfig, data: Dataset, device: torch.device,
                 init_state: Mapping[str, torch.Tensor] | None, mask: Mapping[str, torch.Tensor] | None) -> None:
        model = build_model(config, data)
        if init_state is not None:
            _check_init_state(model, init_state)
            model.load_state_dict({k: v.detach().cpu() for k, v in init_state.items()})
        masked = _check_mask(model, mask) if mask is not None else {}
        is_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.channels_last = device.type == "cuda" and is_conv
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.mask_params = list(masked.values())
        # the multipliers take each parameter's dtype, device and memory format (channels_last)
        self.mask_values = [torch.empty_like(p).copy_(mask[k]) for k, p in masked.items()] if mask else []
        if self.mask_params:
            with torch.no_grad():
                torch._foreach_mul_(self.mask_params, self.mask_values)
        model.train()
        self.model, self.config, self.members, self.device, self.mask = model, config, [config], device, mask

    def parameters(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def stack(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return batches[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = F.cross_entropy(out.float(), y)
        return loss, loss

    def state(self, i: int) -> StateDict:
        return _cpu_state(self.model)

    def for_evaluation(self, i: int, state: StateDict) -> nn.Module:
        return self.model

    def runs(self, checkpoints: list[dict[float, StateDict]], metrics: list[dict[float, dict[str, float]]],
             info: dict[str, Any], start_epoch: float, wall_time_s: float) -> list[Run]:
        mask = {k: v.detach().cpu().clone() for k, v in self.mask.items()} if self.mask is not None else None
        return [Run(config=self.config, checkpoints=checkpoints[0], metrics=metrics[0], wall_time_s=wall_time_s,
                    start_epoch=start_epoch, mask=mask, info=info)]


def train(
    config: TrainConfig,
    *,
    init_state: Mapping[str, torch.Tensor] | None = None,
    start_epoch: float = 0.0,
    mask: Mapping[str, torch.Tensor] | None = None,
    progress: bool | TextIO | None = None,
    data: Dataset | None = None,
) -> Run:
    """Train ``config`` and return the states and metrics at its checkpoint times.

    ``init_state`` replaces the initialization (the network of ``init_seed``)
    and ``start_epoch`` says at which time of the recipe it is: the learning-rate
    schedule and the data order continue from there, the optimizer state starts
    at zero, and checkpoints are taken at ``start_epoch`` and at the requested
    times after it. ``mask`` (parameter name -> bool tensor) zeroes the masked
    weights at the start and keeps them exactly zero (their gradients are zeroed
    before every step and the weights re-masked after it). ``progress``: a tqdm
    bar on stderr (None: only when stderr is a terminal), or on the given stream. ``data``: a loaded
    dataset to use instead of ``load_dataset(config.dataset)`` (e.g. from a
    custom data root).

    Raises ``ValueError`` for a bad config or state, and
    :class:`~lmccheck.training_loop.TrainingDivergedError` when the loss becomes NaN or infinite.
    """
    start_epoch, device, data = _check_start(config, start_epoch, init_state is not None, data)
    t0 = time.perf_counter()
    stepper = _SingleStepper(config, data, device, init_state, mask)
    return run_steps(stepper, start_epoch, data, progress, t0)[0]


# --------------------------------------------------------------------------- spawning
def spawn(
    config: TrainConfig,
    parent: Run | Mapping[float, Mapping[str, torch.Tensor]],
    at_epoch: float,
    sgd_seed: int,
    *,
    progress: bool | TextIO | None = None,
    data: Dataset | None = None,
) -> Run:
    """A child of ``parent`` spawned at ``at_epoch`` (Frankle et al.'s instability analysis).

    The child starts from the parent's weights at ``at_epoch`` (momentum reset
    to zero) and trains to the end of ``config`` with a new ``sgd_seed`` and
    everything else the same. Its checkpoints are ``at_epoch`` and the
    config's times after it. A masked parent (a :class:`Run` with a mask)
    passes its mask on. ``parent`` is a :class:`Run` or a ``time -> state`` dict.
    """
    checkpoints = parent.checkpoints if isinstance(parent, Run) else parent
    at = float(at_epoch)
    match = [t for t in checkpoints if abs(float(t) - at) <= _TIME_TOL]
    if not match:
        avail = ", ".join(f"{float(t):g}" for t in sorted(checkpoints))
        raise ValueError(
            f"cannot spawn at epoch {at:g}: the parent has no checkpoint there; "
            f"available times: {avail} (add {at:g} to the parent's checkpoints)"
        )
    child = config.replace(sgd_seed=sgd_seed)
    mask = parent.mask if isinstance(parent, Run) else None
    return train(child, init_state=checkpoints[match[0]], start_epoch=float(match[0]),
                 mask=mask, progress=progress, data=data)


