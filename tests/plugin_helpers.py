"""Helpers shared by the pytest plugin's tests (the ``test_plugin_*.py`` modules).

The repository root, the assertion an inner check makes to say it ran, the conftest that gives an inner run the
``lab`` fixture, and two readers: of an inner run's output lines and of the records in its ``claims.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: the one assertion of an inner check that tests the plugin, not a claim: it PASSes when the body ran
RAN = 'measure.expect_exact("ran", True, 1.0, "ran", reading("a test of the plugin: the check ran"))'

#: the conftest of an inner run whose checks use the lab (and so train and measure)
PROGRESS_CONFTEST = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from fixtures.pytest_fixtures import lab, _account_products  # noqa: F401
"""


def line_index(lines: list[str], marker: str) -> int:
    """Index of the first line containing ``marker``."""
    return next(i for i, line in enumerate(lines) if marker in line)


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records of a claims.json keyed by setting."""
    data = json.loads(path.read_text())
    return {r["setting"]: r for r in data["records"]}
