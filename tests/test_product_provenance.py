"""A product is a function of its recipe: the same bits whether its inputs were built in this process or read
back from the store.

A state read back from the store has its names sorted (``head.weight`` first); one trained in this process is
in module order. Anything that walks a state in its dict order (random scores drawn key by key, ties broken by
position) would give one key two values. Every product kind is built here twice, from in-memory inputs and from
the same inputs loaded from disk, and the stored tensors and metadata must agree bit for bit.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from fixtures import Lab
from lmccheck.kinds import (
    barrier_product,
    feature_product,
    hybrid_product,
    imp_level_product,
    masked_product,
    pruned_product,
    matching_product,
    retrain_product,
    simplex_product,
    spawn_product,
    train_product,
)
from lmccheck.products import Product, kinds
from lmccheck.store import Store

from tiny_recipes import tiny_config

TINY_A = tiny_config(init_seed=1, sgd_seed=11)
TINY_B = tiny_config(init_seed=2, sgd_seed=12)
TINY_C = tiny_config(init_seed=3, sgd_seed=13)

# metadata that records how long a build took, not what it computed
_CLOCK_WORDS = ("wall_time", "seconds", "elapsed")


def _declare(lab: Lab) -> list[Product]:
    """One product of every kind (several for the kinds with variants), each on top of the ones before it."""
    a, b, c = (train_product(cfg) for cfg in (TINY_A, TINY_B, TINY_C))
    ra, rb, rc = (lab.ref(p) for p in (a, b, c))
    wm = matching_product("weight", ra, rb, seed=0, options={}, device=lab.device)
    am = matching_product("activation", ra, rb, seed=0, options={}, device=lab.device)
    level = imp_level_product(a, 1, 0.25)
    opts = lab.barrier_options.replace(n_examples=256, alphas=5)
    products = [
        spawn_product(a, 0.25, 7),
        level,
        retrain_product(lab.ref(b, 0.25), level, perm=wm),
        masked_product(rb, level, perm=None),
        hybrid_product(lab.ref(a, 0.25), ra, ["layers.0.weight", "layers.0.bias"]),
        pruned_product(ra, 0.5, "magnitude"),
        pruned_product(ra, 0.5, "random"),
        wm,
        am,
        matching_product("commutativity", ra, rb, seed=0, options={}, device=lab.device),
        barrier_product(ra, rb, perm=wm, options=opts, builder=lab),
        barrier_product(lab.ref(pruned_product(ra, 0.5, "random")), rb, options=opts, builder=lab),
        simplex_product([ra, rb, rc], perms=None, resolution=3, options=opts, builder=lab),
    ]
    products += [feature_product(m, ra, rb, perm=am, n_examples=128, builder=lab)
                 for m in ("llfc", "commutativity", "stitching")]
    products.append(feature_product("spectra", ra, ra, n_examples=128, builder=lab))
    return products


def _without_clock(meta: Any) -> Any:
    if isinstance(meta, dict):
        return {k: _without_clock(v) for k, v in meta.items() if not any(w in k for w in _CLOCK_WORDS)}
    if isinstance(meta, list | tuple):
        return [_without_clock(v) for v in meta]
    if isinstance(meta, float) and math.isnan(meta):
        return "nan"
    return meta


def _built(lab: Lab, product: Product) -> tuple[dict[str, torch.Tensor], Any]:
    """Build ``product`` now (not from the store) from whatever inputs ``lab`` holds."""
    tensors, meta = kinds()[product.kind].build(product, lab)
    return tensors, json.loads(json.dumps(_without_clock(meta), sort_keys=True, default=str))


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Product, tuple, tuple]]:
    root = tmp_path_factory.mktemp("provenance")
    in_memory = Lab(store=Store(root / "memory"), progress=False)
    products = _declare(in_memory)
    for p in products:  # every input built in this process, in module order
        in_memory.get(p)
    filler = Lab(store=Store(root / "disk"), progress=False)
    for p in products:
        filler.get(p)
    from_disk = Lab(store=Store(root / "disk"), progress=False)  # every input read back: names sorted
    assert next(iter(from_disk.run(TINY_A).final)).startswith("head")  # the order that used to mislead
    assert not next(iter(in_memory.run(TINY_A).final)).startswith("head")
    return [(p, _built(in_memory, p), _built(from_disk, p)) for p in products]


@pytest.mark.slow
def test_every_kind_is_exercised(both_ways: list[tuple[Product, tuple, tuple]]) -> None:
    assert {p.kind for p, _, _ in both_ways} | {"train"} == set(kinds())


def test_a_product_is_the_same_whether_its_inputs_were_in_memory_or_loaded(
    both_ways: list[tuple[Product, tuple, tuple]],
) -> None:
    differ = []
    for product, (t_mem, m_mem), (t_disk, m_disk) in both_ways:
        name = f"{product.kind} {product.describe()}"
        if set(t_mem) != set(t_disk):
            differ.append(f"{name}: tensor names {sorted(set(t_mem) ^ set(t_disk))}")
            continue
        bad = [k for k in t_mem if not torch.equal(t_mem[k], t_disk[k])]
        if bad:
            differ.append(f"{name}: tensors {bad[:3]}")
        if m_mem != m_disk:
            differ.append(f"{name}: metadata {m_mem} != {m_disk}")
    assert not differ, "\n".join(differ)
