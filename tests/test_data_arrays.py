"""lmccheck.data's safetensors data-root format and its synthetic stand-ins (the dry run's offline CIFAR-10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from lmccheck import data as d
from lmccheck.cli import main as cli_main


@pytest.fixture(autouse=True)
def _fresh_cache():
    d._load_cpu.cache_clear()
    yield
    d._load_cpu.cache_clear()


def test_synthetic_cifar10_has_the_datasets_shape_classes_and_is_reproducible() -> None:
    xtr, ytr, xte, yte = d.synthetic_arrays("cifar10", 50, 20, seed=3)
    assert xtr.shape == (50, 3, 32, 32) and xte.shape == (20, 3, 32, 32) and xtr.dtype == np.uint8
    assert ytr.dtype == np.int64 and set(ytr.tolist()) == set(range(10)) and set(yte.tolist()) == set(range(10))
    again = d.synthetic_arrays("cifar10", 50, 20, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((xtr, ytr, xte, yte), again))
    assert not np.array_equal(xtr, d.synthetic_arrays("cifar10", 50, 20, seed=4)[0])
    assert d.synthetic_arrays("mnist", 5, 5)[0].shape == (5, 1, 28, 28)
    with pytest.raises(ValueError, match="at least one"):
        d.synthetic_arrays("cifar10", 0, 5)
    with pytest.raises(KeyError, match="unknown dataset"):
        d.synthetic_arrays("imagenet", 5, 5)


def test_synthetic_classes_are_learnable_by_their_class_means() -> None:
    """The stand-in must be learnable, or a dry run's training would exercise nothing: the nearest class mean
    of the training split classifies the test split far above chance."""
    xtr, ytr, xte, yte = (torch.as_tensor(a) for a in d.synthetic_arrays("cifar10", 500, 200))
    means = torch.stack([xtr[ytr == c].float().mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(xte.float().flatten(1), means).argmin(1)
    assert (pred == yte).float().mean() > 0.9


def test_a_written_dataset_is_read_in_place_of_torchvision_from_its_data_root(tmp_path: Path) -> None:
    arrays = d.synthetic_arrays("cifar10", 40, 30)
    path = d.write_arrays("cifar10", tmp_path, *arrays)
    assert path == tmp_path / "cifar10.safetensors" and not list(tmp_path.glob(".*.tmp"))
    ds = d.load_dataset("cifar10", root=tmp_path)
    assert (len(ds.train), len(ds.test), ds.in_channels, ds.input_size, ds.num_classes) == (40, 30, 3, 32, 10)
    assert ds.augmentable and torch.equal(ds.train.y, torch.as_tensor(arrays[1]))
    mean = torch.tensor(d.DATASETS["cifar10"].mean).view(1, 3, 1, 1)
    std = torch.tensor(d.DATASETS["cifar10"].std).view(1, 3, 1, 1)
    expected = (torch.as_tensor(arrays[2]).float() / 255 - mean) / std
    assert torch.allclose(ds.test.x, expected, atol=1e-6)


def test_a_missing_dataset_still_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(d.DatasetNotFoundError, match="--lmc-download.*--lmc-data-root.*cifar10.safetensors"):
        d.load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: {k: v for k, v in a.items() if k != "test_labels"}, "lacks test_labels"),
    (lambda a: {**a, "train_images": a["train_images"][:, :1]}, r"train_images must be uint8 \(N, 3, 32, 32\)"),
    (lambda a: {**a, "train_images": a["train_images"].astype(np.float32)}, "train_images must be uint8"),
    (lambda a: {**a, "test_labels": a["test_labels"][:-1]}, "one label per image"),
    (lambda a: {**a, "test_labels": a["test_labels"] + 10}, r"must lie in 0\.\.9"),
])
def test_a_malformed_file_is_refused_with_the_problem_and_the_fix(tmp_path: Path, change, message: str) -> None:
    arrays = dict(zip(d.ARRAY_KEYS, d.synthetic_arrays("cifar10", 20, 20)))
    save_file(change(arrays), str(tmp_path / "cifar10.safetensors"))
    with pytest.raises(d.DatasetFormatError, match=message) as info:
        d.load_dataset("cifar10", root=tmp_path)
    assert "write_arrays" in str(info.value) and "remove it" in str(info.value)


def test_a_corrupt_file_is_refused_and_write_arrays_checks_what_it_writes(tmp_path: Path) -> None:
    (tmp_path / "cifar10.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(d.DatasetFormatError, match="not a readable safetensors file"):
        d.load_dataset("cifar10", root=tmp_path)
    xtr, ytr, xte, yte = d.synthetic_arrays("cifar10", 20, 20)
    with pytest.raises(d.DatasetFormatError, match="must lie in"):
        d.write_arrays("cifar10", tmp_path / "other", xtr, ytr + 100, xte, yte)
    assert not (tmp_path / "other" / "cifar10.safetensors").exists()  # nothing half-written


def test_the_cli_writes_a_synthetic_stand_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["data", "synthetic", "cifar10", "--root", str(tmp_path), "--train", "30", "--test", "12"]) == 0
    assert "not for measurements" in capsys.readouterr().out
    ds = d.load_dataset("cifar10", root=tmp_path)
    assert (len(ds.train), len(ds.test)) == (30, 12)
    assert cli_main(["data", "synthetic", "cifar10", "--root", str(tmp_path), "--train", "0"]) == 2
    assert "at least one" in capsys.readouterr().err
