"""The ensemble trainer against separate training, on small MLPs on the CPU."""

from __future__ import annotations

import pytest
import torch

from lmccheck.data import Dataset, Split
from lmccheck.ensemble import train_together
from lmccheck.training import TrainConfig, spawn, train
from lmccheck.training_loop import TrainingDivergedError

from tiny_recipes import tiny_config


def tiny_data(name: str = "fashion-mnist", size: int = 6, n: int = 300) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, size, size, generator=g)
    y = (x.flatten(1)[:, :5].argmax(1) + (x.flatten(1)[:, 5] > 0).long()) % 5  # learnable labels
    xt = torch.randn(100, 1, size, size, generator=g)
    yt = (xt.flatten(1)[:, :5].argmax(1) + (xt.flatten(1)[:, 5] > 0).long()) % 5
    return Dataset(name=name, train=Split(x, y), test=Split(xt, yt), num_classes=5, in_channels=1,
                   input_size=size, mean=(0.0,), std=(1.0,), augmentable=name == "cifar10")


def recipe(**kw: object) -> TrainConfig:
    base = dict(arch="mlp", model_kwargs={"width": 16, "depth": 2}, epochs=2.0, batch_size=32, lr=0.05,
                momentum=0.9, weight_decay=5e-4, warmup_epochs=0.5, checkpoints=(0.0, 0.5, 1.0), eval_examples=100)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def assert_same_run(got, ref, atol: float = 2e-5) -> None:
    assert got.config == ref.config and got.times == ref.times
    for t in ref.times:
        s, r = got.state_at(t), ref.state_at(t)
        assert list(s) == list(r)
        for k in r:
            assert torch.allclose(s[k], r[k], atol=atol, rtol=1e-4), (t, k, float((s[k] - r[k]).abs().max()))
        for k in ("train_loss", "test_loss"):
            assert got.metrics_at(t)[k] == pytest.approx(ref.metrics_at(t)[k], abs=1e-4)
        assert got.metrics_at(t)["step"] == ref.metrics_at(t)["step"]


def test_replicates_trained_together_are_the_runs_trained_alone() -> None:
    data = tiny_data()
    configs = [recipe(init_seed=i, sgd_seed=10 + i) for i in range(3)]
    together = train_together(configs, data=data, progress=False)
    for run, c in zip(together, configs, strict=True):
        assert_same_run(run, train(c, data=data, progress=False))
        assert run.info["trained_together"] == 3
    # the members really are different runs (own init, own data order)
    a, b = together[0].final["layers.0.weight"], together[1].final["layers.0.weight"]
    assert not torch.allclose(a, b)


def test_each_member_draws_its_own_augmentation_noise() -> None:
    data = tiny_data("cifar10")
    configs = [recipe(dataset="cifar10", augment=True, init_seed=i, sgd_seed=20 + i, epochs=1.0) for i in range(2)]
    for run, c in zip(train_together(configs, data=data, progress=False), configs, strict=True):
        assert_same_run(run, train(c, data=data, progress=False))


def test_a_conv_net_with_layernorm_trains_together_as_alone() -> None:
    """vmap over convolutions and LayerNorm (the GPU tier's VGG / ResNet path), on a tiny VGG-11."""
    data = tiny_data(size=28, n=96)
    configs = [recipe(arch="vgg11", model_kwargs={"width": 0.0625, "norm": "layernorm"}, epochs=1.0,
                      checkpoints=(0.0, 1.0), init_seed=i, sgd_seed=30 + i) for i in range(2)]
    for run, c in zip(train_together(configs, data=data, progress=False), configs, strict=True):
        assert_same_run(run, train(c, data=data, progress=False), atol=1e-4)


def test_a_member_keeps_its_data_order_when_only_the_sgd_seed_differs() -> None:
    """Same init, different SGD noise: the members must still end apart, each as it would alone."""
    data = tiny_data()
    configs = [recipe(init_seed=0, sgd_seed=s) for s in (1, 2)]
    together = train_together(configs, data=data, progress=False)
    assert not torch.allclose(together[0].final["layers.0.weight"], together[1].final["layers.0.weight"])
    assert_same_run(together[1], train(configs[1], data=data, progress=False))


def test_children_and_masked_retrainings_together() -> None:
    data = tiny_data()
    parent = train(recipe(init_seed=0, sgd_seed=0), data=data, progress=False)
    children = [recipe(init_seed=0, sgd_seed=s) for s in (5, 6)]
    state = parent.state_at(0.5)
    got = train_together(children, init_states=[state, state], start_epoch=0.5, data=data, progress=False)
    for run, c in zip(got, children, strict=True):
        assert_same_run(run, spawn(c, parent, 0.5, c.sgd_seed, data=data, progress=False))
    g = torch.Generator().manual_seed(3)
    masks = [{"layers.0.weight": torch.rand(16, 36, generator=g) > 0.5} for _ in range(2)]
    got = train_together(children, init_states=[state, state], start_epoch=0.5, masks=masks, data=data,
                         progress=False)
    for run, c, mk in zip(got, children, masks, strict=True):
        ref = train(c, init_state=state, start_epoch=0.5, mask=mk, data=data, progress=False)
        assert_same_run(run, ref)
        assert torch.equal(run.mask["layers.0.weight"], mk["layers.0.weight"])
        assert bool((run.final["layers.0.weight"][~mk["layers.0.weight"]] == 0).all())


def test_bad_ensembles_are_refused_with_the_reason() -> None:
    data = tiny_data()
    with pytest.raises(ValueError, match="differs from member 0 in lr"):
        train_together([recipe(), recipe(lr=0.1, init_seed=1)], data=data)
    with pytest.raises(ValueError, match="at least one"):
        train_together([], data=data)
    with pytest.raises(TypeError, match="positional"):  # keyword-only: an init state is never taken for data
        train_together([recipe()], [None], data=data)  # type: ignore[misc]
    with pytest.raises(ValueError, match="BatchNorm"):
        train_together([recipe(model_kwargs={"width": 8, "depth": 2, "norm": "batchnorm"})], data=data)
    with pytest.raises(ValueError, match="init_states: 1 given for 2 members"):
        train_together([recipe(), recipe(init_seed=1)], init_states=[None], data=data)
    with pytest.raises(ValueError, match="same parameters"):
        train_together([recipe(), recipe(init_seed=1)], data=data,
                       masks=[{"layers.0.weight": torch.ones(16, 36, dtype=torch.bool)}, None])
    with pytest.raises(TrainingDivergedError, match=r"member \d's"):
        train_together([recipe(lr=1e6, init_seed=i, warmup_epochs=0.0) for i in range(2)], data=data)


def test_the_lab_trains_missing_replicates_together_and_stores_each_under_its_own_key(tmp_path) -> None:
    from fixtures import Lab
    from fixtures.recipes import pair_configs
    from lmccheck.kinds import train_product
    from lmccheck.store import Store

    tiny = tiny_config(model_kwargs={"width": 16, "depth": 2}, train_subset=256, warmup_epochs=0.0,
                       checkpoints=(0.0, 0.5, 1.0), eval_examples=64)
    lab = Lab(store=Store(tmp_path / "store"), progress=False, together=True)
    events: list = []
    lab.subscribe(events.append)
    pairs = lab.pairs(tiny, 2)
    built = [e for e in events if e.source == "built"]
    assert len(built) == 4 and all("trained together" in e.label for e in built)
    configs = [c for r in range(2) for c in pair_configs(tiny, r)]
    assert {e.key for e in built} == {train_product(c).key for c in configs}
    data = lab.dataset(tiny.dataset)
    for run, c in zip([n for p in pairs for n in (p.a, p.b)], configs, strict=True):
        assert run.config == c
        assert_same_run(run, train(c, data=data, progress=False))
    # a new session finds every run in the store: nothing is trained again, together or alone
    again = Lab(store=Store(tmp_path / "store"), progress=False, together=True)
    assert again.build_together(configs) == 0
    sources: list = []
    again.subscribe(sources.append)
    again.pairs(tiny, 2)
    assert {e.source for e in sources if e.kind == "train"} == {"loaded"}
    # the default trains one run at a time
    alone = Lab(store=Store(tmp_path / "alone"), progress=False)
    assert alone.build_together(configs) == 0
