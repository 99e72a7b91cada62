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
