"""The plan of a claim run: which products the selected checks need, which are stored, how long the rest takes.

A check's products depend on what it measures along the way, so they are not
all known before it runs. What is known is what the check used the last time
it ran on this store: after every check the run writes a *manifest*
(``<store>/plans/<hash>.json``: the check's node id, seeds and device type,
and every stored key it used with the time that entry took to build). The plan
of a new run reads the manifests of the selected checks:

* products needed: the keys their last runs used;
* stored: those the store holds now;
* time to build the rest: the sum of their recorded build times, measured on
  the machine that built them.

A check that has never run on this store has no manifest: the plan says its
products and time are unknown, rather than guessing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fileio import atomic_write_text
from .store import CODE_VERSION, META_FILE, Store, describe_size

__all__ = ["CheckPlan", "RunPlan", "manifest_path", "plan_run", "store_size", "write_manifest"]

PLANS_DIR = "plans"


def _code_versions() -> dict[str, int]:
    """Every product kind's code version (the kinds are registered first, in whichever process asks)."""
    from .products import kinds

    kinds()
    return dict(CODE_VERSION)


def _identity(nodeid: str, seeds: int, device_type: str) -> dict[str, Any]:
    return {"nodeid": nodeid, "seeds": int(seeds), "device_type": device_type}


def manifest_path(store: Store, nodeid: str, seeds: int, device_type: str) -> Path:
    """Where the manifest of a check (at these seeds, on this kind of device) lives."""
    digest = hashlib.sha256(json.dumps(_identity(nodeid, seeds, device_type), sort_keys=True).encode()).hexdigest()
    return Path(store.root) / PLANS_DIR / f"{digest[:24]}.json"


def _contains(store: Store, key: str) -> bool:
    try:
        return store.contains(key)
    except ValueError:
        return False


def _build_seconds(store: Store, key: str) -> float | None:
    try:
        meta = json.loads((store.path(key) / META_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    value = meta.get("wall_time_s") if isinstance(meta, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def write_manifest(store: Store, nodeid: str, seeds: int, device_type: str, keys: Iterable[str]) -> Path | None:
    """Record the stored products a check used (possibly none) and their build times; None when the store
    cannot be written (read-only)."""
    products = {}
    for key in keys:
        try:
            stored = store.contains(key)
        except ValueError:  # not a store key (a record may name other things)
            continue
        if stored:  # products derived on demand (never stored) are left out
            products[key] = _build_seconds(store, key)
    path = manifest_path(store, nodeid, seeds, device_type)
    payload = {**_identity(nodeid, seeds, device_type), "code_versions": _code_versions(), "products": products}
    try:
        atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    except OSError:
        return None
    return path


@dataclass
class CheckPlan:
    """One selected check: the products of its last run here with their build times (None: it never ran on
    this store, or the code that keys its products changed since) and which of them are stored now."""

    nodeid: str
    label: str
    products: dict[str, float | None] | None = None
    stored: set[str] = field(default_factory=set)


@dataclass
class RunPlan:
    checks: list[CheckPlan] = field(default_factory=list)

    @property
    def known(self) -> list[CheckPlan]:
        return [c for c in self.checks if c.products is not None]

    @property
    def unknown(self) -> list[CheckPlan]:
        return [c for c in self.checks if c.products is None]

    def lines(self, fmt_seconds: Any) -> list[str]:
        """The plan in a few lines, for the header of the run (a product several checks share counts once)."""
        known, unknown = self.known, self.unknown
        out = []
        if known:
            products: dict[str, float | None] = {}
            stored_keys: set[str] = set()
            for c in known:
                products.update(c.products or {})
                stored_keys |= c.stored
            needed, stored = len(products), len(stored_keys & set(products))
            missing = [k for k in products if k not in stored_keys]
            seconds = sum(products[k] or 0.0 for k in missing)
            missing_times = sum(products[k] is None for k in missing)
            head = f"{len(known)} of {len(self.checks)} checks ran on this store before: they used {needed} products"
            if stored == needed:
                out.append(f"{head}, all stored")
            else:
                estimate = f"about {fmt_seconds(seconds)} to build them, from their last build times"
                if missing_times:
                    estimate += f" ({missing_times} without a recorded time)"
                out.append(f"{head}, {stored} stored, {needed - stored} to build: {estimate}")
        if unknown:
            names = ", ".join(c.label for c in unknown[:6]) + (", ..." if len(unknown) > 6 else "")
            one = len(unknown) == 1
            out.append(f"{len(unknown)} {'check' if one else 'checks'} never ran on this store with this code ({names}): "
                       f"{'its' if one else 'their'} products and time are unknown until "
                       f"{'it has' if one else 'they have'}")
        return out


def plan_run(store: Store, checks: Sequence[tuple[str, str]], seeds: int, device_type: str) -> RunPlan:
    """The plan of ``checks`` (``(nodeid, label)`` pairs) from their manifests in ``store``."""
    plan = RunPlan()
    for nodeid, label in checks:
        item = CheckPlan(nodeid, label)
        try:
            data = json.loads(manifest_path(store, nodeid, seeds, device_type).read_text("utf-8"))
            products = {str(k): (None if v is None else float(v)) for k, v in dict(data["products"]).items()}
            current = data.get("code_versions") == _code_versions()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            plan.checks.append(item)  # no manifest, or an unreadable one: unknown
            continue
        if current:  # a changed code version changes keys: the old list says nothing about the new ones
            item.products = products
            item.stored = {k for k in products if _contains(store, k)}
        plan.checks.append(item)
    return plan


def store_size(store: Store) -> str:
    """``"650 entries, 859.2 MiB"`` for the header of a run."""
    entries, size = store.usage()
    return f"{entries} entries, {describe_size(size)}"
