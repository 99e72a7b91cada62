"""Measured values as plain JSON types, for claim records, figures and command output."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Convert measured values to plain JSON types.

    Handles nested dicts/lists/tuples, numpy / torch scalars and arrays
    (anything with ``tolist()`` or ``item()``), and :class:`pathlib.Path`.
    Anything else is converted with ``repr`` so a report is never lost to one
    odd value.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        try:
            return to_jsonable(obj.detach().cpu().tolist() if hasattr(obj, "detach") else obj.tolist())
        except Exception:  # fall through to repr
            pass
    if hasattr(obj, "item"):
        try:
            return to_jsonable(obj.item())
        except Exception:
            pass
    return repr(obj)
