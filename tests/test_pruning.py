"""Tests of lmccheck.pruning: prunable layers, pruning counts and ties, masks, IMP, mask transport."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from lmccheck.data import load_dataset
from lmccheck.models import get_model
from lmccheck.permutation import Permutation
from fixtures import Lab
from lmccheck.pruning import (
    apply_mask,
    dense_mask,
    magnitude_prune,
    one_shot_prune,
    permute_mask,
    prunable_keys,
    prune_once,
    random_prune,
    retrain_with_mask,
    sparsity,
)
from lmccheck.store import Store
from lmccheck.training import TrainConfig, build_model, train

from tiny_recipes import tiny_config


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion-mnist")


def tiny(**kw) -> TrainConfig:
    return tiny_config(**{"checkpoints": (0, 0.25), **kw})


def mlp_state(seed: int = 0, width: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return get_model("mlp", width=width, depth=2).state_dict()


def reference_test_metrics(cfg: TrainConfig, data, state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Test loss and accuracy of ``state`` on the first ``eval_examples`` test examples, by plain code."""
    model = build_model(cfg, data)
    model.load_state_dict(state)
    model.eval()
    test = data.test.take(cfg.eval_examples)
    with torch.no_grad():
        logits = model(test.x)
    return {"test_loss": float(F.cross_entropy(logits, test.y)),
            "test_acc": float((logits.argmax(1) == test.y).double().mean())}


# --------------------------------------------------------------------------- prunable layers
def test_prunable_keys_mlp_excludes_head_biases_norms():
    model = get_model("mlp", width=16, depth=2, norm="layernorm")
    assert prunable_keys(model) == ["layers.0.weight", "layers.1.weight"]
    assert prunable_keys(model.state_dict()) == ["layers.0.weight", "layers.1.weight"]
    assert prunable_keys(model, include_head=True)[-1] == "head.weight"


@pytest.mark.parametrize("arch", ["vgg11", "resnet20"])
def test_prunable_keys_conv_nets(arch):
    model = get_model(arch, width=0.25, norm="layernorm")
    keys = prunable_keys(model)
    state = model.state_dict()
    assert "head.weight" not in keys
    assert keys == prunable_keys(state)  # the spec and the "last weight" rule agree
    assert all(state[k].dim() >= 2 for k in keys)
    convs = [k for k, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert {f"{c}.weight" for c in convs} <= set(keys)


# --------------------------------------------------------------------------- pruning
def test_magnitude_prune_removes_smallest_remaining():
    state = mlp_state()
    mask = dense_mask(state)
    total = sparsity(mask).total
    m1 = magnitude_prune(state, mask, 0.2)
    assert sparsity(m1).kept == total - round(0.2 * total)
    kept = torch.cat([state[k][m1[k]].abs() for k in m1])
    gone = torch.cat([state[k][~m1[k]].abs() for k in m1])
    assert gone.max() <= kept.min()
    m2 = magnitude_prune(state, m1, 0.5)
    assert all(bool((m2[k] <= m1[k]).all()) for k in m1)  # only ever loses weights
    assert sparsity(m2).kept == sparsity(m1).kept - round(0.5 * sparsity(m1).kept)
    assert all(torch.equal(mask[k], dense_mask(state)[k]) for k in mask)  # input untouched


def test_magnitude_prune_ties_are_deterministic():
    state = {"a.weight": torch.ones(2, 5), "b.weight": torch.ones(3, 2), "head.weight": torch.ones(2, 2)}
    mask = dense_mask(state)
    assert list(mask) == ["a.weight", "b.weight"]
    pruned = magnitude_prune(state, mask, 0.5)  # 16 remaining, 8 pruned: the first 8 positions
    assert pruned["a.weight"].flatten().tolist() == [False] * 8 + [True] * 2
    assert bool(pruned["b.weight"].all())


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_prune_counts_property(shapes, fraction, seed):
    gen = torch.Generator().manual_seed(seed)
    state = {f"l{i}.weight": torch.randn(s, generator=gen) for i, s in enumerate(shapes)}
    mask = dense_mask(state, keys=list(state))
    total = sparsity(mask).total
    expected = total - int(fraction * total + 0.5)
    assert sparsity(magnitude_prune(state, mask, fraction)).kept == expected
    assert sparsity(random_prune(state, mask, fraction, seed)).kept == expected
    assert sparsity(one_shot_prune(state, 1 - fraction, keys=list(state))).kept == int((1 - fraction) * total + 0.5)


def test_random_prune_is_seeded_and_nested():
    state = mlp_state()
    mask = magnitude_prune(state, None, 0.2)
    a = random_prune(state, mask, 0.3, seed=1)
    b = random_prune(state, mask, 0.3, seed=1)
    c = random_prune(state, mask, 0.3, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert all(bool((a[k] <= mask[k]).all()) for k in a)


def test_one_shot_keeps_largest():
    state = mlp_state()
    m = one_shot_prune(state, 0.8**3)
    total = sparsity(m).total
    assert sparsity(m).kept == round(0.8**3 * total)
    kept = torch.cat([state[k][m[k]].abs() for k in m])
    gone = torch.cat([state[k][~m[k]].abs() for k in m])
    assert gone.max() <= kept.min()


def test_apply_mask_and_sparsity():
    state = mlp_state()
    mask = magnitude_prune(state, None, 0.5)
    out = apply_mask(state, mask)
    for k, v in out.items():
        if k in mask:
            assert bool((v[~mask[k]] == 0).all()) and torch.equal(v[mask[k]], state[k][mask[k]])
        else:
            assert torch.equal(v, state[k])
    assert not bool((state["layers.0.weight"] == 0).any())  # input untouched
    stats = sparsity(mask)
    assert stats.remaining == pytest.approx(0.5, abs=1e-3)
    assert set(stats.per_layer) == set(mask)
    assert json.loads(json.dumps(stats.as_dict()))["kept"] == stats.kept
    with pytest.raises(ValueError, match="shape"):
        apply_mask(state, {"layers.0.weight": torch.ones(3, 3, dtype=torch.bool)})


def test_permute_mask_matches_permuting_the_weights():
    model = get_model("mlp", width=16, depth=2)
    spec = model.permutation_spec()
    state = model.state_dict()
    perm = Permutation.random(spec, state, seed=3)
    mask = magnitude_prune(state, None, 0.5)
    pmask = permute_mask(perm, mask)
    # masking then permuting == permuting then masking with the permuted mask
    lhs = perm.apply(apply_mask(state, mask))
    rhs = apply_mask(perm.apply(state), pmask)
    assert all(torch.equal(lhs[k], rhs[k]) for k in state)
    # the permuted mask is still the magnitude mask of the permuted weights
    assert all(torch.equal(pmask[k], magnitude_prune(perm.apply(state), None, 0.5)[k]) for k in mask)


# --------------------------------------------------------------------------- IMP (the claims' path)
@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(store=Store(tmp_path / "store"), progress=False)


def test_imp_levels(lab: Lab, data):
    """IMP as the claims build it (``Lab.imp`` over ``imp_level`` products): Sharma et al. App. A's 20% of the
    remaining weights per level, rewinding to the dense run, retraining with the mask, each level with its own
    data order."""
    cfg = tiny()
    levels = 3
    res = lab.imp(cfg, levels, rewind_epoch=0.25)
    assert len(res) == levels + 1 and res[0].remaining == 1.0
    total = sparsity(res[0].mask).total
    dense = res.dense_run
    assert dense is not None
    rewind = dense.state_at(0.25)
    kept_prev = total
    for lv in res.levels[1:]:
        prev = res[lv.level - 1].mask
        assert all(bool((lv.mask[k] <= prev[k]).all()) for k in prev)  # masks only lose weights
        kept = sparsity(lv.mask).kept
        # exact global count: 20% of the remaining, rounded; within 2.5 weights of 0.8**L of all
        assert kept == kept_prev - int(0.2 * kept_prev + 0.5)
        assert abs(kept - 0.8**lv.level * total) <= 2.5 and lv.remaining == pytest.approx(kept / total)
        kept_prev = kept
        # the kept weights are the largest of the previous level's trained weights
        assert all(torch.equal(lv.mask[k], magnitude_prune(res[lv.level - 1].trained, prev, 0.2)[k]) for k in prev)
        # rewinding restores the dense run's values at the rewind time under the mask
        for k, v in lv.rewound.items():
            want = torch.where(lv.mask[k], rewind[k], torch.zeros(())) if k in lv.mask else rewind[k]
            assert torch.equal(v, want)
        # retraining: pruned weights stay exactly 0; (nearly) every kept weight and every unpruned
        # parameter (biases, head) moves away from its rewound value (a dead ReLU unit's do not)
        for k, v in lv.trained.items():
            m = lv.mask.get(k, torch.ones(v.shape, dtype=torch.bool))
            assert bool((v[~m] == 0).all()), k
            assert float((v[m] != lv.rewound[k][m]).double().mean()) > 0.9, k
        # the level's metrics are its trained network's (recomputed independently), and it learned:
        # above chance (0.1) and better than the rewound network it started from
        got = {key: lv.metrics[key] for key in ("test_loss", "test_acc")}
        assert got == pytest.approx(reference_test_metrics(cfg, data, lv.trained), abs=1e-5)
        assert lv.metrics["test_acc"] > 0.2
        assert lv.metrics["test_loss"] < reference_test_metrics(cfg, data, lv.rewound)["test_loss"]
        assert lv.run is not None and lv.run.times == [0.25, 1.0]
    assert res[0].trained is dense.final
    # each level retrains with its own SGD seed, derived from the dense run's and recorded
    seeds = [dense.config.sgd_seed] + [lv.run.config.sgd_seed for lv in res.levels[1:]]
    assert len(set(seeds)) == levels + 1
    # a fresh lab on the same store loads every level and trains nothing
    again = Lab(store=lab.store, progress=False).imp(cfg, levels, rewind_epoch=0.25)
    assert all(torch.equal(x.trained[k], y.trained[k]) for x, y in zip(res.levels, again.levels) for k in x.trained)


def test_imp_refuses_a_rewind_time_the_recipe_does_not_checkpoint_and_bad_levels(lab: Lab):
    cfg = tiny()
    with pytest.raises(KeyError, match=r"0.75.*0, 0.25, 1"):
        lab.imp(cfg, 1, rewind_epoch=0.75)
    for bad_levels in (-1, 1.5, True):
        with pytest.raises(ValueError, match="levels must be a non-negative int"):
            lab.imp(cfg, bad_levels, rewind_epoch=0.25)
    assert [lv.level for lv in lab.imp(cfg, 0, rewind_epoch=0.25).levels] == [0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_retrain_with_transported_mask(data, optimizer):
    cfg = tiny(optimizer=optimizer, weight_decay=1e-3, lr=0.05 if optimizer == "sgd" else 1e-3)
    a = train(cfg, data=data)
    b = train(cfg.replace(init_seed=1, sgd_seed=1), data=data)
    spec = get_model("mlp", width=32, depth=2).permutation_spec()
    perm = Permutation.random(spec, b.final, seed=0)
    mask = permute_mask(perm, one_shot_prune(a.final, 0.5))
    run = retrain_with_mask(cfg, perm.apply(b.state_at(0.25)), mask, 0.25, data=data)
    assert run.times == [0.25, 1.0]
    for k, m in mask.items():
        assert bool((run.state_at(0.25)[k][~m] == 0).all())
        assert bool((run.final[k][~m] == 0).all())
    assert run.mask is not None and all(torch.equal(run.mask[k], mask[k]) for k in mask)


# --------------------------------------------------------------------------- one-step pruning (App. H.2)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_prune_once_reaches_the_requested_sparsity(p: float, method: str) -> None:
    state = mlp_state()
    mask = prune_once(state, p, method=method, seed=3)
    stats = sparsity(mask)
    assert set(mask) == set(prunable_keys(state))
    assert stats.total - stats.kept == int(p * stats.total + 0.5)  # exactly round(p * N) pruned


def test_prune_once_by_magnitude_removes_the_smallest_and_random_ignores_magnitude() -> None:
    state = mlp_state()
    mag = prune_once(state, 0.6)
    kept = torch.cat([state[k][mag[k]].abs() for k in mag])
    gone = torch.cat([state[k][~mag[k]].abs() for k in mag])
    assert gone.max() <= kept.min()
    rnd = prune_once(state, 0.6, method="random", seed=1)
    assert any(not torch.equal(rnd[k], mag[k]) for k in mag)
    gone_rnd = torch.cat([state[k][~rnd[k]].abs() for k in rnd])
    assert gone_rnd.max() > kept.min()  # random pruning removes some large weights
    again = prune_once(state, 0.6, method="random", seed=1)
    other = prune_once(state, 0.6, method="random", seed=2)
    assert all(torch.equal(rnd[k], again[k]) for k in rnd)
    assert any(not torch.equal(rnd[k], other[k]) for k in rnd)


def test_prune_once_prunes_the_head_only_when_asked() -> None:
    state = mlp_state()
    head = prunable_keys(state, include_head=True)[-1]
    assert head not in prune_once(state, 0.5)
    with_head = prune_once(state, 0.5, include_head=True)
    assert head in with_head and sparsity(with_head).total == sum(state[k].numel() for k in with_head)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan")])
def test_prune_once_refuses_a_sparsity_outside_0_1(p: float) -> None:
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        prune_once(mlp_state(), p)


def test_prune_once_refuses_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown pruning method 'smallest'"):
        prune_once(mlp_state(), 0.5, method="smallest")


@pytest.mark.parametrize("remaining", [1.0, 0.8, 0.8**5, 0.8**10, 0.01])
def test_one_shot_mask_has_the_requested_sparsity(remaining: float) -> None:
    state = mlp_state(width=24)
    mask = one_shot_prune(state, remaining)
    stats = sparsity(mask)
    assert stats.kept == int(remaining * stats.total + 0.5)
    with pytest.raises(ValueError, match="sparsity_remaining must be in"):
        one_shot_prune(state, 1.2)


def test_a_mask_from_another_architecture_is_refused_with_a_clear_error() -> None:
    narrow, wide = mlp_state(width=16), mlp_state(width=24)
    mask = magnitude_prune(narrow, None, 0.5)
    with pytest.raises(ValueError, match="another architecture or width"):
        apply_mask(wide, mask)
    with pytest.raises(ValueError, match="another architecture or width"):
        magnitude_prune(wide, mask, 0.2)
    spec = get_model("mlp", width=24, depth=2).permutation_spec()
    with pytest.raises(ValueError, match="group .* has 24 units"):
        permute_mask(Permutation.random(spec, wide, seed=0), mask)
    conv_mask = {"features.0.weight": torch.ones(3, 3, 3, 3, dtype=torch.bool)}
    with pytest.raises(ValueError, match="wrong architecture"):
        apply_mask(wide, conv_mask)
    with pytest.raises(ValueError, match="wrong architecture"):
        permute_mask(Permutation.random(spec, wide, seed=0), conv_mask)


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_a_mask_does_not_depend_on_the_order_of_the_state_keys(method: str) -> None:
    """A state from the store has sorted names, one trained in this process is in module order: same mask.
    Equal magnitudes everywhere make every choice a tie, so position order decides it."""
    state = {"layers.0.weight": torch.ones(6, 4), "layers.1.weight": torch.ones(5, 6), "head.weight": torch.ones(3, 5)}
    backwards = dict(reversed(list(state.items())))
    prune = magnitude_prune if method == "magnitude" else functools.partial(random_prune, seed=3)
    a = prune(state, dense_mask(state, list(state)), fraction=0.4)
    b = prune(backwards, dense_mask(backwards, list(backwards)), fraction=0.4)
    assert list(b) == list(backwards)  # the caller's order is kept
    assert all(torch.equal(a[k], b[k]) for k in state)
