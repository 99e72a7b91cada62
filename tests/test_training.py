"""Tests of lmccheck.training: determinism, checkpoints, continuation, spawning, errors, schedules.

Every run is tiny (MLP width 32 on 512 Fashion-MNIST examples, batch 64, one
or two epochs: 8-16 steps), so the whole file takes seconds on one core.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from lmccheck.data import Dataset, Split, load_dataset
from lmccheck.training import FrozenKwargs, Run, TrainConfig, build_model, spawn, train
from lmccheck.training_loop import TrainingDivergedError, checkpoint_step, epoch_permutation, lr_at, steps_per_epoch

from tiny_recipes import tiny_config


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion-mnist")


def tiny(**kw) -> TrainConfig:
    return tiny_config(**kw)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def reference_metrics(cfg: TrainConfig, data: Dataset, state: dict) -> dict[str, float]:
    """Loss and accuracy of ``state`` by plain code: a fresh model, one forward pass per split."""
    model = build_model(cfg, data)
    model.load_state_dict(state)
    model.eval()
    n = cfg.eval_examples
    out = {}
    for name, split in (("train", data.train.take(cfg.train_subset).take(n)), ("test", data.test.take(n))):
        with torch.no_grad():
            logits = model(split.x)
        out[f"{name}_loss"] = float(F.cross_entropy(logits, split.y))
        out[f"{name}_acc"] = float((logits.argmax(1) == split.y).double().mean())
    return out


# --------------------------------------------------------------------------- config
def test_config_normalizes_and_hashes_stably():
    a = tiny(model_kwargs={"depth": 2, "width": 32}, checkpoints=(0.5, 0, 0.25))
    b = tiny(model_kwargs=(("width", 32), ("depth", 2)), checkpoints=(0.25, 0.5))
    assert a == b and hash(a) == hash(b)
    assert a.checkpoints == (0.0, 0.25, 0.5, 1.0)  # 0 and the end are always there
    assert isinstance(a.model_kwargs, dict) and dict(a.model_kwargs) == {"depth": 2, "width": 32}
    recipe = a.recipe()
    assert "device" not in recipe
    assert json.loads(json.dumps(recipe)) == recipe
    assert a.replace(device="cuda").recipe() == recipe
    assert a.replace(sgd_seed=3).recipe() != recipe


def test_recipe_roundtrip():
    cfg = tiny(device="cuda")
    back = TrainConfig.from_recipe(json.loads(json.dumps(cfg.recipe())))
    assert back == cfg.replace(device="cpu")
    with pytest.raises(ValueError, match="unknown field 'foo'"):
        TrainConfig.from_recipe({**cfg.recipe(), "foo": 1})


def test_model_kwargs_are_frozen():
    cfg = tiny()
    with pytest.raises(TypeError, match="frozen"):
        cfg.model_kwargs["width"] = 64  # type: ignore[index]
    assert FrozenKwargs({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="only str, int, float"):
        tiny(model_kwargs={"width": [32]})


def test_replace_epochs_moves_the_end_checkpoint():
    cfg = tiny(epochs=2, checkpoints=(0, 1))
    assert cfg.replace(epochs=3).checkpoints == (0.0, 1.0, 3.0)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"arch": "nope"}, "unknown arch 'nope'; available"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; available"),
        ({"checkpoints": (0, 1.5)}, "beyond the last epoch"),
        ({"checkpoints": (-0.5,)}, "negative"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"precision": "fp16"}, "unknown precision"),
        ({"model_kwargs": {"num_classes": 3}}, "comes from the dataset"),
        ({"model_kwargs": {"norm": "weird"}}, "unknown norm"),
        ({"augment": True}, "no augmentation"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_validate_rejects_bad_configs(changes, match):
    with pytest.raises(ValueError, match=match):
        tiny(**changes).validate()


def test_train_rejects_bad_input(data):
    cfg = tiny()
    with pytest.raises(ValueError, match="unknown arch"):
        train(tiny(arch="resnet99"), data=data)
    with pytest.raises(ValueError, match="init_state"):
        train(cfg, start_epoch=0.5, data=data)
    with pytest.raises(ValueError, match="exceeds the 60000 training examples"):
        train(tiny(train_subset=10**6), data=data)
    wrong = build_model(tiny(model_kwargs={"width": 16, "depth": 2}), data).state_dict()
    with pytest.raises(ValueError, match="shape"):
        train(cfg, init_state=wrong, data=data)


# --------------------------------------------------------------------------- schedule
def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(arch="mlp", epochs=4, lr=1.0, warmup_epochs=1, schedule="cosine")
    spe = 10  # 40 steps, 10 of warmup
    assert lr_at(cfg, 0, spe) == pytest.approx(0.1)
    assert lr_at(cfg, 4, spe) == pytest.approx(0.5)
    assert lr_at(cfg, 9, spe) == pytest.approx(1.0)
    assert lr_at(cfg, 10, spe) == pytest.approx(1.0)
    assert lr_at(cfg, 25, spe) == pytest.approx(0.5)  # half way through the cosine
    assert lr_at(cfg, 39, spe) == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))
    assert all(lr_at(cfg, s, spe) >= lr_at(cfg, s + 1, spe) for s in range(10, 39))


def test_lr_schedule_step_and_constant():
    step = TrainConfig(arch="mlp", epochs=4, lr=1.0, schedule="step")
    assert [lr_at(step, s, 10) for s in (0, 19, 20, 29, 30, 39)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    const = TrainConfig(arch="mlp", epochs=4, lr=0.3, warmup_epochs=0.5, schedule="constant")
    assert [lr_at(const, s, 10) for s in (0, 4, 5, 39)] == pytest.approx([0.06, 0.3, 0.3, 0.3])


def test_step_accounting():
    assert steps_per_epoch(512, 64) == 8
    assert steps_per_epoch(500, 64) == 8  # the last, smaller batch is kept
    assert checkpoint_step(0.25, 8) == 2
    assert checkpoint_step(0.5, 3) == 2  # rounded half up
    p = epoch_permutation(0, 3, 100)
    assert torch.equal(p, epoch_permutation(0, 3, 100))
    assert not torch.equal(p, epoch_permutation(0, 4, 100))
    assert not torch.equal(p, epoch_permutation(1, 3, 100))
    assert torch.equal(p.sort().values, torch.arange(100))


# --------------------------------------------------------------------------- determinism
def test_same_config_is_bitwise_identical(data):
    a = train(tiny(), data=data)
    b = train(tiny(), data=data)
    for t in a.times:
        assert states_equal(a.state_at(t), b.state_at(t))
    assert a.metrics == b.metrics


def test_seeds_are_separate(data):
    base = train(tiny(sgd_seed=1), data=data)
    other_sgd = train(tiny(sgd_seed=2), data=data)
    other_init = train(tiny(init_seed=1, sgd_seed=1), data=data)
    assert states_equal(base.state_at(0), other_sgd.state_at(0))
    assert not torch.equal(base.final["layers.0.weight"], other_sgd.final["layers.0.weight"])
    assert not torch.equal(base.state_at(0)["layers.0.weight"], other_init.state_at(0)["layers.0.weight"])


def test_global_rng_untouched(data):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    train(tiny(), data=data)
    assert torch.equal(before, torch.get_rng_state())


# --------------------------------------------------------------------------- checkpoints and metrics
def test_checkpoints_and_metrics(data):
    cfg = tiny(epochs=2, checkpoints=(0, 0.25, 0.5, 1, 2))
    run = train(cfg, data=data)
    assert run.times == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert states_equal(run.state_at(0), build_model(cfg, data).state_dict())
    spe = run.info["steps_per_epoch"]
    assert spe == 8 and run.info["total_steps"] == 16
    for t in run.times:
        m = run.metrics_at(t)
        assert m["step"] == checkpoint_step(t, spe) and m["epoch"] == m["step"] / spe
        assert m["lr"] == (lr_at(cfg, int(m["step"]), spe) if t < cfg.epochs else 0.0)
        # the metrics are those of this checkpoint's state, on the first eval_examples examples
        # of the training subset and of the test split (recomputed independently)
        assert m == pytest.approx({**m, **reference_metrics(cfg, data, run.state_at(t))}, abs=1e-5)
        assert all(v.device.type == "cpu" for v in run.state_at(t).values())
    # states are independent copies
    assert not torch.equal(run.state_at(0.25)["layers.0.weight"], run.state_at(0.5)["layers.0.weight"])
    with pytest.raises(KeyError, match=r"no checkpoint at epoch 0.75.*available times: 0, 0.25, 0.5, 1, 2"):
        run.state_at(0.75)
    assert states_equal(run.final, run.state_at(2))


def test_loss_decreases(data):
    run = train(tiny(train_subset=1024, epochs=3, lr=0.05, checkpoints=(0, 1)), data=data)
    m0, m1, m3 = run.metrics_at(0), run.metrics_at(1), run.metrics_at(3)
    assert m3["train_loss"] < m1["train_loss"] < m0["train_loss"]
    assert m3["test_acc"] > 0.6  # chance is 0.1


def test_adam_and_step_schedule_run(data):
    run = train(tiny(optimizer="adam", lr=1e-3, schedule="step", weight_decay=1e-4), data=data)
    assert run.final_metrics["train_loss"] < run.metrics_at(0)["train_loss"]


def test_divergence_raises(data):
    with pytest.raises(TrainingDivergedError, match="lower the learning rate") as e:
        train(tiny(lr=1e6, warmup_epochs=0, momentum=0.9), data=data)
    assert isinstance(e.value, ValueError)
    assert "step" in str(e.value) and "epoch" in str(e.value)


def test_record_roundtrip(data):
    run = train(tiny(), data=data)
    tensors, meta = run.to_record()
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    meta = json.loads(json.dumps(meta))
    back = Run.from_record(run.config, tensors, meta)
    assert back.times == run.times and back.metrics == run.metrics
    for t in run.times:
        assert states_equal(back.state_at(t), run.state_at(t))


# --------------------------------------------------------------------------- continuation and spawning
def test_continuation_without_momentum_is_exact(data):
    """Without optimizer state the continued run must replay the same batches and lrs."""
    cfg = tiny(momentum=0.0, checkpoints=(0, 0.5))
    full = train(cfg, data=data)
    cont = train(cfg, init_state=full.state_at(0.5), start_epoch=0.5, data=data)
    assert cont.times == [0.5, 1.0]
    assert states_equal(cont.final, full.final)


def test_continuation_resets_momentum(data):
    cfg = tiny(momentum=0.9, checkpoints=(0, 0.5))
    full = train(cfg, data=data)
    cont = train(cfg, init_state=full.state_at(0.5), start_epoch=0.5, data=data)
    assert not states_equal(cont.final, full.final)


def test_spawned_children_share_the_parent_then_differ(data):
    cfg = tiny(epochs=2, checkpoints=(0, 0.5, 1))
    parent = train(cfg, data=data)
    a = spawn(cfg, parent, 0.5, sgd_seed=10, data=data)
    b = spawn(cfg, parent.checkpoints, 0.5, sgd_seed=11, data=data)
    assert a.times == b.times == [0.5, 1.0, 2.0]
    assert a.config.sgd_seed == 10 and b.config.sgd_seed == 11
    assert states_equal(a.state_at(0.5), parent.state_at(0.5))
    assert states_equal(b.state_at(0.5), parent.state_at(0.5))
    assert not torch.equal(a.final["layers.0.weight"], b.final["layers.0.weight"])
    assert not torch.equal(a.final["layers.0.weight"], parent.final["layers.0.weight"])
    again = spawn(cfg, parent, 0.5, sgd_seed=10, data=data)
    assert states_equal(again.final, a.final)


def test_spawn_at_non_checkpoint_raises(data):
    cfg = tiny()
    parent = train(cfg, data=data)
    with pytest.raises(ValueError, match=r"no checkpoint there; available times: 0, 0.25, 0.5, 1"):
        spawn(cfg, parent, 0.75, sgd_seed=1, data=data)


def test_progress_bar(data, capsys):
    train(tiny(), progress=True, data=data)
    assert "train mlp init=0 sgd=0" in capsys.readouterr().err
    train(tiny(), data=data)  # auto: stderr is captured, not a terminal -> no bar
    assert "train mlp" not in capsys.readouterr().err


def test_a_continued_runs_bar_counts_the_steps_it_takes(data, monkeypatch):
    """The bar's total is the steps still to run (from ``start_epoch``), and each step moves it by one."""
    import tqdm.auto

    bars: list[dict[str, int]] = []

    class Recorder:
        def __init__(self, total: int, **_: object) -> None:
            bars.append({"total": total, "n": 0})

        def update(self, n: int) -> None:
            bars[-1]["n"] += n

        def set_postfix(self, *_: object, **__: object) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    cfg = tiny(checkpoints=(0, 0.5))  # 512 examples in batches of 64: 8 steps an epoch
    full = train(cfg, progress=True, data=data)
    train(cfg, init_state=full.state_at(0.5), start_epoch=0.5, progress=True, data=data)
    assert bars == [{"total": 8, "n": 8}, {"total": 4, "n": 4}]


def test_seeds_mixed_from_parts_are_63_bit() -> None:
    from lmccheck.training_loop import _mix

    seeds = [_mix("order", 0, epoch) for epoch in range(256)]
    assert all(0 <= s < 2**63 for s in seeds) and max(seeds) >= 2**62 and len(set(seeds)) == 256


def test_evaluating_no_examples_is_refused_with_the_reason() -> None:
    from lmccheck.training_loop import evaluate

    model = build_model(tiny(), load_dataset("fashion-mnist"))
    with pytest.raises(ValueError, match="no examples to evaluate"):
        evaluate(model, torch.empty(0, 1, 28, 28), torch.empty(0, dtype=torch.long))
    x, y = load_dataset("fashion-mnist").test.take(3).x, load_dataset("fashion-mnist").test.take(3).y
    loss, acc = evaluate(model, x, y, batch_size=2)  # a mean over all 3, across a short last batch
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-5)
        assert acc == float((model(x).argmax(1) == y).float().mean())


def fake_cifar(n: int = 256) -> Dataset:
    """A random CIFAR-shaped, augmentable dataset (no download needed)."""
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    return Dataset("cifar10", split, split, 10, 3, 32, (0.5,) * 3, (0.25,) * 3, True)


def test_conv_net_with_augmentation_is_deterministic():
    data = fake_cifar(128)
    cfg = tiny(arch="resnet20", model_kwargs={"width": 0.25}, dataset="cifar10", augment=True, epochs=0.5,
               train_subset=None, eval_examples=64,
               warmup_epochs=0, checkpoints=(0,))
    a = train(cfg, data=data)
    b = train(cfg, data=data)
    plain = train(cfg.replace(augment=False), data=data)
    assert states_equal(a.final, b.final)
    assert not torch.equal(a.final["conv1.weight"], plain.final["conv1.weight"])
    with pytest.raises(ValueError, match="data is 'cifar10' but the config trains on 'fashion-mnist'"):
        train(tiny(), data=data)
