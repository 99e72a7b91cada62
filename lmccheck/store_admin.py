"""Administration of the fixture store: what ``lmccheck cache ls | info | clear`` and a run's plan show.

Plain functions on a :class:`~lmccheck.store.Store`: :func:`ls` lists the entries (kind, size, status, a short
description of the recipe), :func:`info` describes one entry found by a key prefix (:func:`resolve`), :func:`clear`
removes entries and empties the quarantine, :func:`usage` counts entries and bytes; :func:`describe_size` and
:func:`describe_recipe` format sizes and recipes for listings.

Like the store, this module loads no torch: a listing reads meta.json files and file sizes only (``verify=True``
loads and hashes each entry, which loads torch).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .recipe_keys import HEX_DIGITS, KEY_LEN, canonical_json, is_key
from .store import META_FILE, AmbiguousKeyError, EntryNotFoundError, Store, StoreError

__all__ = [
    "MIN_PREFIX",
    "clear",
    "describe_recipe",
    "describe_size",
    "info",
    "ls",
    "resolve",
    "usage",
]

#: Minimum length of a key prefix accepted by :func:`info` / :func:`resolve`.
MIN_PREFIX = 6


# --------------------------------------------------------------------------- formatting


def describe_size(n_bytes: int | float) -> str:
    """Human-readable size with binary units, e.g. ``describe_size(1536) == '1.5 KiB'``."""
    n = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def describe_recipe(recipe: Any, max_len: int = 60) -> str:
    """Short one-line description of a recipe for listings.

    Uses ``recipe["name"]`` if present, else a few identifying fields
    (arch/model/dataset/seed/...), else the first scalar fields; truncated to ``max_len``.
    """
    if not isinstance(recipe, Mapping):
        text = str(recipe)
    elif isinstance(recipe.get("name"), str) and recipe["name"]:
        text = recipe["name"]
    else:
        preferred = ("arch", "model", "dataset", "width", "seed", "epochs", "sparsity")
        parts = [f"{k}={recipe[k]}" for k in preferred if k in recipe and _is_scalar(recipe[k])]
        if not parts:
            parts = [f"{k}={v}" for k, v in sorted(recipe.items()) if _is_scalar(v)][:4]
        text = " ".join(parts) if parts else canonical_json(recipe)
    if len(text) > max_len:
        text = text[: max_len - 3] + "..."
    return text


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _dir_size(path: Path) -> int:
    total = 0
    try:
        if path.is_file():
            return path.stat().st_size
        for p in path.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink():
                    total += p.stat().st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


# --------------------------------------------------------------------------- listing


def _iter_meta(store: Store) -> Iterator[tuple[str, dict[str, Any] | None]]:
    for key in store.keys():
        try:
            raw = json.loads((store.path(key) / META_FILE).read_text("utf-8"))
            yield key, raw if isinstance(raw, dict) else None
        except (OSError, ValueError):
            yield key, None


def _summary(store: Store, key: str, meta: dict[str, Any] | None, verify: bool) -> dict[str, Any]:
    status, problem = store.check(key, verify=verify)
    meta = meta or {}
    recipe = meta.get("recipe")
    size = _dir_size(store.path(key))
    return {
        "key": key,
        "short": key[:12],
        "kind": meta.get("kind"),
        "created": meta.get("created"),
        "size_bytes": size,
        "size": describe_size(size),
        "description": describe_recipe(recipe) if recipe is not None else "",
        "wall_time_s": meta.get("wall_time_s"),
        "status": status,
        "problem": problem,
        "path": str(store.path(key)),
    }


def usage(store: Store) -> tuple[int, int]:
    """(number of entries, bytes they hold on disk), without reading any entry."""
    return len(store.keys()), _dir_size(store.objects_dir)


def ls(store: Store, *, verify: bool = False) -> list[dict[str, Any]]:
    """One summary dict per entry of ``store``, oldest first.

    Keys: key, short, kind, created, size_bytes, size (human), description,
    wall_time_s, status ("ok" / "corrupt" / "incompatible"), problem (None or
    the reason), path.  ``verify=True`` hashes every tensor file (slower).
    """
    rows = [_summary(store, k, m, verify) for k, m in _iter_meta(store)]
    rows.sort(key=lambda r: (r["created"] or "", r["key"]))
    return rows


# --------------------------------------------------------------------------- one entry


def resolve(store: Store, key_or_prefix: str) -> str:
    """Full key of the one entry whose key starts with ``key_or_prefix`` (>= 6 hex digits)."""
    p = str(key_or_prefix).strip().lower()
    if len(p) < MIN_PREFIX or not set(p) <= HEX_DIGITS or len(p) > KEY_LEN:
        raise StoreError(
            f"{key_or_prefix!r} is not a key or key prefix: give at least {MIN_PREFIX} hex digits "
            "of a key shown by `lmccheck cache ls`"
        )
    try:
        candidates = sorted(q.name for q in (store.objects_dir / p[:2]).iterdir() if q.name.startswith(p))
    except OSError:
        candidates = []
    candidates = [c for c in candidates if is_key(c)]
    if not candidates:
        raise EntryNotFoundError(
            f"no cache entry matches {key_or_prefix!r} in {store.root}; run `lmccheck cache ls` to list entries"
        )
    if len(candidates) > 1:
        shown = ", ".join(c[:16] for c in candidates[:5]) + (" ..." if len(candidates) > 5 else "")
        raise AmbiguousKeyError(
            f"key prefix {key_or_prefix!r} matches {len(candidates)} entries ({shown}); give more digits"
        )
    return candidates[0]


def info(store: Store, key_or_prefix: str, *, verify: bool = True) -> dict[str, Any]:
    """Full meta of one entry plus key, path, size_bytes, size, files, status, problem.

    Accepts a full key or a unique prefix of at least 6 hex digits; raises
    :class:`EntryNotFoundError` / :class:`AmbiguousKeyError` otherwise.  A damaged
    entry is still described (status "corrupt", with whatever meta could be read).
    """
    key = resolve(store, key_or_prefix)
    path = store.path(key)
    try:
        raw = json.loads((path / META_FILE).read_text("utf-8"))
        meta = raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        meta = {}
    status, problem = store.check(key, verify=verify)
    files: dict[str, int] = {}
    if path.is_dir():
        for f in sorted(path.iterdir()):
            try:
                files[f.name] = f.stat().st_size
            except OSError:
                pass
    size = _dir_size(path)
    out = dict(meta)
    out.update(
        {
            "key": key,
            "short": key[:12],
            "path": str(path),
            "size_bytes": size,
            "size": describe_size(size),
            "files": files,
            "status": status,
            "problem": problem,
        }
    )
    return out


# --------------------------------------------------------------------------- clearing


def clear(store: Store, kind: str | None = None, *, include_corrupt: bool = True) -> int:
    """Remove entries of ``store`` (all, or those of ``kind``); return how many were removed.

    Each entry is first renamed into root/tmp (so no half-removed folder is ever
    visible in objects/) and then deleted.  With ``kind=None`` and
    ``include_corrupt`` the quarantine folder root/corrupt is emptied as well
    (not counted).  Entries whose meta.json cannot be read only go with kind=None.
    """
    if not store.root.exists():
        return 0
    store.ensure_writable()
    n = 0
    for key, meta in list(_iter_meta(store)):
        if kind is not None and (meta is None or meta.get("kind") != kind):
            continue
        try:
            store.remove_entry_dir(store.path(key))
            n += 1
        except FileNotFoundError:
            pass  # removed concurrently
    if kind is None and include_corrupt:
        try:
            for p in list(store.corrupt_dir.iterdir()):
                if p.is_dir() and not p.is_symlink():
                    store.remove_entry_dir(p)
                else:
                    p.unlink(missing_ok=True)
        except OSError:
            pass
    return n
