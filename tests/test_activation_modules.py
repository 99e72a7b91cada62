"""Which activations each permutation group reads in activation matching.

Sharma et al. 2024, App. A: "Activations are drawn from the output of the last
operation that occurs in a given permutation. For example, if a permutation
contains a convolution layer followed by a normalization and ReLU
non-linearity, we use the output of the ReLU non-linearity as the activations
for that permutation." For a ResNet residual stream (one group per stage) the
last operation of the group is the output of the stage's last block.

Planted tests (``B = Q[A]``) cannot tell which module is hooked: every
channel-equivariant module recovers ``Q``. So the module is pinned by name
here, and activation matching is compared on *independent* networks with a
reference written out below from explicit forward hooks and
``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from lmccheck.activation_matching import STREAM_MODES, activation_matching, activation_modules
from lmccheck.models import get_model

NORMS = ("none", "layernorm", "batchnorm")

# architecture -> (get_model kwargs, input shape (C, H, W)); small, but with the
# same structure (and, for VGG at 32x32, the same max-pool positions) as full size
SMALL = {
    "mlp": (dict(width=32, depth=3, in_channels=1, input_size=8), (1, 8, 8)),
    "vgg11": (dict(width=0.0625, in_channels=3, input_size=32), (3, 32, 32)),
    "vgg16": (dict(width=0.0625, in_channels=3, input_size=32), (3, 32, 32)),
    "resnet20": (dict(width=0.5, in_channels=3, input_size=8), (3, 8, 8)),
}

_VGG11_BLOCKS = (0, 2, 4, 5, 7, 8, 10, 11)  # positions of the conv blocks in features (32x32 input)
_VGG16_BLOCKS = (0, 1, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16)


def _vgg(blocks: tuple[int, ...]) -> dict[str, tuple[str, ...]]:
    out = {f"conv{i}": (f"features.{j}.act",) for i, j in enumerate(blocks)}
    return {**out, "fc1": ("act1",), "fc2": ("act2",)}


def _resnet(stream: str) -> dict[str, tuple[str, ...]]:
    def stream_modules(s: int) -> tuple[str, ...]:
        writers = tuple(f"stages.{s}.{i}.act2" for i in range(3))
        if s == 0:  # the stem writes stream0 before the first stage
            writers = ("act1", *writers)
        return writers if stream == "sum" else writers[-1:]

    out: dict[str, tuple[str, ...]] = {}
    for s in range(3):
        if s == 0:
            out["stream0"] = stream_modules(0)
        for i in range(3):
            out[f"s{s}b{i}"] = (f"stages.{s}.{i}.act1",)  # the ReLU inside the block
            if s > 0 and i == 0:  # the projection block opens the stage's stream
                out[f"stream{s}"] = stream_modules(s)
    return out


# Pinned: the module(s) each group reads, per architecture (any norm), in depth order.
# Default ("last"), by the paper's rule: the output of the last operation of the
# group -- the ReLU after the layer and its norm (never the conv/linear output
# before the norm, nor the norm output before the ReLU); for a ResNet stream the
# ReLU after the residual addition of the stage's LAST block (not the stem, not
# the earlier blocks, not a residual branch).
EXPECTED_LAST = {
    "mlp": {"P0": ("acts.0",), "P1": ("acts.1",), "P2": ("acts.2",)},
    "vgg11": _vgg(_VGG11_BLOCKS),
    "vgg16": _vgg(_VGG16_BLOCKS),
    "resnet20": _resnet("last"),
}
# stream="sum": every module writing a residual stream, in forward order; other
# groups read the same single module as by default.
EXPECTED_SUM = {**EXPECTED_LAST, "resnet20": _resnet("sum")}


def _build(arch: str, norm: str, seed: int = 0) -> nn.Module:
    kw, _ = SMALL[arch]
    torch.manual_seed(seed)
    return get_model(arch, num_classes=10, norm=norm, **kw).eval()


def _state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state with non-trivial BatchNorm running statistics."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().clone()
        if k.endswith("running_mean"):
            v = 0.1 * torch.randn(v.shape, generator=gen)
        elif k.endswith("running_var"):
            v = torch.rand(v.shape, generator=gen) + 0.5
        out[k] = v
    return out


def _inputs(arch: str, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, *SMALL[arch][1]), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- #
# The module each group reads, pinned
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", list(SMALL))
def test_default_reads_the_last_operation_of_each_group(arch: str, norm: str) -> None:
    """Sharma et al. App. A: the output of the last operation of the group (see EXPECTED_LAST)."""
    model = _build(arch, norm)
    spec = model.permutation_spec()
    assert list(spec.groups) == list(EXPECTED_LAST[arch])  # depth order too
    assert activation_modules(spec) == EXPECTED_LAST[arch]
    assert activation_modules(spec, "sum") == EXPECTED_SUM[arch]
    modules = dict(model.named_modules())
    for g, (name,) in EXPECTED_LAST[arch].items():
        assert isinstance(modules[name], nn.ReLU), (g, name)  # every group ends in a ReLU here
    # what activation_matching itself reports having hooked
    a = _state(model, 1)
    p = activation_matching(model, a, a, _inputs(arch, 2))
    assert p.stats["stream"] == "last"
    assert p.stats["modules"] == {g: list(v) for g, v in EXPECTED_LAST[arch].items()}


@pytest.mark.parametrize("arch", ["resnet20", "vgg11"])
def test_spec_lists_activation_modules_in_forward_order(arch: str) -> None:
    """``spec.activations`` is in forward order, so its last entry is the last operation that runs."""
    model = _build(arch, "layernorm")
    spec = model.permutation_spec()
    modules = dict(model.named_modules())
    calls: list[str] = []
    handles = [
        modules[name].register_forward_hook(lambda *_, name=name: calls.append(name))
        for names in spec.activations.values()
        for name in names
    ]
    with torch.no_grad():
        model(_inputs(arch, 1))
    for h in handles:
        h.remove()
    for g, names in spec.activations.items():
        assert [c for c in calls if c in names] == list(names), g


def test_unknown_stream_mode_is_rejected() -> None:
    model = _build("mlp", "none")
    a = _state(model, 0)
    assert STREAM_MODES == ("last", "sum")
    with pytest.raises(ValueError, match="stream mode"):
        activation_matching(model, a, a, _inputs("mlp", 2), stream="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stream mode"):
        activation_modules(model.permutation_spec(), "all")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Independent networks against a reference written from explicit hooks
# --------------------------------------------------------------------------- #
def _paper_modules(arch: str, model: nn.Module, stream: str) -> dict[str, list[str]]:
    """Group -> modules to read, derived here from the model's structure (not from its spec)."""
    if arch == "mlp":
        return {f"P{i}": [f"acts.{i}"] for i in range(len(model.layers))}
    if arch.startswith("vgg"):
        out = {f"conv{i}": [f"features.{j}.act"] for i, j in enumerate(model.block_index)}
        return {**out, "fc1": ["act1"], "fc2": ["act2"]}
    out: dict[str, list[str]] = {}
    writers = ["act1"]  # the stem writes stream0
    for s, stage in enumerate(model.stages):
        if s > 0:  # a projection block starts a new stream
            writers = []
        writers += [f"stages.{s}.{i}.act2" for i in range(len(stage))]
        out[f"stream{s}"] = writers if stream == "sum" else writers[-1:]
        for i in range(len(stage)):
            out[f"s{s}b{i}"] = [f"stages.{s}.{i}.act1"]
    return out


def _record(
    model: nn.Module, state: dict[str, torch.Tensor], names: list[str], x: torch.Tensor
) -> dict[str, np.ndarray]:
    """Outputs of the named modules on ``x``, as (samples, channels) float64 arrays."""
    model.load_state_dict(state)
    model.eval()
    mods = dict(model.named_modules())
    out: dict[str, np.ndarray] = {}

    def hook(name: str):
        def fn(_m, _i, y: torch.Tensor) -> None:
            out[name] = y.detach().double().movedim(1, -1).reshape(-1, y.shape[1]).numpy().copy()

        return fn

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def _reference(
    arch: str, model: nn.Module, a, b, x: torch.Tensor, stream: str, correlation: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """App. A by hand: per group a Gram over the read activations, one LSA per group in depth order."""
    groups = _paper_modules(arch, model, stream)
    names = [n for ns in groups.values() for n in ns]
    acts_a, acts_b = _record(model, a, names, x), _record(model, b, names, x)
    grams, perms = {}, {}
    for g in model.permutation_spec().group_names:  # depth order
        xa = np.concatenate([acts_a[n] for n in groups[g]])  # every read module's samples together
        xb = np.concatenate([acts_b[n] for n in groups[g]])
        if correlation:
            ca, cb = xa - xa.mean(0), xb - xb.mean(0)
            sa, sb = np.sqrt((ca**2).mean(0)), np.sqrt((cb**2).mean(0))
            with np.errstate(invalid="ignore", divide="ignore"):
                gram = np.nan_to_num((ca.T @ cb / len(xa)) / np.outer(sa, sb), nan=0.0, posinf=0.0, neginf=0.0)
        else:
            gram = xa.T @ xb
        _, cols = linear_sum_assignment(gram, maximize=True)
        grams[g], perms[g] = gram, cols
    return grams, perms


# one module per group outside ResNet streams, so both stream modes coincide there
INDEPENDENT_CASES = [
    ("mlp", "none", "last", False),
    ("vgg11", "batchnorm", "last", False),
    ("vgg16", "layernorm", "last", True),
    *[("resnet20", norm, stream, False) for norm in NORMS for stream in STREAM_MODES],
    *[("resnet20", "batchnorm", stream, True) for stream in STREAM_MODES],
]


@pytest.mark.slow
@pytest.mark.parametrize("arch,norm,stream,correlation", INDEPENDENT_CASES)
def test_independent_networks_match_hand_written_reference(
    arch: str, norm: str, stream: str, correlation: bool
) -> None:
    """Two different random inits (nothing planted): the hooked module decides the permutation."""
    model = _build(arch, norm, seed=0)
    a = _state(model, seed=10)
    b = _state(_build(arch, norm, seed=1), seed=11)
    x = _inputs(arch, 32, seed=3)
    mode = {} if stream == "last" else {"stream": stream}  # "last" through the default
    p = activation_matching(model, a, b, x, batch_size=10, correlation=correlation, **mode)
    grams, ref = _reference(arch, model, a, b, x, stream, correlation)
    assert p.stats["stream"] == stream
    n_live = n_units = 0
    for g, gram in grams.items():
        got = p.perms[g].numpy()
        ar = np.arange(len(got))
        best = gram[ar, ref[g]].sum()
        # optimal for the reference Gram (a permutation optimal for another module's Gram is not)
        assert gram[ar, got].sum() >= best - 1e-9 * abs(best), g
        # and the same assignment wherever it is determined: a zero entry (a unit of A that is
        # never on together with a unit of B, e.g. a dead unit) ties with the other zeros of its
        # row; among nonzero entries only a tie within the float32 Gram's rounding may assign
        # otherwise (seen: two units of VGG-16's conv11 swapped on a CPU without AVX512), and then
        # the rows that differ score the same under the float64 reference
        live = gram[ar, ref[g]] != 0
        assert live.any(), g
        differ = live & (got != ref[g])
        rounding = 1e-5 * float(np.abs(gram).max()) * max(1, int(differ.sum()))
        assert abs(gram[ar[differ], got[differ]].sum() - gram[ar[differ], ref[g][differ]].sum()) <= rounding, g
        assert differ.sum() <= 0.1 * live.sum(), g  # a tie is the exception, not the rule
        n_live, n_units = n_live + int(live.sum()), n_units + len(live)
    assert n_live > 0.6 * n_units  # undetermined units are rare enough for the check to bite


def test_copied_samples_never_share_memory_with_the_module_output() -> None:
    """A 2-D float32 output reshapes to a view of itself: with copy=True it must be cloned, so the network's
    in-place ReLU afterwards cannot change the stashed activations (the stream sum reads them later)."""
    from lmccheck.activation_matching import _as_samples

    out = torch.randn(5, 4)
    stashed = _as_samples(out, "fc1", copy=True)
    torch.relu_(out)
    assert stashed.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
    assert bool((stashed < 0).any())  # the values before the in-place ReLU
    assert _as_samples(out, "fc1", copy=False).untyped_storage().data_ptr() == out.untyped_storage().data_ptr()


def test_activation_matchings_options_are_keyword_only() -> None:
    """A positional 5th argument (``batches``? ``device``?) is refused rather than guessed."""
    model = get_model("mlp", width=8, depth=2, in_channels=1, input_size=4, num_classes=3)
    state = model.state_dict()
    with pytest.raises(TypeError, match="positional"):
        activation_matching(model, state, state, torch.randn(6, 1, 4, 4), 2)  # type: ignore[misc]
