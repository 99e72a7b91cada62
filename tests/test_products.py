"""Products as declared recipes: keys without building, plans, provenance, and the lab's wrappers."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch

from fixtures import Lab
from lmccheck.barrier_options import BarrierOptions
from lmccheck.kinds import (
    barrier_product,
    config_of,
    derived_seed,
    feature_product,
    imp_level_product,
    matching_product,
    permutation_input,
    simplex_product,
    spawn_product,
    train_product,
)
from lmccheck.permutation import Permutation
from lmccheck.builder import Builder, ProductEvent
from lmccheck.products import Literal, Product, Ref, kinds, tensor_digest
from lmccheck.pruning import apply_mask, one_shot_prune, prunable_keys, sparsity
from lmccheck.store import Store
from lmccheck.training import TrainConfig

from tiny_recipes import tiny_config

#: the engine is compared with fp32 references: every default evaluates in fp32 here
pytestmark = pytest.mark.usefixtures("cpu_without_bf16")

TINY = tiny_config()
TINY_BN = tiny_config(model_kwargs={"width": 32, "depth": 2, "norm": "batchnorm"})


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(store=Store(tmp_path / "store"), progress=False)


def _events(lab: Lab) -> list[ProductEvent]:
    events: list[ProductEvent] = []
    lab.subscribe(events.append)
    return events


# --------------------------------------------------------------------------- keys and plans
def test_keys_are_computed_without_building_and_follow_the_inputs(lab: Lab) -> None:
    dense = train_product(TINY)
    # the train key is the config's recipe key, as before products existed
    assert dense.key == lab.store.key("train", TINY.recipe())
    child = spawn_product(dense, 0.5, 7)
    assert spawn_product(dense, 0.5, 7).key == child.key
    assert spawn_product(dense, 0.5, 8).key != child.key
    assert spawn_product(train_product(TINY.replace(init_seed=1)), 0.5, 7).key != child.key
    level2 = imp_level_product(dense, 2, 0.5)
    assert level2.inputs["prev"].product.key == imp_level_product(dense, 1, 0.5).key  # type: ignore[union-attr]
    assert imp_level_product(dense, 2, 0.25).key != level2.key
    assert lab.store.keys() == []  # nothing was built


def test_inputs_are_equal_exactly_when_they_name_the_same_content() -> None:
    """Refs and literals compare (and hash) by what they name: the builder dedups inputs with them."""
    ones = torch.ones(3)
    a = Literal(ones, tensor_digest({"p": ones}))
    same = Literal(ones.clone(), tensor_digest({"p": ones.clone()}))  # an equal digest, another str object
    other = Literal(2 * ones, tensor_digest({"p": 2 * ones}))
    assert a == same and hash(a) == hash(same)
    assert a != other and other != a
    assert a != type("Lookalike", (), {"digest": a.digest})()
    d0, d1 = train_product(TINY), train_product(TINY.replace(init_seed=1))
    assert Ref(d0) == Ref(d0) and Ref(d0, 5) == Ref(train_product(TINY), 5)
    assert hash(Ref(d0, 5)) == hash(Ref(d0, 5.0))
    assert Ref(d0, 5) != Ref(d0, 6) and Ref(d0) != Ref(d0, 6)
    assert Ref(d0) != Ref(d1) and Ref(d1) != Ref(d0) and Ref(d0, 5) != Ref(d1, 5)


def test_a_tuple_input_is_recorded_member_by_member(lab: Lab) -> None:
    d0, d1 = train_product(TINY), train_product(TINY.replace(init_seed=1))
    model = lab.model(TINY)
    perm = Permutation.random(model.permutation_spec(), model.state_dict(), 3)
    simplex = simplex_product([Ref(d0), Ref(d1)], perms=[None, perm], builder=lab)
    end = float(TINY.epochs)  # the end state has one name: its epoch
    assert simplex.recipe["inputs"]["nets"] == [{"key": d0.key, "at": end}, {"key": d1.key, "at": end}]
    digest = tensor_digest({g: t.to(torch.int64) for g, t in perm.perms.items()})
    assert simplex.recipe["inputs"]["perms"] == [None, {"literal": digest}]
    assert simplex.refs() == [Ref(d0, end), Ref(d1, end)]


def test_products_and_kinds_are_immutable_and_shown_by_a_12_digit_key() -> None:
    """A product's key is computed once from its fields, so they cannot be reassigned after it."""
    dense = train_product(TINY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dense.kind = "spawn"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        kinds()["train"].version = 99  # type: ignore[misc]
    assert len(dense.short) == 12 and dense.key.startswith(dense.short)  # as `lmccheck cache ls` shows keys
    assert dense.describe().endswith(f"[{dense.short}]")


def test_config_of_follows_the_product_chain() -> None:
    dense = train_product(TINY)
    assert config_of(spawn_product(dense, 0.5, 7)) == TINY.replace(sgd_seed=7)
    lv = imp_level_product(dense, 1, 0.5)
    assert config_of(lv).sgd_seed == lv.params["sgd_seed"] != TINY.sgd_seed
    with pytest.raises(ValueError, match="not a network"):
        config_of(matching_product("weight", Ref(dense), Ref(dense)))


def test_derived_seeds_are_31_bit() -> None:
    """``derived_seed`` promises a 31-bit seed (any generator accepts it): over 256 salts, about half of them
    would have bit 31 set, and none may."""
    seeds = [derived_seed(7, "level", i) for i in range(256)]
    assert all(0 <= s < 2**31 for s in seeds) and max(seeds) >= 2**30 and len(set(seeds)) == 256


def test_a_products_kind_is_compared_by_value() -> None:
    """A kind built at run time (read from a manifest, say), not the module's literal, is the same kind."""
    level = imp_level_product(train_product(TINY), 1, 0.5)
    rebuilt = Product("".join(["imp_", "level"]), level.params, level.inputs)
    assert rebuilt == level and config_of(rebuilt) == config_of(level)


def test_only_matching_products_are_permutations() -> None:
    dense = train_product(TINY)
    for not_a_matching in (dense, spawn_product(dense, 0.5, 7), imp_level_product(dense, 1, 0.5)):
        with pytest.raises(ValueError, match=f"expected a matching product, got {not_a_matching.kind}"):
            permutation_input(not_a_matching)


def test_commutativity_matching_starts_from_its_own_activation_matching_product() -> None:
    a, b = Ref(train_product(TINY)), Ref(train_product(TINY.replace(init_seed=1)))
    am, cm = matching_product("activation", a, b), matching_product("commutativity", a, b)
    assert "init" not in am.inputs and am.params["data"]["subset"] == TINY.train_subset
    assert cm.inputs["init"] == Ref(am) and cm.params["data"] == am.params["data"]


def test_each_matching_method_builds_the_library_matching_on_the_training_subset(lab: Lab) -> None:
    from lmccheck.activation_matching import activation_matching
    from lmccheck.commutativity_matching import commutativity_matching

    pair = lab.pair(TINY, 0)
    model, data = lab.model(TINY), lab.dataset(TINY.dataset).train.take(TINY.train_subset)
    am, cm = lab.match("activation", pair.a, pair.b), lab.match("commutativity", pair.a, pair.b)
    assert am == activation_matching(model, pair.a.final, pair.b.final, data)
    direct = commutativity_matching(model, pair.a.final, pair.b.final, data, init=am)
    assert cm == direct and cm.stats["objective_final"] == direct.stats["objective_final"]
    assert cm.stats["objective_final"] <= cm.stats["objective_init"]


def test_product_defaults_are_the_library_functions_defaults(lab: Lab) -> None:
    """One default per number: a product declared without the option measures what the library function would."""
    import inspect

    from lmccheck import interpolation, llfc

    a, b = Ref(train_product(TINY)), Ref(train_product(TINY.replace(init_seed=1)))
    simplex = simplex_product([a, b], builder=lab)
    library_resolution = inspect.signature(interpolation.simplex_barrier).parameters["resolution"].default
    assert simplex.params["resolution"] == library_resolution
    for metric, fn in (("llfc", llfc.llfc), ("spectra", llfc.spectra), ("stitching", llfc.stitching_errors)):
        product = feature_product(metric, a, a if metric == "spectra" else b, builder=lab)
        assert product.params["n_examples"] == inspect.signature(fn).parameters["n_examples"].default, metric
    assert feature_product("llfc", a, b, builder=lab).params["alphas"] == list(
        inspect.signature(llfc.llfc).parameters["alphas"].default)


def test_plan_lists_missing_then_stored_and_builds_nothing(lab: Lab) -> None:
    a, b = train_product(TINY), train_product(TINY.replace(init_seed=1, sgd_seed=1))
    match = matching_product("weight", Ref(a), Ref(b))
    bar = barrier_product(Ref(a), Ref(b), perm=match, options=BarrierOptions(n_examples=128, alphas=3), builder=lab)
    plan = lab.plan([bar])
    assert [(i.kind, i.stored) for i in plan] == [
        ("train", False), ("train", False), ("matching", False), ("barrier", False)
    ]
    assert lab.store.keys() == []  # planning built nothing
    lab.get(bar)
    assert {i.key for i in plan} == set(lab.store.keys())
    again = Lab(store=Store(lab.store.root), progress=False).plan([bar])
    assert [(i.kind, i.stored) for i in again] == [("barrier", True)]  # a stored product needs nothing else


def test_get_reports_built_then_loaded_with_exclusive_time(lab: Lab, tmp_path: Path) -> None:
    events = _events(lab)
    t0 = time.perf_counter()
    child = lab.child(TINY, 0.5, sgd_seed=77)
    elapsed = time.perf_counter() - t0
    built = [(e.kind, e.source) for e in events if e.source != "memo"]
    assert built == [("train", "built"), ("spawn", "built")]
    spawn_ev = next(e for e in events if e.kind == "spawn")
    train_ev = next(e for e in events if e.kind == "train" and e.source == "built")
    assert spawn_ev.depth == 0 and train_ev.depth == 1
    assert 0 < train_ev.seconds and 0 < spawn_ev.seconds
    entry = lab.store.load(spawn_ev.key)
    # the spawn's own time (and its stored build time) exclude the parent's training, which it triggered:
    # the two exclusive times add up to no more than the whole call (robust to a loaded machine)
    assert entry.meta["wall_time_s"] <= spawn_ev.seconds
    assert spawn_ev.seconds + train_ev.seconds <= elapsed + 1e-3
    fresh = Lab(store=Store(tmp_path / "store"), progress=False)
    ev2 = _events(fresh)
    again = fresh.child(TINY, 0.5, sgd_seed=77)
    assert [(e.kind, e.source) for e in ev2] == [("spawn", "loaded"), ("train", "input")]  # named, not fetched
    assert torch.equal(again.final["layers.0.weight"] if "layers.0.weight" in again.final else
                       next(iter(again.final.values())),
                       child.final["layers.0.weight"] if "layers.0.weight" in child.final else
                       next(iter(child.final.values())))


def test_a_product_another_process_builds_is_waited_for_not_built(tmp_path: Path) -> None:
    """Two builders on one store race for one product: the one that finds its lock held tells its start
    listeners "waiting" (not "start"), builds nothing, and loads what the other built."""
    import threading

    first, second = (Lab(store=Store(tmp_path / "store"), progress=False) for _ in range(2))
    starts: dict[str, list[str]] = {"first": [], "second": []}
    building = threading.Event()

    def on_start(event: ProductEvent) -> None:
        starts["first"].append(event.source)
        building.set()
        assert waiting.wait(timeout=60), "the second builder never waited"  # hold the lock until it waits

    waiting = threading.Event()
    first.subscribe_starts(on_start)
    second.subscribe_starts(lambda e: (starts["second"].append(e.source), waiting.set()))
    done = _events(second)
    t = threading.Thread(target=first.get, args=(train_product(TINY),))
    t.start()
    assert building.wait(timeout=60)
    run = second.get(train_product(TINY))
    t.join()
    assert starts == {"first": ["start"], "second": ["waiting"]}
    assert [(e.kind, e.source) for e in done] == [("train", "loaded")] and run.times == [0.0, 0.25, 0.5, 1.0]


def test_store_entry_says_built_or_loaded(tmp_path: Path) -> None:
    store = Store(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.ones(3)}, {}

    first = store.get_or_create("demo", {"n": 1}, build)
    second = store.get_or_create("demo", {"n": 1}, build)
    assert (first.built, second.built, len(calls)) == (True, False, 1)
    assert first.seconds == pytest.approx(first.meta["wall_time_s"])
    assert torch.equal(second.tensors["x"], torch.ones(3))


# --------------------------------------------------------------------------- complete keys
def _barrier_key(lab: Lab, config: TrainConfig, **opts) -> str:
    a, b = train_product(config), train_product(config.replace(init_seed=5))
    return barrier_product(Ref(a), Ref(b), options=BarrierOptions(**opts), builder=lab).key


def test_barrier_keys_hold_what_changes_numbers_and_not_speed(lab: Lab) -> None:
    base = _barrier_key(lab, TINY)
    # speed options never split a key
    for speed in ({"engine": "loop"}, {"batch_size": 17}, {"first_layer_shortcut": False},
                  {"channels_last": True}, {"vmap_chunk": 3}):
        assert _barrier_key(lab, TINY, **speed) == base, speed
    # precision does (bf16 is what CUDA's default gives; fp32 is what the CPU's default gives)
    assert _barrier_key(lab, TINY, precision="fp32") == base
    assert _barrier_key(lab, TINY, precision="bf16") != base
    assert _barrier_key(lab, TINY, n_examples=100) != base
    assert _barrier_key(lab, TINY, alphas=5) != base
    # BatchNorm options split keys of BatchNorm networks only
    bn = _barrier_key(lab, TINY_BN)
    assert _barrier_key(lab, TINY_BN, bn_batches=3) != bn
    assert _barrier_key(lab, TINY_BN, bn_batch_size=100) != bn
    assert _barrier_key(lab, TINY_BN, bn_reset=False) != bn
    assert _barrier_key(lab, TINY, bn_batches=3) == base


def test_default_bn_batches_match_the_cli_rule() -> None:
    # as many training examples as are evaluated, at most 10k, in batches of 500
    bn_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    assert BarrierOptions().resolve(bn_model, "cpu").bn_batches == 20
    assert BarrierOptions(n_examples=1200).resolve(bn_model, "cpu").bn_batches == 3
    assert BarrierOptions(n_examples=50_000).resolve(bn_model, "cpu").bn_batches == 20
    assert BarrierOptions().resolve(torch.nn.Linear(4, 4), "cpu").bn_batches is None  # nothing to re-estimate


def test_cuda_device_resolves_bf16_and_its_own_key(tmp_path: Path) -> None:
    cpu = Builder(store=Store(tmp_path), device="cpu")
    cuda = Builder(store=Store(tmp_path), device="cuda")  # declaring needs no GPU; building would
    cuda._datasets = cpu._datasets  # share the CPU copy, nothing is evaluated
    cuda.dataset = cpu.dataset  # type: ignore[method-assign]
    a, b = Ref(train_product(TINY)), Ref(train_product(TINY.replace(init_seed=3)))
    on_cpu = barrier_product(a, b, builder=cpu)
    on_cuda = barrier_product(a, b, builder=cuda)
    assert on_cpu.params["options"]["precision"] == "fp32"
    assert on_cuda.params["options"]["precision"] == "bf16"
    assert on_cpu.key != on_cuda.key
    fp32_on_cuda = barrier_product(a, b, options=BarrierOptions(precision="fp32"), builder=cuda)
    assert fp32_on_cuda.key not in (on_cpu.key, on_cuda.key)  # device type is part of the key too


# --------------------------------------------------------------------------- lab wrappers
def test_an_imp_level_can_be_matched_and_measured_through_the_lab(lab: Lab) -> None:
    level = lab.imp_level(TINY, 2, 0.5)
    assert level.mask is not None and sparsity(level.mask).remaining == pytest.approx(0.64, abs=0.01)
    for k, m in level.mask.items():
        assert torch.all(level.final[k][~m] == 0)
    other = lab.run(TINY.replace(init_seed=9, sgd_seed=9))
    perm = lab.match("weight", other, level)
    aligned = lab.barrier(other, level, perm=perm, n_examples=256, alphas=5)
    naive = lab.barrier(other, level, n_examples=256, alphas=5)
    assert aligned.loss_barrier < naive.loss_barrier  # alignment lowers the barrier
    n = len(lab.store.keys())
    fresh = Lab(store=Store(lab.store.root), progress=False)
    events = _events(fresh)
    level_again = fresh.imp_level(TINY, 2, 0.5)
    other_again = fresh.run(TINY.replace(init_seed=9, sgd_seed=9))
    again = fresh.barrier(other_again, level_again, perm=fresh.match("weight", other_again, level_again),
                          n_examples=256, alphas=5)
    assert again == aligned and len(lab.store.keys()) == n
    assert {e.source for e in events} <= {"loaded", "memo", "input"}  # nothing rebuilt
    # each IMP level is its own store entry; levels reuse each other
    imp = lab.imp(TINY, 2, 0.5)
    assert [lv.remaining for lv in imp.levels] == [1.0, pytest.approx(0.8, abs=0.01), pytest.approx(0.64, abs=0.01)]
    assert len(lab.store.keys()) == n
    assert all(torch.equal(imp[2].mask[k], level.mask[k]) for k in level.mask)
    # the levels lab.imp returns can be measured too
    assert lab.barrier(other, imp[2], perm=perm, n_examples=256, alphas=5) == aligned


def test_imp_levels_draw_their_own_data_order(lab: Lab) -> None:
    dense = train_product(TINY)
    seeds = {imp_level_product(dense, k, 0.5).params["sgd_seed"] for k in (1, 2, 3)}
    assert len(seeds) == 3 and TINY.sgd_seed not in seeds


def _permuted_mask_by_apply(perm: Permutation, mask: dict, state: dict) -> dict:
    """The mask moved like the weights: as 0/1 weights of a full state put through ``perm.apply``."""
    full = {k: (mask[k].to(v.dtype) if k in mask else v) for k, v in state.items()}
    moved = perm.apply(full)
    return {k: moved[k] > 0.5 for k in mask}


@pytest.mark.parametrize("by", ["matching", "literal"])
def test_transported_mask_keeps_exactly_the_permuted_positions(lab: Lab, by: str) -> None:
    level = lab.imp_level(TINY, 1, 0.5)
    b = lab.run(TINY.replace(init_seed=4, sgd_seed=4))
    perm = lab.match("weight", b, level)  # aligns the level onto b: P[level] ~ b
    if by == "literal":
        perm = Permutation(perm.spec, {g: t.clone() for g, t in perm.perms.items()})  # not the lab's object
    retrained = lab.retrain_masked(b, 0.5, level, perm=perm)
    expected = _permuted_mask_by_apply(perm, level.mask, level.final)
    assert retrained.mask is not None and set(retrained.mask) == set(expected)
    assert all(torch.equal(retrained.mask[k], expected[k]) for k in expected)
    assert any(not torch.equal(retrained.mask[k], level.mask[k]) for k in expected)  # it did move
    for k, m in expected.items():
        assert torch.all(retrained.final[k][~m] == 0) and torch.all(retrained.state_at(0.5)[k][~m] == 0)
    with pytest.raises(ValueError, match="has no mask"):
        lab.retrain_masked(b, 0.5, b)


def test_networks_of_different_architectures_are_refused_at_declaration(lab: Lab) -> None:
    a = lab.run(TINY)
    wide = lab.run(tiny_config(model_kwargs={"width": 48, "depth": 2}))
    for call in (lambda: lab.barrier(a, wide), lambda: lab.match("weight", a, wide),
                 lambda: lab.simplex([a, a, wide]), lambda: lab.hybrid(a, 0.5, wide, [])):
        with pytest.raises(ValueError, match="model_kwargs"):
            call()
    with pytest.raises(ValueError, match="split must be"):
        lab.simplex([a, a], split="validation")


def test_the_end_state_has_one_key_however_it_is_named(lab: Lab) -> None:
    a, b = lab.run(TINY), lab.run(TINY.replace(init_seed=1, sgd_seed=1))
    assert lab.barrier_product(a, b).key == lab.barrier_product(a, b, time=1.0).key
    assert lab.barrier_product(a, b).key != lab.barrier_product(a, b, time=0.5).key


def test_lab_barrier_keywords_reach_the_key(lab: Lab) -> None:
    a, b = lab.run(TINY), lab.run(TINY.replace(init_seed=1, sgd_seed=1))
    base = lab.barrier_product(a, b).key
    assert lab.barrier_product(a, b, engine="loop", batch_size=7).key == base
    assert lab.barrier_product(a, b, precision="bf16").key != base
    assert lab.barrier_product(a, b, split="train").key != base
    assert lab.barrier_product(a, b, n_examples=99).key != base


def test_hybrid_takes_the_named_entries_from_the_early_checkpoint(lab: Lab) -> None:
    run = lab.run(TINY)
    keys = sorted(run.final)
    early_keys = keys[:2]
    hyb = lab.hybrid(run, 0.25, run, early_keys)
    for k in keys:
        want = run.state_at(0.25)[k] if k in early_keys else run.final[k]
        assert torch.equal(hyb.final[k], want), k
    with pytest.raises(ValueError, match="not a state-dict entry"):
        lab.hybrid(run, 0.25, run, ["no.such.weight"])


def test_a_random_permutation_is_keyed_by_content(lab: Lab) -> None:
    pair = lab.pair(TINY, 0)
    spec = lab.model(TINY).permutation_spec()
    p = Permutation.random(spec, pair.a.final, 1)
    same = Permutation(spec, {g: t.clone() for g, t in p.perms.items()})
    other = Permutation.random(spec, pair.a.final, 2)
    k1 = lab.barrier_product(pair.a, pair.b, perm=p).key
    assert lab.barrier_product(pair.a, pair.b, perm=same).key == k1
    assert lab.barrier_product(pair.a, pair.b, perm=other).key != k1


def test_lab_rejects_runs_it_did_not_make(lab: Lab) -> None:
    run = lab.run(TINY)
    stranger = type(run)(config=run.config, checkpoints=run.checkpoints, metrics=run.metrics, wall_time_s=0.0)
    with pytest.raises(ValueError, match="did not come from the lab"):
        lab.barrier(run, stranger)
    with pytest.raises(KeyError, match="0.75"):
        lab.barrier(run, run, time=0.75)
    with pytest.raises(ValueError, match="unknown matching method"):
        lab.match("telepathy", run, run)
    with pytest.raises(ValueError, match="unknown product kind"):
        Product("telepathy", {})


def test_decoded_networks_are_kept_in_a_bounded_cache(tmp_path: Path) -> None:
    lab = Lab(store=Store(tmp_path), progress=False, max_networks=2)
    for s in range(3):
        lab.run(TINY.replace(init_seed=s, sgd_seed=s))
    assert len(lab._networks) == 2
    events = _events(lab)
    lab.run(TINY.replace(init_seed=0, sgd_seed=0))  # evicted: loaded again, not rebuilt
    assert [(e.kind, e.source) for e in events] == [("train", "loaded")]


def test_datasets_are_loaded_once_per_lab(lab: Lab) -> None:
    assert lab.dataset("fashion-mnist") is lab.dataset("fashion-mnist")


# --------------------------------------------------------------------------- records
CLAIM_WITH_LAB = """
import pytest
from fixtures.pytest_fixtures import lab, _account_products
from lmccheck.kinds import matching_product, train_product
from lmccheck.products import Ref
from lmccheck.verdict import reading
from tiny_recipes import tiny_config


RAN = reading("a test of the product records: the check ran")

@pytest.mark.claim("S97")
def test_uses_products(lab, measure):
    a, b = (train_product(tiny_config(init_seed=s, sgd_seed=s)) for s in (0, 1))
    # one call builds everything, nested: the runs and the matching inside the barrier's get
    res = lab.barrier(a, b, perm=matching_product("weight", Ref(a), Ref(b)), n_examples=128, alphas=3)
    measure.summary = f"{res.loss_barrier:.3f}"
    measure.expect_exact("ran", True, 1.0, "ran", RAN)

@pytest.mark.claim("S96")
def test_reuses_products(lab, measure):
    pair = [lab.run(tiny_config(init_seed=s, sgd_seed=s)) for s in (0, 1)]
    measure.summary = "reused"
    measure.expect_exact("ran", True, 1.0, "ran", RAN)
"""


def test_record_lists_every_key_and_its_build_time(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_claim_products=CLAIM_WITH_LAB)
    root = Path(__file__).resolve().parents[1]
    pytester.syspathinsert(root)
    pytester.syspathinsert(root / "tests")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--lmc-cache={tmp_path / 'store'}",
                                f"--lmc-report={tmp_path / 'report'}", "--lmc-device=cpu")
    result.assert_outcomes(passed=2)
    data = json.loads((tmp_path / "report" / "claims.json").read_text())
    recs = {r["claim"]: r for r in data["records"]}
    store = Store(tmp_path / "store")
    kinds = {k: store.load(k).kind for k in store.keys()}
    # S97 built both runs, the matching and the barrier: four keys, all in its record
    assert sorted(kinds[k] for k in recs["S97"]["fixture_keys"]) == ["barrier", "matching", "train", "train"]
    assert set(recs["S97"]["fixture_keys"]) == set(store.keys())
    p = recs["S97"]["products"]
    assert (p["train"]["built"], p["matching"]["built"], p["barrier"]["built"]) == (2, 1, 1)
    # nested builds are charged once each: the total cannot exceed the wall time
    assert 0 < recs["S97"]["build_time_s"] <= recs["S97"]["wall_time_s"]
    # the barrier's own time excludes the training it waited for: charged twice, the kinds' times would add up
    # to more than the check's wall time
    assert sum(p[k]["build_s"] for k in ("train", "matching", "barrier")) <= recs["S97"]["wall_time_s"]
    assert recs["S97"]["measure_time_s"] == pytest.approx(
        recs["S97"]["wall_time_s"] - recs["S97"]["build_time_s"] - recs["S97"]["load_time_s"], abs=1e-3)
    # S96 reused the runs from the session cache: keys listed, nothing built
    assert sorted(kinds[k] for k in recs["S96"]["fixture_keys"]) == ["train", "train"]
    assert recs["S96"]["build_time_s"] == 0 and recs["S96"]["products"]["train"]["memo"] == 2
    assert data["time"]["kinds"]["train"]["built"] == 2
    # both checks record the seeds of the runs they used, built nested inside the barrier or reused from memory
    for claim in ("S97", "S96"):
        seeds = recs[claim]["seeds"]
        assert sorted((s["init_seed"], s["sgd_seed"]) for s in seeds) == [(0, 0), (1, 1)], (claim, seeds)
        assert {s["key"] for s in seeds} == {k for k in recs[claim]["fixture_keys"] if kinds[k] == "train"}


def test_describe_networks_names_seeds_checkpoints_and_alignment(lab: Lab) -> None:
    from lmccheck.kinds import describe_networks

    pair = lab.pair(TINY, 0)
    a, b = pair.a.config, pair.b.config
    assert describe_networks(train_product(TINY)) == ""  # a training run names its own seeds
    p = lab.match("weight", pair.a, pair.b, time=0.25)
    plain = lab.barrier_product(pair.a, pair.b, time=0.25)
    assert describe_networks(plain) == (f"{a.init_seed}/{a.sgd_seed}@0.25 vs {b.init_seed}/{b.sgd_seed}@0.25")
    aligned = lab.barrier_product(pair.a, pair.b, perm=p)
    end = TINY.epochs
    assert describe_networks(aligned) == (f"{a.init_seed}/{a.sgd_seed}@{end:g} vs {b.init_seed}/{b.sgd_seed}@{end:g}"
                                          ", the second aligned by weight matching")
    given = lab.barrier_product(pair.a, pair.b, perm=Permutation.random(p.spec, pair.a.final, 3))
    assert describe_networks(given).endswith(", the second aligned by a given permutation")
    child = spawn_product(train_product(a), 0.5, 9)
    assert describe_networks(child) == f"{a.init_seed}/{a.sgd_seed}@0.5"  # spawned at 0.5, not the parent's end


# --------------------------------------------------------------------------- pruned copies and mask transport
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_a_pruned_copy_zeroes_exactly_its_mask_and_is_derived_not_stored(lab: Lab, method: str) -> None:
    run = lab.run(TINY)
    product = lab.pruned_product(run, 0.5, 0.75, method)
    n_entries = len(lab.store.keys())
    pruned = lab.get(product)
    assert len(lab.store.keys()) == n_entries  # derived on demand, like a hybrid
    assert pruned.mask is not None and set(pruned.mask) == set(prunable_keys(run.final, include_head=True))
    stats = sparsity(pruned.mask)
    assert stats.total - stats.kept == int(0.75 * stats.total + 0.5)
    source = run.state_at(0.5)
    for k, v in pruned.final.items():
        if k in pruned.mask:
            assert torch.all(v[~pruned.mask[k]] == 0) and torch.equal(v[pruned.mask[k]], source[k][pruned.mask[k]])
        else:
            assert torch.equal(v, source[k])  # biases untouched
    if method == "random":
        assert product.params["seed"] != 0  # recorded in the recipe
        assert lab.pruned_product(run, 0.5, 0.75, method).key == product.key
        assert lab.pruned_product(run, 1.0, 0.75, method).params["seed"] != product.params["seed"]
    # a matching of pruned copies is a stored product keyed by the pruning
    other = lab.run(TINY.replace(init_seed=5, sgd_seed=5))
    perm = lab.match("weight", product, lab.pruned_product(other, 0.5, 0.75, method))
    assert perm.spec.group_names
    assert lab.pruned_product(run, 0.5, 0.5, method).key != product.key


def test_a_pruned_copy_refuses_bad_sparsity_and_method(lab: Lab) -> None:
    run = lab.run(TINY)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        lab.pruned_product(run, 0.5, 1.0)
    with pytest.raises(ValueError, match="unknown pruning method"):
        lab.pruned_product(run, 0.5, 0.5, "largest")
    with pytest.raises(KeyError):
        lab.pruned_product(run, 0.3, 0.5)  # no checkpoint there


def test_transported_applies_the_mask_to_the_permuted_network(lab: Lab) -> None:
    """``transported(B, k, A_level, P)`` with P[B] ~ A: retraining P[B] under m_A, stored as B under P^-1[m_A]."""
    level = lab.imp_level(TINY, 1, 0.5)
    b = lab.run(TINY.replace(init_seed=4, sgd_seed=4))
    perm = lab.match("weight", level, b)  # P[b] ~ level
    moved = lab.transported(b, 0.5, level, perm, sgd_seed=11)
    assert moved.mask is not None and moved.config.sgd_seed == 11
    aligned = perm.apply(moved.final)
    for k, m in level.mask.items():
        # in A's coordinates the retrained network keeps exactly A's positions, and the pruned ones stay 0
        assert torch.equal(perm.apply({**moved.final, **{kk: mm.float() for kk, mm in moved.mask.items()}})[k] > 0.5, m)
        assert torch.all(aligned[k][~m] == 0)
    assert any(not torch.equal(moved.mask[k], level.mask[k]) for k in level.mask)  # it did move in B's coordinates
    # the control applies A's mask to B as it is
    control = lab.transported(b, 0.5, level, None, sgd_seed=11)
    assert all(torch.equal(control.mask[k], level.mask[k]) for k in level.mask)
    # the transported network is keyed by the permutation's content: the same permutation rebuilt is the same
    same = Permutation(perm.spec, {g: t.clone() for g, t in perm.perms.items()})
    assert lab.transported(b, 0.5, level, same, sgd_seed=11).info["store_key"] == moved.info["store_key"]


def test_masked_applies_the_transported_mask_to_the_trained_network_without_training(lab: Lab) -> None:
    """App. F 5(a)'s ``P B ⊗ M_A``: B's trained weights under A's mask in A's coordinates, nothing retrained."""
    level = lab.imp_level(TINY, 1, 0.5)
    b = lab.run(TINY.replace(init_seed=4, sgd_seed=4))
    perm = lab.match("weight", level, b)  # P[b] ~ level
    n_entries = len(lab.store.keys())
    net = lab.get(lab.masked_product(b, level, perm))
    assert len(lab.store.keys()) == n_entries  # derived, never stored
    expected = apply_mask(perm.apply(b.final), level.mask)  # P B ⊗ M_A
    aligned = perm.apply(net.final)
    assert all(torch.equal(aligned[k], expected[k]) for k in expected)
    control = lab.get(lab.masked_product(b, level, None))  # B ⊗ M_A
    assert all(torch.equal(control.final[k], apply_mask(b.final, level.mask)[k]) for k in b.final)
    oneshot = lab.get(lab.masked_product(b, b, None, oneshot_remaining=0.3))
    stats = sparsity(oneshot.mask)
    assert stats.kept == int(0.3 * stats.total + 0.5)
    assert all(torch.equal(oneshot.final[k], apply_mask(b.final, one_shot_prune(b.final, 0.3))[k]) for k in b.final)
    early = lab.get(lab.masked_product(b, level, None, at=0.5))
    assert all(torch.equal(early.final[k], apply_mask(b.state_at(0.5), level.mask)[k]) for k in b.final)
    with pytest.raises(ValueError, match="pass perm=None with oneshot_remaining"):
        lab.get(lab.masked_product(b, b, perm, oneshot_remaining=0.3))
    with pytest.raises(ValueError, match="has no mask"):
        lab.get(lab.masked_product(level, b, None))
    wide = lab.run(tiny_config(model_kwargs={"width": 48, "depth": 2}))
    with pytest.raises(ValueError, match="model_kwargs"):
        lab.get(lab.masked_product(wide, level, None))


def test_imp_and_one_shot_masks_do_not_depend_on_whether_the_dense_run_was_loaded(tmp_path: Path) -> None:
    """A state read back from the store has sorted names (``head.weight`` first): the head is found by the spec,
    so an IMP level and a one-shot mask are the same whether the dense run was trained in this process or not."""
    fresh = Lab(store=Store(tmp_path / "a"), progress=False)
    in_process = fresh.imp_level(TINY, 1, 0.5)
    Lab(store=Store(tmp_path / "b"), progress=False).run(TINY)
    loaded_lab = Lab(store=Store(tmp_path / "b"), progress=False)  # the dense run comes from disk
    assert list(loaded_lab.run(TINY).final)[0].startswith("head")  # the order that used to mislead
    loaded = loaded_lab.imp_level(TINY, 1, 0.5)
    for level in (in_process, loaded):
        assert set(level.mask) == {"layers.0.weight", "layers.1.weight"}  # the head is never pruned
    assert all(torch.equal(in_process.mask[k], loaded.mask[k]) for k in in_process.mask)
    dense = loaded_lab.run(TINY)
    oneshot = loaded_lab.get(loaded_lab.masked_product(dense, dense, None, oneshot_remaining=0.5))
    assert set(oneshot.mask) == {"layers.0.weight", "layers.1.weight"}
    assert set(loaded_lab.imp(TINY, 1, 0.5)[0].mask) == {"layers.0.weight", "layers.1.weight"}


#: the version each kind reached with a fix that made its earlier stored products wrong: never go back below it,
#: or a store built before the fix would serve those products again, under their old keys (git log -S'Kind("...", 2')
VERSION_FLOORS = {
    "imp_level": 2,  # 0af1514: masks named the head by a stored state's sorted names (the last hidden layer)
    "retrain": 2,  # 0af1514: the same, for the masks it retrains under
    "pruned": 2,  # ab3736f: random scores and ties drawn in the inputs' order, not in sorted key order
}


def test_no_kind_goes_back_to_a_version_before_its_last_fix() -> None:
    registered = kinds()
    assert all(registered[name].version >= floor for name, floor in VERSION_FLOORS.items())


def test_the_stores_code_versions_are_the_registered_kinds_versions() -> None:
    """One code-version mechanism: ``Kind.version``; the store's table holds those and no other kind."""
    from lmccheck.recipe_keys import CODE_VERSION, code_version

    registered = kinds()
    assert CODE_VERSION == {name: kind.version for name, kind in registered.items()}
    assert all(code_version(name) == kind.version for name, kind in registered.items())
