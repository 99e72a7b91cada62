"""Every claim check is named ``test_<claim id>_...``: the controller under pytest-xdist reads the claim from it."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from claims.catalog import CATALOG
from lmccheck.pytest_plugin.claims import claim_from_nodeid

CLAIMS = Path(__file__).resolve().parents[1] / "claims"


def _claim_checks() -> list[tuple[str, str, str]]:
    """``(module, function, claim id of its marker)`` for every claim check in ``claims/``."""
    out = []
    for path in sorted(CLAIMS.glob("test_*.py")):
        module = importlib.import_module(f"claims.{path.stem}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "claim"]
            if name.startswith("test_") and marks:
                out.append((path.stem, name, marks[0].args[0]))
    return out


def test_there_are_claim_checks_to_name() -> None:
    claims = {c for _, _, c in _claim_checks()}
    # every claim of the catalog has a check, and every check's claim is in the catalog
    assert claims == set(CATALOG.ids)


@pytest.mark.parametrize(("module", "name", "claim"), _claim_checks())
def test_a_claim_check_is_named_after_its_claim(module: str, name: str, claim: str) -> None:
    assert claim_from_nodeid(f"claims/{module}.py::{name}[a-setting]", CATALOG) == (claim, "a-setting")


def _tiers_of_checks() -> dict[str, set[str]]:
    """Claim id -> the tiers its checks are parametrized over (a ``gpu``-marked setting is the GPU tier)."""
    tiers: dict[str, set[str]] = {}
    for module, name, claim in _claim_checks():
        fn = getattr(importlib.import_module(f"claims.{module}"), name)
        for mark in getattr(fn, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            for value in mark.args[1]:
                marks = getattr(value, "marks", ())
                tiers.setdefault(claim, set()).add("GPU" if any(m.name == "gpu" for m in marks) else "CPU")
    return tiers


def test_the_catalog_says_which_tiers_each_claim_runs_in() -> None:
    """The catalog's tiers (the README's claims index) are the tiers of the claim's parametrized settings."""
    found = _tiers_of_checks()
    assert set(found) == set(CATALOG.ids)
    assert {c.id: set(c.tiers) for c in CATALOG} == found
