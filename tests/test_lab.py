"""The fixture Lab: products trained once, cached measurements, stable keys."""

from __future__ import annotations

import pytest
import torch

from fixtures import Lab, pair_configs
from lmccheck.permutation import Permutation
from lmccheck.store import Store
from lmccheck.training import TrainConfig

TINY = TrainConfig(
    arch="mlp",
    model_kwargs={"width": 16, "depth": 2},
    train_subset=512,
    epochs=1.0,
    batch_size=64,
    lr=0.05,
    checkpoints=(0.0, 0.5),
    eval_examples=128,
)


@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(store=Store(tmp_path / "store"), progress=False)


def test_pair_seeds_are_separate_and_recorded() -> None:
    a, b = pair_configs(TINY, 1)
    assert (a.init_seed, a.sgd_seed, b.init_seed, b.sgd_seed) == (1002, 2002, 1003, 2003)


def test_products_are_built_once_and_keys_are_stable(lab: Lab, tmp_path) -> None:
    pair = lab.pair(TINY, 0)
    n_entries = len(lab.store.keys())
    assert n_entries == 2
    assert pair.a.times == [0.0, 0.5, 1.0]
    # a fresh lab on the same store loads, trains nothing, and gives the same keys and weights
    again = Lab(store=Store(tmp_path / "store"), progress=False).pair(TINY, 0)
    assert again.keys == pair.keys and len(lab.store.keys()) == n_entries
    for k, v in pair.a.final.items():
        assert torch.equal(v, again.a.final[k])
    assert pair.a.info["store_key"] == pair.keys[0]


def test_measurements_are_cached_and_consistent(lab: Lab) -> None:
    pair = lab.pair(TINY, 0)
    perm = lab.match("weight", pair.a, pair.b)
    assert lab.match("weight", pair.a, pair.b) == perm
    naive = lab.barrier(pair.a, pair.b, n_examples=256, alphas=5)
    aligned = lab.barrier(pair.a, pair.b, perm=perm, n_examples=256, alphas=5)
    assert naive.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    # the permutation entered the measurement: alignment lowers the barrier, endpoints unchanged
    assert aligned.loss_barrier < naive.loss_barrier
    assert aligned.loss_endpoints == pytest.approx(naive.loss_endpoints, abs=1e-5)
    n = len(lab.store.keys())
    again = lab.barrier(pair.a, pair.b, perm=perm, n_examples=256, alphas=5)
    assert again == aligned and len(lab.store.keys()) == n
    # a joint permutation of both networks leaves the barrier unchanged (claim S2's lemma)
    p = Permutation.random(perm.spec, pair.a.final, 3)
    joint = lab.barrier(pair.a, pair.b, perm_a=p, perm=p, n_examples=256, alphas=5)
    assert joint.loss_barrier == pytest.approx(naive.loss_barrier, abs=1e-5)


def test_child_shares_parent_weights_at_spawn(lab: Lab) -> None:
    parent = lab.run(TINY)
    child = lab.child(TINY, 0.5, sgd_seed=77)
    for k, v in parent.state_at(0.5).items():
        assert torch.equal(v, child.state_at(0.5)[k])
    assert any(not torch.equal(v, child.final[k]) for k, v in parent.final.items())


def test_unknown_time_and_method_are_clear(lab: Lab) -> None:
    pair = lab.pair(TINY, 0)
    with pytest.raises(KeyError, match="0.75"):
        lab.barrier(pair.a, pair.b, time=0.75)
    with pytest.raises(ValueError, match="unknown matching method"):
        lab.match("telepathy", pair.a, pair.b)
