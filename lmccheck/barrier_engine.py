"""The barrier evaluation engine: one working copy of a model, evaluated at many convex combinations of states.

The model is deep-copied once and every interpolated network is written in place into that copy
(``torch.lerp(..., out=...)``); data are moved to the device once and evaluated under ``torch.inference_mode``
in large batches, with bf16 autocast where the resolved options say so (loss always in float32). Two engines:
``"loop"`` (one forward pass per point) and ``"vmap"`` (``torch.func.functional_call`` vectorized over a chunk of
points). For lmccheck's models the first layer can be shortcut exactly: its output is linear in the weights, so it
is computed once for each endpoint and mixed (``first_layer_shortcut``). BatchNorm statistics are re-estimated at
every point when the options say ``bn_reset``. What to run with is a
:class:`~lmccheck.barrier_options.ResolvedBarrier`; :mod:`lmccheck.interpolation` is the public API.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .barrier_options import ResolvedBarrier, _bn_modules, _first_layer, _is_mlp
from .data import Split

if TYPE_CHECKING:
    from .models.mlp import MLP

StateDict = Mapping[str, torch.Tensor]


def _mix_into(out: torch.Tensor, tensors: Sequence[torch.Tensor], w: Sequence[float]) -> torch.Tensor:
    """``out = sum_i w[i] * tensors[i]``, exact at the vertices.

    A weight of exactly 1 copies that tensor (so ``alpha = 0`` is A bit for
    bit, even when B holds NaN); zero weights are skipped; two nonzero weights
    ``(1 - a, a)`` use ``torch.lerp`` with weight ``a``, so a point on an edge of
    a simplex is computed exactly as the pairwise path along that edge.
    """
    for i, wi in enumerate(w):
        if wi == 1.0:
            return out.copy_(tensors[i])
    terms = [(t, float(wi)) for t, wi in zip(tensors, w) if wi != 0.0]
    if len(terms) == 2:  # a point on an edge: the same arithmetic as the pairwise path along that edge
        return torch.lerp(terms[0][0], terms[1][0], terms[1][1], out=out)
    torch.mul(terms[0][0], terms[0][1], out=out)
    for t, wi in terms[1:]:
        out.add_(t, alpha=wi)
    return out



def _bn_reset(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    before: Callable[[int], None] | None = None,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> None:
    """Recompute BatchNorm running statistics as the average over ``inputs``.

    Only the BatchNorm layers run in train mode (the rest of the network stays
    as it is, so dropout or the like does not add noise); their momentum is set
    to None (cumulative average) and restored afterwards, as is each layer's mode.
    """
    bns = _bn_modules(model)
    if not bns:
        return
    saved = [(m, m.momentum, m.training) for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for i, x in enumerate(inputs):
                if before is not None:
                    before(i)
                with context():
                    model(x)
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)



def _bn_slices(x: torch.Tensor, batches: int, batch_size: int) -> list[torch.Tensor]:
    """Up to ``batches`` full batches of ``x`` in order (one short batch if ``x`` is smaller).

    Full batches only, so every batch weighs the same in the average and no
    batch of one example (which BatchNorm rejects in train mode) occurs.
    """
    if batches < 1 or batch_size < 1:
        raise ValueError(f"need batches >= 1 and batch_size >= 1, got batches={batches}, batch_size={batch_size}")
    if len(x) < 2:
        raise ValueError(
            f"BatchNorm statistics need at least 2 examples to re-estimate from, got {len(x)}; "
            "pass more training data (bn_data)"
        )
    full = min(batches, len(x) // batch_size)
    if full == 0:
        return [x]
    return [x[i * batch_size : (i + 1) * batch_size] for i in range(full)]



# ---------------------------------------------------------------- evaluation engine
def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _autocast_context(device: torch.device, enabled: bool) -> Callable[[], AbstractContextManager[Any]]:
    if not enabled:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class _Mixture(nn.Module):
    """Stands in for the first layer: the convex combination of its cached endpoint outputs.

    The first layer's output is linear in its weights, so at weights ``w`` it
    is ``sum_i w_i z_i`` with ``z_i`` its output under network ``i``. ``mix``
    holds ``w`` (a buffer, so ``functional_call``/``vmap`` can batch it) and
    ``z`` the endpoint outputs for the current batch.
    """

    mix: torch.Tensor

    def __init__(self, n: int, device: torch.device) -> None:
        super().__init__()
        self.register_buffer("mix", torch.zeros(n, device=device), persistent=False)
        self.z: list[torch.Tensor] = []
        self.point: tuple[float, ...] | None = None  # the weights as floats (loop engine)

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        if self.point is not None:
            return _mix_into(torch.empty_like(self.z[0]), self.z, self.point)
        w = self.mix.to(self.z[0].dtype)  # batched over points under vmap
        if len(self.z) == 2:
            out = torch.lerp(self.z[0], self.z[1], w[1])
            return torch.where(w[1] == 0, self.z[0], torch.where(w[1] == 1, self.z[1], out))
        out = self.z[0] * w[0]
        for i in range(1, len(self.z)):
            out = out + self.z[i] * w[i]
        return out


class _Engine:
    """One working copy of the model, evaluated at many convex combinations of states."""

    @torch.no_grad()
    def __init__(
        self, model: nn.Module, states: Sequence[StateDict], data: Split, options: ResolvedBarrier,
        bn_data: Split | None,
    ) -> None:
        self.options = options
        device = self.device = options.device
        self.context = _autocast_context(device, options.autocast)
        self.acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.work = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        if options.channels_last:
            self.work = self.work.to(memory_format=torch.channels_last)
        # data: moved to the device once, cut into batches once
        split = data.take(options.n_examples)
        self.n = len(split)
        bs = options.batch_size
        self.batches = list(zip(self._batched(split.x, bs), self._batched(split.y, bs)))
        self.bn_reset = options.bn_reset
        self.bn_inputs: list[torch.Tensor] = []
        if options.bn_reset:
            assert bn_data is not None and options.bn_batches is not None and options.bn_batch_size is not None
            slices = _bn_slices(bn_data.x, options.bn_batches, options.bn_batch_size)
            self.bn_inputs = [self._batched(b, len(b))[0] for b in slices]
        self.stub: _Mixture | None = None
        self.eval_z: list[list[torch.Tensor]] = []
        self.bn_z: list[list[torch.Tensor]] = []
        skip = self._install_shortcut(model, states) if options.first_layer_shortcut else set()
        self.mlp_fast = self.stub is not None and _is_mlp(model) and not options.autocast
        self.buffers: list[torch.Tensor] = []
        # the states on the device, in the working copy's dtypes and memory formats
        self.targets = dict(self.work.state_dict())
        self.states = [
            {k: torch.empty_like(t).copy_(s[k]) for k, t in self.targets.items() if k not in skip} for s in states
        ]
        self.float_keys = [k for k, t in self.targets.items() if t.is_floating_point()]
        for k, t in self.targets.items():
            if not t.is_floating_point():
                t.copy_(self.states[0][k])  # integer buffers come from the first state

    def _batched(self, t: torch.Tensor, size: int) -> list[torch.Tensor]:
        t = t.to(self.device)
        if t.dim() == 4:
            t = t.contiguous(memory_format=self.memory_format)
        return [t[i : i + size] for i in range(0, len(t), size)]

    def _install_shortcut(self, model: nn.Module, states: Sequence[StateDict]) -> set[str]:
        """Replace the first layer by the mixture of its cached outputs; return its state keys."""
        found = _first_layer(model)
        assert found is not None
        name, prep = found
        first = self.work.get_submodule(name)
        self.eval_z = self._first_outputs(first, name, states, [prep(x) for x, _ in self.batches])
        self.bn_z = self._first_outputs(first, name, states, [prep(x) for x in self.bn_inputs])
        self.stub = _Mixture(len(states), self.device)
        self.work.set_submodule(name, self.stub)
        return {f"{name}.{k}" for k in first.state_dict()}

    def _first_outputs(
        self, first: nn.Module, name: str, states: Sequence[StateDict], inputs: list[torch.Tensor]
    ) -> list[list[torch.Tensor]]:
        """Per input batch, the first layer's output under each state."""
        layer = copy.deepcopy(first)
        keys = list(layer.state_dict())
        out: list[list[torch.Tensor]] = [[] for _ in inputs]
        for s in states:
            layer.load_state_dict({k: s[f"{name}.{k}"] for k in keys})
            with torch.inference_mode(), self.context():
                for i, x in enumerate(inputs):
                    out[i].append(layer(x))
        return out

    # -- setting a point -----------------------------------------------------
    @torch.no_grad()
    def set_point(self, w: Sequence[float]) -> None:
        """Write ``sum_i w_i * state_i`` into the working copy."""
        w = tuple(float(x) for x in w)
        for k in self.float_keys:
            _mix_into(self.targets[k], [s[k] for s in self.states], w)
        if self.stub is not None:
            self.stub.point = w
        if self.bn_reset:
            _bn_reset(self.work, self.bn_inputs, before=self._feed_bn, context=self.context)

    def _feed_bn(self, i: int) -> None:
        if self.stub is not None:
            self.stub.z = self.bn_z[i]

    def run(self, points: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
        """Mean loss and 0-1 error at each point (weights over the states), with the options' engine."""
        if self.options.engine == "vmap":
            return self.run_vmap(points, self.options.vmap_chunk or len(points))
        return self.run_loop(points)

    # -- loop engine -----------------------------------------------------------
    def run_loop(self, points: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
        losses, errors = [], []
        for w in points:
            self.set_point(w)
            loss = torch.zeros((), dtype=self.acc_dtype, device=self.device)
            err = torch.zeros((), dtype=torch.int64, device=self.device)
            with torch.inference_mode():
                for i, (x, y) in enumerate(self.batches):
                    if self.stub is not None:
                        self.stub.z = self.eval_z[i]
                    if self.mlp_fast:
                        logits = self._mlp_forward()
                    else:
                        with self.context():
                            logits = self.work(x)
                    loss += F.cross_entropy(logits.float(), y, reduction="sum").to(self.acc_dtype)
                    err += (logits.argmax(1) != y).sum()
            losses.append(loss)
            errors.append(err)
        return self._finish(losses, errors)

    def _mlp_forward(self) -> torch.Tensor:
        """``MLP.forward`` after the (shortcut) first layer, into two reused buffers.

        The same operations as ``MLP.forward`` (the reference test checks it
        to 1e-5) without allocating a new activation per layer: ``addmm`` into
        a preallocated buffer and an in-place ReLU. CPU / no autocast only.
        """
        work, stub = cast("MLP", self.work), self.stub
        assert stub is not None
        z = stub.z
        n, width = z[0].shape
        if not self.buffers or self.buffers[0].shape[0] < n or self.buffers[0].shape[1] != width:
            self.buffers = [torch.empty(n, width, dtype=z[0].dtype, device=z[0].device) for _ in range(2)]
        assert stub.point is not None
        h = _mix_into(self.buffers[0][:n], z, stub.point)
        for j, (layer, nrm, act) in enumerate(zip(work.layers, work.norms, work.acts, strict=True)):
            lin = cast(nn.Linear, layer)
            if j > 0:
                out = self.buffers[j % 2][:n]
                if out.shape[1] != lin.out_features:
                    out = torch.empty(n, lin.out_features, dtype=h.dtype, device=h.device)
                if lin.bias is not None:
                    torch.addmm(lin.bias, h, lin.weight.t(), out=out)
                else:
                    torch.mm(h, lin.weight.t(), out=out)
                h = out
            h = nrm(h)
            h = torch.relu_(h) if isinstance(act, nn.ReLU) else act(h)
        return work.head(h)

    # -- vmap engine -----------------------------------------------------------
    def run_vmap(self, points: Sequence[Sequence[float]], chunk: int) -> tuple[list[float], list[float]]:
        from torch.func import functional_call

        work = self.work

        def fn(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(work, params, (x,))

        batched = torch.vmap(fn, in_dims=(0, None))
        losses: list[torch.Tensor] = []
        errors: list[torch.Tensor] = []
        with torch.inference_mode():
            if self.stub is not None:
                self.stub.point = None
            for start in range(0, len(points), chunk):
                part = [tuple(float(x) for x in w) for w in points[start : start + chunk]]
                params = self._stacked(part)
                k = len(part)
                loss = torch.zeros(k, dtype=self.acc_dtype, device=self.device)
                err = torch.zeros(k, dtype=torch.int64, device=self.device)
                for i, (x, y) in enumerate(self.batches):
                    if self.stub is not None:
                        self.stub.z = self.eval_z[i]
                    with self.context():
                        logits = batched(params, x)  # (k, B, C)
                    ce = F.cross_entropy(logits.float().flatten(0, 1), y.repeat(k), reduction="none")
                    loss += ce.view(k, -1).sum(1).to(self.acc_dtype)
                    err += (logits.argmax(-1) != y).sum(1)
                losses.extend(loss.unbind())
                errors.extend(err.unbind())
        return self._finish(losses, errors)

    def _stacked(self, part: Sequence[tuple[float, ...]]) -> dict[str, torch.Tensor]:
        """Parameters of every point of a chunk, stacked on a leading axis."""
        params: dict[str, torch.Tensor] = {}
        for k in self.float_keys:
            s = [st[k] for st in self.states]
            out = torch.empty((len(part), *s[0].shape), dtype=s[0].dtype, device=s[0].device)
            for j, w in enumerate(part):
                _mix_into(out[j], s, w)
            params[k] = out
        if self.stub is not None:
            params[self._stub_name() + ".mix"] = torch.tensor(part, device=self.device)
        return params

    def _stub_name(self) -> str:
        for name, m in self.work.named_modules():
            if m is self.stub:
                return name
        raise AssertionError("shortcut module not found")

    def _finish(self, losses: list[torch.Tensor], errors: list[torch.Tensor]) -> tuple[list[float], list[float]]:
        loss = torch.stack(losses).tolist()
        err = torch.stack(errors).tolist()
        return [v / self.n for v in loss], [e / self.n for e in err]


def _nonfinite_key(states: Sequence[StateDict], names: Sequence[str]) -> str:
    for name, s in zip(names, states):
        for key, t in s.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"; {name}[{key!r}] contains NaN or infinite values"
    return ""
