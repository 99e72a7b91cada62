"""Tests of lmccheck.interpolation: lerp, BatchNorm reset, barriers, simplex, engines."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmccheck.barrier_curves import BarrierResult, alpha_grid, barrier_from_curve, barrier_from_simplex, simplex_grid
from lmccheck.barrier_options import BarrierOptions, has_batchnorm
from lmccheck.data import Split, load_dataset
from lmccheck.interpolation import barrier, evaluate, lerp, lerp_into, reset_bn_stats, simplex_barrier
from lmccheck.models import get_model
from lmccheck.permutation import Permutation

#: the engine is compared with fp32 references: every default evaluates in fp32 here
pytestmark = pytest.mark.usefixtures("cpu_without_bf16")

WIDTH = {"mlp": 32, "vgg11": 0.125, "vgg16": 0.125, "resnet20": 1.0}


def build(arch: str, norm: str = "none", seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    kw.setdefault("width", WIDTH[arch])
    kw.setdefault("in_channels", 1)
    kw.setdefault("input_size", 28)
    return get_model(arch, norm=norm, **kw)


def pair(arch: str, norm: str = "none", seed: int = 0, **kw: object) -> tuple[nn.Module, dict, dict]:
    """A model and two independently initialized states of it (BN stats made non-trivial)."""
    a, b = build(arch, norm, seed, **kw), build(arch, norm, seed + 1000, **kw)
    for m, s in ((a, 1), (b, 2)):
        for bn in m.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                g = torch.Generator().manual_seed(s)
                bn.running_mean.normal_(0, 0.1, generator=g)
                bn.running_var.uniform_(0.5, 1.5, generator=g)
                bn.num_batches_tracked.fill_(7 * s)
    clone = lambda m: {k: v.clone() for k, v in m.state_dict().items()}  # noqa: E731
    return a, clone(a), clone(b)


@pytest.fixture(scope="module")
def fmnist() -> Split:
    return load_dataset().test.take(500)


@pytest.fixture(scope="module")
def fmnist_train() -> Split:
    return load_dataset().train.take(256)


def small_split(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28)) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))


# ---------------------------------------------------------------- references (independent code)
def ref_eval(model: nn.Module, data: Split) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(data.x)
    return float(F.cross_entropy(logits, data.y)), int((logits.argmax(1) != data.y).sum()) / len(data)


def ref_bn_reset(model: nn.Module, data: Split, batches: int, batch_size: int) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(batches):
            chunk = data.x[i * batch_size : (i + 1) * batch_size]
            if len(chunk):
                model(chunk)
    model.eval()


def ref_curves(
    arch: str, norm: str, kw: dict, a: dict, b: dict, data: Split, alphas: list[float], bn: tuple | None
) -> tuple[list[float], list[float]]:
    """A fresh model per alpha, loaded with lerp(A, B, alpha), evaluated plainly."""
    losses, errors = [], []
    for alpha in alphas:
        m = build(arch, norm, **kw)
        m.load_state_dict({k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k] for k in a})
        if bn is not None:
            ref_bn_reset(m, *bn)
        loss, err = ref_eval(m, data)
        losses.append(loss)
        errors.append(err)
    return losses, errors


# ---------------------------------------------------------------- lerp
def test_lerp_endpoints_midpoint_and_integer_buffers() -> None:
    _, a, b = pair("mlp", "batchnorm")
    assert all(torch.equal(lerp(a, b, 0.0)[k], a[k]) for k in a)
    end = lerp(a, b, 1.0)
    assert all(torch.equal(end[k], b[k] if b[k].is_floating_point() else a[k]) for k in a)
    mid = lerp(a, b, 0.25)
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(mid[k], 0.75 * a[k] + 0.25 * b[k])
        else:
            assert torch.equal(mid[k], a[k])
    assert int(mid["norms.0.num_batches_tracked"]) == 7


def test_lerp_into_writes_in_place() -> None:
    model, a, b = pair("mlp", "batchnorm")
    ptr = model.layers[1].weight.data_ptr()
    out = lerp_into(model, a, b, 0.3)
    assert out is model and model.layers[1].weight.data_ptr() == ptr
    expected = lerp(a, b, 0.3)
    for k, t in model.state_dict().items():
        assert torch.equal(t, expected[k]), k


def test_lerp_rejects_mismatched_states() -> None:
    _, a, b = pair("mlp")
    b = dict(b)
    b["layers.0.weight"] = b["layers.0.weight"][:, :10]
    with pytest.raises(ValueError, match="layers.0.weight"):
        lerp(a, b, 0.5)


# ---------------------------------------------------------------- barrier arithmetic
def test_alpha_grid() -> None:
    g = alpha_grid(25)
    assert len(g) == 25 and g[0] == 0.0 and g[-1] == 1.0 and g[12] == 0.5
    assert alpha_grid([0, 0.3, 1]) == [0.0, 0.3, 1.0]


@pytest.mark.parametrize(
    "alphas, match",
    [
        (1, "at least 2"),
        ([0.0], "at least 2"),
        ([0, 0.5, 1.5], "1.5"),
        ([0.1, 1], "start at 0"),
        ([0, 0.6, 0.4, 1], "increasing"),
    ],
)
def test_alpha_grid_rejects(alphas: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        alpha_grid(alphas)  # type: ignore[arg-type]


def test_barrier_from_curve() -> None:
    # asymmetric endpoints (0 and 4), peak off the middle: the line (1-a)*0 + a*4 = [0, 1, 2, 3, 4]
    # gives 3.5 - 1 = 2.5 at alpha 0.25; the mean of the endpoints (2) would give 2 at alpha 1,
    # a line drawn the wrong way round (4 - 4a) 4 at alpha 1
    b, at = barrier_from_curve([0, 0.25, 0.5, 0.75, 1], [0.0, 3.5, 2.0, 2.5, 4.0])
    assert b == pytest.approx(2.5) and at == 0.25
    # unevenly spaced alphas: the line is evaluated at alpha, not at the index (i / (n-1))
    b, at = barrier_from_curve([0, 0.1, 0.6, 1], [1.0, 2.0, 4.0, 3.0])  # line 1 + 2a = [1, 1.2, 2.2, 3]
    assert b == pytest.approx(1.8) and at == 0.6
    b, at = barrier_from_curve([0, 0.5, 1], [1.0, 0.2, 3.0])  # convex: only the endpoints touch
    assert b == 0.0 and at == 0.0
    with pytest.raises(ValueError, match="alpha=0.5"):
        barrier_from_curve([0, 0.5, 1], [1.0, math.nan, 1.0])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 10), min_size=2, max_size=30),
    st.lists(st.floats(0.01, 1.0), min_size=28, max_size=28),
)
def test_barrier_from_curve_matches_reference_and_is_reversal_invariant(values: list[float], gaps: list[float]) -> None:
    # uneven alphas from positive gaps, scaled to end at 1
    steps = gaps[: len(values) - 1]
    alphas = [sum(steps[:i]) / sum(steps) for i in range(len(values))]
    alphas[-1] = 1.0
    b, at = barrier_from_curve(alphas, values)
    # reference: the largest height above the chord through the endpoints, attained at `at`
    heights = [v - ((1 - a) * values[0] + a * values[-1]) for a, v in zip(alphas, values)]
    assert b == pytest.approx(max(heights), abs=1e-9)
    assert heights[alphas.index(at)] == pytest.approx(max(heights), abs=1e-9)
    rb, _ = barrier_from_curve([1 - a for a in alphas[::-1]], values[::-1])
    assert rb == pytest.approx(b, abs=1e-9)


def test_simplex_grid_and_pairwise_order() -> None:
    assert simplex_grid(2, 4) == [(1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0)]
    g = simplex_grid(3, 6)
    assert len(g) == 28 and all(abs(sum(w) - 1) < 1e-12 for w in g)
    b, w = barrier_from_simplex(g, [sum(wi * v for wi, v in zip(p, (1.0, 2.0, 3.0))) for p in g])
    assert b == pytest.approx(0.0, abs=1e-12)


def test_a_simplex_barrier_needs_every_vertex_and_finite_values() -> None:
    """The plane is fixed by the vertices' values: a grid without one of them is refused, naming it."""
    with pytest.raises(ValueError, match=r"do not include vertex 1 \(weight 1 on network 1\)$"):
        barrier_from_simplex([(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.0, 0.0, 1.0)], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"do not include vertex 0 \(weight 1 on network 0\)$"):
        barrier_from_simplex([(0.5, 0.5, 0.0), (0.0, 1.0, 0.0)], [1.0, 2.0])  # vertices 0 and 2 missing
    with pytest.raises(ValueError, match="not finite"):
        barrier_from_simplex([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)], [1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="3 points but 2 values"):
        barrier_from_simplex([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)], [1.0, 2.0])
    with pytest.raises(ValueError, match="no points"):
        barrier_from_simplex([], [])


# ---------------------------------------------------------------- barrier: properties
def test_barrier_of_a_network_with_itself_is_zero(fmnist: Split) -> None:
    model, a, _ = pair("mlp")
    r = barrier(model, a, a, fmnist, BarrierOptions(alphas=7))
    assert abs(r.loss_barrier) <= 1e-6 and abs(r.error_barrier) <= 1e-6
    assert max(r.loss) - min(r.loss) <= 1e-6 and max(r.error) == min(r.error)


def test_barrier_is_symmetric(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    ab = barrier(model, a, b, fmnist, BarrierOptions(alphas=9))
    ba = barrier(model, b, a, fmnist, BarrierOptions(alphas=9))
    rev = ab.reversed()
    assert ba.alphas == pytest.approx(rev.alphas)
    assert ba.loss == pytest.approx(rev.loss, abs=1e-6)
    assert ba.error == pytest.approx(rev.error, abs=1e-6)
    assert ba.loss_barrier == pytest.approx(ab.loss_barrier, abs=1e-6)
    assert ba.error_barrier == pytest.approx(ab.error_barrier, abs=1e-6)
    assert rev.loss_endpoints == ab.loss_endpoints[::-1]


def test_endpoints_are_each_networks_own_loss_and_error(fmnist: Split) -> None:
    model, a, b = pair("mlp", "layernorm")
    r = barrier(model, a, b, fmnist, BarrierOptions(alphas=5))
    for i, state in enumerate((a, b)):
        loss, err = r.loss_endpoints[i], r.error_endpoints[i]
        m = build("mlp", "layernorm")
        m.load_state_dict(state)
        ref_loss, ref_err = ref_eval(m, fmnist)
        assert loss == pytest.approx(ref_loss, abs=1e-5)
        assert err == pytest.approx(ref_err, abs=1e-9)
    assert r.n_examples == 500


def test_barrier_does_not_touch_the_callers_model(fmnist: Split) -> None:
    model, a, b = pair("mlp", "batchnorm")
    before = copy.deepcopy(model.state_dict())
    model.train()
    barrier(model, a, b, fmnist, BarrierOptions(alphas=3), bn_data=fmnist)
    assert model.training
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())


def test_result_as_dict_is_json_and_records_settings(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    r = barrier(model, a, b, fmnist, BarrierOptions(alphas=5, n_examples=100), split="test")
    d = json.loads(json.dumps(r.as_dict()))
    assert d["n_examples"] == 100 and d["split"] == "test" and len(d["loss"]) == 5
    assert d["loss_endpoints"] == list(r.loss_endpoints)
    # round trip: the JSON holds every field, and rebuilds an equal result
    tuples = {"loss_endpoints", "error_endpoints"}
    assert BarrierResult(**{k: tuple(v) if k in tuples else v for k, v in d.items()}) == r
    # the barriers are those of their own curves (heights above the chord); this pair has an
    # error barrier (0.0125) but no loss barrier, so swapped curves would show
    assert r.error_barrier > 0.005 and r.loss_barrier != r.error_barrier
    for curve, value in ((r.loss, r.loss_barrier), (r.error, r.error_barrier)):
        chord = [(1 - al) * curve[0] + al * curve[-1] for al in r.alphas]
        assert value == pytest.approx(max(v - c for v, c in zip(curve, chord)), abs=1e-12)


# ---------------------------------------------------------------- engines vs an independent reference
ENGINE_CASES = [
    # arch, norm, model kwargs, data shape
    ("mlp", "none", {}, (1, 28, 28)),
    ("mlp", "layernorm", {}, (1, 28, 28)),
    ("mlp", "batchnorm", {}, (1, 28, 28)),
    ("vgg11", "layernorm", {"in_channels": 3, "input_size": 16}, (3, 16, 16)),
    ("resnet20", "layernorm", {"in_channels": 3, "input_size": 16, "width": 0.5}, (3, 16, 16)),
    ("resnet20", "batchnorm", {"in_channels": 3, "input_size": 16, "width": 0.5}, (3, 16, 16)),
]


@pytest.mark.slow
@pytest.mark.parametrize("shortcut", [False, True], ids=["plain", "shortcut"])
@pytest.mark.parametrize("engine", ["loop", "vmap", "auto"])
@pytest.mark.parametrize("arch, norm, kw, shape", ENGINE_CASES, ids=[f"{c[0]}-{c[1]}" for c in ENGINE_CASES])
def test_engine_matches_fresh_model_reference(
    arch: str, norm: str, kw: dict, shape: tuple, engine: str, shortcut: bool
) -> None:
    model, a, b = pair(arch, norm, **kw)
    data = small_split(120 if arch == "mlp" else 40, shape=shape)
    bn_data = small_split(64, seed=1, shape=shape)
    alphas = [0.0, 0.2, 0.5, 0.9, 1.0]
    bn_reset = has_batchnorm(model) and engine != "vmap"  # vmap cannot reset BN statistics
    bn = (bn_data, 2, 32) if bn_reset else None
    options = BarrierOptions(alphas=alphas, engine=engine, first_layer_shortcut=shortcut, batch_size=48,
                             bn_reset=bn_reset, bn_batches=2, bn_batch_size=32, vmap_chunk=2)
    r = barrier(model, a, b, data, options, bn_data=bn_data)
    ref_loss, ref_err = ref_curves(arch, norm, kw, a, b, data, alphas, bn)
    assert r.loss == pytest.approx(ref_loss, abs=1e-5)
    assert r.error == pytest.approx(ref_err, abs=1e-9)
    assert r.bn_reset == bn_reset
    assert r.loss_barrier == pytest.approx(barrier_from_curve(alphas, ref_loss)[0], abs=1e-5)


def test_shortcut_is_exact_at_paper_scale_grid(fmnist: Split) -> None:
    model, a, b = pair("mlp", width=128)
    fast = barrier(model, a, b, fmnist, BarrierOptions(first_layer_shortcut=True))
    plain = barrier(model, a, b, fmnist, BarrierOptions(first_layer_shortcut=False))
    assert len(fast.alphas) == 25
    assert fast.loss == pytest.approx(plain.loss, abs=1e-5)
    assert fast.error == pytest.approx(plain.error, abs=1e-9)


def test_evaluate_matches_reference(fmnist: Split) -> None:
    model, a, _ = pair("mlp", "layernorm")
    model.train()
    assert evaluate(model, fmnist) == pytest.approx(ref_eval(copy.deepcopy(model), fmnist), abs=1e-6)
    assert model.training


# ---------------------------------------------------------------- BatchNorm
def test_reset_bn_stats_recomputes_statistics(fmnist_train: Split) -> None:
    model, a, b = pair("mlp", "batchnorm")
    model.layers[0].momentum = 0.1
    lerp_into(model, a, b, 0.5)
    lerped = model.norms[0].running_mean.clone()
    model.eval()
    reset_bn_stats(model, fmnist_train, batches=4, batch_size=64)
    assert not model.training and model.norms[0].momentum == 0.1
    with torch.no_grad():
        z = model.layers[0](fmnist_train.x.flatten(1))
    torch.testing.assert_close(model.norms[0].running_mean, z.mean(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model.norms[0].running_mean, lerped)


def test_reset_bn_stats_takes_the_first_batches_and_refuses_none(fmnist_train: Split) -> None:
    model, a, _ = pair("mlp", "batchnorm")
    model.load_state_dict(a)
    reset_bn_stats(model, fmnist_train, batches=1, batch_size=64)  # one batch: the first 64 examples
    with torch.no_grad():
        z = model.layers[0](fmnist_train.x[:64].flatten(1))
    torch.testing.assert_close(model.norms[0].running_mean, z.mean(0), atol=1e-5, rtol=1e-5)
    for batches, batch_size in ((0, 64), (-1, 64), (1, 0)):
        with pytest.raises(ValueError, match="need batches >= 1 and batch_size >= 1"):
            reset_bn_stats(model, fmnist_train, batches=batches, batch_size=batch_size)


def test_the_engine_sums_losses_in_float64_where_the_device_has_it(fmnist: Split) -> None:
    """Per-batch loss sums are added in float64 (float32 only on MPS, which lacks float64)."""
    from lmccheck.barrier_engine import _Engine

    model, a, b = pair("mlp")
    engine = _Engine(model, [a, b], fmnist, BarrierOptions(alphas=3).resolve(model, "cpu"), None)
    assert engine.acc_dtype == torch.float64


def test_bn_reset_on_by_default_and_optional(fmnist: Split, fmnist_train: Split) -> None:
    model, a, b = pair("mlp", "batchnorm")
    alphas = [0.0, 0.5, 1.0]
    options = BarrierOptions(alphas=alphas, bn_batches=2, bn_batch_size=64)
    on = barrier(model, a, b, fmnist, options, bn_data=fmnist_train)
    off = barrier(model, a, b, fmnist, options.replace(bn_reset=False), bn_data=fmnist_train)
    assert on.bn_reset and not off.bn_reset
    ref_on = ref_curves("mlp", "batchnorm", {}, a, b, fmnist, alphas, (fmnist_train, 2, 64))
    ref_off = ref_curves("mlp", "batchnorm", {}, a, b, fmnist, alphas, None)
    assert on.loss == pytest.approx(ref_on[0], abs=1e-5)
    assert off.loss == pytest.approx(ref_off[0], abs=1e-5)  # interpolated running statistics
    assert abs(on.loss[1] - off.loss[1]) > 1e-3


def test_bn_model_without_bn_data_is_an_error(fmnist: Split) -> None:
    model, a, b = pair("mlp", "batchnorm")
    with pytest.raises(ValueError, match="bn_data"):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=3))
    with pytest.raises(ValueError, match="vmap"):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=3, engine="vmap"), bn_data=fmnist)


# ---------------------------------------------------------------- joint permutation invariance (claim S2's lemma)
@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "layernorm", "batchnorm"])
@pytest.mark.parametrize("arch", ["mlp", "vgg11", "vgg16", "resnet20"])
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_barrier_is_invariant_under_joint_permutation(arch: str, norm: str, seed: int) -> None:
    n = 200 if arch == "mlp" else 48
    kw = {} if arch != "resnet20" else {"input_size": 16}
    data = load_dataset().test.take(n)
    if arch == "resnet20":
        data = Split(data.x[:, :, 6:22, 6:22].contiguous(), data.y)
    bn_data = load_dataset().train.take(64)
    if arch == "resnet20":
        bn_data = Split(bn_data.x[:, :, 6:22, 6:22].contiguous(), bn_data.y)
    model, a, b = pair(arch, norm, seed=seed % 1000, **kw)
    perm = Permutation.random(model.permutation_spec(), a, seed)
    opts = BarrierOptions(alphas=5, bn_batches=2, bn_batch_size=32)
    r = barrier(model, a, b, data, opts, bn_data=bn_data)
    rp = barrier(model, perm.apply(a), perm.apply(b), data, opts, bn_data=bn_data)
    assert rp.loss == pytest.approx(r.loss, abs=1e-5)
    assert rp.loss_barrier == pytest.approx(r.loss_barrier, abs=1e-5)
    # an argmax tie within float rounding may flip a single example
    assert rp.error == pytest.approx(r.error, abs=1.01 / n)
    assert rp.error_barrier == pytest.approx(r.error_barrier, abs=2.01 / n)


# ---------------------------------------------------------------- bad input
def test_state_missing_a_key(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    b = {k: v for k, v in b.items() if k != "layers.1.bias"}
    with pytest.raises(ValueError, match=r"state_b.*layers\.1\.bias"):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=3))


def test_state_with_extra_key(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    a = {**a, "extra.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"state_a.*extra\.weight"):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=3))


def test_state_with_wrong_shape(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    _, wide, _ = pair("mlp", width=64)
    with pytest.raises(ValueError, match=r"layers\.0\.weight.*shape"):
        barrier(model, a, wide, fmnist, BarrierOptions(alphas=3))


def test_empty_dataset() -> None:
    model, a, b = pair("mlp")
    empty = Split(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        barrier(model, a, b, empty, BarrierOptions(alphas=3))


@pytest.mark.parametrize("alphas, match", [(1, "at least 2"), ([0.0, 1.5, 1.0], "1.5"), ([0.5], "at least 2")])
def test_bad_alphas(fmnist: Split, alphas: object, match: str) -> None:
    model, a, b = pair("mlp")
    with pytest.raises(ValueError, match=match):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=alphas))  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_nan_weights_report_the_alpha(fmnist: Split, engine: str) -> None:
    model, a, b = pair("mlp")
    b = dict(b)
    b["layers.2.weight"] = b["layers.2.weight"].clone()
    b["layers.2.weight"][0, 0] = math.nan
    with pytest.raises(ValueError, match=r"alpha=0\.5.*state_b\['layers\.2\.weight'\]"):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=[0.0, 0.5, 1.0], engine=engine))


def test_overflowing_outputs_report_the_alpha(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    b = {k: v * 1e30 if k == "head.weight" else v for k, v in b.items()}
    b["layers.0.weight"] = b["layers.0.weight"] * 1e10
    with pytest.raises(ValueError, match="alpha="):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=3))


def test_unknown_engine_and_unsupported_shortcut(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    with pytest.raises(ValueError, match="engine"):
        barrier(model, a, b, fmnist, BarrierOptions(alphas=3, engine="fast"))
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    s = other.state_dict()
    with pytest.raises(ValueError, match="first_layer_shortcut"):
        barrier(other, s, s, fmnist, BarrierOptions(alphas=3, first_layer_shortcut=True))
    assert barrier(other, s, s, fmnist, BarrierOptions(alphas=3)).loss_barrier == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- simplex
def test_simplex_of_two_networks_is_the_pairwise_barrier(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    s = simplex_barrier(model, [a, b], fmnist, resolution=6)
    r = barrier(model, a, b, fmnist, BarrierOptions(alphas=7))
    assert [w[1] for w in s.weights] == pytest.approx(r.alphas)
    assert s.loss == pytest.approx(r.loss, abs=1e-6)
    assert s.loss_barrier == pytest.approx(r.loss_barrier, abs=1e-6)
    assert s.error_barrier == pytest.approx(r.error_barrier, abs=1e-6)
    assert s.loss_argmax_weights[1] == pytest.approx(r.loss_argmax_alpha)
    assert s.vertex_loss == pytest.approx(r.loss_endpoints)


def test_simplex_of_identical_networks_is_flat(fmnist: Split) -> None:
    model, a, _ = pair("mlp", "layernorm")
    s = simplex_barrier(model, [a, a, a], fmnist, resolution=4)
    assert len(s.weights) == 15
    assert abs(s.loss_barrier) <= 1e-6 and abs(s.error_barrier) <= 1e-6
    d = json.loads(json.dumps(s.as_dict()))
    assert d == s.as_dict()
    assert [tuple(w) for w in d["weights"]] == s.weights and d["loss"] == s.loss and d["resolution"] == 4
    assert tuple(d["vertex_loss"]) == s.vertex_loss and tuple(d["loss_argmax_weights"]) == s.loss_argmax_weights


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_simplex_of_three_networks_matches_reference(fmnist: Split, engine: str) -> None:
    model, a, b = pair("mlp", "layernorm")
    _, c, _ = pair("mlp", "layernorm", seed=7)
    data = fmnist.take(100)
    s = simplex_barrier(model, [a, b, c], data, BarrierOptions(engine=engine), resolution=2)
    for w, loss in zip(s.weights, s.loss):
        m = build("mlp", "layernorm")
        m.load_state_dict({k: w[0] * a[k] + w[1] * b[k] + w[2] * c[k] for k in a})
        assert loss == pytest.approx(ref_eval(m, data)[0], abs=1e-5)
    assert s.vertex_loss[2] == pytest.approx(s.loss[-1])
    # the barrier is the largest height above the plane through the three vertices' losses
    vertex = [s.loss[s.weights.index(tuple(float(i == j) for j in range(3)))] for i in range(3)]
    heights = [loss - sum(wi * vi for wi, vi in zip(w, vertex)) for w, loss in zip(s.weights, s.loss)]
    assert s.loss_barrier == pytest.approx(max(heights), abs=1e-12)
    assert s.loss_argmax_weights == s.weights[heights.index(max(heights))]


def test_simplex_grid_with_fine_edges_holds_the_pairwise_grid_on_every_edge() -> None:
    g = simplex_grid(3, 6, edge_resolution=24)
    assert len(g) == 3 * 24 + 10  # the triangle's boundary at 1/24, and the 10 interior points at 1/6
    assert len(set(g)) == len(g) and all(abs(sum(w) - 1) < 1e-12 for w in g)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        edge = sorted(w[j] for w in g if all(x == 0.0 for k, x in enumerate(w) if k not in (i, j)))
        assert edge == alpha_grid(25)  # the same floats as the 25-alpha barrier grid
    interior = [w for w in g if min(w) > 0]
    assert interior == [w for w in simplex_grid(3, 6) if min(w) > 0]
    assert (2 / 6, 2 / 6, 2 / 6) in g  # the centroid, on the resolution-6 interior grid
    assert simplex_grid(2, 3, edge_resolution=5) == simplex_grid(2, 5)  # two networks: all of it is an edge
    with pytest.raises(ValueError, match="edge_resolution"):
        simplex_grid(3, 6, edge_resolution=0)


@pytest.mark.parametrize("autocast", [False, True])
def test_simplex_edges_are_the_pairwise_curves_bit_for_bit_and_bound_the_simplex_barrier(
    fmnist: Split, autocast: bool
) -> None:
    """The consistency S7 asserts: the edges lie in the simplex, so its barrier is at least each edge's."""
    model, a, b = pair("mlp")
    _, c, _ = pair("mlp", seed=7)
    data = fmnist.take(300)
    precision = BarrierOptions(precision="bf16" if autocast else "fp32")
    s = simplex_barrier(model, [a, b, c], data, precision, resolution=4, edge_resolution=8)
    assert s.edge_resolution == 8 and len(s.weights) == 3 * 8 + 3
    states = [a, b, c]
    edge_barriers = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        pairwise = barrier(model, states[i], states[j], data, precision.replace(alphas=9))
        edge = s.edge(i, j)
        assert edge.alphas == pairwise.alphas
        assert edge.loss == pairwise.loss and edge.error == pairwise.error  # exact, not approximate
        assert edge.loss_barrier == pairwise.loss_barrier
        edge_barriers.append(pairwise)
    assert s.loss_barrier >= max(r.loss_barrier for r in edge_barriers) - 1e-12
    assert s.error_barrier >= max(r.error_barrier for r in edge_barriers) - 1e-12
    reverse = s.edge(1, 0)
    assert reverse.alphas == alpha_grid(9) and reverse.loss == s.edge(0, 1).loss[::-1]
    with pytest.raises(ValueError, match="two different vertices"):
        s.edge(1, 1)
    with pytest.raises(ValueError, match="two different vertices"):
        s.edge(0, 3)


# ---------------------------------------------------------------- surviving mutants (make mutation)
def test_lerp_into_is_exact_at_the_vertices_even_next_to_nan() -> None:
    model, a, b = pair("mlp")
    b = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in b.items()}
    lerp_into(model, a, b, 0.0)
    for k, t in model.state_dict().items():
        assert torch.equal(t, a[k]), k  # alpha = 0 is A bit for bit, whatever B holds
    for k, t in lerp(a, b, 0.0).items():
        assert torch.equal(t, a[k]), k


def test_grid_edges_are_accepted_and_bad_orders_refused() -> None:
    assert alpha_grid(2) == [0.0, 1.0]  # the two endpoints are the smallest grid
    assert simplex_grid(2, 1) == [(1.0, 0.0), (0.0, 1.0)]  # resolution 1: the vertices
    with pytest.raises(ValueError, match="increasing"):
        barrier_from_curve([0.0, 0.6, 0.4, 1.0], [0.0, 1.0, 1.0, 0.0])


def test_barrier_refuses_zero_examples_and_a_state_of_the_wrong_kind() -> None:
    model, a, b = pair("mlp", "batchnorm")
    data = small_split(16)
    with pytest.raises(ValueError, match="n_examples must be positive"):
        barrier(model, a, b, data, BarrierOptions(alphas=3, n_examples=0))
    key = "norms.0.num_batches_tracked"
    as_float = {**b, key: b[key].float()}  # an integer buffer given as floats
    with pytest.raises(ValueError, match=key):
        barrier(model, a, as_float, data, BarrierOptions(alphas=3))
    float_key = "layers.0.weight"
    as_int = {**b, float_key: b[float_key].long()}  # a float weight given as integers
    with pytest.raises(ValueError, match=float_key):
        barrier(model, a, as_int, data, BarrierOptions(alphas=3))


def test_barrier_options_validate_their_numbers() -> None:
    assert BarrierOptions(n_examples=None, bn_batch_size=1, bn_batches=1).bn_batch_size == 1  # the smallest valid
    for bad in ({"n_examples": 0}, {"bn_batch_size": 0}, {"bn_batches": 0}, {"precision": "fp16"}, {"engine": "x"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BarrierOptions(**bad)


def test_options_resolve_once_into_a_frozen_object_whose_key_round_trips() -> None:
    bn_model, _, _ = pair("mlp", "batchnorm")
    options = BarrierOptions(n_examples=1200, alphas=5, precision="fp32", batch_size=64)
    resolved = options.resolve(bn_model, "cpu")
    assert resolved.bn_reset and resolved.bn_batches == 3 and resolved.bn_batch_size == 500
    assert resolved.batch_size == 64 and resolved.engine == "loop" and resolved.first_layer_shortcut
    assert resolved.alphas == tuple(alpha_grid(5)) and not resolved.autocast
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.alphas = (0.0, 1.0)  # type: ignore[misc]
    # a stored key gives back the same numbers; the speed fields come from the options given beside it
    again = BarrierOptions.from_key(resolved.key(), options).resolve(bn_model, "cpu")
    assert again == resolved
    plain, _, _ = pair("mlp")
    key = BarrierOptions(bn_batches=7).resolve(plain, "cpu").key()
    assert key["bn_reset"] is False and key["bn_batches"] is None  # no BatchNorm: nothing to split keys on
    assert BarrierOptions.from_key(key).resolve(plain, "cpu").key() == key


def test_barrier_takes_resolved_options_only_for_their_device(fmnist: Split) -> None:
    model, a, b = pair("mlp")
    resolved = BarrierOptions(alphas=3, n_examples=50).resolve(model, "cpu")
    assert barrier(model, a, b, fmnist, resolved).alphas == [0.0, 0.5, 1.0]
    asked = BarrierOptions(alphas=3, n_examples=50)
    assert barrier(model, a, b, fmnist, resolved) == barrier(model, a, b, fmnist, asked)
    with pytest.raises(ValueError, match="resolved for cpu"):
        barrier(model, a, b, fmnist, resolved, device="meta")
    with pytest.raises(TypeError, match="BarrierOptions"):
        barrier(model, a, b, fmnist, {"alphas": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vmap"):
        BarrierOptions(engine="vmap").resolve(pair("mlp", "batchnorm")[0], "cpu")
