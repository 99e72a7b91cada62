"""The fixture Lab: products trained once, cached measurements, stable keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fixtures import Lab, pair_configs, triple_configs
from fixtures.recipes import (
    CPU,
    GPU,
    REGIMES_GPU,
    WIDTHS_CPU,
    WIDTHS_GPU,
    Setting,
    WidthFamily,
    child_seeds,
    init_child_seed,
)
from lmccheck.permutation import Permutation
from lmccheck.store import Store

from tiny_recipes import tiny_config

TINY = tiny_config(model_kwargs={"width": 16, "depth": 2}, warmup_epochs=0.0, checkpoints=(0.0, 0.5),
                   eval_examples=128)


@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(store=Store(tmp_path / "store"), progress=False)


def test_pair_seeds_are_separate_and_recorded() -> None:
    a, b = pair_configs(TINY, 1)
    assert (a.init_seed, a.sgd_seed, b.init_seed, b.sgd_seed) == (1002, 2002, 1003, 2003)


def test_replicates_are_capped_at_cpu_scale_only_and_child_seeds_are_the_recipes() -> None:
    cpu, gpu = Setting("x", TINY), Setting("x", TINY, gpu=True)
    assert [cpu.replicates(n, 3) for n in (1, 2, 3, 5)] == [1, 2, 3, 3] and cpu.replicates(10) == 10
    assert gpu.replicates(5, 3) == 5 and gpu.replicates(2, 3) == 2
    assert child_seeds(0) == (3000, 3001, 3002) and child_seeds(2) == (3006, 3007, 3008)
    assert child_seeds(1).a1 == 3003 and child_seeds(1).b1 == 3005
    assert [init_child_seed(r) for r in range(3)] == [7000, 7001, 7002]


def test_get_many_builds_the_missing_products_with_one_call(lab: Lab, tmp_path) -> None:
    from lmccheck.kinds import config_of, train_product
    from lmccheck.training import train

    products = [train_product(c) for c in pair_configs(TINY, 0)]
    calls: list[list[str]] = []

    def build_many(ps):
        calls.append([p.key for p in ps])
        return [train(config_of(p, lab.device), progress=False).to_record() for p in ps]

    events: list = []
    lab.subscribe(events.append)
    runs = lab.get_many(products + products[:1], build_many, note="built as one")
    assert calls == [[p.key for p in products]] and len(runs) == 3 and runs[0] is runs[2]
    assert [(e.source, e.key) for e in events] == [("built", p.key) for p in products]
    assert all(e.label.endswith("(one of 2 built as one)") for e in events)
    assert lab.missing(products) == [] and len(calls) == 1
    assert all(x is y for x, y in zip(lab.get_many(products, build_many), runs[:2], strict=True))
    # a new session finds them stored: nothing is missing, each is loaded as get loads it
    again = Lab(store=Store(tmp_path / "store"), progress=False)
    assert again.missing(products) == []
    assert [r.config for r in again.get_many(products, build_many)] == list(pair_configs(TINY, 0))
    assert len(calls) == 1
    with pytest.raises(ValueError, match="returned 0 records for 2 products"):
        Lab(store=Store(tmp_path / "other"), progress=False).get_many(products, lambda ps: [])


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


def test_triples_are_disjoint_and_reuse_the_pairs_after_them() -> None:
    for n in (1, 2, 3, 5):
        nets = [c for r in range(n) for c in triple_configs(TINY, r, n)]
        seeds = [(c.init_seed, c.sgd_seed) for c in nets]
        assert len(set(seeds)) == 3 * n  # every network its own run
        assert len({s for s, _ in seeds}) == 3 * n and len({s for _, s in seeds}) == 3 * n
        assert all(a != s for a, s in seeds) and {s - a for a, s in seeds} == {1000}  # init and SGD seeds apart
        for r in range(n):
            a, b, _ = triple_configs(TINY, r, n)
            assert (a, b) == pair_configs(TINY, r)
    # two triples take their references from pair 2: A2 and B2, which 3-seed claims train anyway
    assert [triple_configs(TINY, r, 2)[2] for r in range(2)] == list(pair_configs(TINY, 2))
    with pytest.raises(ValueError, match="not among the 2 triples"):
        triple_configs(TINY, 2, 2)


def test_width_families_reuse_the_named_settings_and_refuse_bad_shapes() -> None:
    fam = WIDTHS_CPU["mlp-fmnist-widths"]
    assert fam.widths[-1] / fam.widths[0] >= 8 and len(fam.widths) >= 4  # issue 13: >= 4 widths spanning >= 8x
    by_width = {w: s.config for w, s in zip(fam.widths, fam.settings)}
    assert by_width[128.0] == CPU["mlp128-fmnist"].config and by_width[512.0] == CPU["mlp512-fmnist"].config
    assert [fam.seeds_at(i, 3) for i in range(4)] == [3, 3, 2, 2] and fam.seeds_at(0, 1) == 1
    gpu = WIDTHS_GPU["resnet20-ln-cifar10-widths"]
    assert gpu.gpu and all(s.gpu for s in gpu.settings) and gpu.seeds_at(5, 5) == 5 and gpu.widths[-1] == 32.0
    assert all(s.config.warmup_epochs == 1.0 for f in WIDTHS_GPU.values() for s in f.settings)  # App. D
    r1, r2 = REGIMES_GPU["vgg16-ln-cifar10"].settings
    assert (r1.config.warmup_epochs, r1.config.lr, r1.config.weight_decay) == (0.0, 1e-3, 1e-4)  # App. H.4 (1)
    assert (r2.config.warmup_epochs, r2.config.lr, r2.config.weight_decay) == (1.0, 0.1, 0.0)  # App. H.4 (2)
    assert r2.config == GPU["vgg16-ln-cifar10-instability"].config
    s = Setting("x", TINY)
    with pytest.raises(ValueError, match="widths must increase"):
        WidthFamily("f", (s, s), (2.0, 1.0))
    with pytest.raises(ValueError, match="seed caps"):
        WidthFamily("f", (s, s), (1.0, 2.0), seeds=(1,))
    with pytest.raises(ValueError, match="one setting per width"):
        WidthFamily("f", (s,), (1.0, 2.0))


def test_lab_simplex_edges_are_the_lab_barriers(lab: Lab) -> None:
    """The S7 measurement in small: the triangle aligned to C, its edges taken in its vertex order."""
    t = lab.triples(TINY, 1)[0]
    a, b, c = t.a, t.b, t.c
    assert t.seeds == {"init_seed_a": 1000, "sgd_seed_a": 2000, "init_seed_b": 1001, "sgd_seed_b": 2001,
                       "init_seed_c": 1002, "sgd_seed_c": 2002}
    p_ac, p_bc = lab.match("weight", c, a), lab.match("weight", c, b)
    kw = {"n_examples": 128}
    sim = lab.simplex([a, b, c], perms=[p_ac, p_bc, None], resolution=2, edge_resolution=4, **kw)
    edges = [lab.barrier(a, b, perm_a=p_ac, perm=p_bc, alphas=5, **kw), lab.barrier(a, c, perm_a=p_ac, alphas=5, **kw),
             lab.barrier(b, c, perm_a=p_bc, alphas=5, **kw)]
    for (i, j), e in zip(((0, 1), (0, 2), (1, 2)), edges):
        assert sim.edge(i, j).loss == e.loss and sim.edge(i, j).error == e.error
    assert sim.loss_barrier >= max(e.loss_barrier for e in edges) - 1e-12
    assert len(sim.weights) == 3 * 4  # boundary at 1/4; resolution 2 has no interior point
    n = len(lab.store.keys())
    assert lab.simplex([a, b, c], perms=[p_ac, p_bc, None], resolution=2, edge_resolution=4, **kw) == sim
    assert len(lab.store.keys()) == n  # stored once, loaded after
    other = lab.simplex([a, b, c], perms=[p_ac, p_bc, None], resolution=2, edge_resolution=2, **kw)
    assert len(other.weights) == 6 and len(lab.store.keys()) == n + 1  # the edge grid is part of the key


@pytest.mark.parametrize("alphas", [25, 5])
def test_s7_triangles_at_a_settings_alphas_have_its_pairwise_curves_as_edges(lab: Lab, alphas: int) -> None:
    """S7's triangle at a setting's grid (the paper's 25 alphas, the dry run's 5): its edges are the setting's
    pairwise curves, so the claim's exact consistency check holds."""
    from claims.test_s7_s12_strong_connectivity import _consistency, _triangles

    setting = Setting("tiny", TINY, eval_examples=64, alphas=alphas)
    t = lab.triples(TINY, 1)[0]
    perms = {"A->C": lab.match("weight", t.c, t.a), "B->C": lab.match("weight", t.c, t.b)}
    sim, edges = _triangles(lab, "weight", t, perms, ("to_C",), setting)["to_C"]
    assert [len(e.alphas) for e in edges] == [alphas] * 3 and _consistency(sim, edges) == []


def test_a_full_size_settings_curve_keeps_the_barrier_keys_of_the_default_grid(lab: Lab) -> None:
    """Claims pass ``**setting.curve``: at the paper's 25 alphas the stored barriers are the ones the lab's
    defaults name (a warm store stays warm); the dry run's 5 alphas are another measurement."""
    pair = lab.pair(TINY, 0)
    full, dry = Setting("tiny", TINY, eval_examples=64), Setting("tiny", TINY, eval_examples=64, alphas=5)
    assert lab.barrier_product(pair.a, pair.b, **full.curve).key == lab.barrier_product(pair.a, pair.b,
                                                                                         n_examples=64).key
    assert lab.barrier_product(pair.a, pair.b, **dry.curve).key != lab.barrier_product(pair.a, pair.b,
                                                                                        n_examples=64).key


def _recipes_only(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's networks are their recipes: what :meth:`Lab.run` was asked for, nothing trained."""
    monkeypatch.setattr(lab, "run", lambda config: SimpleNamespace(config=config))


def _networks(groups: list) -> set[tuple[int, int]]:
    return {(getattr(g, k).config.init_seed, getattr(g, k).config.sgd_seed) for g in groups for k in ("a", "b", "c")
            if hasattr(g, k)}


@pytest.mark.parametrize("offset", [1, 7])
def test_a_seed_offset_shifts_every_replicate_to_the_seeds_of_a_later_pair(
    tmp_path, monkeypatch: pytest.MonkeyPatch, offset: int
) -> None:
    lab = Lab(store=Store(tmp_path / "store"), progress=False, seed_offset=offset)
    _recipes_only(lab, monkeypatch)
    for r, pair in enumerate(lab.pairs(TINY, 3)):
        assert (pair.a.config, pair.b.config) == pair_configs(TINY, r + offset) and pair.replicate == r
    assert (lab.pair(TINY, 2).a.config, lab.pair(TINY, 2).b.config) == pair_configs(TINY, 2 + offset)
    for r, triple in enumerate(lab.triples(TINY, 3)):
        assert (triple.a.config, triple.b.config, triple.c.config) == triple_configs(TINY, r, 3, offset)
        assert (triple.a.config, triple.b.config) == pair_configs(TINY, r + offset)  # A and B: pair r + K
    # the references come from the pairs after the offset ones: 3 + ceil(3 / 2) = 5 pairs from pair K on
    assert triple_configs(TINY, 0, 3, offset)[2] == pair_configs(TINY, offset + 3)[0]
    assert triple_configs(TINY, 2, 3, offset)[2] == pair_configs(TINY, offset + 4)[0]


def test_a_large_enough_seed_offset_shares_no_network_with_the_default_seeds(tmp_path, monkeypatch) -> None:
    def networks(offset: int) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
        lab = Lab(store=Store(tmp_path / "store"), progress=False, seed_offset=offset)
        _recipes_only(lab, monkeypatch)
        return _networks(lab.pairs(TINY, 3)), _networks(lab.triples(TINY, 3))

    pairs0, triples0 = networks(0)
    assert len(pairs0) == 6 and len(triples0) == 9
    # 3 pairs use pairs 0..2; 3 triples use pairs 0..4 (their references come from pairs 3 and 4)
    pairs3, triples5 = networks(3)[0], networks(5)[1]
    assert not pairs3 & pairs0 and not triples5 & triples0 and not networks(100)[1] & (pairs0 | triples0)
    assert networks(2)[0] & pairs0 and networks(4)[1] & triples0  # one pair less overlaps
    with pytest.raises(ValueError, match="seed offset -1 is negative"):
        triple_configs(TINY, 0, 3, -1)
