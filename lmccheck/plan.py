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
products and time on this machine are unknown, rather than guessing. When
lmccheck ships the manifests of every such check (``reference_times.json``: the
products each check used in a cold ``make claims`` on the machine it names and
their build times there, for the same seeds, kind of device and code versions),
the plan adds how many products that is, how many this store holds, and how long
the others took to build on that machine, naming it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fileio import atomic_write_text
from .nodeids import base_nodeid
from .recipe_keys import CODE_VERSION
from .store import META_FILE, Store
from .store_admin import describe_size, usage

__all__ = [
    "CheckPlan",
    "RunPlan",
    "manifest_path",
    "plan_run",
    "reference_estimate",
    "store_size",
    "write_manifest",
    "write_reference",
]

PLANS_DIR = "plans"

#: cold wall times of the shipped claim checks, measured on one machine (``tools/reference_times.py``)
REFERENCE_FILE = Path(__file__).with_name("reference_times.json")


def _code_versions() -> dict[str, int]:
    """Every product kind's code version (the kinds are registered first, in whichever process asks)."""
    from . import kinds as _  # noqa: F401 - registers lmccheck's kinds

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
    reference: tuple[float, int, int, str] | None = None
    """For the unknown checks, from the reference machine (:func:`reference_estimate`): seconds to build what
    this store lacks, products needed, products stored here, the machine. None: not known for all of them."""

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
            line = (f"{len(unknown)} {'check' if one else 'checks'} never ran on this store with this code ({names}): "
                    f"{'its' if one else 'their'} products and time on this machine are unknown until "
                    f"{'it has' if one else 'they have'}")
            if self.reference is not None:
                seconds, needed, stored, machine = self.reference
                they = "it" if one else "they"
                if needed:
                    line += (f"; on the reference machine ({machine}) {they} used {needed} products ({stored} stored "
                             f"here), and the others took about {fmt_seconds(seconds)} to build there")
                else:
                    line += f"; on the reference machine ({machine}) {they} used no stored products"
            out.append(line)
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
    if plan.unknown:
        plan.reference = reference_estimate(store, [c.nodeid for c in plan.unknown], seeds, device_type)
    return plan


def reference_estimate(
    store: Store | None, nodeids: Sequence[str], seeds: int, device_type: str, path: Path | None = None
) -> tuple[float, int, int, str] | None:
    """For checks this store has no manifest of: ``(seconds, needed, stored, machine)`` from the reference
    file: the products those checks used on the reference machine (a product several share counts once), how
    many of them ``store`` holds already, and how long the others took to build there. None unless the file
    has every one of ``nodeids``, for these seeds, this kind of device and the current code versions."""
    try:
        data = json.loads((REFERENCE_FILE if path is None else path).read_text("utf-8"))
        if (data["seeds"], data["device_type"], data["code_versions"]) != (int(seeds), device_type,
                                                                         _code_versions()):
            return None
        checks = {str(n): {str(k): (None if v is None else float(v)) for k, v in dict(p).items()}
                  for n, p in dict(data["checks"]).items()}
        machine = str(data["machine"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not nodeids or any(n not in checks for n in nodeids):
        return None
    products: dict[str, float | None] = {}
    for n in nodeids:
        products.update(checks[n])
    stored = {k for k in products if store is not None and _contains(store, k)}
    seconds = sum(v or 0.0 for k, v in products.items() if k not in stored)
    return seconds, len(products), len(stored), machine


def write_reference(store: Store, seeds: int, device_type: str, machine: str, path: Path | None = None) -> Path:
    """Write the reference file from the manifests of a store filled by a cold claim run on ``machine``: every
    check's products with the time each took to build, for these seeds and this kind of device."""
    current = _code_versions()
    checks: dict[str, dict[str, float | None]] = {}
    for manifest in sorted((Path(store.root) / PLANS_DIR).glob("*.json")):
        try:
            data = json.loads(manifest.read_text("utf-8"))
            if (data["seeds"], data["device_type"], data["code_versions"]) != (int(seeds), device_type, current):
                continue
            checks[base_nodeid(str(data["nodeid"]))] = {str(k): (None if v is None else round(float(v), 2))
                                           for k, v in sorted(dict(data["products"]).items())}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    if not checks:
        raise ValueError(f"{store.root} has no manifest for {seeds} seeds on {device_type} with the current code; "
                         "run the claims on it first")
    payload = {"machine": machine, "seeds": int(seeds), "device_type": device_type, "code_versions": current,
               "checks": dict(sorted(checks.items()))}
    target = REFERENCE_FILE if path is None else path
    atomic_write_text(target, json.dumps(payload, indent=0, sort_keys=True) + "\n")
    return target


def store_size(store: Store) -> str:
    """``"650 entries, 859.2 MiB"`` for the header of a run."""
    entries, size = usage(store)
    return f"{entries} entries, {describe_size(size)}"
