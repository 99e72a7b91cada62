"""--lmc-budget smoke: the GPU settings at a reduced size that still runs each claim's whole path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.recipes import (
    GPU,
    REGIMES_GPU,
    SMOKE_EPOCHS,
    SMOKE_EVAL_EXAMPLES,
    SMOKE_MAX_WIDTH,
    SMOKE_REFERENCE_EPOCHS,
    SMOKE_TIMES,
    SMOKE_WIDTHS,
    WIDTHS_CPU,
    WIDTHS_GPU,
    CPU,
    smoke,
    smoke_config,
    smoke_identity,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(GPU))
def test_a_smoke_setting_keeps_the_recipe_but_not_its_size(name: str) -> None:
    full = GPU[name]
    s = smoke(full)
    c, f = s.config, full.config
    assert s.smoke and s.gpu and s.name == f"{name}-smoke"
    assert (c.dataset, c.augment, c.epochs, c.checkpoints) == ("fashion-mnist", False, SMOKE_EPOCHS, SMOKE_TIMES)
    assert c.model_kwargs["width"] == min(f.model_kwargs["width"], SMOKE_MAX_WIDTH)
    assert c.warmup_epochs == pytest.approx(f.warmup_epochs * SMOKE_EPOCHS / SMOKE_REFERENCE_EPOCHS)
    assert 0 < c.warmup_epochs < SMOKE_EPOCHS or f.warmup_epochs == 0
    for field in ("arch", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "precision"):
        assert getattr(c, field) == getattr(f, field), field
    assert c.model_kwargs["norm"] == f.model_kwargs["norm"]
    assert s.eval_examples == min(full.eval_examples, SMOKE_EVAL_EXAMPLES)
    c.validate()


def test_smoke_times_stand_for_the_full_recipes_times() -> None:
    full, s = GPU["vgg16-ln-cifar10"], smoke(GPU["vgg16-ln-cifar10"])
    assert full.at(5.0) == 5.0 and full.at(0.0) == 0.0  # the paper's settings use the times as given
    assert s.time_scale == pytest.approx(SMOKE_EPOCHS / 150)  # App. F: 150 epochs
    assert s.at(0.0) == 0.0
    assert s.at(5.0) == 0.5  # 5 of 150 epochs -> 0.067 of 2 -> the first checkpoint at or after it
    assert s.at(60.0) == 1.0  # 0.8 of 2 -> the first checkpoint at or after it
    assert s.at(120.0) == 1.0  # 1.6 of 2: no checkpoint before the end is later, so the last one before it
    assert s.at(1e9) == max(t for t in SMOKE_TIMES if t < SMOKE_EPOCHS)


def test_smoke_families_and_regimes_shrink_and_cpu_settings_stay() -> None:
    fam = smoke(WIDTHS_GPU["resnet20-ln-cifar10-widths"])
    assert len(fam.settings) == len(fam.widths) == SMOKE_WIDTHS and fam.name.endswith("-smoke")
    assert all(s.smoke and s.config.dataset == "fashion-mnist" for s in fam.settings)
    reg = smoke(REGIMES_GPU["vgg16-ln-cifar10"])
    assert [s.config.lr for s in reg.settings] == [s.config.lr for s in REGIMES_GPU["vgg16-ln-cifar10"].settings]
    assert smoke(CPU["mlp512-fmnist"]) is CPU["mlp512-fmnist"]
    assert smoke(WIDTHS_CPU["mlp-fmnist-widths"]) is WIDTHS_CPU["mlp-fmnist-widths"]
    # the CIFAR-10 and Fashion-MNIST versions of one recipe are one smoke setting
    assert smoke_identity(smoke(GPU["vgg16-ln-cifar10"])) == smoke_identity(smoke(GPU["vgg16-ln-fmnist"]))
    assert smoke_identity(smoke(GPU["vgg16-ln-cifar10"])) != smoke_identity(smoke(GPU["resnet20x4-ln-cifar10"]))
    assert smoke_config(GPU["resnet20x32-ln-cifar10"].config) == smoke_config(GPU["resnet20x4-ln-cifar10"].config)


def test_params_under_the_smoke_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from claims import settings

    monkeypatch.setattr(settings, "BUDGET", "smoke")
    out = settings.params(["mlp512-fmnist"], ["vgg16-ln-cifar10", "vgg16-ln-fmnist", "resnet20x4-ln-cifar10"])
    assert [p.id for p in out] == ["mlp512-fmnist", "vgg16-ln-cifar10-smoke", "resnet20x4-ln-cifar10-smoke"]
    assert out[0].values[0] is CPU["mlp512-fmnist"] and all(p.values[0].smoke for p in out[1:])
    assert all(any(m.name == "gpu" for m in p.marks) for p in out[1:])


def _collect(*args: str) -> list[str]:
    res = subprocess.run([sys.executable, "-m", "pytest", "claims", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "--lmc-no-report", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return [line for line in res.stdout.splitlines() if "::" in line]


def test_the_smoke_budget_collects_reduced_gpu_settings_only_under_the_option() -> None:
    full = _collect("-m", "gpu")
    smoke_ids = _collect("-m", "gpu", "--lmc-budget", "smoke")
    assert full and not any("-smoke]" in n for n in full)
    assert smoke_ids and all(n.endswith("-smoke]") for n in smoke_ids)
    assert len(smoke_ids) < len(full)  # CIFAR-10 and Fashion-MNIST variants merged
    claims = {n.split("::")[1].split("[")[0] for n in full}
    assert claims == {n.split("::")[1].split("[")[0] for n in smoke_ids}  # every claim keeps a GPU check
    assert _collect() == _collect("--lmc-budget", "smoke")  # the CPU tier is the same under both


def test_smoke_settings_default_to_fewer_seeds_and_the_cpu_tier_keeps_its_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_seeds="""
def test_seeds(lmc_config):
    print("SEEDS", lmc_config.seeds, lmc_config.smoke_seeds, lmc_config.budget)
""")
    for args, expected in ((), "SEEDS 3 2 full"), (("--lmc-budget", "smoke"), "SEEDS 3 2 smoke"), (
            ("--lmc-budget", "smoke", "--lmc-seeds", "4"), "SEEDS 4 4 smoke"):
        result = pytester.runpytest("-s", "--lmc-no-report", *args)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"*{expected}*"])


def test_the_claims_n_seeds_follows_the_setting() -> None:
    from types import SimpleNamespace

    from claims.conftest import _is_smoke

    assert not _is_smoke(CPU["mlp512-fmnist"]) and not _is_smoke(GPU["vgg16-ln-cifar10"])
    assert _is_smoke(smoke(GPU["vgg16-ln-cifar10"])) and _is_smoke(smoke(WIDTHS_GPU["vgg16-ln-cifar10-widths"]))
    assert _is_smoke(smoke(REGIMES_GPU["vgg16-ln-cifar10"])) and not _is_smoke(WIDTHS_CPU["mlp-fmnist-widths"])
    assert not _is_smoke(SimpleNamespace())


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
