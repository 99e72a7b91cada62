"""Tests of lmccheck.llfc against independent reference computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmccheck.data import Split
from lmccheck.llfc import (
    Moments,
    commutativity,
    cosine_and_coef,
    dist,
    llfc,
    llfc_decomposition,
    sites_of,
    spectra,
    stable_rank,
    stitching_errors,
    weak_additivity,
    weak_additivity_distance,
)
from lmccheck.models import get_model

from tiny_recipes import tiny_config


def mlp(seed: int, width: int = 16, depth: int = 3, norm: str = "none") -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model("mlp", width=width, depth=depth, norm=norm, in_channels=1, input_size=6, num_classes=5)


def data(n: int = 64, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g))


def state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


# ---------------------------------------------------------------- small maths
def test_dist_and_cosine_handle_zero_vectors() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    d = dist(x, y)
    assert d[0] == 0 and d[1] == 0 and math.isnan(float(d[2]))  # one zero vector: undefined, not +inf
    assert float(dist(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))) == pytest.approx(5 / 2)
    c, k = cosine_and_coef(torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
                           torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    assert c.tolist() == pytest.approx([1.0, 1.0, 0.0]) and k.tolist() == pytest.approx([2.0, 1.0, 0.0])
    c1, k1 = cosine_and_coef(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))  # one row, as a vector
    assert float(c1) == pytest.approx(math.sqrt(0.5)) and float(k1) == pytest.approx(1.0)


def test_an_undefined_distance_is_left_out_of_the_mean_and_counted() -> None:
    m = Moments()
    m.add(dist(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])))
    assert m.n == 2 and m.undefined == 1 and m.mean == pytest.approx(5 / 4) and math.isfinite(m.std)
    assert m.as_dict()["undefined"] == 1
    with pytest.raises(ValueError, match="infinite"):
        m.add(torch.tensor([math.inf]))


def test_moments_match_the_sample_statistics() -> None:
    v = torch.tensor([1.0, 2.0, 4.0, 8.0])
    m = Moments()
    m.add(v[:1])
    m.add(v[1:])
    assert m.mean == pytest.approx(3.75) and m.std == pytest.approx(float(v.std())) and m.largest == 8.0


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(0, 10_000))
def test_dist_sigma_is_zero_iff_the_signs_agree(d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(5, d, generator=g)
    same = a.abs() * torch.rand(5, d, generator=g) * a.sign()  # same sign pattern as a
    assert torch.all(weak_additivity_distance(a, same) <= 1e-12)
    # every sign flipped: at alpha = 1/2 the interpolation is 0 and relu(0) = 0 against the nonzero mix of the
    # relus, so Dist_sigma is unbounded near 1/2: undefined (NaN), never +inf
    assert torch.all(torch.isnan(weak_additivity_distance(a, -a)))
    if d < 2:
        return
    pos = a.abs() + 0.1
    one_flipped = pos.clone()
    one_flipped[:, 0] = -one_flipped[:, 0]  # one sign differs, the rest keep the relu alive: finite and positive
    got = weak_additivity_distance(one_flipped, pos)
    assert torch.all(got > 0) and torch.all(torch.isfinite(got))
    # against a dense reference grid, the 25-point max is a lower bound that the grid refines
    fine = weak_additivity_distance(one_flipped, pos, alphas=1001)
    assert torch.all(got <= fine + 1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(0, 10_000), st.sampled_from([2, 5, 25]))
def test_dist_sigma_equals_the_definition_entry_by_entry(d: int, seed: int, alphas: int) -> None:
    """The sign-split evaluation equals dist(relu(alpha a + (1 - alpha) b), alpha relu(a) + (1 - alpha) relu(b))
    maxed over the grid, zeros (some rows all 0, some entries exactly 0) and NaN rows included."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(6, d, generator=g), torch.randn(6, d, generator=g)
    a[0] = 0.0
    b[1] = -b[1].abs()
    a[2, 0] = 0.0
    want = torch.zeros(6, dtype=torch.float64)
    for al in [i / (alphas - 1) for i in range(alphas)]:
        x = (al * a.double() + (1 - al) * b.double()).relu()
        y = al * a.double().relu() + (1 - al) * b.double().relu()
        want = torch.maximum(want, dist(x, y))
    got = weak_additivity_distance(a, b, alphas)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.allclose(got.nan_to_num(), want.nan_to_num(), rtol=1e-12, atol=1e-300)


# ---------------------------------------------------------------- sites
def test_sites_of_the_three_architectures() -> None:
    s = sites_of(mlp(0))
    assert s.features == ("acts.0", "acts.1", "acts.2") and s.commutativity == ("layers.1", "layers.2", "head")
    assert s.stitch == s.features
    v = sites_of(get_model("vgg16", width=0.125, norm="layernorm", in_channels=1, input_size=28))
    assert len(v.features) == 15 and v.features[-2:] == ("act1", "act2")  # 13 conv blocks + 2 classifier layers
    assert v.commutativity[0] == "features.1.conv" or v.commutativity[0].startswith("features.")
    assert "features.0.conv" not in v.commutativity and v.commutativity[-3:] == ("fc1", "fc2", "head")
    r = sites_of(get_model("resnet20", width=1.0, norm="layernorm", in_channels=1, input_size=28))
    assert all(n.endswith("conv1") for n in r.commutativity[:-1]) and r.commutativity[-1] == "head"
    assert len(r.commutativity) == 9 + 1 and "conv1" not in r.commutativity  # first conv of each block, not the stem
    assert len(r.stitch) == 1 + 9 and not any(n.endswith(".act1") for n in r.stitch)  # stem + block outputs


@pytest.mark.parametrize(("arch", "width"), [("vgg11", 0.125), ("resnet20", 1.0)])
def test_conv_sites_capture_what_torchvision_feature_extraction_reads(arch: str, width: float) -> None:
    """The hooks' pre- and post-activations of every VGG / ResNet site equal the nodes that
    torchvision's FX feature extractor returns: the ReLU's output, and the graph node feeding it (the
    block's LayerNorm, or a ResNet block's residual sum)."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    from lmccheck.llfc import _Net

    torch.manual_seed(0)
    model = get_model(arch, width=width, norm="layernorm", in_channels=1, input_size=28).eval()
    sites = sites_of(model)
    _, nodes = get_graph_node_names(model)
    feeds = {n: nodes[nodes.index(n) - 1] for n in sites.features}
    assert any(v.endswith(".add") for v in feeds.values()) == (arch == "resnet20")
    reference = create_feature_extractor(model, return_nodes=[*sites.features, *feeds.values(), "head"])
    x = torch.randn(3, 1, 28, 28)
    net = _Net(model, state(model), sites, torch.device("cpu"), keep_pre=True)
    logits = net(x)
    with torch.no_grad():
        ref = reference(x)
    assert torch.equal(logits, ref["head"])
    for n in sites.features:
        assert torch.allclose(net.post[n], ref[n], atol=1e-6), n
        assert torch.allclose(net.pre[n], ref[feeds[n]], atol=1e-6), n


# ---------------------------------------------------------------- LLFC
def test_llfc_of_a_network_with_itself_is_exact() -> None:
    m = mlp(0)
    s = state(m)
    out = llfc(m, s, s, data(), n_examples=None, batch_size=16)
    for site in out["sites"]:
        for a in ("0.25", "0.5", "0.75"):
            assert out["one_minus_cos_alpha"][site][a]["mean"] == pytest.approx(0.0, abs=1e-7)
            assert out["coef_alpha"][site][a]["mean"] == pytest.approx(1.0, abs=1e-6)
        assert out["one_minus_cos_ab"][site]["mean"] == pytest.approx(0.0, abs=1e-7)


def test_llfc_matches_a_reference_and_does_not_depend_on_batching() -> None:
    ma, mb = mlp(0), mlp(1)
    sa, sb = state(ma), state(mb)
    d = data(50)
    out = llfc(ma, sa, sb, d, alphas=(0.25,), n_examples=None, batch_size=7)
    again = llfc(ma, sa, sb, d, alphas=(0.25,), n_examples=None, batch_size=50)
    mid = mlp(2)
    mid.load_state_dict({k: 0.25 * sa[k] + 0.75 * sb[k] for k in sa})  # Zhou et al.: alpha weights A
    with torch.no_grad():
        fa, fb, fm = ma.features(d.x), mb.features(d.x), mid.features(d.x)
    for i, site in enumerate(("acts.0", "acts.1", "acts.2")):
        ref = 1 - F.cosine_similarity(fm[i].double(), 0.25 * fa[i].double() + 0.75 * fb[i].double(), dim=1)
        assert out["one_minus_cos_alpha"][site]["0.25"]["mean"] == pytest.approx(float(ref.mean()), abs=1e-6)
        assert out["one_minus_cos_alpha"][site]["0.25"]["std"] == pytest.approx(float(ref.std()), abs=1e-6)
        assert again["one_minus_cos_alpha"][site]["0.25"]["mean"] == pytest.approx(float(ref.mean()), abs=1e-6)
        ab = 1 - F.cosine_similarity(fa[i].double(), fb[i].double(), dim=1)
        assert out["one_minus_cos_ab"][site]["mean"] == pytest.approx(float(ab.mean()), abs=1e-6)
    assert out["n_examples"] == 50


def test_llfc_refuses_mismatched_networks_and_nan_weights() -> None:
    m = mlp(0)
    wide = state(mlp(1, width=32))
    with pytest.raises(ValueError, match="network B"):
        llfc(m, state(m), wide, data())
    bad = state(m)
    bad["layers.1.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="layers.1.weight"):
        llfc(m, state(m), bad, data())
    with pytest.raises(ValueError, match="alphas"):
        llfc(m, state(m), state(m), data(), alphas=(1.5,))


# ---------------------------------------------------------------- weak additivity and commutativity
def test_weak_additivity_of_identical_networks_is_zero_and_of_independent_ones_positive() -> None:
    m = mlp(0)
    same = weak_additivity(m, state(m), state(m), data(), n_examples=None)
    assert all(v["max"] == 0.0 for v in same["dist_sigma"].values())
    other = weak_additivity(m, state(m), state(mlp(1)), data(), n_examples=None)
    assert all(v["mean"] > 0 for v in other["dist_sigma"].values()) and len(other["sample"]["acts.0"]) == 64
    # alpha = 1/2 alone (the authors' script: relu(a) + relu(b) vs relu(a + b)), at most the max over alpha
    with torch.no_grad():
        pre_a, pre_b = m.layers[0](data().x.flatten(1)), mlp(1).layers[0](data().x.flatten(1))
    left, right = (pre_a.relu() + pre_b.relu()).double(), (pre_a + pre_b).relu().double()
    num, den = ((left - right) ** 2).sum(-1), left.norm(dim=-1) * right.norm(dim=-1)
    defined = (num == 0) | (den > 0)
    ref = torch.where(num == 0, torch.zeros_like(num), num / den)
    half = other["dist_sigma_half"]["acts.0"]
    assert half["mean"] == pytest.approx(float(ref[defined].mean()), rel=1e-5)
    assert half["undefined"] == int((~defined).sum())
    assert all(other["dist_sigma_half"][s]["mean"] <= other["dist_sigma"][s]["mean"] for s in other["sites"])


def test_commutativity_matches_a_reference_computation() -> None:
    ma, mb = mlp(0), mlp(1)
    sa, sb = state(ma), state(mb)
    d = data()
    out = commutativity(ma, sa, sb, d, n_examples=None, batch_size=10)
    with torch.no_grad():
        ha, hb = ma.features(d.x), mb.features(d.x)
    for i, site in enumerate(("layers.1", "layers.2", "head")):
        wa, wb = sa[f"{site}.weight"].double(), sb[f"{site}.weight"].double()
        xa, xb = ha[i].double(), hb[i].double()
        lhs, rhs = xa @ wa.T + xb @ wb.T, xb @ wa.T + xa @ wb.T
        ref = ((lhs - rhs) ** 2).sum() / (lhs.norm() * rhs.norm())
        assert out["dist_com"][site] == pytest.approx(float(ref), rel=1e-6)
        assert out["dist_w"][site] == pytest.approx(float(((wa - wb) ** 2).sum() / (wa.norm() * wb.norm())), rel=1e-6)
        assert out["dist_h"][site] == pytest.approx(float(((xa - xb) ** 2).sum() / (xa.norm() * xb.norm())), rel=1e-6)
    assert commutativity(ma, sa, sa, d)["dist_com"]["layers.1"] == 0.0


def test_conv_commutativity_is_footnote_4s_reshaped_product() -> None:
    """W H for a conv is the (out, in*kh*kw) weight times the unfolded input, as footnote 4 reshapes it."""
    from lmccheck.llfc import _wh

    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=True)
    h = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    w = conv.weight.double()
    unfolded = F.unfold(h, 3, padding=1)  # (N, in*9, positions)
    ref = (w.reshape(4, -1) @ unfolded).reshape(2, 4, 5, 5)
    assert torch.allclose(_wh(conv, w, h), ref, atol=1e-12)


# ---------------------------------------------------------------- stitching, rank, spectra
def test_stitching_a_network_into_itself_keeps_its_error_and_the_last_site_uses_bs_head() -> None:
    ma, mb = mlp(0), mlp(1)
    d = data()
    self_st = stitching_errors(ma, state(ma), state(ma), d, n_examples=None)
    assert all(e == self_st["error_a"] for e in self_st["error"].values())
    st_ab = stitching_errors(ma, state(ma), state(mb), d, n_examples=None)
    with torch.no_grad():
        logits = mb.head(ma.features(d.x)[-1])
    assert st_ab["error"]["acts.2"] == pytest.approx(float((logits.argmax(1) != d.y).float().mean()))


def test_stable_rank_and_spectra() -> None:
    assert stable_rank(torch.outer(torch.arange(1.0, 4.0), torch.ones(5))) == pytest.approx(1.0)
    assert stable_rank(torch.eye(6)) == pytest.approx(6.0)
    assert stable_rank(torch.ones(4, 2, 3, 3)) == pytest.approx(1.0)  # a conv weight, reshaped to (4, 18)
    with pytest.raises(ValueError, match="all zeros"):
        stable_rank(torch.zeros(3, 3))
    m = mlp(0)
    d = data()
    out = spectra(m, state(m), d, n_examples=None, batch_size=9)
    assert set(out["weights"]) == {"layers.0", "layers.1", "layers.2", "head"}
    with torch.no_grad():
        h = m.features(d.x)[1].double()
    ref = torch.linalg.svdvals(h)
    got = torch.tensor(out["features"]["acts.1"][: len(ref)], dtype=torch.float64)
    # from the Gram matrix: the small singular values carry sqrt(round-off) of the largest
    assert len(got) == 16 and torch.allclose(got, ref, rtol=1e-6, atol=1e-5 * float(ref.max()))


def test_conv_feature_spectra_take_channels_as_units_and_positions_as_rows() -> None:
    """Fig. 21 for a conv net: the singular values of the (example x position, channel) matrix of a site."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = get_model("vgg11", width=0.125, norm="layernorm", in_channels=1, input_size=28).eval()
    d = Split(torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.zeros(4, dtype=torch.long))
    site = sites_of(model).features[1]
    out = spectra(model, state(model), d, n_examples=None, batch_size=3)
    with torch.no_grad():
        h = create_feature_extractor(model, return_nodes=[site])(d.x)[site].double()
    assert h.dim() == 4
    ref = torch.linalg.svdvals(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]))
    got = torch.tensor(out["features"][site], dtype=torch.float64)
    assert len(got) == h.shape[1] and torch.allclose(got, ref, rtol=1e-6, atol=1e-5 * float(ref.max()))


# ---------------------------------------------------------------- Theorem 1's decomposition
def test_decomposition_identity_and_bound_hold_on_random_networks() -> None:
    ma, mb = mlp(0), mlp(1)
    out = llfc_decomposition(ma, state(ma), state(mb), data(), n_examples=None, batch_size=20)
    assert out["layers"] == ["layers.0", "layers.1", "layers.2", "head"]
    first = out["per_layer"]["layers.0"]["0.5"]
    assert first["commutativity"] <= 1e-12 and first["propagated"] == 0.0  # H^(0) = X in both networks
    for layer in out["per_layer"].values():
        for r in layer.values():
            assert r["identity_residual"] <= 1e-10
            assert r["llfc_error"] <= r["bound"] + 1e-12
    assert out["per_layer"]["head"]["0.5"]["weak_additivity"] == 0.0  # no ReLU on the logits
    # relative to ||alpha f_A + (1 - alpha) f_B||, as the docstring says: the logits' error, directly
    mid, a64, b64 = mlp(0).double(), mlp(0).double(), mlp(1).double()  # a float64 reference
    mid.load_state_dict({k: 0.5 * v + 0.5 * state(mb)[k] for k, v in state(ma).items()})
    x = data().x.double()
    with torch.no_grad():
        target = 0.5 * a64(x) + 0.5 * b64(x)
        direct = float((mid(x) - target).norm() / target.norm())
    assert out["per_layer"]["head"]["0.5"]["llfc_error"] == pytest.approx(direct, rel=1e-9)
    # same network: no error anywhere
    same = llfc_decomposition(ma, state(ma), state(ma), data(), n_examples=None)
    assert max(r["llfc_error"] for layer in same["per_layer"].values() for r in layer.values()) <= 1e-12
    with pytest.raises(ValueError, match="norm='none'"):
        llfc_decomposition(mlp(0, norm="layernorm"), state(mlp(0, norm="layernorm")), state(mlp(1, norm="layernorm")),
                           data())


def test_a_permuted_copy_gives_the_identical_metrics_after_alignment() -> None:
    from lmccheck.permutation import Permutation

    m = mlp(0)
    a = state(m)
    q = Permutation.random(m.permutation_spec(), a, 5)
    b = q.apply(a)  # the same function, units relabelled
    d = data()
    raw = llfc(m, a, b, d, n_examples=None)
    assert raw["one_minus_cos_ab"]["acts.1"]["mean"] > 0.1  # unaligned, the features differ
    assert raw["one_minus_cos_ab"]["head"]["mean"] == pytest.approx(0.0, abs=1e-6)  # the outputs do not
    aligned = q.inverse().apply(b)
    out = llfc(m, a, aligned, d, n_examples=None)
    assert all(v["mean"] == pytest.approx(0.0, abs=1e-7) for v in out["one_minus_cos_ab"].values())
    assert all(r["mean"] == pytest.approx(1.0, abs=1e-6) for site in out["coef_alpha"].values() for r in site.values())
    assert all(v["max"] == 0.0 for v in weak_additivity(m, a, aligned, d)["dist_sigma"].values())
    com = commutativity(m, a, aligned, d)
    assert all(com[k][s] == 0.0 for k in ("dist_com", "dist_w", "dist_h") for s in com["sites"])
    st_ = stitching_errors(m, a, aligned, d)
    assert all(e == st_["error_a"] for e in st_["error"].values())


def test_lab_feature_products_are_stored_once_and_match_the_library(tmp_path) -> None:
    from fixtures import Lab
    from lmccheck.store import Store

    tiny = tiny_config(model_kwargs={"width": 16, "depth": 2}, train_subset=256, warmup_epochs=0.0,
                       checkpoints=(0.0, 1.0), eval_examples=64)
    lab = Lab(store=Store(tmp_path / "store"), progress=False)
    pair = lab.pair(tiny, 0)
    perm = lab.match("weight", pair.a, pair.b)
    got = lab.features("commutativity", pair.a, pair.b, perm=perm, n_examples=200)
    n = len(lab.store.keys())
    assert (lab.features("commutativity", pair.a, pair.b, perm=perm, n_examples=200) == got
            and len(lab.store.keys()) == n)
    model = lab.model(tiny)
    test = lab.dataset(tiny.dataset).test
    ref = commutativity(model, pair.a.final, perm.apply(pair.b.final), test, n_examples=200)
    assert got == ref
    cos = lab.features("llfc", pair.a, pair.b, n_examples=200, alphas=(0.5,))
    assert set(cos["one_minus_cos_alpha"]["acts.0"]) == {"0.5"}
    with pytest.raises(ValueError, match="unknown feature metric"):
        lab.features("telepathy", pair.a, pair.b)
    # spectra: of one network (A as B too), the library's numbers, at a checkpoint time as well
    sp = lab.features("spectra", pair.a, pair.a, time=0.0, n_examples=200)
    init = dict(pair.a.state_at(0.0))
    assert sp == spectra(model, init, test, n_examples=200)
    assert sp["weights"]["layers.0"]["stable_rank"] == pytest.approx(stable_rank(init["layers.0.weight"]))
    with pytest.raises(ValueError, match="of one network"):
        lab.features("spectra", pair.a, pair.b)
    with pytest.raises(ValueError, match="of one network"):
        lab.features("spectra", pair.a, pair.a, perm=perm)
