"""Datasets as in-memory tensors.

``fashion-mnist`` is embedded: it is read from the IDX files of the Debian
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), or
from the folder named by ``LMCCHECK_DATA``. ``mnist``, ``cifar10``,
``cifar100`` and ``svhn`` come through torchvision from a data root, downloaded
only when asked (``download=True`` / ``--lmc-download``).

A data root may instead hold ``<name>.safetensors`` (uint8 ``train_images`` and
``test_images`` ``(N, C, H, W)``, int64 ``train_labels`` and ``test_labels``):
it is read first, with no unpickling. :func:`write_arrays` writes one, and
:func:`synthetic_arrays` makes a small learnable stand-in for a dataset (``lmccheck
data synthetic``), with which the GPU tier's dry run (``--lmc-budget dryrun``) takes
the CIFAR-10 path offline.

Every split is a pair of tensors: normalized float images ``(N, C, H, W)`` and
int64 labels. Whole datasets fit in memory (and on a GPU), so training and
evaluation index tensors directly instead of going through a DataLoader.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEFAULT_DATA_ROOT = Path(os.environ.get("LMCCHECK_DATA_ROOT", "~/.cache/lmccheck-data")).expanduser()


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where lmccheck looked."""


class DatasetFormatError(ValueError):
    """A dataset file is there but does not hold what lmccheck reads."""


@dataclass(frozen=True)
class Split:
    """Images ``x`` (N, C, H, W), normalized, and labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: int | None) -> Split:
        """The first ``n`` examples (all when ``n`` is None). Deterministic."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"need a positive number of examples, got {n}")
        return Split(self.x[:n], self.y[:n])

    def to(self, device: str | torch.device) -> Split:
        return Split(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True))


@dataclass(frozen=True)
class Dataset:
    """A dataset held as tensors, with what models need to know about it."""

    name: str
    train: Split
    test: Split
    num_classes: int
    in_channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentable: bool  # CIFAR-like sets take random crops and flips

    def split(self, which: str) -> Split:
        if which not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {which!r}")
        return self.train if which == "train" else self.test

    def to(self, device: str | torch.device) -> Dataset:
        return replace(self, train=self.train.to(device), test=self.test.to(device))

    @property
    def model_kwargs(self) -> dict[str, int]:
        """``in_channels``, ``input_size`` and ``num_classes`` for ``get_model``."""
        return {
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
        }


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, on ``x``'s device.

    Vectorized over the batch (no per-example Python loop), so it runs on
    the GPU with the data. ``generator`` must live on ``x``'s device.
    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    flip = torch.rand(n, generator=generator, device=generator.device).to(x.device) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- Fashion-MNIST
def fashion_mnist_dirs() -> list[Path]:
    """Folders searched for the Fashion-MNIST IDX files, in order."""
    env = os.environ.get("LMCCHECK_DATA")
    dirs = [Path(env).expanduser()] if env else []
    return dirs + list(FASHION_MNIST_DIRS)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _read_idx(path: Path) -> np.ndarray:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number); the file is damaged")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path} holds {len(raw) - offset} bytes of data but its header promises {expected}; "
            "the file is truncated or damaged (reinstall with `apt-get install --reinstall dataset-fashion-mnist`)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _load_fashion_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    tried = fashion_mnist_dirs()
    for folder in tried:
        paths = {s: [_find_idx(folder, stem) for stem in stems] for s, stems in FASHION_MNIST_FILES.items()}
        if all(p is not None for ps in paths.values() for p in ps):
            out = []
            for s in ("train", "test"):
                img_p, lab_p = paths[s]
                assert img_p is not None and lab_p is not None  # all found (checked above)
                images = torch.from_numpy(_read_idx(img_p).copy())
                labels = torch.from_numpy(_read_idx(lab_p).astype(np.int64))
                out += [images, labels]
            return out[0], out[1], out[2], out[3]
    looked = ", ".join(str(d) for d in tried)
    raise DatasetNotFoundError(
        f"Fashion-MNIST not found (looked in: {looked}). Install it with "
        "`sudo apt-get install dataset-fashion-mnist` (what `make test` does), or set "
        "LMCCHECK_DATA to a folder holding train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]."
    )


# ---------------------------------------------------------------- torchvision sets
def _torchvision_arrays(name: str, root: Path, download: bool) -> tuple[np.ndarray, ...]:
    import torchvision.datasets as tvd

    def get(train: bool) -> tuple[np.ndarray, np.ndarray]:
        if name == "mnist":
            ds = tvd.MNIST(str(root), train=train, download=download)
            return ds.data.numpy()[:, None], ds.targets.numpy()
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            ds = cls(str(root), train=train, download=download)
            return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets)
        if name == "svhn":
            ds = tvd.SVHN(str(root), split="train" if train else "test", download=download)
            return ds.data, np.asarray(ds.labels)
        raise KeyError(name)

    try:
        xtr, ytr = get(True)
        xte, yte = get(False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFoundError(
            f"{name} not found under {root} ({e}). Pass --lmc-download (or download=True) on a "
            "machine with internet to fetch it, or point --lmc-data-root / LMCCHECK_DATA_ROOT "
            f"at a folder that holds it (torchvision's layout, or {name}.safetensors: lmccheck.data.write_arrays)."
        ) from None
    return xtr, ytr, xte, yte


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentable: bool
    size: int  # images are (len(mean), size, size)


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(10, (0.2860,), (0.3530,), False, 28),
    "mnist": DatasetInfo(10, (0.1307,), (0.3081,), False, 28),
    "cifar10": DatasetInfo(10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 32),
    "cifar100": DatasetInfo(100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 32),
    "svhn": DatasetInfo(10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False, 32),
}

ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def arrays_path(name: str, root: str | os.PathLike[str]) -> Path:
    """Where a data root holds ``name`` as one safetensors file."""
    return Path(root).expanduser() / f"{name}.safetensors"


def _read_arrays(name: str, path: Path) -> tuple[np.ndarray, ...]:
    """The four arrays of ``path``, checked against the dataset's registered shape and classes."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    info = DATASETS[name]
    fix = (f"rewrite it with lmccheck.data.write_arrays (or `lmccheck data synthetic {name}` for a stand-in), "
           f"or remove it so that the torchvision copy under {path.parent} is read")
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DatasetFormatError(f"{path} is not a readable safetensors file ({e}); {fix}") from None
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise DatasetFormatError(f"{path} lacks {', '.join(missing)} (needs {', '.join(ARRAY_KEYS)}); {fix}")
    shape = (len(info.mean), info.size, info.size)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise DatasetFormatError(f"{path}: {split}_images must be uint8 (N, {', '.join(map(str, shape))}) for "
                                     f"{name}, got {x.dtype} {tuple(x.shape)}; {fix}")
        if y.dtype != np.int64 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise DatasetFormatError(f"{path}: {split}_labels must be int64 with one label per image (N >= 1), got "
                                     f"{y.dtype} {tuple(y.shape)} for {x.shape[0]} images; {fix}")
        if y.min() < 0 or y.max() >= info.num_classes:
            raise DatasetFormatError(f"{path}: {split}_labels must lie in 0..{info.num_classes - 1} for {name}, got "
                                     f"{int(y.min())}..{int(y.max())}; {fix}")
    return tuple(arrays[k] for k in ARRAY_KEYS)


def write_arrays(name: str, root: str | os.PathLike[str], train_images: np.ndarray, train_labels: np.ndarray,
                 test_images: np.ndarray, test_labels: np.ndarray) -> Path:
    """Write a dataset as ``<root>/<name>.safetensors`` (atomically; checked by reading it back)."""
    from safetensors.numpy import save_file

    from .fileio import atomic_path

    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    path = arrays_path(name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(ARRAY_KEYS, (np.ascontiguousarray(a) for a in
                                   (train_images, train_labels, test_images, test_labels))))
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp))
        _read_arrays(name, tmp)
    return path


def synthetic_arrays(name: str, n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A small learnable stand-in for dataset ``name``, in its shape and number of classes: each class is a
    fixed random low-frequency image (a 4x4 pattern per channel, upsampled), and each example is its class's
    pattern at a random contrast plus pixel noise, clipped to uint8. Labels cycle through the classes, so every
    class has examples in both splits. For exercising code paths (the dry run), not for any measurement."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"need at least one training and one test example, got {n_train} and {n_test}")
    info = DATASETS[name]
    rng = np.random.default_rng(seed)
    c, size = len(info.mean), info.size
    coarse = rng.uniform(-1.0, 1.0, size=(info.num_classes, c, 4, 4))
    patterns = np.repeat(np.repeat(coarse, -(-size // 4), axis=2), -(-size // 4), axis=3)[..., :size, :size]

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % info.num_classes
        rng.shuffle(y)
        contrast = rng.uniform(0.5, 1.0, size=(n, 1, 1, 1))
        x = 128.0 + 60.0 * contrast * patterns[y] + rng.normal(0.0, 30.0, size=(n, c, size, size))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    xtr, ytr = split(n_train)
    xte, yte = split(n_test)
    return xtr, ytr, xte, yte


def _normalize(images: np.ndarray | torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x[:, None]
    x = x.to(torch.float32).div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


@lru_cache(maxsize=4)
def _load_cpu(name: str, root: str | None, download: bool) -> Dataset:
    info = DATASETS[name]
    arrays: Sequence[np.ndarray | torch.Tensor]  # train images and labels, test images and labels
    if name == "fashion-mnist":
        arrays = _load_fashion_mnist()
    else:
        data_root = Path(root).expanduser() if root else DEFAULT_DATA_ROOT
        if arrays_path(name, data_root).is_file():
            arrays = _read_arrays(name, arrays_path(name, data_root))
        else:
            arrays = _torchvision_arrays(name, data_root, download)
    xtr, ytr, xte, yte = arrays
    train = Split(_normalize(xtr, info.mean, info.std), torch.as_tensor(ytr, dtype=torch.long))
    test = Split(_normalize(xte, info.mean, info.std), torch.as_tensor(yte, dtype=torch.long))
    return Dataset(
        name=name,
        train=train,
        test=test,
        num_classes=info.num_classes,
        in_channels=int(train.x.shape[1]),
        input_size=int(train.x.shape[-1]),
        mean=info.mean,
        std=info.std,
        augmentable=info.augmentable,
    )


def load_dataset(
    name: str = "fashion-mnist",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    device: str | torch.device | None = None,
) -> Dataset:
    """Load a registered dataset as tensors, optionally resident on ``device``.

    Unknown names raise ``KeyError``; missing files raise
    :class:`DatasetNotFoundError` saying where lmccheck looked and how to get
    the data. Loaded CPU copies are cached in the process.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    ds = _load_cpu(name, str(root) if root is not None else None, bool(download))
    if device is not None and torch.device(device).type != "cpu":
        ds = ds.to(device)
    return ds
