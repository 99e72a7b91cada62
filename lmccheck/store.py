"""Content-addressed fixture store for trained networks.

Training is expensive, so every *product* (a trained network, a spawned pair, an
IMP run, ...) is stored on disk under a key derived from its recipe (:mod:`lmccheck.recipe_keys`).  Each
recipe costs one training run, ever -- even when several pytest-xdist workers or
separate processes ask for the same recipe at the same time.

On-disk layout (``FORMAT_VERSION`` 1)::

    <root>/
        objects/<key[:2]>/<key>/tensors.safetensors   # all tensors, flat names
        objects/<key[:2]>/<key>/meta.json             # written last; see Store.put
        tmp/        # entries under construction (same filesystem -> atomic rename)
        locks/      # one lock file per key, held around check-then-build
        corrupt/    # damaged / incompatible entries moved aside, never deleted

Safety properties:

* Entries are built in ``tmp/``, fsynced, then renamed into ``objects/`` in one
  step, so a reader never sees a half-written entry.
* ``get_or_create`` holds a per-key :class:`filelock.FileLock` around
  check-then-build, so concurrent processes build once; the others wait and load.
* Every load verifies the entry (meta.json parses, format version, key, recipe
  hash, safetensors header); the sha256 of the tensor file is computed in
  chunks on the first load in a session (again whenever the file's size or
  mtime changes), and the tensors are then read through a memory map, so an
  entry is never held twice in memory.  Damaged entries are reported, moved to
  ``corrupt/`` and rebuilt by ``get_or_create``.
* Loading only ever uses :mod:`json` and :mod:`safetensors` -- never pickle or
  ``torch.load``.

This module has no pytest dependency; the pytest plugin and the CLI build on it.  Listing, describing and
clearing entries (``lmccheck cache ls | info | clear``) is :mod:`lmccheck.store_admin`.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
import safetensors

if TYPE_CHECKING:  # torch loads with the first tensor written or read: listing a store needs no torch
    import torch

from .fileio import apply_umask
from .recipe_keys import _jsonable, _key_for, code_version, is_key, recipe_key

__all__ = [
    "FORMAT_VERSION",
    "META_FILE",
    "TENSORS_FILE",
    "AmbiguousKeyError",
    "CorruptEntryError",
    "Entry",
    "EntryNotFoundError",
    "IncompatibleEntryError",
    "Store",
    "StoreError",
    "StoreNotWritableError",
    "StoreWarning",
    "default_root",
]

#: Version of the on-disk layout of one entry.
FORMAT_VERSION: int = 1

TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
#: Environment variable naming the store root.
ENV_VAR = "LMCCHECK_CACHE"
#: Temp / trash directories older than this are removed when a Store is opened.
STALE_TMP_SECONDS = 24 * 3600

_FIX_CLEAR = "run `lmccheck cache clear` or delete that folder"

# Fields of meta.json written by the store itself; builder meta cannot override them.
_RESERVED_META = (
    "key",
    "kind",
    "recipe",
    "code_version",
    "format_version",
    "created",
    "created_unix",
    "tensors_file",
    "tensors_sha256",
    "tensors_bytes",
    "n_tensors",
    "versions",
)


# --------------------------------------------------------------------------- errors


class StoreError(RuntimeError):
    """Base class of store errors.  Messages name the problem and the fix."""


class CorruptEntryError(StoreError):
    """An entry on disk is damaged or incomplete."""

    def __init__(self, key: str, path: Path, reason: str) -> None:
        self.key = key
        self.path = path
        self.reason = reason
        super().__init__(
            f"cache entry {key} is corrupt: {reason} (at {path}). "
            f"To fix, {_FIX_CLEAR}; it will be rebuilt on next use."
        )


class IncompatibleEntryError(StoreError):
    """An entry was written with a different on-disk format version."""

    def __init__(self, key: str, path: Path, found: Any, reason: str | None = None) -> None:
        self.key = key
        self.path = path
        self.found = found
        self.reason = reason or (
            f"it was written with store format version {found!r}, "
            f"this lmccheck reads format version {FORMAT_VERSION}"
        )
        super().__init__(
            f"cache entry {key} is incompatible: {self.reason} (at {path}). "
            "To fix, rebuild it with `--lmc-retrain`, or run `lmccheck cache clear` "
            "or delete that folder."
        )


class StoreNotWritableError(StoreError):
    """The store root cannot be created or written."""

    def __init__(self, root: Path, detail: str) -> None:
        self.root = root
        super().__init__(
            f"the lmccheck cache folder {root} is not writable ({detail}). "
            f"Set {ENV_VAR} (or pass --lmc-cache) to a writable folder."
        )


class EntryNotFoundError(StoreError):
    """No entry exists for a key or key prefix."""


class AmbiguousKeyError(StoreError):
    """A key prefix matches more than one entry."""


class StoreWarning(UserWarning):
    """Issued when get_or_create moves a corrupt or incompatible entry aside."""


# --------------------------------------------------------------------------- helpers


def default_root() -> Path:
    """``$LMCCHECK_CACHE`` if set and non-empty, else ``~/.cache/lmccheck``."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/lmccheck").expanduser()


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _fsync_dir(path: Path) -> None:
    """fsync a directory so a rename / new file in it is durable (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _library_versions() -> dict[str, str]:
    import torch

    try:
        from lmccheck import __version__ as lmc_version
    except Exception:  # pragma: no cover
        lmc_version = "unknown"
    return {
        "lmccheck": str(lmc_version),
        "torch": str(torch.__version__),
        "safetensors": str(getattr(safetensors, "__version__", "unknown")),
        "python": platform.python_version(),
    }


def _to_cpu_tensors(tensors: Mapping[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors for entry {key} must be a dict of name -> torch.Tensor, got {type(tensors).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"tensor names must be non-empty strings, got {name!r} (entry {key})")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tensor {name!r} of entry {key} is a {type(t).__name__}, not a torch.Tensor")
        if t.layout != torch.strided:
            raise TypeError(f"tensor {name!r} of entry {key} has layout {t.layout}; only dense tensors can be stored")
        # clone: own, contiguous, unshared CPU storage (safetensors rejects shared/strided tensors)
        out[name] = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return out


# --------------------------------------------------------------------------- entry


@dataclass
class Entry:
    """One stored product: its key, CPU tensors (flat names) and meta.json contents."""

    key: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    built: bool = False
    """True when this call built the entry, False when it was loaded."""
    seconds: float = 0.0
    """Wall time this call spent building (``built``) or loading the entry."""

    @property
    def short(self) -> str:
        """First 12 hex digits of the key, for display."""
        return self.key[:12]

    @property
    def kind(self) -> str | None:
        """Product kind recorded in meta."""
        return self.meta.get("kind")

    @property
    def recipe(self) -> Any:
        """Recipe recorded in meta (canonical JSON form: tuples became lists)."""
        return self.meta.get("recipe")

    @property
    def metrics(self) -> Any:
        """``meta["metrics"]`` if the builder returned any, else None."""
        return self.meta.get("metrics")


# --------------------------------------------------------------------------- store


class Store:
    """A content-addressed, process-safe store of trained products.

    ``root`` defaults to ``$LMCCHECK_CACHE`` or ``~/.cache/lmccheck``.  Nothing is
    created until the first write; a read-only store with existing entries can be
    loaded from.  ``lock_timeout`` is how long ``get_or_create`` waits for another
    process building the same key (None: forever -- training may take long).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, lock_timeout: float | None = None) -> None:
        self.root: Path = Path(root).expanduser() if root is not None else default_root()
        self.lock_timeout = lock_timeout
        self._writable_checked = False
        # entries whose tensor file was hashed in this session: key -> (size, mtime_ns)
        self._verified: dict[str, tuple[int, int]] = {}
        self._clean_stale_tmp()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---- paths

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def corrupt_dir(self) -> Path:
        return self.root / "corrupt"

    def key(self, kind: str, recipe: Mapping[str, Any]) -> str:
        """Same as :func:`lmccheck.recipe_keys.recipe_key`."""
        return recipe_key(kind, recipe)

    def path(self, key: str) -> Path:
        """Directory of entry ``key``: ``root/objects/<key[:2]>/<key>``."""
        if not is_key(key):
            raise ValueError(f"not a store key (64 lowercase hex digits): {key!r}")
        return self.objects_dir / key[:2] / key

    def lock_path(self, key: str) -> Path:
        """Lock file guarding check-then-build of ``key``."""
        if not is_key(key):
            raise ValueError(f"not a store key (64 lowercase hex digits): {key!r}")
        return self.locks_dir / f"{key}.lock"

    def contains(self, key: str) -> bool:
        """True if an entry directory with a meta.json exists (cheap; does not verify)."""
        return (self.path(key) / META_FILE).is_file()

    def keys(self) -> list[str]:
        """Keys of all entry folders in objects/ (sorted; includes damaged ones)."""
        out: list[str] = []
        try:
            shards = [d for d in self.objects_dir.iterdir() if d.is_dir() and len(d.name) == 2]
        except OSError:
            return []
        for shard in shards:
            try:
                out.extend(p.name for p in shard.iterdir() if is_key(p.name) and p.name[:2] == shard.name)
            except OSError:
                pass
        return sorted(out)

    # ---- writability / housekeeping

    def ensure_writable(self) -> None:
        """Create the store folders and prove we can write there, else StoreNotWritableError."""
        if self._writable_checked:
            return
        try:
            if self.root.exists() and not self.root.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(self.root))
            for d in (self.root, self.objects_dir, self.tmp_dir, self.locks_dir, self.corrupt_dir):
                d.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.tmp_dir)
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as e:
            detail = e.strerror or str(e)
            if e.filename and str(e.filename) != str(self.root):
                detail = f"{detail}: {e.filename}"
            raise StoreNotWritableError(self.root, detail) from e
        self._writable_checked = True

    def _clean_stale_tmp(self) -> None:
        """Best effort: remove temp/trash dirs in root/tmp older than a day."""
        try:
            children = list(self.tmp_dir.iterdir())
        except OSError:
            return
        cutoff = time.time() - STALE_TMP_SECONDS
        for p in children:
            try:
                if p.lstat().st_mtime < cutoff:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink()
            except OSError:
                pass

    def _lock(self, key: str) -> filelock.BaseFileLock:
        timeout = -1 if self.lock_timeout is None else float(self.lock_timeout)
        return filelock.FileLock(str(self.lock_path(key)), timeout=timeout)

    def _acquire(self, lock: filelock.BaseFileLock, key: str, on_wait: Callable[[], None] | None = None) -> None:
        """Take ``key``'s lock; when another caller holds it, call ``on_wait()`` first, then wait."""
        try:
            lock.acquire(timeout=0)
            return
        except filelock.Timeout:
            if on_wait is not None:
                on_wait()
        try:
            lock.acquire()
        except filelock.Timeout as e:
            raise StoreError(
                f"timed out after {self.lock_timeout} s waiting for the lock {lock.lock_file} "
                f"while another process builds cache entry {key}. Wait for it to finish, "
                "or raise the store's lock_timeout."
            ) from e

    def _move_aside(self, src: Path, dest_dir: Path, stem: str) -> Path:
        """Rename ``src`` to a unique name in ``dest_dir``; return the new path."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        stamp = _utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        for i in range(1000):
            dest = dest_dir / (f"{stem}-{stamp}" if i == 0 else f"{stem}-{stamp}-{i}")
            try:
                # os.rename onto an existing empty dir would succeed silently; avoid it
                if dest.exists() or dest.is_symlink():
                    continue
                os.rename(src, dest)
                return dest
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
        raise StoreError(f"could not move {src} aside into {dest_dir}")  # pragma: no cover

    def remove_entry_dir(self, path: Path) -> None:
        """Remove an entry without ever leaving a half-removed dir in objects/."""
        trash = self._move_aside(path, self.tmp_dir, f"trash-{path.name}")
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)

    def quarantine(self, key: str) -> Path:
        """Move entry ``key`` to ``root/corrupt/<key>-<timestamp>`` and return that path."""
        return self._move_aside(self.path(key), self.corrupt_dir, key)

    # ---- reading

    def _read_meta(self, key: str, path: Path) -> dict[str, Any]:
        """Read and sanity-check meta.json; raise Corrupt/Incompatible errors."""
        meta_path = path / META_FILE
        try:
            raw = meta_path.read_bytes()
        except FileNotFoundError:
            raise CorruptEntryError(key, path, f"{META_FILE} is missing (partial or damaged entry)") from None
        except IsADirectoryError:
            raise CorruptEntryError(key, path, f"{META_FILE} is not a file") from None
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CorruptEntryError(key, path, f"{META_FILE} is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise CorruptEntryError(key, path, f"{META_FILE} does not hold a JSON object")
        if "format_version" not in meta:
            raise CorruptEntryError(key, path, f"{META_FILE} has no format_version")
        if meta["format_version"] != FORMAT_VERSION:
            raise IncompatibleEntryError(key, path, meta["format_version"])
        if meta.get("key") != key:
            raise CorruptEntryError(key, path, f"{META_FILE} names key {meta.get('key')!r}, not the folder's key")
        kind, recipe, version = meta.get("kind"), meta.get("recipe"), meta.get("code_version")
        if not isinstance(kind, str) or not kind or isinstance(version, bool) or not isinstance(version, int):
            raise CorruptEntryError(key, path, f"{META_FILE} lacks a valid kind / code_version")
        try:
            recomputed = _key_for(kind, recipe, version)
        except TypeError as e:  # pragma: no cover - json.loads yields JSON types only
            raise CorruptEntryError(key, path, f"recipe in {META_FILE} is not hashable ({e})") from None
        if recomputed != key:
            raise CorruptEntryError(key, path, f"the recipe in {META_FILE} does not hash to the key")
        sha = meta.get("tensors_sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            raise CorruptEntryError(key, path, f"{META_FILE} lacks tensors_sha256")
        return meta

    def load(self, key: str) -> Entry:
        """Load and fully verify entry ``key``; tensors are returned on CPU.

        Raises :class:`EntryNotFoundError` if absent, :class:`CorruptEntryError` if
        damaged (missing/unparseable meta.json, missing tensor file, sha256 mismatch,
        bad safetensors header, key mismatch) and :class:`IncompatibleEntryError` for
        another format version.  Uses only json and safetensors (never pickle).
        """
        from safetensors.torch import load_file  # loads torch

        path = self.path(key)
        if not path.exists() and not path.is_symlink():
            raise EntryNotFoundError(
                f"no cache entry {key} in {self.root}; it is built on first use "
                "(run `lmccheck cache ls` to see what is stored)"
            )
        if not path.is_dir():
            raise CorruptEntryError(key, path, "the entry is not a folder")
        meta = self._read_meta(key, path)
        tensors_path = path / TENSORS_FILE
        t0 = time.perf_counter()
        try:
            stat = tensors_path.stat()
            if self._verified.get(key) != (stat.st_size, stat.st_mtime_ns):
                self._verify_tensors(key, path, tensors_path, meta)
                self._verified[key] = (stat.st_size, stat.st_mtime_ns)
            # one copy in memory: safetensors reads the verified file through a memory map
            tensors = load_file(str(tensors_path))
        except FileNotFoundError:
            self._verified.pop(key, None)
            raise CorruptEntryError(key, path, f"{TENSORS_FILE} is missing") from None
        except CorruptEntryError:
            self._verified.pop(key, None)
            raise
        except OSError as e:
            self._verified.pop(key, None)
            raise CorruptEntryError(key, path, f"{TENSORS_FILE} cannot be read ({e})") from None
        except Exception as e:  # SafetensorError and friends: bad header / layout
            self._verified.pop(key, None)
            raise CorruptEntryError(key, path, f"{TENSORS_FILE} is not a valid safetensors file ({e})") from None
        return Entry(key=key, tensors=dict(tensors), meta=meta, built=False, seconds=time.perf_counter() - t0)

    def _verify_tensors(self, key: str, path: Path, tensors_path: Path, meta: Mapping[str, Any]) -> None:
        """Hash the tensor file in chunks (never holding it whole) against meta.json's sha256."""
        with tensors_path.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        if digest != meta["tensors_sha256"]:
            raise CorruptEntryError(
                key,
                path,
                f"sha256 of {TENSORS_FILE} is {digest[:12]}..., meta.json expects "
                f"{meta['tensors_sha256'][:12]}... (truncated or modified file)",
            )

    def check(self, key: str, *, verify: bool = True) -> tuple[str, str | None]:
        """Return ``(status, problem)``, status one of ok / corrupt / incompatible / missing.

        With ``verify=False`` only meta.json and the tensor file's size are checked
        (cheap); otherwise the entry is fully loaded and hashed.
        """
        path = self.path(key)
        try:
            if verify:
                self._verified.pop(key, None)  # a check always hashes the file again
                self.load(key)
            else:
                if not path.is_dir():
                    if path.exists() or path.is_symlink():
                        raise CorruptEntryError(key, path, "the entry is not a folder")
                    raise EntryNotFoundError(key)
                meta = self._read_meta(key, path)
                tp = path / TENSORS_FILE
                if not tp.is_file():
                    raise CorruptEntryError(key, path, f"{TENSORS_FILE} is missing")
                size = tp.stat().st_size
                if isinstance(meta.get("tensors_bytes"), int) and size != meta["tensors_bytes"]:
                    raise CorruptEntryError(
                        key, path, f"{TENSORS_FILE} has {size} bytes, meta.json expects {meta['tensors_bytes']}"
                    )
        except EntryNotFoundError:
            return "missing", f"no entry {key}"
        except IncompatibleEntryError as e:
            return "incompatible", e.reason
        except CorruptEntryError as e:
            return "corrupt", e.reason
        return "ok", None

    # ---- writing

    def put(
        self,
        kind: str,
        recipe: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None = None,
    ) -> Entry:
        """Store ``tensors`` + ``meta`` as the product of ``kind``/``recipe``, atomically.

        Takes the key's lock.  An existing entry for the key is replaced.  ``meta``
        (metrics etc.) must be JSON-serializable; it is merged into meta.json, whose
        store-owned fields (key, kind, recipe, versions, sha256, ...) take precedence.
        """
        key = self.key(kind, recipe)
        self.ensure_writable()
        lock = self._lock(key)
        self._acquire(lock, key)
        try:
            return self._put_locked(key, kind, recipe, tensors, meta)
        finally:
            lock.release()

    def _put_locked(
        self,
        key: str,
        kind: str,
        recipe: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None,
    ) -> Entry:
        self.ensure_writable()
        if meta is None:
            meta = {}
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta for entry {key} must be a dict, got {type(meta).__name__}")
        cpu = _to_cpu_tensors(tensors, key)
        from safetensors.torch import save

        data = save(cpu, metadata={"format": "pt", "lmccheck_key": key})
        now = _utcnow()
        full: dict[str, Any] = _jsonable(dict(meta), where="meta", strict_keys=False)
        full.update(
            {
                "key": key,
                "kind": kind,
                "recipe": _jsonable(recipe),
                "code_version": code_version(kind),
                "format_version": FORMAT_VERSION,
                "created": now.isoformat(timespec="seconds"),
                "created_unix": now.timestamp(),
                "tensors_file": TENSORS_FILE,
                "tensors_sha256": hashlib.sha256(data).hexdigest(),
                "tensors_bytes": len(data),
                "n_tensors": len(cpu),
                "versions": _library_versions(),
            }
        )
        full.setdefault("wall_time_s", None)
        meta_bytes = (json.dumps(full, sort_keys=True, indent=2, allow_nan=True) + "\n").encode("utf-8")

        dest = self.path(key)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", suffix=".partial", dir=self.tmp_dir))
        try:
            apply_umask(tmp)  # mkdtemp makes it 0700: a store shared by a group must stay readable
            _write_file(tmp / TENSORS_FILE, data)
            _write_file(tmp / META_FILE, meta_bytes)  # meta.json last
            _fsync_dir(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, dest)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    raise
                # replace an existing (old or damaged) entry: move it out, move ours in
                self.remove_entry_dir(dest)
                os.rename(tmp, dest)
            _fsync_dir(dest.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Entry(key=key, tensors=cpu, meta=json.loads(meta_bytes))

    def get_or_create(
        self,
        kind: str,
        recipe: Mapping[str, Any],
        build: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]],
        *,
        rebuild: bool = False,
        on_wait: Callable[[], None] | None = None,
    ) -> Entry:
        """Return the entry for ``kind``/``recipe``, calling ``build()`` at most once overall.

        ``build`` returns ``(tensors, meta)``. The entry says whether this call
        built it (``entry.built``) and how long building or loading took
        (``entry.seconds``).  Concurrent callers (threads,
        processes, xdist workers) serialize on the key's lock: one builds, the others
        wait and load.  A corrupt or incompatible entry is reported with a
        :class:`StoreWarning`, moved to ``root/corrupt/`` and rebuilt.  With
        ``rebuild=True`` an existing entry is rebuilt, unless another caller already
        rebuilt it after this call started.  If ``build`` raises (even
        KeyboardInterrupt) nothing is stored, the lock is released and the exception
        propagates.  Writability of the store is checked before building.
        ``on_wait()`` is called when this call finds another caller holding the key's lock (it then waits,
        and loads what the other built): a progress display says "waiting", not "building".
        """
        key = self.key(kind, recipe)
        requested_at = time.time()
        if not rebuild:  # fast path: no lock, no writes (works on read-only stores)
            try:
                return self.load(key)
            except (EntryNotFoundError, CorruptEntryError, IncompatibleEntryError):
                pass  # re-examined under the lock
        self.ensure_writable()
        lock = self._lock(key)
        self._acquire(lock, key, on_wait)
        try:
            existing = self._load_or_quarantine(key)
            if existing is not None:
                created = existing.meta.get("created_unix")
                if not rebuild or (isinstance(created, (int, float)) and created >= requested_at):
                    return existing
            t0 = time.perf_counter()
            result = build()
            wall = time.perf_counter() - t0
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(
                    f"build() for {kind} entry {key[:12]} must return (tensors, meta), got {type(result).__name__}"
                )
            tensors, meta = result
            meta = dict(meta or {})
            meta.setdefault("wall_time_s", wall)
            entry = self._put_locked(key, kind, recipe, tensors, meta)
            entry.built, entry.seconds = True, wall
            return entry
        finally:
            lock.release()

    def _load_or_quarantine(self, key: str) -> Entry | None:
        """Under the key's lock: load the entry, or move a bad one aside with a warning."""
        path = self.path(key)
        if not path.exists() and not path.is_symlink():
            return None
        try:
            return self.load(key)
        except EntryNotFoundError:
            return None
        except (CorruptEntryError, IncompatibleEntryError) as e:
            what = "corrupt" if isinstance(e, CorruptEntryError) else "incompatible"
            moved = self.quarantine(key)
            warnings.warn(
                f"lmccheck cache entry {key} is {what}: {e.reason}. "
                f"Moved it to {moved} and rebuilding it.",
                StoreWarning,
                stacklevel=3,
            )
            return None
