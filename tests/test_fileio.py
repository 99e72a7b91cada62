"""Written files follow the user's umask, as a plain open() would (reports, store entries, permutations)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lmccheck import report as rp
from lmccheck.fileio import apply_umask, atomic_write_text, current_umask
from lmccheck.store import Store


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives
    atomic = tmp_path / "atomic.txt"
    atomic_write_text(atomic, "x")
    assert _mode(atomic) == _mode(plain) == 0o666 & ~umask


def test_apply_umask_on_a_folder(tmp_path: Path, umask: int) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    apply_umask(d)
    assert _mode(d) == 0o777 & ~umask


def test_report_files_are_readable_by_others_when_the_umask_allows(tmp_path: Path, umask: int) -> None:
    rec = {"claim": "S1", "setting": "a", "verdict": "PASS", "summary": "", "values": {}, "seeds": [],
           "thresholds": {}, "wall_time_s": 1.0, "figures": []}
    rp.write_report([rec], tmp_path / "out", {"device": "cpu"})
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"claims.md", "claims.json"}
    for p in files:
        assert _mode(p) == 0o666 & ~umask, p


def test_store_entries_follow_the_umask(tmp_path: Path, umask: int) -> None:
    store = Store(tmp_path / "store")
    entry = store.put("demo", {"n": 1}, {"x": torch.ones(2)}, {})
    folder = store.path(entry.key)
    assert _mode(folder) == 0o777 & ~umask  # not mkdtemp's 0700
    for f in folder.iterdir():
        assert _mode(f) == 0o666 & ~umask, f
