"""Activation matching (Sharma et al. 2024, appendix A).

``activation_matching(model, A, B, data)`` returns the permutation ``P`` that
aligns ``B`` onto ``A`` (convention: :mod:`lmccheck.matching`).

One linear sum assignment per group, in depth order, on the cross-moments of
the two networks' activations (App. A). A group reads the output of its last
operation (:func:`activation_modules`): the ReLU after a layer and its norm,
and for a ResNet residual stream the output of the stage's last block
(``stream="last"``, the default); ``stream="sum"`` sums the moments over every
module that writes the stream instead.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .data import Split
from .matching import _device_of, _lsa, _result, _to_numpy, _validate_pair
from .permutation import Permutation, PermutationSpec, StateDict, check_spec, permutation_spec

__all__ = ["STREAM_MODES", "activation_matching", "activation_modules"]

#: See :data:`STREAM_MODES`.
StreamMode = Literal["last", "sum"]


def _batches(data: Any, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Input batches on ``device``: a Split or tensor is sliced; an iterable yields batches."""
    if isinstance(data, Split):
        data = data.x
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            raise ValueError("data must hold a batch dimension; got a scalar tensor")
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size].to(device, non_blocking=True)
        return
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a Split, a tensor or an iterable of input batches, got {type(data).__name__}")
    for item in data:
        if isinstance(item, (tuple, list)):  # (inputs, labels) pairs
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"data yielded a {type(item).__name__}; expected input tensors (or (x, y) pairs)")
        yield item.to(device, non_blocking=True)


def _as_samples(out: torch.Tensor, module: str, *, copy: bool) -> torch.Tensor:
    """Activations ``(N, C, *spatial)`` -> ``(N * prod(spatial), C)`` float32.

    Every spatial position is a sample. With ``copy`` the result never shares
    memory with ``out`` (so later in-place operations of the network cannot
    change it).
    """
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ValueError(
            f"module {module!r} must output one tensor (N, C, ...) to be matched, got "
            f"{type(out).__name__}{'' if not isinstance(out, torch.Tensor) else f' of shape {tuple(out.shape)}'}"
        )
    x = out.detach().float().movedim(1, -1).reshape(-1, out.shape[1])
    if copy and x.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        x = x.clone()
    return x


@dataclass
class _Moments:
    """Streaming sums for the cross-covariance / correlation of one group."""

    cross: torch.Tensor  # sum_s a_s b_s^T (n x n, float64)
    sum_a: torch.Tensor
    sum_b: torch.Tensor
    sq_a: torch.Tensor
    sq_b: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, n: int, device: torch.device) -> _Moments:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(n, n), z(n), z(n), z(n), z(n))

    def add(self, xa: torch.Tensor, xb: torch.Tensor) -> None:
        self.cross += xa.T @ xb
        self.sum_a += xa.sum(0)
        self.sum_b += xb.sum(0)
        self.sq_a += (xa * xa).sum(0)
        self.sq_b += (xb * xb).sum(0)
        self.count += xa.shape[0]

    def gram(self, correlation: bool) -> torch.Tensor:
        if not correlation:
            return self.cross
        n = max(self.count, 1)
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        cov = self.cross / n - torch.outer(mean_a, mean_b)
        std_a = (self.sq_a / n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sq_b / n - mean_b**2).clamp_min(0).sqrt()
        denom = torch.outer(std_a, std_b)
        return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))


#: How :func:`activation_matching` reads a group whose ``spec.activations``
#: lists several modules (a residual stream): ``"last"`` hooks only the last
#: one in forward order (Sharma et al. App. A), ``"sum"`` hooks every one and
#: sums their moments.
STREAM_MODES: tuple[StreamMode, ...] = ("last", "sum")


def _check_stream(stream: str) -> str:
    if stream not in STREAM_MODES:
        raise ValueError(f"unknown stream mode {stream!r}; use one of {', '.join(map(repr, STREAM_MODES))}")
    return stream


def activation_modules(spec: PermutationSpec, stream: StreamMode = "last") -> dict[str, tuple[str, ...]]:
    """Per group (depth order), the modules whose outputs activation matching reads.

    ``spec.activations[group]`` lists, in forward order, every module whose
    output carries the group's units. ``stream="last"`` (the default) keeps
    only the last of them: the output of the last operation of the group
    (Sharma et al. App. A), e.g. the ReLU after a layer, or the output of the
    last block of a ResNet stage for the stage's residual stream.
    ``stream="sum"`` keeps all of them (for a residual stream: the stem or
    projection-block output and every block output of the stage), whose
    moments :func:`activation_matching` sums. Groups listing one module read
    the same module in both modes.

    Raises ``ValueError`` for an unknown mode or a group without activations.
    """
    _check_stream(stream)
    out: dict[str, tuple[str, ...]] = {}
    for g in spec.groups:
        names = tuple(spec.activations.get(g, ()))
        if not names:
            raise ValueError(
                f"permutation spec names no activation module for group {g!r}; "
                "activation matching needs spec.activations for every group"
            )
        out[g] = names[-1:] if stream == "last" else names
    return out


def _activation_owner(spec: PermutationSpec, model: nn.Module, stream: StreamMode) -> dict[str, str]:
    """module name -> group for the modules :func:`activation_modules` picks, checked against the model."""
    modules = dict(model.named_modules())
    owner: dict[str, str] = {}
    for g, names in activation_modules(spec, stream).items():
        for m in names:
            if m not in modules:
                raise ValueError(f"spec.activations[{g!r}] names module {m!r}, which the model does not have")
            if m in owner:
                raise ValueError(f"module {m!r} is listed as the activation of groups {owner[m]!r} and {g!r}")
            owner[m] = g
    return owner


def _model_copy(model: nn.Module, state: StateDict, device: torch.device) -> nn.Module:
    m = copy.deepcopy(model).to(device)
    m.load_state_dict({k: v.to(device) for k, v in state.items()})
    return m.eval()


def activation_matching(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    data: Split | torch.Tensor | Iterable[torch.Tensor],
    *,
    batches: int | None = None,
    batch_size: int = 500,
    correlation: bool = False,
    stream: StreamMode = "last",
    device: str | torch.device | None = None,
) -> Permutation:
    """Activation matching: per group, the assignment maximizing the activations' similarity.

    ``model`` gives the architecture and its permutation spec
    (``model.permutation_spec()``); it is copied, never modified. ``state_a``
    and ``state_b`` are loaded into two copies in eval mode (BatchNorm uses
    running statistics) and run on the same inputs under
    ``torch.inference_mode()``. ``data`` is a :class:`~lmccheck.data.Split`
    or a tensor of inputs (sliced in ``batch_size`` batches), or an iterable
    of input batches (or ``(x, y)`` pairs); ``batches`` caps the number of
    batches. Activations are accumulated batch by batch (only sums are kept),
    so the result does not depend on the batching or the order of the data
    (up to float round-off).

    Which activations a group reads (:func:`activation_modules`): the outputs
    of the modules ``spec.activations[group]`` lists, in forward order; conv
    outputs count each spatial position as a sample.

    * ``stream="last"`` (default; Sharma et al. App. A, "the output of the
      last operation that occurs in a given permutation"): only the last
      listed module, e.g. the ReLU after a layer and its norm; for a ResNet
      residual stream (one group per stage) the output of the stage's last
      block.
    * ``stream="sum"``: every listed module, their moments summed; for a
      residual stream that is the stem (or projection block) output and
      every block output of the stage, each sample of each module counting
      once. Other groups list one module and read it in both modes.

    The Gram of a group is ``sum_s a_s b_s^T`` (``correlation=False``: the
    inner product, i.e. minimizing the L2 distance) or the Pearson correlation
    matrix (``correlation=True``). One maximizing assignment per group, in
    depth order. Align with ``P.apply(state_b)`` (convention:
    :mod:`lmccheck.matching`).

    ``P.stats``: ``examples``, ``batches``, ``samples`` (per group),
    ``objective`` and ``identity_objective`` (per group: the Gram's trace
    under ``P`` and under the identity, divided by the samples when
    ``correlation`` is False, i.e. mean matched inner product per sample),
    ``correlation``, ``stream``, ``modules`` (per group, the hooked module
    names), ``wall_time``, ``method``.
    """
    t0 = time.perf_counter()
    _check_stream(stream)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    spec = permutation_spec(model)
    _validate_pair(spec, state_a, state_b)
    check_spec(spec, model)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batches is not None and (not isinstance(batches, int) or batches < 1):
        raise ValueError(f"batches must be None or a positive integer, got {batches!r}")
    dev = torch.device(device) if device is not None else _device_of(spec, state_a)
    owner = _activation_owner(spec, model, stream)
    sizes = spec.group_sizes(state_a)
    moments = {g: _Moments.zeros(n, dev) for g, n in sizes.items()}
    model_a = _model_copy(model, state_a, dev)
    model_b = _model_copy(model, state_b, dev)
    examples, n_batches = _stream(model_a, model_b, owner, moments, sizes, _batches(data, batch_size, dev), batches)
    if examples == 0:
        raise ValueError("data yielded no examples; activation matching needs inputs")

    perms: dict[str, torch.Tensor] = {}
    objective: dict[str, float] = {}
    identity: dict[str, float] = {}
    for g in spec.groups:  # depth order; each group's activations depend on its permutation only
        m = moments[g]
        g_np = _to_numpy(m.gram(correlation), g)
        cols = _lsa(g_np)
        perms[g] = torch.as_tensor(cols, dtype=torch.long)
        norm = 1.0 if correlation else float(max(m.count, 1))
        ar = np.arange(len(cols))
        objective[g] = float(g_np[ar, cols].sum()) / norm
        identity[g] = float(np.trace(g_np)) / norm
    stats = {
        "method": "activation",
        "examples": examples,
        "batches": n_batches,
        "samples": {g: moments[g].count for g in spec.groups},
        "objective": objective,
        "identity_objective": identity,
        "correlation": correlation,
        "stream": stream,
        "modules": {g: list(names) for g, names in activation_modules(spec, stream).items()},
        "wall_time": time.perf_counter() - t0,
    }
    return _result(spec, perms, stats)


def _stream(
    model_a: nn.Module,
    model_b: nn.Module,
    owner: Mapping[str, str],
    moments: Mapping[str, _Moments],
    sizes: Mapping[str, int],
    inputs: Iterator[torch.Tensor],
    max_batches: int | None,
) -> tuple[int, int]:
    """Run both models batch by batch; accumulate per-group moments from hooks."""
    stash: dict[str, list[torch.Tensor]] = {m: [] for m in owner}

    def hook_a(name: str) -> Callable[..., None]:
        def fn(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            x = _as_samples(out, name, copy=True)
            if x.shape[1] != sizes[owner[name]]:
                raise ValueError(
                    f"module {name!r} outputs {x.shape[1]} channels but group {owner[name]!r} has "
                    f"{sizes[owner[name]]} units; the spec's activation module is wrong"
                )
            stash[name].append(x)

        return fn

    def hook_b(name: str) -> Callable[..., None]:
        def fn(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if not stash[name]:
                raise RuntimeError(f"module {name!r} ran more often in network B than in network A")
            moments[owner[name]].add(stash[name].pop(0), _as_samples(out, name, copy=False))

        return fn

    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    handles = [mods_a[m].register_forward_hook(hook_a(m)) for m in owner]
    handles += [mods_b[m].register_forward_hook(hook_b(m)) for m in owner]
    examples = n = 0
    try:
        with torch.inference_mode():
            for x in inputs:
                if max_batches is not None and n >= max_batches:
                    break
                model_a(x)
                model_b(x)
                for v in stash.values():
                    v.clear()
                examples += int(x.shape[0])
                n += 1
    finally:
        for h in handles:
            h.remove()
    return examples, n
