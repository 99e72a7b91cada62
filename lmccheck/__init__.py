"""lmccheck: executable checks of linear mode connectivity modulo permutation.

The package itself is light: ``import lmccheck`` loads no torch. The names below load their module (and torch)
when first used, so the command line's cache commands and the pytest-xdist controller start quickly.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("lmccheck")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"

if TYPE_CHECKING:
    from .models import get_model
    from .permutation import Permutation, PermutationSpec, check_spec, permutation_spec

#: the public names and the module each is loaded from on first use
_LAZY = {
    "get_model": "models",
    "Permutation": "permutation",
    "PermutationSpec": "permutation",
    "check_spec": "permutation",
    "permutation_spec": "permutation",
}

__all__ = ["Permutation", "PermutationSpec", "__version__", "check_spec", "get_model", "permutation_spec"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
