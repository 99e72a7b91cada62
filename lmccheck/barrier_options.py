"""How a barrier is evaluated: :class:`BarrierOptions`, and :class:`ResolvedBarrier`, the options decided for one
model on one device.

Options are split into what changes the numbers (``n_examples``, ``alphas``, the BatchNorm re-estimation, the
precision) and what only changes speed (the engine, batch size, first-layer shortcut, memory format, vmap chunk).
:meth:`BarrierOptions.resolve` validates once and fills in every default once, from the model and the device;
:func:`lmccheck.interpolation.barrier` and :func:`~lmccheck.interpolation.simplex_barrier` evaluate with the
resolved object, and a stored barrier's key is :meth:`ResolvedBarrier.key`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import cpus
from .barrier_curves import alpha_grid

if TYPE_CHECKING:  # torch loads with the first model resolved, so the pytest plugin can read the options without it
    import torch
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_N_EXAMPLES",
    "ENGINES",
    "PRECISIONS",
    "BarrierOptions",
    "ResolvedBarrier",
    "auto_bf16",
    "has_batchnorm",
]

ENGINES = ("auto", "loop", "vmap")
#: ``auto``: bf16 where it is fast (:func:`auto_bf16`), fp32 elsewhere
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_ALPHAS = 25
DEFAULT_N_EXAMPLES = 10_000
DEFAULT_BN_BATCHES = 20
DEFAULT_BN_BATCH_SIZE = 500


def auto_bf16(device: str | torch.device) -> bool:
    """``precision="auto"``: bf16 autocast on CUDA, and on a CPU that computes bf16 natively
    (:func:`~lmccheck.cpus.native_bf16`: there it halves a barrier's time; elsewhere it would be up to 16x slower
    than fp32, so fp32)."""
    import torch

    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and cpus.native_bf16())



def _is_conv_net(model: nn.Module) -> bool:
    from torch import nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _default_batch_size(model: nn.Module, device: torch.device) -> int:
    """The batch size that measured fastest, and robust on a busy machine.

    CPU, 2 cores: for the MLP 3x512 (with the shortcut) 1k-row batches were
    ~5% faster than 10k on an idle machine but 2-4x slower on a loaded one
    (every batch is a few more OpenMP parallel regions), so 10k; ResNet-20 in
    channels_last took the same time at 64 and 128 images per batch (one
    thread), 25% more at 256 and 70% more at 512, and small batches collapse
    under load, so 128. On CUDA, large batches fill the GPU.
    """
    if device.type != "cuda":
        return 128 if _is_conv_net(model) else 10_000
    return 4096 if _is_conv_net(model) else 10_000


def _first_layer(model: nn.Module) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None:
    """The first weighted layer of a known model, and the input it sees.

    Only layers followed by a norm / nonlinearity (never by another linear
    layer's parameters) are listed: their output is exactly linear in alpha.
    """
    from .models.mlp import MLP
    from .models.resnet import ResNet20
    from .models.vgg import VGG

    if isinstance(model, MLP):
        return "layers.0", lambda x: x.flatten(1)
    if isinstance(model, ResNet20):
        return "conv1", lambda x: x
    if isinstance(model, VGG):
        return f"features.{model.block_index[0]}.conv", lambda x: x
    return None


def _is_mlp(model: nn.Module) -> bool:
    from .models.mlp import MLP

    return isinstance(model, MLP)


def _default_shortcut(model: nn.Module) -> bool:
    """On for MLPs, where the first layer is the most expensive one (784 inputs).

    For conv nets the first conv is cheap and its cached outputs are large.
    """
    return _is_mlp(model)



def _bn_modules(model: nn.Module) -> list[_BatchNorm]:
    from torch.nn.modules.batchnorm import _BatchNorm

    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers that keep running statistics."""
    return bool(_bn_modules(model))



def _choose_engine(engine: str, bn_reset: bool) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "vmap" and bn_reset:
        raise ValueError(
            "engine='vmap' cannot re-estimate BatchNorm statistics at each alpha; use engine='loop' "
            "(or 'auto'), or pass bn_reset=False"
        )
    if engine != "auto":
        return engine
    # Measured on CPU (one thread, shared machine): MLP 3x512, 25 alphas x 10k,
    # loop 3.4 s vs vmap 5.9 s (both with the shortcut; 6.3 vs 7.4 s without);
    # ResNet-20 x1, 5 alphas x 1k: loop (channels_last) 5 s vs vmap 11 s. On
    # CUDA the loop's large batches already fill the GPU (not measured here).
    return "loop"


@dataclass(frozen=True)
class BarrierOptions:
    """How a barrier is evaluated, as asked: fields left ``None`` (or ``"auto"``) are decided by :meth:`resolve`.

    *Numbers* (part of every stored measurement's key, after :meth:`resolve`):
    ``n_examples``, ``alphas``, ``bn_reset`` with ``bn_batches`` and
    ``bn_batch_size``, and ``precision``. *Speed* (never part of a key):
    ``engine``, ``batch_size``, ``first_layer_shortcut``, ``channels_last`` and
    ``vmap_chunk``. The CLI, the fixture lab and ``--lmc-barrier-precision`` all
    start from these defaults.

    ``precision="auto"`` is bf16 autocast on CUDA and on a CPU with native bf16,
    fp32 elsewhere (:func:`auto_bf16`); claims that compare barriers for exact
    equality ask for ``"fp32"``.
    ``bn_batches=None`` re-estimates BatchNorm statistics on as many training
    examples as are evaluated, at most ``DEFAULT_BN_BATCHES * bn_batch_size``.
    ``bn_reset=None`` re-estimates them when the model has BatchNorm layers.
    """

    n_examples: int | None = DEFAULT_N_EXAMPLES
    alphas: int | tuple[float, ...] = DEFAULT_ALPHAS
    bn_reset: bool | None = None
    bn_batches: int | None = None
    bn_batch_size: int = DEFAULT_BN_BATCH_SIZE
    precision: str = "auto"
    engine: str = "auto"
    batch_size: int | None = None
    first_layer_shortcut: bool | None = None
    channels_last: bool | None = None
    vmap_chunk: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if not isinstance(self.alphas, int):
            object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        alpha_grid(self.alphas)  # a bad grid is refused here, with its reason
        for name in ("n_examples", "batch_size", "vmap_chunk"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive (or None for the default), got {value}")
        if self.bn_batches is not None and self.bn_batches < 1:
            raise ValueError(f"bn_batches must be positive (or None for the default), got {self.bn_batches}")
        if self.bn_batch_size < 1:
            raise ValueError(f"bn_batch_size must be positive, got {self.bn_batch_size}")

    def replace(self, **changes: Any) -> BarrierOptions:
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_key(cls, key: Mapping[str, Any], speed: BarrierOptions | None = None) -> BarrierOptions:
        """The options whose :meth:`resolve` gives the stored ``key`` (:meth:`ResolvedBarrier.key`); the speed
        fields from ``speed``. A key without ``alphas`` (a simplex's) keeps ``speed``'s."""
        base = speed if speed is not None else cls()
        numbers: dict[str, Any] = {"n_examples": key["n_examples"], "bn_reset": bool(key["bn_reset"]),
                                   "precision": key["precision"]}
        if "alphas" in key:
            numbers["alphas"] = tuple(key["alphas"])
        if key["bn_reset"]:
            numbers.update(bn_batches=key["bn_batches"], bn_batch_size=key["bn_batch_size"])
        return base.replace(**numbers)

    def autocast(self, device: str | torch.device) -> bool:
        """Whether bf16 autocast is on for ``device``."""
        if self.precision == "auto":
            return auto_bf16(device)
        return self.precision == "bf16"

    def _bn_batches(self) -> int:
        """BatchNorm re-estimation batches: as many examples as evaluated, at most the default 10k."""
        if self.bn_batches is not None:
            return int(self.bn_batches)
        cap = DEFAULT_BN_BATCHES * self.bn_batch_size
        n = cap if self.n_examples is None else min(self.n_examples, cap)
        return max(1, math.ceil(n / self.bn_batch_size))

    def resolve(self, model: nn.Module, device: str | torch.device) -> ResolvedBarrier:
        """These options decided for ``model`` on ``device``: every default filled in, every combination checked.

        Raises ``ValueError`` for a combination that cannot run (the vmap engine with BatchNorm re-estimation,
        the first-layer shortcut on a model lmccheck does not know).
        """
        import torch

        dev = torch.device(device)
        do_bn = has_batchnorm(model) and (self.bn_reset is None or bool(self.bn_reset))
        shortcut = _default_shortcut(model) if self.first_layer_shortcut is None else bool(self.first_layer_shortcut)
        if shortcut and _first_layer(model) is None:
            raise ValueError(
                f"first_layer_shortcut is available for lmccheck's mlp, vgg and resnet20 models, not "
                f"{type(model).__name__}; pass first_layer_shortcut=False"
            )
        engine = _choose_engine(self.engine, do_bn)
        channels_last = self.channels_last
        if channels_last is None:  # measured ~25% faster for ResNet-20 on CPU
            channels_last = _is_conv_net(model) and dev.type == "cpu" and engine == "loop"
        return ResolvedBarrier(
            n_examples=self.n_examples,
            alphas=tuple(alpha_grid(self.alphas)),
            bn_reset=do_bn,
            bn_batches=self._bn_batches() if do_bn else None,
            bn_batch_size=self.bn_batch_size if do_bn else None,
            precision="bf16" if self.autocast(dev) else "fp32",
            device=dev,
            engine=engine,
            batch_size=self.batch_size or _default_batch_size(model, dev),
            first_layer_shortcut=shortcut,
            channels_last=bool(channels_last),
            vmap_chunk=self.vmap_chunk,
        )


@dataclass(frozen=True)
class ResolvedBarrier:
    """:class:`BarrierOptions` decided for one model on one device; what the evaluation engine runs with.

    The number fields (:meth:`key`) are what a stored measurement's key holds; the rest are speed hints.
    BatchNorm's batch fields are ``None`` when statistics are not re-estimated, so they do not split the keys
    of networks without BatchNorm.
    """

    n_examples: int | None
    alphas: tuple[float, ...]
    bn_reset: bool
    bn_batches: int | None
    bn_batch_size: int | None
    precision: str  # "bf16" or "fp32"
    device: torch.device
    engine: str  # "loop" or "vmap"
    batch_size: int
    first_layer_shortcut: bool
    channels_last: bool
    vmap_chunk: int | None

    @property
    def autocast(self) -> bool:
        """Whether the evaluation runs under bf16 autocast."""
        return self.precision == "bf16"

    def key(self) -> dict[str, Any]:
        """The options that change the numbers (JSON-able): a stored barrier's key."""
        return {
            "n_examples": self.n_examples,
            "alphas": list(self.alphas),
            "bn_reset": self.bn_reset,
            "bn_batches": self.bn_batches,
            "bn_batch_size": self.bn_batch_size,
            "precision": self.precision,
            "device_type": self.device.type,
        }


#: the options of a barrier whose caller names none (the library's, the CLI's and the products' default)
DEFAULT_OPTIONS = BarrierOptions()

#: the fields of :class:`BarrierOptions` that change the measured numbers
BARRIER_NUMBER_FIELDS = ("n_examples", "alphas", "bn_reset", "bn_batches", "bn_batch_size", "precision")
#: the fields of :class:`BarrierOptions` that only change speed
BARRIER_SPEED_FIELDS = ("engine", "batch_size", "first_layer_shortcut", "channels_last", "vmap_chunk")
