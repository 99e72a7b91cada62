"""Recipe keys: how a product's recipe becomes the 64-hex-digit key the store files it under.

:func:`recipe_key` hashes :func:`canonical_json` of the kind, the recipe and the kind's code version
(:func:`code_version`, from :data:`CODE_VERSION`, which :func:`lmccheck.products.register` fills from each kind's
declared version); :func:`is_key` tells a key from any other string. The key is the same in every process and on
every machine, whatever the order of a recipe's dict keys.

Like the store, this module loads no torch: a torch dtype or 0-d tensor in a recipe is recognised only once torch is
loaded (it must be, for the object to exist), so listing a store (``lmccheck cache ls``) starts without it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = [
    "CODE_VERSION",
    "DEFAULT_CODE_VERSION",
    "HEX_DIGITS",
    "KEY_LEN",
    "canonical_json",
    "code_version",
    "is_key",
    "recipe_key",
]

#: Per product kind, the version of its code's *semantics*, as the kind declares it: filled by
#: :func:`lmccheck.products.register` from ``Kind.version`` (the one place a version is written; bump it there
#: whenever a change would make stored products of that kind wrong). The version is part of the key, so old
#: entries are simply no longer found (and can be removed with ``lmccheck cache clear``).
CODE_VERSION: dict[str, int] = {}
#: Code version used for kinds missing from :data:`CODE_VERSION`.
DEFAULT_CODE_VERSION: int = 1

#: Length of a key: the hex digits of a sha256.
KEY_LEN = 64
HEX_DIGITS = frozenset("0123456789abcdef")


def code_version(kind: str) -> int:
    """Return the code version of ``kind`` (``DEFAULT_CODE_VERSION`` if unknown)."""
    return CODE_VERSION.get(kind, DEFAULT_CODE_VERSION)


def _jsonable(obj: Any, *, where: str = "recipe", strict_keys: bool = True) -> Any:
    """Convert ``obj`` into plain JSON types (dict/list/str/int/float/bool/None).

    Handles dataclass instances (via :func:`dataclasses.asdict`), mappings,
    tuples/lists, enums (their value), paths (POSIX string), ``torch.dtype``
    (``"torch.float32"``), 0-d tensors and numpy scalars (``.item()``).
    With ``strict_keys`` mapping keys must be strings (so ``1`` and ``"1"`` can never
    collide in a key); otherwise int/float/bool/None keys are stringified like json.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj), where=where, strict_keys=strict_keys)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                if strict_keys or not (k is None or isinstance(k, (int, float, bool))):
                    raise TypeError(
                        f"{where}: mapping keys must be strings, got {k!r} "
                        f"({type(k).__name__}); convert it to a string"
                    )
                k = json.dumps(k)
            if k in out:
                raise TypeError(f"{where}: duplicate key {k!r} after conversion to JSON")
            out[k] = _jsonable(v, where=f"{where}[{k!r}]", strict_keys=strict_keys)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, where=f"{where}[{i}]", strict_keys=strict_keys) for i, v in enumerate(obj)]
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value, where=where, strict_keys=strict_keys)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    torch = sys.modules.get("torch")  # an object can be a torch one only once torch is loaded
    if torch is not None and isinstance(obj, torch.dtype):
        return str(obj)
    if torch is not None and isinstance(obj, torch.Tensor) and obj.ndim == 0:
        return _jsonable(obj.item(), where=where, strict_keys=strict_keys)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item(), where=where, strict_keys=strict_keys)
    raise TypeError(
        f"{where}: cannot convert {type(obj).__name__} value {obj!r} to JSON; "
        "use dataclasses, dicts, lists, tuples, str, int, float, bool or None"
    )


def canonical_json(obj: Any) -> str:
    """Canonical JSON text of ``obj``: keys sorted, no whitespace, ASCII only.

    Floats use Python's shortest round-trip ``repr`` (what :mod:`json` emits), so
    equal floats always give equal text; ``1`` and ``1.0`` differ, as do ``True``
    and ``1``.
    """
    return json.dumps(
        _jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    )


def _key_for(kind: str, recipe: Any, version: int) -> str:
    payload = canonical_json({"kind": kind, "recipe": recipe, "code_version": version})
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def recipe_key(kind: str, recipe: Mapping[str, Any]) -> str:
    """Stable 64-hex-digit sha256 key of ``kind`` + ``recipe`` + the kind's code version.

    The key is the sha256 of :func:`canonical_json` of
    ``{"kind": kind, "recipe": recipe, "code_version": code_version(kind)}``.
    It is identical across processes and machines (no salted ``hash()``) and does
    not depend on dict key order.
    """
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind must be a non-empty string, got {kind!r}")
    return _key_for(kind, recipe, code_version(kind))


def is_key(s: str) -> bool:
    """True if ``s`` is a store key: 64 lowercase hex digits."""
    return isinstance(s, str) and len(s) == KEY_LEN and set(s) <= HEX_DIGITS
