"""Datasets as in-memory tensors.

``fashion-mnist`` is embedded: it is read from the IDX files of the Debian
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), or
from the folder named by ``LMCCHECK_DATA``. ``mnist``, ``cifar10``,
``cifar100`` and ``svhn`` come through torchvision from a data root, downloaded
only when asked (``download=True`` / ``--lmc-download``).

Every split is a pair of tensors: normalized float images ``(N, C, H, W)`` and
int64 labels. Whole datasets fit in memory (and on a GPU), so training and
evaluation index tensors directly instead of going through a DataLoader.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
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
    opener: Callable[..., object] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        raw = f.read()  # type: ignore[attr-defined]
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
                images = torch.from_numpy(_read_idx(img_p).copy())  # type: ignore[arg-type]
                labels = torch.from_numpy(_read_idx(lab_p).astype(np.int64))  # type: ignore[arg-type]
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
            "at a folder that holds it."
        ) from None
    return xtr, ytr, xte, yte


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentable: bool


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(10, (0.2860,), (0.3530,), False),
    "mnist": DatasetInfo(10, (0.1307,), (0.3081,), False),
    "cifar10": DatasetInfo(10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": DatasetInfo(100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "svhn": DatasetInfo(10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False),
}


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
    if name == "fashion-mnist":
        xtr, ytr, xte, yte = _load_fashion_mnist()
    else:
        data_root = Path(root).expanduser() if root else DEFAULT_DATA_ROOT
        xtr, ytr, xte, yte = _torchvision_arrays(name, data_root, download)  # type: ignore[assignment]
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
