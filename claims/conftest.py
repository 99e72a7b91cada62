"""Fixtures shared by the claim checks: the store-backed :class:`fixtures.Lab`."""

from __future__ import annotations

import pytest

from fixtures import Lab
from lmccheck.pytest_plugin import LmcConfig
from lmccheck.store import Store


@pytest.fixture(scope="session")
def lab(lmc_config: LmcConfig) -> Lab:
    """Trains or loads every network the claims use, through the fixture store."""
    return Lab(
        store=Store(lmc_config.cache),
        device=lmc_config.device,
        data_root=lmc_config.data_root,
        download=lmc_config.download,
        retrain=lmc_config.retrain,
    )


@pytest.fixture(scope="session")
def n_seeds(lmc_config: LmcConfig) -> int:
    """Replicates per empirical claim (``--lmc-seeds``)."""
    return lmc_config.seeds
