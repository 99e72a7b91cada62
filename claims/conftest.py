"""Fixtures shared by the claim checks: the store-backed ``lab`` and per-claim product accounting."""

from __future__ import annotations

import pytest

from fixtures.pytest_fixtures import _account_products, lab
from lmccheck.pytest_plugin.options import LmcConfig

__all__ = ["_account_products", "lab", "n_seeds"]


def _is_reduced(value: object) -> bool:
    """A reduced setting (``--lmc-budget smoke`` or ``dryrun``), or a family / regime pair of them."""
    return bool(getattr(value, "reduced", "")) or any(getattr(s, "reduced", "") for s in getattr(value, "settings", ()))


@pytest.fixture
def n_seeds(request: pytest.FixtureRequest, lmc_config: LmcConfig) -> int:
    """Replicates per empirical claim (``--lmc-seeds``; without it 3, and 2 for a setting of a reduced
    ``--lmc-budget``, so that a reduced budget leaves the CPU tier as it is)."""
    callspec = getattr(request.node, "callspec", None)
    reduced = callspec is not None and any(_is_reduced(v) for v in callspec.params.values())
    return lmc_config.reduced_seeds if reduced else lmc_config.seeds
