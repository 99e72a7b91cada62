"""lmccheck: executable checks of linear mode connectivity modulo permutation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lmccheck")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"

from .models import get_model  # noqa: E402
from .permutation import Permutation, PermutationSpec, check_spec, permutation_spec  # noqa: E402

__all__ = [
    "Permutation",
    "PermutationSpec",
    "__version__",
    "check_spec",
    "get_model",
    "permutation_spec",
]
