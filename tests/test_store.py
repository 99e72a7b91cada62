"""Tests of lmccheck.store, the content-addressed, process-safe fixture store, and of its recipe keys."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import filelock
import pytest
import torch

from lmccheck import store as store_mod
from lmccheck import store_admin
from lmccheck.recipe_keys import CODE_VERSION, code_version, recipe_key
from lmccheck.store import (
    FORMAT_VERSION,
    CorruptEntryError,
    Entry,
    EntryNotFoundError,
    IncompatibleEntryError,
    Store,
    StoreError,
    StoreNotWritableError,
    StoreWarning,
)

from store_helpers import RECIPE, Builder, delete_meta, entry_dirs, tmp_leftovers, wrong_sha


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "ckpt/1.0/layers.0.weight": torch.randn(4, 3, generator=g),
        "ckpt/1.0/layers.0.bias": torch.randn(4, generator=g).double(),
        "idx": torch.arange(7, dtype=torch.int64) * 3 - 5,
        "mask": torch.rand(5, generator=g) > 0.5,
        "bf": torch.randn(6, generator=g).to(torch.bfloat16),
        "half": torch.randn(2, 2, generator=g).half(),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert b[k].device.type == "cpu"
        # bitwise: compare raw bytes (NaN-safe, -0.0-sensitive)
        assert a[k].reshape(-1).view(torch.uint8).tolist() == b[k].reshape(-1).view(torch.uint8).tolist(), k


# ----------------------------------------------------------------------------- round trip


def test_put_load_roundtrip_bitwise(tmp_path):
    s = Store(tmp_path / "cache")
    t = _tensors()
    t["ckpt/1.0/layers.0.weight"][0, 0] = float("nan")
    t["ckpt/1.0/layers.0.weight"][0, 1] = -0.0
    meta = {"metrics": {"acc": 0.98, "loss": [0.5, 0.25], "nan": float("nan")}, "note": "x"}
    e = s.put("train", RECIPE, t, meta)
    assert isinstance(e, Entry)
    assert e.key == recipe_key("train", RECIPE) == s.key("train", RECIPE)
    assert len(e.key) == 64
    assert s.contains(e.key)
    assert s.path(e.key) == tmp_path / "cache" / "objects" / e.key[:2] / e.key
    assert sorted(p.name for p in s.path(e.key).iterdir()) == ["meta.json", "tensors.safetensors"]

    loaded = s.load(e.key)
    _assert_same(t, loaded.tensors)
    _assert_same(t, e.tensors)
    m = loaded.meta
    assert m["metrics"]["acc"] == 0.98 and m["metrics"]["loss"] == [0.5, 0.25]
    assert m["metrics"]["nan"] != m["metrics"]["nan"]  # NaN survives
    assert m["note"] == "x"
    assert m["kind"] == "train" and loaded.kind == "train"
    assert m["recipe"]["betas"] == [0.9, 0.999]  # canonical JSON form
    assert m["format_version"] == FORMAT_VERSION
    assert m["code_version"] == code_version("train")
    assert m["key"] == e.key
    assert {"lmccheck", "torch", "python"} <= set(m["versions"])
    tensor_file = (s.path(e.key) / "tensors.safetensors").read_bytes()
    assert m["tensors_sha256"] == hashlib.sha256(tensor_file).hexdigest()
    assert m["tensors_bytes"] == len(tensor_file)
    assert m["n_tensors"] == len(t)
    assert "T" in m["created"]
    # meta.json on disk is the same as returned
    assert json.loads((s.path(e.key) / "meta.json").read_text())["tensors_sha256"] == m["tensors_sha256"]


def test_put_noncontiguous_gradient_and_views(tmp_path):
    s = Store(tmp_path)
    base = torch.arange(12.0).reshape(3, 4)
    w = torch.randn(3, 3, requires_grad=True)
    t = {"T": base.t(), "view": base[1], "view2": base[2], "grad": w * 2}
    e = s.put("train", {"x": 1}, t, {})
    got = s.load(e.key).tensors
    assert torch.equal(got["T"], base.t()) and got["T"].is_contiguous()
    assert torch.equal(got["view"], base[1]) and torch.equal(got["view2"], base[2])
    assert not got["grad"].requires_grad
    # the stored copy is independent of the caller's tensors
    base.zero_()
    assert s.load(e.key).tensors["view"].sum().item() == 4 + 5 + 6 + 7


def test_empty_tensors_and_bad_inputs(tmp_path):
    s = Store(tmp_path)
    e = s.put("train", {"x": 0}, {}, {"metrics": {}})
    assert s.load(e.key).tensors == {}
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        s.put("train", {"x": 1}, {"a": [1, 2]}, {})
    with pytest.raises(TypeError, match="meta"):
        s.put("train", {"x": 2}, {}, {"bad": object()})
    with pytest.raises(ValueError):
        s.path("../../etc")
    assert tmp_leftovers(tmp_path) == []
    assert [p.name for p in entry_dirs(tmp_path)] == [e.key]


def test_put_replaces_existing(tmp_path):
    s = Store(tmp_path)
    e1 = s.put("train", RECIPE, {"w": torch.zeros(2)}, {"v": 1})
    e2 = s.put("train", RECIPE, {"w": torch.ones(2)}, {"v": 2})
    assert e1.key == e2.key
    got = s.load(e1.key)
    assert torch.equal(got.tensors["w"], torch.ones(2)) and got.meta["v"] == 2
    assert tmp_leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- keys


@dataclasses.dataclass(frozen=True)
class _Opt:
    lr: float
    betas: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class _Cfg:
    arch: str
    opt: _Opt
    seed: int


def test_key_properties():
    k = recipe_key("train", RECIPE)
    assert k == recipe_key("train", dict(reversed(list(RECIPE.items()))))  # key order irrelevant
    nested_reordered = dict(RECIPE, data={"subset": None, "augment": False, "name": "mnist"})
    assert k == recipe_key("train", nested_reordered)
    assert k != recipe_key("spawn", RECIPE)
    assert k != recipe_key("train", dict(RECIPE, lr=0.1000000001))  # one float changed
    assert k != recipe_key("train", dict(RECIPE, data=dict(RECIPE["data"], augment=True)))  # nested field
    assert k != recipe_key("train", dict(RECIPE, width=512.0))  # int vs float
    assert k != recipe_key("train", dict(RECIPE, seed=False))  # int vs bool
    assert k == recipe_key("train", dict(RECIPE, betas=[0.9, 0.999]))  # tuple == list
    assert len(k) == 64 and set(k) <= set("0123456789abcdef")

    cfg = _Cfg("mlp", _Opt(0.1, (0.9, 0.99)), 3)
    as_dict = {"arch": "mlp", "opt": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": 3}
    assert recipe_key("train", {"cfg": cfg}) == recipe_key("train", {"cfg": as_dict})
    assert recipe_key("train", cfg) == recipe_key("train", as_dict)
    assert recipe_key("train", {"cfg": cfg}) != recipe_key("train", {"cfg": dataclasses.replace(cfg, seed=4)})
    with pytest.raises(TypeError, match="keys must be strings"):
        recipe_key("train", {1: "a"})
    with pytest.raises(TypeError, match="cannot convert"):
        recipe_key("train", {"f": object()})


def test_code_version_changes_key(monkeypatch):
    k = recipe_key("imp_level", RECIPE)
    monkeypatch.setitem(CODE_VERSION, "imp_level", code_version("imp_level") + 1)
    assert recipe_key("imp_level", RECIPE) != k
    # unknown kinds use version 1
    k_new = recipe_key("brand-new-kind", RECIPE)
    monkeypatch.setitem(CODE_VERSION, "brand-new-kind", 1)
    assert recipe_key("brand-new-kind", RECIPE) == k_new


def test_key_is_stable_across_processes():
    code = (
        "from lmccheck.recipe_keys import recipe_key; "
        "print(recipe_key('train', {'seed': 0, 'data': {'subset': None, 'augment': False, 'name': 'mnist'}, "
        "'betas': (0.9, 0.999), 'wd': 5e-4, 'lr': 0.1, 'width': 512, 'arch': 'mlp', 'name': 'mlp-mnist-s0'}))"
    )
    # this process has a random hash seed; the child gets a fixed, different one
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == recipe_key("train", RECIPE)


# ----------------------------------------------------------------------------- concurrency


def _mp_worker(root: str, counter: str, barrier, waiting, queue) -> None:
    def build():
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        # hold the lock until the other process waits on it (its on_wait), so that it cannot miss the race
        assert waiting.wait(timeout=60), "the other process never waited for the lock"
        return {"w": torch.randn(8), "i": torch.arange(3)}, {"metrics": {"pid": os.getpid()}}

    barrier.wait()
    e = Store(root).get_or_create("train", {"name": "shared", "seed": 1}, build, on_wait=waiting.set)
    queue.put((e.key, e.tensors["w"].tolist(), e.tensors["i"].tolist(), e.meta["metrics"]["pid"]))


@pytest.mark.slow
def test_concurrent_processes_build_once(tmp_path):
    ctx = mp.get_context("spawn")
    n = 2
    barrier, waiting, queue = ctx.Barrier(n), ctx.Event(), ctx.Queue()
    counter = tmp_path / "counter.txt"
    procs = [ctx.Process(target=_mp_worker, args=(str(tmp_path / "c"), str(counter), barrier, waiting, queue))
             for _ in range(n)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in range(n)]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover - only on failure
                p.kill()
    assert [p.exitcode for p in procs] == [0] * n
    lines = counter.read_text().splitlines()
    assert len(lines) == 1, lines
    assert len({r[0] for r in results}) == 1
    assert all(r[1:] == results[0][1:] for r in results)  # identical tensors and meta everywhere
    assert results[0][3] == int(lines[0])  # the one builder's result is what everyone got
    assert len(entry_dirs(tmp_path / "c")) == 1
    assert tmp_leftovers(tmp_path / "c") == []


def test_waiter_loads_after_lock_released(tmp_path):
    """A caller that finds the lock held waits, then loads what the holder built."""
    import threading

    s = Store(tmp_path)
    key = s.key("train", RECIPE)
    s.ensure_writable()
    lock = filelock.FileLock(str(s.lock_path(key)), thread_local=False)  # released by another thread
    lock.acquire()
    with pytest.raises(StoreError, match="timed out"):
        Store(tmp_path, lock_timeout=0.2).get_or_create("train", RECIPE, Builder())

    waiting = threading.Event()

    def holder():  # plays "another process" that is building the entry: it finishes once the caller waits
        assert waiting.wait(timeout=60)
        s._put_locked(key, "train", RECIPE, {"w": torch.full((3,), 9.0)}, {})
        lock.release()

    t = threading.Thread(target=holder)
    t.start()
    b = Builder()
    e = Store(tmp_path, lock_timeout=30).get_or_create("train", RECIPE, b, on_wait=waiting.set)
    t.join()
    assert b.calls == 0 and waiting.is_set()
    assert torch.equal(e.tensors["w"], torch.full((3,), 9.0))

    # rebuild=True callers queued behind a rebuild reuse it instead of rebuilding again
    lock.acquire()
    waiting.clear()

    def rebuilder():
        assert waiting.wait(timeout=60)
        s._put_locked(key, "train", RECIPE, {"w": torch.full((3,), 4.0)}, {})
        lock.release()

    t = threading.Thread(target=rebuilder)
    t.start()
    b = Builder()
    e = Store(tmp_path, lock_timeout=30).get_or_create("train", RECIPE, b, rebuild=True, on_wait=waiting.set)
    t.join()
    assert b.calls == 0 and torch.equal(e.tensors["w"], torch.full((3,), 4.0))
    # ...but a later rebuild=True call does rebuild, and a free lock is no wait
    waited: list[bool] = []
    e = Store(tmp_path).get_or_create("train", RECIPE, b, rebuild=True, on_wait=lambda: waited.append(True))
    assert b.calls == 1 and torch.equal(e.tensors["w"], torch.full((3,), 1.0)) and waited == []


# ----------------------------------------------------------------------------- corruption


def _truncate(path: Path) -> None:
    tp = path / "tensors.safetensors"
    data = tp.read_bytes()
    tp.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    (path / "tensors.safetensors").write_bytes(b"this is not a safetensors file at all" * 10)


def _garbage_matching_sha(path: Path) -> None:
    """Garbage tensor file with meta updated to match: only the header check catches it."""
    import hashlib

    data = b"\xff" * 64
    (path / "tensors.safetensors").write_bytes(data)
    m = json.loads((path / "meta.json").read_text())
    m["tensors_sha256"] = hashlib.sha256(data).hexdigest()
    (path / "meta.json").write_text(json.dumps(m))


def _delete_tensors(path: Path) -> None:
    (path / "tensors.safetensors").unlink()


def _bad_json(path: Path) -> None:
    (path / "meta.json").write_text('{"key": "abc", ')


def _wrong_key(path: Path) -> None:
    m = json.loads((path / "meta.json").read_text())
    m["key"] = "f" * 64
    (path / "meta.json").write_text(json.dumps(m))


def _tampered_recipe(path: Path) -> None:
    m = json.loads((path / "meta.json").read_text())
    m["recipe"]["seed"] = 12345
    (path / "meta.json").write_text(json.dumps(m))


CORRUPTIONS = {
    "truncated": (_truncate, "sha256"),
    "garbage": (_garbage, "sha256"),
    "garbage-matching-sha": (_garbage_matching_sha, "not a valid safetensors"),
    "no-meta": (delete_meta, "meta.json is missing"),
    "no-tensors": (_delete_tensors, "tensors.safetensors is missing"),
    "wrong-sha": (wrong_sha, "sha256"),
    "bad-json": (_bad_json, "not valid JSON"),
    "wrong-key": (_wrong_key, "names key"),
    "tampered-recipe": (_tampered_recipe, "does not hash"),
}


@pytest.mark.parametrize("mode", list(CORRUPTIONS))
def test_corrupt_entry_detected_quarantined_rebuilt(tmp_path, mode):
    corrupt, reason = CORRUPTIONS[mode]
    s = Store(tmp_path)
    b = Builder(value=1.0)
    e = s.get_or_create("train", RECIPE, b)
    assert b.calls == 1
    path = s.path(e.key)
    corrupt(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    with pytest.raises(CorruptEntryError, match=reason) as ei:
        s.load(e.key)
    msg = str(ei.value)
    assert e.key in msg and str(path) in msg and "lmccheck cache clear" in msg
    assert s.check(e.key) == ("corrupt", ei.value.reason)

    b2 = Builder(value=2.0)
    with pytest.warns(StoreWarning, match=e.key) as rec:
        e2 = s.get_or_create("train", RECIPE, b2)
    assert "corrupt" in str(rec[0].message)
    assert b2.calls == 1
    assert torch.equal(e2.tensors["w"], torch.full((3,), 2.0))
    # the damaged entry was moved aside intact, not deleted
    moved = list((tmp_path / "corrupt").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(e.key + "-")
    assert {p.name: p.read_bytes() for p in moved[0].iterdir()} == before
    # the rebuilt entry loads cleanly, and is not rebuilt again
    assert torch.equal(s.load(e.key).tensors["w"], torch.full((3,), 2.0))
    b3 = Builder(value=3.0)
    assert torch.equal(s.get_or_create("train", RECIPE, b3).tensors["w"], torch.full((3,), 2.0))
    assert b3.calls == 0
    assert tmp_leftovers(tmp_path) == []


def test_entry_that_is_a_file_is_corrupt(tmp_path):
    s = Store(tmp_path)
    key = s.key("train", RECIPE)
    s.path(key).parent.mkdir(parents=True)
    s.path(key).write_text("oops")
    with pytest.raises(CorruptEntryError, match="not a folder"):
        s.load(key)
    with pytest.warns(StoreWarning):
        e = s.get_or_create("train", RECIPE, Builder())
    assert s.load(key).key == e.key


def test_load_missing(tmp_path):
    s = Store(tmp_path)
    key = s.key("train", RECIPE)
    assert not s.contains(key)
    with pytest.raises(EntryNotFoundError, match=key):
        s.load(key)


def test_incompatible_format_version(tmp_path):
    s = Store(tmp_path)
    e = s.put("train", RECIPE, {"w": torch.zeros(1)}, {})
    mp_ = s.path(e.key) / "meta.json"
    m = json.loads(mp_.read_text())
    m["format_version"] = 999
    mp_.write_text(json.dumps(m))
    with pytest.raises(IncompatibleEntryError) as ei:
        s.load(e.key)
    msg = str(ei.value)
    assert "999" in msg and e.key in msg and "--lmc-retrain" in msg and "lmccheck cache clear" in msg
    assert not isinstance(ei.value, CorruptEntryError) and isinstance(ei.value, StoreError)
    assert store_admin.ls(s)[0]["status"] == "incompatible"

    b = Builder(value=7.0)
    with pytest.warns(StoreWarning, match="incompatible"):
        e2 = s.get_or_create("train", RECIPE, b)
    assert b.calls == 1 and torch.equal(e2.tensors["w"], torch.full((3,), 7.0))
    assert s.load(e.key).meta["format_version"] == FORMAT_VERSION
    assert len(list((tmp_path / "corrupt").iterdir())) == 1


# ----------------------------------------------------------------------------- interruption


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_in_build_leaves_nothing(tmp_path, exc):
    s = Store(tmp_path, lock_timeout=5)
    with pytest.raises(type(exc)):
        s.get_or_create("train", RECIPE, Builder(exc=exc))
    assert entry_dirs(tmp_path) == []
    assert tmp_leftovers(tmp_path) == []
    key = s.key("train", RECIPE)
    # the lock was released: another lock object (another "process") can take it at once
    other = filelock.FileLock(str(s.lock_path(key)), timeout=0)
    other.acquire()
    other.release()
    b = Builder()
    e = Store(tmp_path, lock_timeout=5).get_or_create("train", RECIPE, b)
    assert b.calls == 1 and s.load(e.key).key == key


def test_interrupt_during_write_leaves_nothing(tmp_path, monkeypatch):
    s = Store(tmp_path)

    def boom(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_fsync_dir", boom)
    with pytest.raises(KeyboardInterrupt):
        s.get_or_create("train", RECIPE, Builder())
    assert entry_dirs(tmp_path) == []
    assert tmp_leftovers(tmp_path) == []
    monkeypatch.undo()
    b = Builder()
    s.get_or_create("train", RECIPE, b)
    assert b.calls == 1


def test_failed_rebuild_keeps_old_entry(tmp_path):
    s = Store(tmp_path)
    s.get_or_create("train", RECIPE, Builder(value=1.0))
    with pytest.raises(RuntimeError):
        s.get_or_create("train", RECIPE, Builder(exc=RuntimeError("x")), rebuild=True)
    assert torch.equal(s.load(s.key("train", RECIPE)).tensors["w"], torch.full((3,), 1.0))


def test_rebuild(tmp_path):
    s = Store(tmp_path)
    b = Builder(value=1.0)
    e1 = s.get_or_create("train", RECIPE, b)
    e2 = s.get_or_create("train", RECIPE, b)
    assert b.calls == 1 and torch.equal(e2.tensors["n"], torch.tensor([1]))
    b2 = Builder(value=5.0)

    def slow_build():
        time.sleep(0.2)
        return b2()

    t0 = time.perf_counter()
    e3 = s.get_or_create("train", RECIPE, slow_build, rebuild=True)
    elapsed = time.perf_counter() - t0
    assert b2.calls == 1 and e3.key == e1.key
    assert torch.equal(s.load(e1.key).tensors["w"], torch.full((3,), 5.0))
    # the build's own time: at least its sleep, at most the whole call
    assert 0.2 <= e3.meta["wall_time_s"] <= elapsed
    # loading (directly or through get_or_create) reports the build's time, not its own
    assert s.load(e1.key).meta["wall_time_s"] == e3.meta["wall_time_s"]
    assert Store(tmp_path).get_or_create("train", RECIPE, b2).meta["wall_time_s"] == e3.meta["wall_time_s"]
    assert b2.calls == 1
    assert len(entry_dirs(tmp_path)) == 1 and tmp_leftovers(tmp_path) == []


def test_builder_wall_time_and_return_type(tmp_path):
    s = Store(tmp_path)
    e = s.get_or_create("train", {"a": 1}, lambda: ({"w": torch.zeros(1)}, {"wall_time_s": 123.0}))
    assert e.meta["wall_time_s"] == 123.0
    with pytest.raises(TypeError, match="must return"):
        s.get_or_create("train", {"a": 2}, lambda: {"w": torch.zeros(1)})
    assert len(entry_dirs(tmp_path)) == 1


# ----------------------------------------------------------------------------- first write is atomic

# Polls one key from another process while a first put() of it is under way, and
# reports what it saw.  Each poll: contains(), check(verify=False), then load().
_READER = r"""
import json, sys, time
from lmccheck.store import EntryNotFoundError, Store, StoreError

root, key, ready, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s = Store(root)
polls, bad, loaded_once = [], [], False
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    t = time.time()
    present = s.contains(key)
    status, problem = s.check(key, verify=False)
    try:
        s.load(key)
        loaded = "ok"
    except EntryNotFoundError:
        loaded = "missing"
    except StoreError as e:
        loaded = f"{type(e).__name__}: {e}"
    polls.append((t, status, loaded))
    # an entry is absent or complete; once seen complete (or present) it stays complete
    if (status not in ("missing", "ok") or loaded not in ("missing", "ok")
            or ((present or loaded_once) and loaded != "ok")):
        bad.append([present, status, problem, loaded])
    loaded_once = loaded_once or loaded == "ok"
    if len(polls) == 1:
        open(ready, "w").close()
    if loaded_once and status == "ok" and present:
        break
    time.sleep(0.0005)
print(json.dumps({"polls": polls, "bad": bad[:5], "n_bad": len(bad), "complete": loaded_once}))
"""


@pytest.mark.slow
def test_first_put_is_never_seen_partial(tmp_path, monkeypatch):
    """A reader polling a key during its first put() sees no entry, then the whole entry."""
    root = tmp_path / "cache"
    s = Store(root)
    key = s.key("train", RECIPE)
    ready = tmp_path / "reader-ready"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(root), key, str(ready), "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert reader.poll() is None, reader.communicate()[1]
            assert time.monotonic() < deadline, "reader did not start"
            time.sleep(0.01)

        # a slow disk: every file is written in chunks, so a partial file lasts long enough to be seen
        window: list[float] = []

        def slow_write(path, data):
            if not window:
                window.append(time.time())
            with open(path, "xb") as f:
                for i in range(0, len(data), 1 << 16):
                    f.write(data[i : i + (1 << 16)])
                    f.flush()
                    time.sleep(0.01)
                os.fsync(f.fileno())

        monkeypatch.setattr(store_mod, "_write_file", slow_write)
        g = torch.Generator().manual_seed(1)
        tensors = dict(_tensors(), big=torch.randn(1 << 20, generator=g))  # 4 MiB: 64 chunks, >= 0.64 s
        e = s.put("train", RECIPE, tensors, {"metrics": {"acc": 0.5}})
        window.append(time.time())
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:  # pragma: no cover - only on failure
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen["n_bad"] == 0, f"reader saw a partial entry: {seen['bad']}"
    assert seen["complete"], "reader never saw the entry"
    # the reader really looked while the files were being written
    during = [p for p in seen["polls"] if window[0] <= p[0] <= window[-1]]
    assert len(during) >= 5, (len(seen["polls"]), window)
    # check() runs before load() in a poll, so the entry may appear between them, never vanish
    assert {(p[1], p[2]) for p in during} <= {("missing", "missing"), ("missing", "ok"), ("ok", "ok")}
    _assert_same(tensors, s.load(e.key).tensors)


# Does a first put() and SIGKILLs itself part-way: after the tensor file, or after
# meta.json, has been written (and fsynced), before put() returns.
_CRASHING_WRITER = r"""
import json, os, signal, sys
import torch
from lmccheck import store as store_mod

root, point, recipe = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
real_write = store_mod._write_file

def write_then_die(path, data):
    real_write(path, data)
    if path.name == {"after-tensors": store_mod.TENSORS_FILE, "after-meta": store_mod.META_FILE}[point]:
        os.kill(os.getpid(), signal.SIGKILL)

store_mod._write_file = write_then_die
store_mod.Store(root).put("train", recipe, {"w": torch.arange(10000.0)}, {"metrics": {"acc": 0.5}})
sys.exit(3)  # not reached: put() wrote both files
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-tensors", "after-meta"])
def test_crash_during_first_put_leaves_no_entry(tmp_path, point):
    root = tmp_path / "cache"
    recipe = {"name": "crash", "seed": 0}
    key = recipe_key("train", recipe)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(root), point, json.dumps(recipe)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stderr)
    written = {p.name for p in root.rglob("*") if p.is_file()}
    assert {"after-tensors": "tensors.safetensors", "after-meta": "meta.json"}[point] in written  # died part-way

    s = Store(root, lock_timeout=30)
    assert not s.contains(key)
    assert s.check(key, verify=False)[0] == "missing" and s.check(key)[0] == "missing"
    with pytest.raises(EntryNotFoundError):
        s.load(key)
    assert store_admin.ls(s) == [] and s.keys() == []
    assert [p for p in (root / "objects").rglob("*") if not p.is_dir()] == []
    assert entry_dirs(root) == []

    # the next get_or_create builds it afresh (the dead child's lock is free), with nothing to quarantine
    b = Builder(value=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        e = s.get_or_create("train", recipe, b)
    assert b.calls == 1 and e.key == key
    assert torch.equal(Store(root).load(key).tensors["w"], torch.full((3,), 4.0))
    assert list((root / "corrupt").iterdir()) == []


# ----------------------------------------------------------------------------- writability


def test_not_writable_root(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    root = blocker / "cache"
    s = Store(root)  # opening is lazy and must not fail
    b = Builder()
    with pytest.raises(StoreNotWritableError) as ei:
        s.get_or_create("train", RECIPE, b)
    assert str(root) in str(ei.value) and "LMCCHECK_CACHE" in str(ei.value)
    assert b.calls == 0  # checked before spending time on training
    with pytest.raises(StoreNotWritableError, match="LMCCHECK_CACHE"):
        s.put("train", RECIPE, {}, {})
    # a root that is itself a file
    with pytest.raises(StoreNotWritableError, match=str(blocker).replace("\\", "\\\\")):
        Store(blocker).put("train", RECIPE, {}, {})
    assert store_admin.ls(Store(root)) == []


def test_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCCHECK_CACHE", str(tmp_path / "env-cache"))
    assert Store().root == tmp_path / "env-cache"
    monkeypatch.delenv("LMCCHECK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Store().root == tmp_path / "home" / ".cache" / "lmccheck"
    assert Store(str(tmp_path / "x")).root == tmp_path / "x"


def test_stale_tmp_cleaned_on_init(tmp_path):
    tmp = tmp_path / "tmp"
    old, fresh = tmp / "old.partial", tmp / "fresh.partial"
    old.mkdir(parents=True)
    (old / "tensors.safetensors").write_bytes(b"x")
    fresh.mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    Store(tmp_path)
    assert not old.exists() and fresh.exists()


# ----------------------------------------------------------------------------- no pickle


def test_load_never_unpickles(tmp_path, monkeypatch):
    s = Store(tmp_path)
    e = s.put("train", RECIPE, _tensors(), {"metrics": {"acc": 1.0}})

    def forbidden(*a, **k):
        raise AssertionError("pickle/torch.load used while loading")

    for mod, name in [(pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(mod, name, forbidden)
    got = Store(tmp_path).load(e.key)
    _assert_same(_tensors(), got.tensors)
    b = Builder()
    assert Store(tmp_path).get_or_create("train", RECIPE, b).key == e.key and b.calls == 0
