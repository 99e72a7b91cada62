"""Tests of lmccheck.store_admin: listing, describing and clearing the entries of a store, and its usage."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lmccheck import store_admin
from lmccheck.store import AmbiguousKeyError, Entry, EntryNotFoundError, Store, StoreError

from store_helpers import RECIPE, Builder, delete_meta, entry_dirs, tmp_leftovers, wrong_sha


def _populate(s: Store) -> list[Entry]:
    return [
        s.put("train", {"name": "a", "seed": 0}, {"w": torch.zeros(10)}, {"metrics": {"acc": 0.1}}),
        s.put("train", {"arch": "vgg11", "seed": 1}, {"w": torch.zeros(100)}, {}),
        s.put("imp", {"name": "c"}, {}, {}),
    ]


def test_ls(tmp_path):
    s = Store(tmp_path)
    assert store_admin.ls(s) == []
    es = _populate(s)
    rows = store_admin.ls(s)
    assert sorted(r["key"] for r in rows) == sorted(e.key for e in es)
    by_key = {r["key"]: r for r in rows}
    r0 = by_key[es[0].key]
    assert r0["kind"] == "train" and r0["status"] == "ok" and r0["problem"] is None
    assert r0["description"] == "a" and r0["short"] == es[0].key[:12]
    assert by_key[es[1].key]["description"] == "arch=vgg11 seed=1"
    assert by_key[es[1].key]["size_bytes"] > r0["size_bytes"] > 0
    assert r0["created"] == es[0].meta["created"]
    json.dumps(rows)  # printable / serializable

    wrong_sha(s.path(es[0].key))
    assert {r["key"]: r["status"] for r in store_admin.ls(s, verify=True)}[es[0].key] == "corrupt"
    delete_meta(s.path(es[1].key))
    rows = {r["key"]: r for r in store_admin.ls(s)}
    assert rows[es[1].key]["status"] == "corrupt" and "meta.json" in rows[es[1].key]["problem"]
    assert rows[es[2].key]["status"] == "ok"


def test_info_and_prefixes(tmp_path):
    s = Store(tmp_path)
    es = _populate(s)
    e = es[0]
    full = store_admin.info(s, e.key)
    assert full["key"] == e.key and full["path"] == str(s.path(e.key))
    assert full["metrics"] == {"acc": 0.1} and full["recipe"] == {"name": "a", "seed": 0}
    assert full["status"] == "ok" and full["size_bytes"] == sum(full["files"].values())
    assert set(full["files"]) == {"meta.json", "tensors.safetensors"}
    assert store_admin.info(s, e.key[:6])["key"] == e.key
    assert store_admin.info(s, e.key[:10].upper())["key"] == e.key

    with pytest.raises(StoreError, match="at least 6"):
        store_admin.info(s, e.key[:5])
    with pytest.raises(StoreError, match="at least 6"):
        store_admin.info(s, "not-hex!")
    unknown = ("0" if e.key[0] != "0" else "1") * 8
    with pytest.raises(EntryNotFoundError, match="lmccheck cache ls"):
        store_admin.info(s, unknown)
    # a second folder sharing the first 10 digits makes the prefix ambiguous
    twin = e.key[:10] + ("0" if e.key[10] != "0" else "1") * 54
    shutil.copytree(s.path(e.key), s.path(e.key).parent / twin)
    with pytest.raises(AmbiguousKeyError, match="2 entries"):
        store_admin.info(s, e.key[:8])
    assert store_admin.info(s, e.key)["key"] == e.key
    assert store_admin.info(s, twin)["status"] == "corrupt"  # its meta names another key


def test_clear(tmp_path):
    s = Store(tmp_path)
    es = _populate(s)
    assert store_admin.clear(s, "nosuchkind") == 0
    assert store_admin.clear(s, "train") == 2
    assert [r["key"] for r in store_admin.ls(s)] == [es[2].key]
    assert s.contains(es[2].key) and not s.contains(es[0].key)
    (tmp_path / "corrupt" / "something-20200101").mkdir()
    assert store_admin.clear(s) == 1
    assert store_admin.ls(s) == [] and entry_dirs(tmp_path) == []
    assert list((tmp_path / "corrupt").iterdir()) == []
    assert tmp_leftovers(tmp_path) == []
    assert store_admin.clear(Store(tmp_path / "never-created")) == 0
    assert not (tmp_path / "never-created").exists()
    # works again after clearing
    b = Builder()
    s.get_or_create("train", RECIPE, b)
    assert b.calls == 1


def test_usage(tmp_path):
    s = Store(tmp_path)
    assert store_admin.usage(s) == (0, 0)
    _populate(s)
    assert store_admin.usage(s) == (3, sum(r["size_bytes"] for r in store_admin.ls(s)))
    store_admin.clear(s)
    assert store_admin.usage(s) == (0, 0)


def test_helpers():
    assert store_admin.describe_size(0) == "0 B"
    assert store_admin.describe_size(1023) == "1023 B"
    assert store_admin.describe_size(1536) == "1.5 KiB"
    assert store_admin.describe_size(5 * 1024**3) == "5.0 GiB"
    assert store_admin.describe_recipe({"name": "x" * 100}, max_len=10) == "xxxxxxx..."
    assert store_admin.describe_recipe({"zeta": 1, "alpha": "a"}) == "alpha=a zeta=1"
