"""Fixtures shared by the claim checks: the store-backed ``lab`` and per-claim product accounting."""

from __future__ import annotations

import pytest

from fixtures.pytest_fixtures import _account_products, lab
from lmccheck.pytest_plugin import LmcConfig

__all__ = ["_account_products", "lab", "n_seeds"]


@pytest.fixture(scope="session")
def n_seeds(lmc_config: LmcConfig) -> int:
    """Replicates per empirical claim (``--lmc-seeds``)."""
    return lmc_config.seeds
