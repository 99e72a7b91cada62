"""Helpers shared by the store's tests (test_store.py) and the store administration's (test_store_admin.py).

A recipe, a counting builder, what lies in a store's folders, and two ways to damage an entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

RECIPE = {
    "name": "mlp-mnist-s0",
    "arch": "mlp",
    "width": 512,
    "lr": 0.1,
    "wd": 5e-4,
    "betas": (0.9, 0.999),
    "data": {"name": "mnist", "augment": False, "subset": None},
    "seed": 0,
}


class Builder:
    """Counting builder; optionally raises."""

    def __init__(self, value: float = 1.0, exc: BaseException | None = None) -> None:
        self.calls = 0
        self.value = value
        self.exc = exc

    def __call__(self):
        self.calls += 1
        if self.exc is not None:
            raise self.exc
        return {"w": torch.full((3,), self.value), "n": torch.tensor([self.calls])}, {
            "metrics": {"acc": 0.5, "losses": [1.0, 0.5]}
        }


def entry_dirs(root: Path) -> list[Path]:
    """The entry folders under ``root/objects``."""
    objects = root / "objects"
    if not objects.exists():
        return []
    return [p for shard in objects.iterdir() for p in shard.iterdir()]


def tmp_leftovers(root: Path) -> list[Path]:
    """What lies in ``root/tmp``."""
    tmp = root / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def delete_meta(path: Path) -> None:
    """Damage the entry at ``path``: remove its meta.json."""
    (path / "meta.json").unlink()


def wrong_sha(path: Path) -> None:
    """Damage the entry at ``path``: its meta.json expects another sha256 of the tensor file."""
    m = json.loads((path / "meta.json").read_text())
    m["tensors_sha256"] = "0" * 64
    (path / "meta.json").write_text(json.dumps(m))
