"""Partial rewinding (Sharma et al. App. H.3): weight layers in forward order and the layers each mode rewinds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures import Lab
from lmccheck.models import get_model
from lmccheck.permutation import PermutationSpec
from lmccheck.rewinding import MODES, rewound_keys, rewound_layers, split_fraction, weight_layers
from lmccheck.store import Store

from tiny_recipes import tiny_config

TINY = tiny_config(model_kwargs={"width": 16, "depth": 3})

ARCHS = {
    # name: (model kwargs, expected weight layers in forward order)
    "mlp": ({"width": 8, "depth": 3}, ["layers.0", "layers.1", "layers.2", "head"]),
    "vgg16": ({"width": 0.125, "norm": "layernorm"}, None),
    "resnet20": ({"width": 1, "norm": "batchnorm"}, None),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_state_entry_belongs_to_exactly_one_weight_layer(arch: str) -> None:
    kwargs, _ = ARCHS[arch]
    model = get_model(arch, **kwargs)
    layers = weight_layers(model.permutation_spec())
    keys = [k for _, ks in layers for k in ks]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(model.state_dict())
    for name, ks in layers:  # a layer starts with its conv / linear weight
        assert ks[0] == f"{name}.weight"
        assert isinstance(model.get_submodule(name), (torch.nn.Linear, torch.nn.Conv2d))


def test_weight_layer_counts_and_order_follow_the_architectures_names() -> None:
    """MLP depth d: d hidden layers + head; VGG-16: 13 convs + 3 linear = 16; ResNet-20: 19 convs + head = 20
    (the projection shortcuts join the block whose output they are added to, so the count is the name's)."""
    names = [n for n, _ in weight_layers(get_model("mlp", **ARCHS["mlp"][0]).permutation_spec())]
    assert names == ARCHS["mlp"][1]
    vgg = [n for n, _ in weight_layers(get_model("vgg16", **ARCHS["vgg16"][0]).permutation_spec())]
    assert len(vgg) == 16 and vgg[-3:] == ["fc1", "fc2", "head"]
    resnet = get_model("resnet20", **ARCHS["resnet20"][0])
    layers = dict(weight_layers(resnet.permutation_spec()))
    assert len(layers) == 20 and list(layers)[0] == "conv1" and list(layers)[-1] == "head"
    # forward order: each block's conv1 before its conv2, stages in order
    order = list(layers)
    assert order.index("stages.1.0.conv1") < order.index("stages.1.0.conv2") < order.index("stages.1.1.conv1")
    # the stage-2 projection shortcut (conv and norm) belongs to that block's conv2 layer
    assert "stages.1.0.shortcut.0.weight" in layers["stages.1.0.conv2"]
    assert "stages.1.0.shortcut.1.running_mean" in layers["stages.1.0.conv2"]
    # a layer's norm joins it
    assert "stages.0.0.norm1.weight" in layers["stages.0.0.conv1"]


def test_the_modes_choose_the_layers_of_fig17() -> None:
    spec = get_model("mlp", width=8, depth=5).permutation_spec()
    names = [n for n, _ in weight_layers(spec)]
    n = len(names)
    assert rewound_layers(spec, "bottom-up", 0) == []
    assert rewound_layers(spec, "bottom-up", n) == names
    assert rewound_layers(spec, "bottom-up", 2) == names[:2]  # "the first k layers (exclusive)"
    for k in range(n + 1):  # top-down is "the opposite of bottom-up"
        assert rewound_layers(spec, "top-down", k) == [x for x in names
                                                       if x not in rewound_layers(spec, "bottom-up", k)]
    for k in range(n):
        assert rewound_layers(spec, "put-in", k) == [names[k]]
        assert rewound_layers(spec, "leave-out", k) == names[:k] + names[k + 1:]
    assert rewound_keys(spec, "put-in", 1) == ["layers.1.weight", "layers.1.bias"]


def test_the_captions_wording_on_a_four_layer_network() -> None:
    """Fig. 17: bottom-up "concatenates the permutation P_t from input up to layer k ... and uses P_end for
    the rest"; top-down "uses P_t for the layers k and after only"; put-in "only uses the permutation P_t
    for the k-th layer"; leave-out "uses all of P_t except for the k-th layer". Layers counted from 0."""
    spec = get_model("mlp", width=8, depth=3).permutation_spec()  # layers.0, layers.1, layers.2, head
    assert rewound_layers(spec, "bottom-up", 2) == ["layers.0", "layers.1"]
    assert rewound_layers(spec, "top-down", 2) == ["layers.2", "head"]
    assert rewound_layers(spec, "put-in", 2) == ["layers.2"]
    assert rewound_layers(spec, "leave-out", 2) == ["layers.0", "layers.1", "head"]
    assert rewound_layers(spec, "top-down", 0) == ["layers.0", "layers.1", "layers.2", "head"]


def test_a_resnet_projection_shortcut_is_rewound_with_its_blocks_second_conv() -> None:
    spec = get_model("resnet20", width=1, norm="layernorm").permutation_spec()
    names = [n for n, _ in weight_layers(spec)]
    k = names.index("stages.2.0.conv2")
    keys = rewound_keys(spec, "put-in", k)
    assert "stages.2.0.conv2.weight" in keys and "stages.2.0.norm2.weight" in keys
    assert "stages.2.0.shortcut.0.weight" in keys and "stages.2.0.shortcut.1.weight" in keys
    # the block's first conv is its own layer, one before
    assert rewound_keys(spec, "put-in", k - 1)[0] == "stages.2.0.conv1.weight"
    assert not any("shortcut" in key for key in rewound_keys(spec, "put-in", k - 1))


def test_split_points_as_fractions_of_depth() -> None:
    spec = get_model("vgg16", width=0.125, norm="layernorm").permutation_spec()
    assert split_fraction(spec, 8) == 0.5  # the paper's midpoint of VGG-16
    assert split_fraction(spec, 4) == 0.25
    # the ends of the range are split points too (nothing rewound, everything rewound); beyond them, an error
    assert split_fraction(spec, 0) == 0.0 and split_fraction(spec, 16) == 1.0
    for k in (-1, 17):
        with pytest.raises(ValueError, match=f"split point k={k} outside 0..16"):
            split_fraction(spec, k)


@pytest.mark.parametrize(("mode", "k", "error", "match"), [
    ("sideways", 1, ValueError, "unknown partial-rewinding mode 'sideways'"),
    ("bottom-up", 5, ValueError, r"k in 0..4 .* 4 weight layers, got 5"),
    ("put-in", 4, ValueError, r"k in 0..3"),
    ("bottom-up", -1, ValueError, r"k in 0..4"),
    ("top-down", 1.0, TypeError, "must be an int"),
    ("top-down", True, TypeError, "must be an int"),
])
def test_bad_modes_and_split_points_are_named(mode: str, k: object, error: type, match: str) -> None:
    spec = get_model("mlp", width=8, depth=3).permutation_spec()
    with pytest.raises(error, match=match):
        rewound_layers(spec, mode, k)  # type: ignore[arg-type]


def test_a_hand_built_spec_without_layers_says_how_to_add_them() -> None:
    with pytest.raises(ValueError, match="layers=.*forward order"):
        weight_layers(PermutationSpec({"w": ("g", None)}))


def test_a_spec_whose_layers_miss_an_entry_is_refused_before_any_hybrid() -> None:
    """A projection shortcut left out of the layers would stay at the end of training in every hybrid, silently:
    the spec is refused when it is built, naming the entry (and a doubly listed or unknown entry likewise)."""
    spec = get_model("resnet20", **ARCHS["resnet20"][0]).permutation_spec()
    shortcut = "stages.1.0.shortcut.0.weight"
    dropped = {n: tuple(k for k in ks if k != shortcut) for n, ks in spec.layers.items()}
    with pytest.raises(ValueError, match=f"layers miss state-dict entry '{shortcut}'"):
        weight_layers(PermutationSpec(spec.axes, spec.activations, dropped))
    twice = {**spec.layers, "head": (*spec.layers["head"], shortcut)}
    with pytest.raises(ValueError, match="in two layers"):
        weight_layers(PermutationSpec(spec.axes, spec.activations, twice))
    unknown = {**spec.layers, "head": (*spec.layers["head"], "nope.weight")}
    with pytest.raises(ValueError, match="'nope.weight', which spec.axes does not list"):
        weight_layers(PermutationSpec(spec.axes, spec.activations, unknown))


# --------------------------------------------------------------------------- the lab's hybrids
@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(store=Store(tmp_path / "store"), progress=False)


def test_rewound_networks_take_the_chosen_layers_from_time_t(lab: Lab) -> None:
    run = lab.run(TINY)
    t = 0.25
    early, final = run.state_at(t), run.final
    n = len(weight_layers(lab.spec(run)))
    for mode in MODES:
        for k in (1, n // 2, n - 1):
            hyb = lab.get(lab.rewound_product(run, t, mode, k))
            keys = set(rewound_keys(lab.spec(run), mode, k))
            assert keys and keys != set(final), (mode, k)
            for key in final:
                want = early[key] if key in keys else final[key]
                assert torch.equal(hyb.final[key], want), (mode, k, key)
                assert not torch.equal(early[key], final[key]), key  # so the check above tells them apart


def test_fully_rewound_hybrids_match_to_P_t_and_unrewound_ones_to_P_end(lab: Lab) -> None:
    """The endpoints of the bottom-up family: k = L is A_t / B_t (so WM gives P_t), k = 0 the end (P_end)."""
    pair = lab.pair(TINY, 0)
    n = len(weight_layers(lab.spec(pair.a)))
    t = 0.25
    p_t = lab.match("weight", pair.a, pair.b, time=t)
    p_end = lab.match("weight", pair.a, pair.b)
    assert p_t != p_end  # otherwise the check below could not tell them apart
    def hybrids(k: int) -> tuple:
        return tuple(lab.get(lab.rewound_product(net, t, "bottom-up", k)) for net in (pair.a, pair.b))

    full = lab.match("weight", *hybrids(n))
    none = lab.match("weight", *hybrids(0))
    assert full == p_t
    assert none == p_end


def test_hybrids_are_derived_not_stored_while_their_matchings_are(lab: Lab) -> None:
    pair = lab.pair(TINY, 0)
    h = lab.get(lab.rewound_product(pair.a, 0.25, "put-in", 0))
    hb = lab.get(lab.rewound_product(pair.b, 0.25, "put-in", 0))
    p = lab.match("weight", h, hb)
    hybrid_key = lab.product_of(h).key
    assert not lab.store.contains(hybrid_key)
    assert not lab.stored(lab.product_of(h))
    match_key = [k for k in lab.store.keys() if lab.store.load(k).kind == "matching"]
    assert len(match_key) == 1
    # a fresh lab on the same store loads the matching without rebuilding anything
    fresh = Lab(store=lab.store, progress=False)
    events = []
    fresh.subscribe(events.append)
    fresh_pair = fresh.pair(TINY, 0)
    q = fresh.match("weight", fresh.rewound_product(fresh_pair.a, 0.25, "put-in", 0),
                    fresh.rewound_product(fresh_pair.b, 0.25, "put-in", 0))
    assert q == p
    assert [e.kind for e in events if e.source == "built"] == []  # declared hybrids are never derived
    assert [e.source for e in events if e.kind == "matching"] == ["loaded"]
    # asking for the network itself derives it, every session
    hybrid = fresh.rewound_product(fresh_pair.a, 0.25, "put-in", 0)
    assert [e.source for e in _built(fresh, lambda: fresh.get(hybrid))] == ["built"]


def _built(lab: Lab, fn) -> list:
    events: list = []
    unsubscribe = lab.subscribe(events.append)
    try:
        fn()
    finally:
        unsubscribe()
    return [e for e in events if e.kind == "hybrid"]
