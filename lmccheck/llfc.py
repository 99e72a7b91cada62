"""Layerwise linear feature connectivity (Zhou et al. 2023), streamed over a dataset.

Zhou et al.'s convention: ``theta_alpha = alpha * theta_A + (1 - alpha) * theta_B`` (alpha weights A, the
opposite of Sharma et al.'s barrier curves). Everything here follows it.

*Feature sites* are the modules whose outputs are a layer's post-activations ``H`` and whose inputs are its
pre-activations ``H~``: every ReLU that carries a permuted group (:attr:`PermutationSpec.activations`: an MLP's
hidden layers, every VGG conv block and classifier layer, a ResNet's stem, the first ReLU of every block and
every block output), in forward order, then the logits (``head``: ``f^(L)``, with no activation).

*Commutativity sites* are the weight layers ``W`` whose input is a previous feature ``H^(l-1)`` (not the data):
every linear or conv layer after the first, and for a ResNet the first conv of each block and the head (Zhou
et al. Fig. 6-7). ``W H`` is the layer without its bias (a conv as a convolution, which is footnote 4's
reshaped ``W`` times the unfolded input).

Every metric is accumulated batch by batch: only one batch of each layer of each network is held at a time,
so 10k examples of a wide network fit a workstation. Per-sample metrics come back with their dataset mean and
standard deviation (:class:`Moments`); dataset-level distances (Eq. 8's ``Dist_com``, ``Dist_W``, ``Dist_H``)
accumulate their squared norms in float64.

dist(x, y) = ||x - y||^2 / (||x|| ||y||) (§5.1); two zero vectors are at distance 0 and have cosine 1. With
exactly one zero vector dist is undefined (the ratio grows without bound as one norm goes to 0): it is NaN, and
:class:`Moments` leaves such examples out of the mean and counts them (``undefined``), so one dead feature vector
never makes a mean infinite. Dataset-level distances of an all-zero tensor are NaN likewise.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split
from .permutation import StateDict, check_state, permutation_spec, state_of

__all__ = [
    "DEFAULT_ALPHAS",
    "Moments",
    "alpha_key",
    "Sites",
    "commutativity",
    "cosine_and_coef",
    "default_batch_size",
    "dist",
    "llfc",
    "llfc_decomposition",
    "sites_of",
    "spectra",
    "stable_rank",
    "stitching_errors",
    "weak_additivity",
]

#: Zhou et al. §4: alpha in {0.25, 0.5, 0.75}
DEFAULT_ALPHAS = (0.25, 0.5, 0.75)
#: Dist_sigma's max over alpha in [0, 1], on this grid (the 25 points of Sharma et al.'s barrier grid)
DIST_SIGMA_ALPHAS = 25
DEFAULT_BATCH = 1000
#: examples per batch for conv nets: every site of five networks is held for one batch (ResNet-20x32 keeps
#: about 6M floats per example per network)
CONV_BATCH = 32


# ---------------------------------------------------------------- small maths
def dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Zhou et al.'s normalized distance ||x - y||^2 / (||x|| ||y||) along the last axis: 0 for two zero vectors,
    NaN (undefined) where exactly one of the two is zero."""
    x, y = x.double(), y.double()
    num = ((x - y) ** 2).sum(-1)
    den = x.norm(dim=-1) * y.norm(dim=-1)
    return torch.where(num == 0, torch.zeros_like(num),
                       torch.where(den == 0, torch.full_like(num, math.nan),
                                   num / den.clamp_min(torch.finfo(torch.float64).tiny)))


def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis; 1 for two zero vectors, 0 for one zero vector."""
    x, y = x.double(), y.double()
    nx, ny = x.norm(dim=-1), y.norm(dim=-1)
    c = (x * y).sum(-1) / (nx * ny).clamp_min(torch.finfo(torch.float64).tiny)
    both_zero = (nx == 0) & (ny == 0)
    return torch.where(both_zero, torch.ones_like(c), c)


@dataclass
class Moments:
    """Running mean and standard deviation of per-sample values (float64 sums). NaN values (a :func:`dist`
    that is undefined for that example) are left out and counted in ``undefined``."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    largest: float = -math.inf
    undefined: int = 0

    def add(self, values: torch.Tensor) -> None:
        v = values.double().flatten()
        nan = torch.isnan(v)
        if bool(nan.any()):
            self.undefined += int(nan.sum())
            v = v[~nan]
        if bool(torch.isinf(v).any()):
            raise ValueError("an infinite per-example value reached Moments: the features overflow (check the "
                             "networks for diverged weights)")
        self.n += int(v.numel())
        self.total += float(v.sum())
        self.total_sq += float((v * v).sum())
        if v.numel():
            self.largest = max(self.largest, float(v.max()))

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        if self.n < 2:
            return 0.0
        var = (self.total_sq - self.total * self.total / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "max": self.largest, "n": self.n, "undefined": self.undefined}


# ---------------------------------------------------------------- sites
@dataclass(frozen=True)
class Sites:
    """Where a model's features and commutativity products are read (module names, forward order)."""

    features: tuple[str, ...]
    commutativity: tuple[str, ...]
    stitch: tuple[str, ...] = ()
    output: str = "head"


_RESNET_FIRST_CONV = re.compile(r"^stages\.\d+\.\d+\.conv1$")
#: a ResNet block's inner ReLU: its output is not the network's whole state (the shortcut bypasses it)
_RESNET_INNER = re.compile(r"^stages\.\d+\.\d+\.act1$")


def sites_of(model: nn.Module) -> Sites:
    """The feature and commutativity sites of one of lmccheck's models (see the module docstring)."""
    spec = permutation_spec(model)
    modules = dict(model.named_modules())
    feats: list[str] = []
    for names in spec.activations.values():
        feats += [n for n in names if n not in feats]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    feats.sort(key=lambda n: order[n])
    weights = [n for n in spec.layers if isinstance(modules.get(n), (nn.Linear, nn.Conv2d))]
    weights.sort(key=lambda n: order[n])
    if any(_RESNET_FIRST_CONV.match(n) for n in weights):
        com = [n for n in weights if _RESNET_FIRST_CONV.match(n)] + [n for n in weights if n == "head"]
    else:
        com = weights[1:]
    if "head" not in modules:
        raise ValueError(f"{type(model).__name__} has no 'head' module; llfc reads lmccheck's mlp, vgg and resnet20")
    for n in feats:
        if not isinstance(modules[n], nn.ReLU):
            raise ValueError(f"feature site {n!r} is a {type(modules[n]).__name__}, not a ReLU; "
                             "weak additivity is defined for ReLU activations")
    return Sites(tuple(feats), tuple(com), tuple(n for n in feats if not _RESNET_INNER.match(n)))


# ---------------------------------------------------------------- streaming forward passes
def _batches(data: Split, n_examples: int | None, batch_size: int | None, device: torch.device,
             model: nn.Module | None = None) -> Iterator[tuple[Any, Any]]:
    """Batches of the first ``n_examples``, moved to ``device`` one at a time."""
    if batch_size is None:
        batch_size = default_batch_size(model) if model is not None else DEFAULT_BATCH
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not isinstance(data, Split):
        raise TypeError(f"data must be an lmccheck.data.Split (e.g. load_dataset().test), got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the dataset is empty; pass a split with at least one example")
    split = data.take(n_examples)
    for i in range(0, len(split), batch_size):
        yield split.x[i : i + batch_size].to(device), split.y[i : i + batch_size].to(device)


class _Net:
    """A working copy of the model at one state, with hooks that keep the current batch's site tensors."""

    def __init__(self, model: nn.Module, state: StateDict, sites: Sites, device: torch.device,
                 capture_inputs: Sequence[str] = (), keep_pre: bool = False) -> None:
        self.keep_pre = keep_pre  # pre-activations only where a metric reads them (weak additivity)
        self.model = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        self.model.load_state_dict({k: v.to(device) for k, v in state.items()})
        self.pre: dict[str, torch.Tensor] = {}
        self.post: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.replace: dict[str, torch.Tensor] = {}
        mods = dict(self.model.named_modules())
        for name in (*sites.features, sites.output):
            mods[name].register_forward_hook(self._site_hook(name))
        for name in capture_inputs:
            mods[name].register_forward_hook(self._input_hook(name))

    def _site_hook(self, name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            if self.keep_pre:
                self.pre[name] = inputs[0].detach()
            out = self.replace.get(name, output)
            self.post[name] = out.detach()
            return out if name in self.replace else None
        return hook

    def _input_hook(self, name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            self.inputs[name] = inputs[0].detach()
        return hook

    def weight(self, name: str) -> nn.Linear | nn.Conv2d:
        """The weight layer ``name``: a commutativity site, a linear or conv layer (:func:`_wh` checks which)."""
        return cast("nn.Linear | nn.Conv2d", self.model.get_submodule(name))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """One row per sample."""
    return t.reshape(t.shape[0], -1)


def _lerp_state(a: StateDict, b: StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """Zhou et al.'s theta_alpha = alpha A + (1 - alpha) B (float entries; others from A)."""
    return {k: (alpha * a[k].double() + (1 - alpha) * b[k].double()).to(a[k].dtype) if a[k].is_floating_point()
            else a[k].clone() for k in a}


def _prepare(model: nn.Module, a: StateDict | nn.Module, b: StateDict | nn.Module) -> tuple[StateDict, StateDict]:
    sa = state_of(a) if isinstance(a, nn.Module) else dict(a)
    sb = state_of(b) if isinstance(b, nn.Module) else dict(b)
    spec = permutation_spec(model)
    check_state(spec, sa, name="network A")
    check_state(spec, sb, name="network B", reference=sa, reference_name="network A")
    return sa, sb


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _pair(model: nn.Module, state_a: StateDict | nn.Module, state_b: StateDict | nn.Module,
          device: str | torch.device | None, capture_inputs: Sequence[str] = (), keep_pre: bool = False
          ) -> tuple[StateDict, StateDict, Sites, torch.device, _Net, _Net]:
    """The checked states, the sites, the device and working copies of A and B."""
    sa, sb = _prepare(model, state_a, state_b)
    sites = sites_of(model)
    dev = _device(model, device)
    return (sa, sb, sites, dev, _Net(model, sa, sites, dev, capture_inputs, keep_pre),
            _Net(model, sb, sites, dev, capture_inputs, keep_pre))


def default_batch_size(model: nn.Module) -> int:
    """Examples per streamed batch: :data:`DEFAULT_BATCH` for an MLP, :data:`CONV_BATCH` for a conv net."""
    return CONV_BATCH if any(isinstance(m, nn.Conv2d) for m in model.modules()) else DEFAULT_BATCH


def alpha_key(alpha: float) -> str:
    """The key of an alpha in the results (JSON-safe, as stored): ``0.25 -> "0.25"``."""
    return f"{float(alpha):g}"


# ---------------------------------------------------------------- LLFC (§4, App. B.2)
@torch.no_grad()
def llfc(
    model: nn.Module,
    state_a: StateDict | nn.Module,
    state_b: StateDict | nn.Module,
    data: Split,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_examples: int | None = 10_000,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Per feature site (and the logits): ``1 - cosine_alpha``, ``coef_alpha`` per alpha and ``1 - cosine_AB``.

    ``cosine_alpha(x) = cos[f(theta_alpha; x), alpha f(A; x) + (1 - alpha) f(B; x)]``, ``cosine_AB(x) =
    cos[f(A; x), f(B; x)]`` and ``coef_alpha(x)`` the length of ``f(theta_alpha; x)`` projected on the
    interpolated features over the latter's length (App. B.2). Returns ``{"sites": [...], "alphas": [...],
    "one_minus_cos_alpha": {site: {alpha_key(alpha): moments}}, "coef_alpha": {...}, "one_minus_cos_ab":
    {site: moments}, "n_examples": n}`` with moments as :meth:`Moments.as_dict`.
    """
    alphas = [float(a) for a in alphas]
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"alphas must lie in [0, 1], got {alphas}")
    sa, sb, sites, dev, net_a, net_b = _pair(model, state_a, state_b, device)
    names = [*sites.features, sites.output]
    mids = {a: _Net(model, _lerp_state(sa, sb, a), sites, dev) for a in alphas}
    one_minus = {n: {a: Moments() for a in alphas} for n in names}
    coef = {n: {a: Moments() for a in alphas} for n in names}
    ab = {n: Moments() for n in names}
    count = 0
    for x, _ in _batches(data, n_examples, batch_size, dev, model):
        count += len(x)
        net_a(x), net_b(x)
        for a, net in mids.items():
            net(x)
            for n in names:
                fa, fb, fm = _flat(net_a.post[n]), _flat(net_b.post[n]), _flat(net.post[n])
                c, k = cosine_and_coef(fm, a * fa.double() + (1 - a) * fb.double())
                one_minus[n][a].add(1 - c)
                coef[n][a].add(k)
        for n in names:
            ab[n].add(1 - _cos(_flat(net_a.post[n]), _flat(net_b.post[n])))
    return {
        "sites": names,
        "alphas": alphas,
        "one_minus_cos_alpha": {n: {alpha_key(a): m.as_dict() for a, m in d.items()} for n, d in one_minus.items()},
        "coef_alpha": {n: {alpha_key(a): m.as_dict() for a, m in d.items()} for n, d in coef.items()},
        "one_minus_cos_ab": {n: m.as_dict() for n, m in ab.items()},
        "n_examples": count,
    }


def cosine_and_coef(feature: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: ``cos(feature, target)`` and ``<feature, target> / ||target||^2`` (App. B.2's coef; 1 where the
    target is 0 and so is the feature, 0 where only the target is 0)."""
    f, t = feature.double(), target.double()
    c = _cos(f, t)
    tt = (t * t).sum(-1)
    k = (f * t).sum(-1) / tt.clamp_min(torch.finfo(torch.float64).tiny)
    k = torch.where(tt == 0, torch.where((f * f).sum(-1) == 0, torch.ones_like(k), torch.zeros_like(k)), k)
    return c, k


# ---------------------------------------------------------------- weak additivity (Definition 3, Eq. 7)
def weak_additivity_distance(pre_a: torch.Tensor, pre_b: torch.Tensor, alphas: int | Sequence[float] = DIST_SIGMA_ALPHAS
                             ) -> torch.Tensor:
    """Per row: ``Dist_sigma = max_alpha dist(relu(alpha a + (1 - alpha) b), alpha relu(a) + (1 - alpha) relu(b))``.

    The two sides differ only where ``a`` and ``b`` have opposite signs: where both are positive each side is
    ``alpha a + (1 - alpha) b``, where neither is, both are 0. So the squared norms are quadratics in alpha over
    row sums taken once, and only the sign-disagreeing entries are visited per alpha (float64; the same values
    as evaluating the definition entry by entry up to the order of summation, with the same 0 and NaN cases).
    """
    grid = [i / (alphas - 1) for i in range(alphas)] if isinstance(alphas, int) else [float(a) for a in alphas]
    a, b = _flat(pre_a).double(), _flat(pre_b).double()
    rows = a.shape[0]
    ra, rb = a.relu(), b.relu()
    pos_a, pos_b = a > 0, b > 0
    both = pos_a & pos_b
    # where both are positive:
    # sum (alpha a + (1 - alpha) b)^2 = alpha^2 paa + 2 alpha (1 - alpha) pab + (1 - alpha)^2 pbb
    pa, pb = a * both, b * both
    paa, pab, pbb = (pa * pa).sum(1), (pa * pb).sum(1), (pb * pb).sum(1)
    # ||alpha relu(a) + (1 - alpha) relu(b)||^2 over every entry (relu(a) relu(b) is nonzero only where both
    # are positive)
    saa, sbb = (ra * ra).sum(1), (rb * rb).sum(1)
    row, col = torch.nonzero(pos_a != pos_b, as_tuple=True)
    da, db, dra, drb = a[row, col], b[row, col], ra[row, col], rb[row, col]
    best = torch.zeros(rows, dtype=torch.float64, device=a.device)
    for al in grid:
        x = (al * da + (1 - al) * db).relu()
        y = al * dra + (1 - al) * drb
        num = torch.zeros(rows, dtype=torch.float64, device=a.device).index_add_(0, row, (x - y) ** 2)
        x_d = torch.zeros(rows, dtype=torch.float64, device=a.device).index_add_(0, row, x * x)
        both_part = al * al * paa + 2 * al * (1 - al) * pab + (1 - al) * (1 - al) * pbb
        y2 = al * al * saa + 2 * al * (1 - al) * pab + (1 - al) * (1 - al) * sbb
        den = (both_part + x_d).sqrt() * y2.sqrt()
        d = torch.where(num == 0, torch.zeros_like(num),
                        torch.where(den == 0, torch.full_like(num, math.nan),
                                    num / den.clamp_min(torch.finfo(torch.float64).tiny)))
        best = torch.maximum(best, d)
    return best  # torch.maximum propagates NaN: a row undefined at some alpha is undefined


@torch.no_grad()
def weak_additivity(
    model: nn.Module,
    state_a: StateDict | nn.Module,
    state_b: StateDict | nn.Module,
    data: Split,
    *,
    n_examples: int | None = 10_000,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    alphas: int | Sequence[float] = DIST_SIGMA_ALPHAS,
) -> dict[str, Any]:
    """Per feature site: the distribution of ``Dist_sigma`` (§5.1, Fig. 5-6) over the examples, as the max over
    ``alphas`` (``dist_sigma``) and at alpha = 1/2 alone (``dist_sigma_half``, what the authors' script
    ``scripts/weak_additivity.py`` evaluates): moments and a histogram-ready sample (the per-example values of
    the first batch)."""
    *_, sites, dev, net_a, net_b = _pair(model, state_a, state_b, device, keep_pre=True)
    out = {n: Moments() for n in sites.features}
    half = {n: Moments() for n in sites.features}
    sample: dict[str, list[float]] = {}
    for x, _ in _batches(data, n_examples, batch_size, dev, model):
        net_a(x), net_b(x)
        for n in sites.features:
            d = weak_additivity_distance(net_a.pre[n], net_b.pre[n], alphas)
            out[n].add(d)
            half[n].add(weak_additivity_distance(net_a.pre[n], net_b.pre[n], (0.5,)))
            sample.setdefault(n, [v for v in d.tolist() if not math.isnan(v)])
    return {"sites": list(sites.features), "dist_sigma": {n: m.as_dict() for n, m in out.items()},
            "dist_sigma_half": {n: m.as_dict() for n, m in half.items()}, "sample": sample}


# ---------------------------------------------------------------- commutativity (Definition 4, Eq. 8)
def _wh(layer: nn.Module, weight: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``W H`` of a linear or conv layer: the layer's map without its bias."""
    if isinstance(layer, nn.Linear):
        return F.linear(h.to(weight.dtype), weight)
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(h.to(weight.dtype), weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    raise TypeError(f"commutativity is defined for linear and conv layers, not {type(layer).__name__}")


@dataclass
class _SqNorms:
    """Dataset-level dist(vec(x), vec(y)) from float64 sums of squares."""

    diff: float = 0.0
    x: float = 0.0
    y: float = 0.0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.double(), y.double()
        self.diff += float(((x - y) ** 2).sum())
        self.x += float((x * x).sum())
        self.y += float((y * y).sum())

    @property
    def value(self) -> float:
        if self.diff == 0:
            return 0.0
        return self.diff / math.sqrt(self.x * self.y) if self.x > 0 and self.y > 0 else math.nan


@torch.no_grad()
def commutativity(
    model: nn.Module,
    state_a: StateDict | nn.Module,
    state_b: StateDict | nn.Module,
    data: Split,
    *,
    n_examples: int | None = 10_000,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Per commutativity site: ``Dist_com = dist(vec(W_A H_A + W_B H_B), vec(W_A H_B + W_B H_A))``, ``Dist_W =
    dist(vec(W_A), vec(W_B))`` and ``Dist_H = dist(vec(H_A), vec(H_B))`` (Eq. 8, App. B.3). ``H`` is the
    layer's input in each network; the first layer, whose input is the data in both, is not a site."""
    sites = sites_of(model)
    *_, dev, net_a, net_b = _pair(model, state_a, state_b, device, capture_inputs=sites.commutativity)
    com = {n: _SqNorms() for n in sites.commutativity}
    hh = {n: _SqNorms() for n in sites.commutativity}
    for x, _ in _batches(data, n_examples, batch_size, dev, model):
        net_a(x), net_b(x)
        for n in sites.commutativity:
            layer = net_a.weight(n)
            wa, wb = layer.weight.double(), net_b.weight(n).weight.double()
            ha, hb = net_a.inputs[n].double(), net_b.inputs[n].double()
            com[n].add(_wh(layer, wa, ha) + _wh(layer, wb, hb), _wh(layer, wa, hb) + _wh(layer, wb, ha))
            hh[n].add(ha, hb)
    dist_w = {}
    for n in sites.commutativity:
        w = _SqNorms()
        w.add(net_a.weight(n).weight, net_b.weight(n).weight)
        dist_w[n] = w.value
    return {
        "sites": list(sites.commutativity),
        "dist_com": {n: v.value for n, v in com.items()},
        "dist_w": dist_w,
        "dist_h": {n: v.value for n, v in hh.items()},
    }


# ---------------------------------------------------------------- stitching (App. B.4)
@torch.no_grad()
def stitching_errors(
    model: nn.Module,
    state_a: StateDict | nn.Module,
    state_b: StateDict | nn.Module,
    data: Split,
    *,
    n_examples: int | None = 10_000,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The 0-1 error of ``B_{>l} o A_{<=l}`` (no stitching layer) for every site ``l`` that carries the
    network's whole state (every feature site but a ResNet block's inner ReLU; for a ResNet, the stem and the
    block outputs, App. B.4's Table 3), and the errors of A and B."""
    *_, sites, dev, net_a, net_b = _pair(model, state_a, state_b, device)
    wrong = {n: 0 for n in sites.stitch}
    wrong_a = wrong_b = count = 0
    for x, y in _batches(data, n_examples, batch_size, dev, model):
        count += len(y)
        wrong_a += int((net_a(x).argmax(1) != y).sum())
        feats = dict(net_a.post)
        wrong_b += int((net_b(x).argmax(1) != y).sum())
        for n in sites.stitch:
            net_b.replace = {n: feats[n]}
            try:
                wrong[n] += int((net_b(x).argmax(1) != y).sum())
            finally:
                net_b.replace = {}
    return {"sites": list(sites.stitch), "error": {n: w / count for n, w in wrong.items()},
            "error_a": wrong_a / count, "error_b": wrong_b / count, "n_examples": count}


# ---------------------------------------------------------------- rank (App. B.5)
def _matrix(weight: torch.Tensor) -> torch.Tensor:
    """A weight as a matrix: (out, in) or, for a conv, (out, in * kh * kw) (footnote 4)."""
    return weight.detach().double().reshape(weight.shape[0], -1)


def stable_rank(weight: torch.Tensor) -> float:
    """``||W||_F^2 / ||W||_2^2`` (App. B.5, Fig. 22), with a conv weight reshaped as in footnote 4."""
    m = _matrix(weight)
    s = torch.linalg.svdvals(m)
    if float(s[0]) == 0.0:
        raise ValueError("the weight is all zeros; its stable rank is undefined")
    return float((s**2).sum() / s[0] ** 2)


@torch.no_grad()
def spectra(
    model: nn.Module,
    state: StateDict | nn.Module,
    data: Split | None = None,
    *,
    n_examples: int | None = 10_000,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Per weight layer: stable rank and singular values (Fig. 20, 22); with ``data``, per feature site the
    singular values of the post-activations over the examples (Fig. 21; for conv features, channels by
    (example, position) rows), from the streamed Gram matrix ``H^T H``."""
    s = state_of(state) if isinstance(state, nn.Module) else dict(state)
    check_state(permutation_spec(model), s, name="the network")
    sites = sites_of(model)
    weights = {}
    for name in permutation_spec(model).layers:
        w = s.get(f"{name}.weight")
        if w is not None and w.dim() >= 2:
            weights[name] = {"stable_rank": stable_rank(w),
                             "singular_values": torch.linalg.svdvals(_matrix(w)).tolist()}
    out: dict[str, Any] = {"weights": weights}
    if data is not None:
        dev = _device(model, device)
        net = _Net(model, s, sites, dev)
        gram: dict[str, torch.Tensor] = {}
        for x, _ in _batches(data, n_examples, batch_size, dev, model):
            net(x)
            for n in sites.features:
                h = net.post[n]
                rows = h.movedim(1, -1).reshape(-1, h.shape[1]).double() if h.dim() > 2 else h.double()
                g = rows.T @ rows
                gram[n] = gram[n] + g if n in gram else g
        out["features"] = {n: torch.linalg.eigvalsh(g).clamp_min(0).sqrt().flip(0).tolist() for n, g in gram.items()}
    return out


# ---------------------------------------------------------------- Theorem 1, quantitatively
@torch.no_grad()
def llfc_decomposition(
    model: nn.Module,
    state_a: StateDict | nn.Module,
    state_b: StateDict | nn.Module,
    data: Split,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_examples: int | None = 10_000,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Theorem 1's induction (App. A.2), measured: per layer and alpha, how the LLFC error arises.

    For a ReLU MLP without norms, with ``Z = alpha H~_A + (1 - alpha) H~_B``, ``C = W_A H_A + W_B H_B - W_A H_B -
    W_B H_A`` (the commutativity defect, on the layer's inputs) and ``E^(l) = f^(l)(theta_alpha) - (alpha H_A +
    (1 - alpha) H_B)`` (the LLFC error):

        E^(l) = D_sigma + [relu(Z + r) - relu(Z)],   r = -alpha (1 - alpha) C + W_alpha E^(l-1),
        D_sigma = relu(Z) - alpha relu(H~_A) - (1 - alpha) relu(H~_B)   (the weak-additivity defect),

    exactly, and so ``||E^(l)|| <= ||D_sigma|| + alpha (1 - alpha) ||C|| + ||W_alpha E^(l-1)||`` (ReLU is
    1-Lipschitz); the logits (no ReLU) have ``E^(L) = r``. Returned per layer (hidden layers, then ``head``) and
    alpha, as Frobenius norms over the examples relative to ``||alpha H_A + (1 - alpha) H_B||``:
    ``llfc_error``, ``weak_additivity``, ``commutativity`` (``alpha (1 - alpha) ||C||``), ``propagated``
    (``||W_alpha E^(l-1)||``), ``bound`` (their sum) and ``identity_residual`` (the identity's float64
    residual, a check of the measurement).
    """
    from .models.mlp import MLP  # only MLPs have the plain structure the identity needs

    if not isinstance(model, MLP) or any(not isinstance(n, nn.Identity) for n in model.norms):
        raise ValueError("the LLFC decomposition is Theorem 1's, for ReLU MLPs without norm layers (norm='none')")
    sa, sb = _prepare(model, state_a, state_b)
    dev = _device(model, device)
    names = [f"layers.{i}" for i in range(len(model.layers))] + ["head"]
    keys = ("llfc_error", "weak_additivity", "commutativity", "propagated", "bound", "identity_residual", "scale")
    acc = {n: {float(a): dict.fromkeys(keys, 0.0) for a in alphas} for n in names}  # keyed by alpha_key on return

    def params(s: StateDict, n: str) -> tuple[torch.Tensor, torch.Tensor]:
        return s[f"{n}.weight"].to(dev).double(), s[f"{n}.bias"].to(dev).double()

    for x, _ in _batches(data, n_examples, batch_size, dev, model):
        h0 = x.reshape(len(x), -1).double()
        for alpha in acc[names[0]]:
            ha = hb = h0
            err = torch.zeros_like(h0)
            for n in names:
                (wa, ba), (wb, bb) = params(sa, n), params(sb, n)
                wm, bm = alpha * wa + (1 - alpha) * wb, alpha * ba + (1 - alpha) * bb
                za, zb = ha @ wa.T + ba, hb @ wb.T + bb
                c = ha @ wa.T + hb @ wb.T - hb @ wa.T - ha @ wb.T
                z = alpha * za + (1 - alpha) * zb
                prop = err @ wm.T
                r = -alpha * (1 - alpha) * c + prop
                is_head = n == "head"
                # the interpolated network's own features, fed through theta_alpha
                hm_in = alpha * ha + (1 - alpha) * hb + err
                zm = hm_in @ wm.T + bm
                if is_head:
                    target = z
                    fm, d_sigma, delta = zm, torch.zeros_like(z), r
                else:
                    target = alpha * za.relu() + (1 - alpha) * zb.relu()
                    fm = zm.relu()
                    d_sigma = z.relu() - target
                    delta = (z + r).relu() - z.relu()
                e = fm - target
                row = acc[n][alpha]
                row["llfc_error"] += float((e * e).sum())
                row["weak_additivity"] += float((d_sigma * d_sigma).sum())
                row["commutativity"] += float(((alpha * (1 - alpha)) ** 2) * (c * c).sum())
                row["propagated"] += float((prop * prop).sum())
                row["identity_residual"] += float(((e - d_sigma - delta) ** 2).sum())
                row["scale"] += float((target * target).sum())
                if not is_head:
                    ha, hb, err = za.relu(), zb.relu(), e
    out: dict[str, Any] = {"layers": names, "alphas": [float(a) for a in alphas], "per_layer": {}}
    for n in names:
        out["per_layer"][n] = {}
        for alpha, row in acc[n].items():
            scale = math.sqrt(row.pop("scale")) or 1.0
            rel = {k: math.sqrt(v) / scale for k, v in row.items() if k != "bound"}
            rel["bound"] = rel["weak_additivity"] + rel["commutativity"] + rel["propagated"]
            out["per_layer"][n][alpha_key(alpha)] = rel
    return out
