"""--lmc-budget smoke and dryrun: the GPU settings at a reduced size that still runs each claim's whole path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.recipes import (
    CPU,
    DRYRUN,
    DRYRUN_KEEP,
    GPU,
    PAPER_EPOCHS,
    REGIMES_GPU,
    SMOKE,
    WIDTHS_CPU,
    WIDTHS_GPU,
    identity,
    reduce,
)

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("arch", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "precision")


@pytest.mark.parametrize("name", list(GPU))
def test_a_smoke_setting_keeps_the_recipe_but_not_its_size(name: str) -> None:
    full = GPU[name]
    s = reduce(full, "smoke")
    c, f = s.config, full.config
    assert s.reduced == "smoke" and s.gpu and s.name == f"{name}-smoke"
    assert (c.dataset, c.augment, c.epochs, c.checkpoints) == ("fashion-mnist", False, SMOKE.epochs, SMOKE.times)
    assert c.model_kwargs["width"] == pytest.approx(_reduced_width(f, SMOKE))
    assert c.warmup_epochs == pytest.approx(f.warmup_epochs * SMOKE.epochs / PAPER_EPOCHS)
    assert 0 < c.warmup_epochs < SMOKE.epochs or f.warmup_epochs == 0
    for field in KEPT:
        assert getattr(c, field) == getattr(f, field), field
    assert c.model_kwargs.get("norm") == f.model_kwargs.get("norm") and c.train_subset is None
    assert s.eval_examples == min(full.eval_examples, SMOKE.eval_examples)
    assert full.alphas == s.alphas == 25 and s.curve == {"n_examples": s.eval_examples, "alphas": 25}  # App. D
    c.validate()


@pytest.mark.parametrize("name", list(GPU))
def test_a_dryrun_setting_keeps_the_recipe_and_its_dataset_at_a_sixteenth_of_its_width(name: str) -> None:
    full = GPU[name]
    s = reduce(full, "dryrun")
    c, f = s.config, full.config
    assert s.reduced == "dryrun" and s.gpu and s.name == f"{name}-dryrun"
    assert (c.dataset, c.augment) == (f.dataset, f.augment)  # CIFAR-10 stays CIFAR-10, with its augmentation
    assert c.model_kwargs["width"] == pytest.approx(_reduced_width(f, DRYRUN))
    assert (c.epochs, c.train_subset, s.eval_examples, c.eval_examples) == (DRYRUN.epochs, 256, 16, 16)
    assert (full.alphas, s.alphas, s.curve) == (25, 5, {"n_examples": 16, "alphas": 5})
    # the recipe's checkpoints nearest to DRYRUN_KEEP, at their relative times: its first and its end among them
    kept = sorted({min(f.checkpoints, key=lambda t: abs(t / f.epochs - k)) for k in DRYRUN_KEEP})
    assert c.checkpoints == pytest.approx(tuple(t * DRYRUN.epochs / f.epochs for t in kept))
    assert (c.checkpoints[0], c.checkpoints[-1]) == (0.0, DRYRUN.epochs) and len(c.checkpoints) <= len(DRYRUN_KEEP)
    assert c.warmup_epochs == pytest.approx(f.warmup_epochs * DRYRUN.epochs / PAPER_EPOCHS)
    for field in KEPT:
        assert getattr(c, field) == getattr(f, field), field
    assert c.model_kwargs.get("norm") == f.model_kwargs.get("norm")
    c.validate()


def _reduced_width(f: object, r: object) -> float:
    """A conv net's width multiplier times the factor, capped; an MLP's units times the factor, at least 8."""
    w = f.model_kwargs["width"]  # type: ignore[attr-defined]
    if f.arch == "mlp":  # type: ignore[attr-defined]
        return max(8, round(w * r.width_factor))  # type: ignore[attr-defined]
    return min(w * r.width_factor, r.max_width)  # type: ignore[attr-defined]


def test_a_reduced_mlp_counts_units_not_a_multiplier() -> None:
    """The 1/2x cap is a conv multiplier's: the 6x512 MLP goes to 32 units in the dry run, and stays 512 in smoke."""
    assert reduce(GPU["mlp512x6-fmnist"], "dryrun").config.model_kwargs == {"width": 32, "depth": 6}
    assert reduce(GPU["mlp512x6-fmnist"], "smoke").config.model_kwargs == {"width": 512, "depth": 6}


def test_reduced_times_stand_for_the_full_recipes_times() -> None:
    full, s = GPU["vgg16-ln-cifar10"], reduce(GPU["vgg16-ln-cifar10"], "smoke")
    assert full.at(5.0) == 5.0 and full.at(0.0) == 0.0  # the paper's settings use the times as given
    assert s.time_scale == pytest.approx(SMOKE.epochs / 150)  # App. F: 150 epochs
    assert s.at(0.0) == 0.0
    assert s.at(5.0) == 0.5  # 5 of 150 epochs -> 0.067 of 2 -> the first checkpoint at or after it
    assert s.at(60.0) == 1.0  # 0.8 of 2 -> the first checkpoint at or after it
    assert s.at(120.0) == 1.0  # 1.6 of 2: no checkpoint before the end is later, so the last one before it
    assert s.at(1e9) == max(t for t in SMOKE.times if t < SMOKE.epochs)
    d = reduce(full, "dryrun")  # the kept checkpoints of the recipe, scaled: each stands for its own time
    assert len(d.config.checkpoints) == 6 < len(full.config.checkpoints) == 14
    for t in (0.0, 1.0, 5.0, 40.0, 80.0):  # Z9's first epoch, the rewind/spawn epoch 5, S8's 80 of 150
        assert d.at(t) == pytest.approx(t * DRYRUN.epochs / 150) and d.at(t) in d.config.checkpoints
    assert d.at(15.0) == d.at(40.0) and d.at(60.0) == d.at(80.0)  # S9's 10% and 40%: the next kept checkpoint


@pytest.mark.parametrize("budget", ["smoke", "dryrun"])
def test_reduced_families_and_regimes_shrink_and_cpu_settings_stay(budget: str) -> None:
    r = {"smoke": SMOKE, "dryrun": DRYRUN}[budget]
    fam = reduce(WIDTHS_GPU["resnet20-ln-cifar10-widths"], budget)
    assert len(fam.settings) == len(fam.widths) == r.widths and fam.name.endswith(f"-{budget}")
    assert all(s.reduced == budget for s in fam.settings)
    assert all(s.config.dataset == ("fashion-mnist" if budget == "smoke" else "cifar10") for s in fam.settings)
    reg = reduce(REGIMES_GPU["vgg16-ln-cifar10"], budget)
    assert [s.config.lr for s in reg.settings] == [s.config.lr for s in REGIMES_GPU["vgg16-ln-cifar10"].settings]
    assert reduce(CPU["mlp512-fmnist"], budget) is CPU["mlp512-fmnist"]
    assert reduce(WIDTHS_CPU["mlp-fmnist-widths"], budget) is WIDTHS_CPU["mlp-fmnist-widths"]


def test_smoke_merges_a_recipes_cifar10_and_fashion_mnist_versions_and_dryrun_does_not() -> None:
    def same(a: str, b: str, budget: str) -> bool:
        return identity(reduce(GPU[a], budget)) == identity(reduce(GPU[b], budget))

    assert same("vgg16-ln-cifar10", "vgg16-ln-fmnist", "smoke")
    assert not same("vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "smoke")
    assert same("resnet20x32-ln-cifar10", "resnet20x4-ln-cifar10", "smoke")  # both capped at 4x
    assert not same("vgg16-ln-cifar10", "vgg16-ln-fmnist", "dryrun")
    assert not same("resnet20x32-ln-cifar10", "resnet20x4-ln-cifar10", "dryrun")


@pytest.mark.parametrize("budget", ["full", "smoke", "dryrun"])
def test_params_carry_every_budgets_gpu_settings_each_marked_with_its_budget(budget: str) -> None:
    """``params`` reads no global: it gives the CPU settings (no budget mark) and each budget's GPU settings,
    marked ``lmc_budget(name)``; the claims' conftest keeps those of the run's ``--lmc-budget``."""
    from claims import settings

    gpu = ["vgg16-ln-cifar10", "vgg16-ln-fmnist", "resnet20x4-ln-cifar10"]
    out = settings.params(["mlp512-fmnist"], gpu)

    def budget_of(p) -> str | None:
        marks = [m for m in p.marks if m.name == settings.BUDGET_MARK]
        return marks[0].args[0] if marks else None

    assert out[0].id == "mlp512-fmnist" and out[0].values[0] is CPU["mlp512-fmnist"] and budget_of(out[0]) is None
    chosen = [p for p in out if budget_of(p) == budget]
    expected = {"full": gpu, "smoke": ["vgg16-ln-cifar10-smoke", "resnet20x4-ln-cifar10-smoke"],
                "dryrun": [f"{n}-dryrun" for n in gpu]}[budget]
    assert [p.id for p in chosen] == expected
    assert all(p.values[0].reduced == ("" if budget == "full" else budget) for p in chosen)
    assert all(any(m.name == "gpu" for m in p.marks) for p in chosen)


def _collect(*args: str) -> list[str]:
    res = subprocess.run([sys.executable, "-m", "pytest", "claims", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "--lmc-no-report", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return [line for line in res.stdout.splitlines() if "::" in line]


@pytest.mark.slow
def test_reduced_budgets_collect_reduced_gpu_settings_only_under_the_option() -> None:
    full = _collect("-m", "gpu")
    claims = {n.split("::")[1].split("[")[0] for n in full}
    assert full and not any("-smoke]" in n or "-dryrun]" in n for n in full)
    for budget in ("smoke", "dryrun"):
        ids = _collect("-m", "gpu", "--lmc-budget", budget)
        assert ids and all(n.endswith(f"-{budget}]") for n in ids)
        assert claims == {n.split("::")[1].split("[")[0] for n in ids}  # every claim keeps a GPU check
        if budget == "smoke":
            assert len(ids) < len(full)  # CIFAR-10 and Fashion-MNIST variants merged
        else:
            assert len(ids) == len(full)  # every GPU setting, each on its own dataset
    assert _collect() == _collect("--lmc-budget", "smoke") == _collect("--lmc-budget", "dryrun")  # CPU tier same


def test_reduced_settings_default_to_fewer_seeds_and_the_cpu_tier_keeps_its_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_seeds="""
def test_seeds(lmc_config):
    print("SEEDS", lmc_config.seeds, lmc_config.reduced_seeds, lmc_config.budget)
""")
    for args, expected in ((), "SEEDS 3 2 full"), (("--lmc-budget", "smoke"), "SEEDS 3 2 smoke"), (
            ("--lmc-budget", "dryrun", "--lmc-seeds", "4"), "SEEDS 4 4 dryrun"):
        result = pytester.runpytest("-s", "--lmc-no-report", *args)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"*{expected}*"])


def test_the_claims_n_seeds_follows_the_setting() -> None:
    from types import SimpleNamespace

    from claims.conftest import _is_reduced

    assert not _is_reduced(CPU["mlp512-fmnist"]) and not _is_reduced(GPU["vgg16-ln-cifar10"])
    for budget in ("smoke", "dryrun"):
        assert _is_reduced(reduce(GPU["vgg16-ln-cifar10"], budget))
        assert _is_reduced(reduce(WIDTHS_GPU["vgg16-ln-cifar10-widths"], budget))
        assert _is_reduced(reduce(REGIMES_GPU["vgg16-ln-cifar10"], budget))
    assert not _is_reduced(WIDTHS_CPU["mlp-fmnist-widths"]) and not _is_reduced(SimpleNamespace())


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the behaviour without CUDA")
def test_gpu_check_refuses_a_machine_without_cuda(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path / "out")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                            "PY": sys.executable})
    assert res.returncode == 2
    assert "CUDA is not available" in res.stdout
    assert "CUDA is not available" in (tmp_path / "out" / "gpu-check.log").read_text()


def test_the_gpu_benchmarks_recipes_are_valid() -> None:
    """benchmarks/test_gpu.py only runs on a device: its recipes (and warm-up recipes) must at least validate here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "test_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    for arch, width, _ in mod.TRAIN_CASES.values():
        cfg = mod.epoch_recipe(arch, width)
        cfg.validate()
        cfg.replace(epochs=0.1, warmup_epochs=0.0).validate()


@pytest.mark.slow
def test_the_profile_tool_writes_its_tables(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "profile_gpu.py"), str(tmp_path), "--device", "cpu",
                          "--small"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    summary = json.loads((tmp_path / "profile.json").read_text())
    assert summary["train_epoch_s"] > 0 and summary["barrier_s"] > 0 and summary["device"] == "cpu"
    for name in ("profile_train.txt", "profile_barrier.txt"):
        text = (tmp_path / name).read_text()
        assert "aten::" in text and "Self CPU" in text
