"""The shipped reference manifests (the plan's figures for a fresh store) match the code and the claims."""

from __future__ import annotations

import json
from pathlib import Path

from lmccheck.plan import REFERENCE_FILE, _code_versions, reference_estimate

CLAIMS = Path(__file__).resolve().parents[1] / "claims"


def test_the_reference_file_holds_for_the_current_code_and_names_existing_checks() -> None:
    """A product kind's new code version (new keys) or a renamed check makes the file stale: rewrite it with
    tools/reference_times.py from the store of a cold `make claims` (docs/performance.md)."""
    data = json.loads(REFERENCE_FILE.read_text("utf-8"))
    assert data["code_versions"] == _code_versions(), "stale: run a cold `make claims`, then tools/reference_times.py"
    assert (data["seeds"], data["device_type"]) == (3, "cpu")
    sources = {p.name: p.read_text("utf-8") for p in CLAIMS.glob("test_*.py")}
    for nodeid, products in data["checks"].items():
        path, _, name = nodeid.partition("::")
        assert Path(path).name in sources and f"def {name.split('[')[0]}(" in sources[Path(path).name], nodeid
        assert all(len(k) == 64 and (v is None or v >= 0) for k, v in products.items()), nodeid
    estimate = reference_estimate(None, list(data["checks"]), 3, "cpu")
    assert estimate is not None and 10 * 60 < estimate[0] < 60 * 60  # the tier's cold build time, in seconds
