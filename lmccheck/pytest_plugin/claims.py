"""Which claim a check tests and which checks a run selects: the markers (``claim(id)``, ``gpu``,
``lmc_finding``, ``lmc_budget``, ``lmc_run_order``), the claims catalog (ini option ``lmc_catalog``), the claim
read from an item or from a node id alone, and the deselection by ``--lmc-budget`` and ``--lmc-claim``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..catalog import Catalog, CatalogError, claim_of_check, load_catalog, parse_ids
from ..nodeids import base_nodeid
from .options import BUDGETS

__all__ = [
    "BUDGET_MARK",
    "RUN_ORDER_MARK",
    "catalog",
    "claim_from_nodeid",
    "claim_id",
    "default_setting",
    "deselect",
    "parse_claim_ids",
    "register_markers",
    "run_order",
]

#: the mark naming the ``--lmc-budget`` a check belongs to (``full`` or a reduced budget): a project collects every
#: budget's version of its GPU checks and the run keeps those of its own budget; an unmarked check runs under any
BUDGET_MARK = "lmc_budget"

#: the mark that orders checks: ``lmc_run_order(n)`` runs after every check of a lower n (0 unmarked), so that a
#: check sharing an xdist group with another setting's checks runs after them (claims.settings.WORKER_GROUPS)
RUN_ORDER_MARK = "lmc_run_order"


def register_markers(config: pytest.Config) -> None:
    """Register the lmccheck markers (the project runs with --strict-markers)."""
    config.addinivalue_line("markers", "claim(id): the paper claim this check tests, e.g. claim('S3')")
    config.addinivalue_line(
        "markers", "lmc_finding(reason): a setting where the claim fails significantly (a known finding): its FAIL "
        "keeps the run green and is reported as FAIL; a PASS there fails the run, INCONCLUSIVE does not")
    config.addinivalue_line("markers",
                            "gpu: paper-scale setting; needs CUDA (deselected by default, select with -m gpu)")
    config.addinivalue_line("markers", f"{RUN_ORDER_MARK}(n): run after the checks of a lower n (unmarked: 0)")
    config.addinivalue_line("markers", f"{BUDGET_MARK}(name): the --lmc-budget a GPU check belongs to ("
                            f"{', '.join(BUDGETS)}); a run deselects the other budgets' checks")


def claim_id(item: pytest.Item) -> str | None:
    """The id from the item's ``claim`` marker; None without one.

    Raises ``pytest.UsageError`` for a malformed marker.
    """
    marker = item.get_closest_marker("claim")
    if marker is None:
        return None
    args = list(marker.args) or [marker.kwargs.get("id")]
    if len(args) != 1 or not isinstance(args[0], str) or not args[0]:
        raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.claim('S3') with exactly one claim id string")
    return args[0]


_catalog_key = pytest.StashKey["Catalog | None"]()


def catalog(config: pytest.Config) -> Catalog | None:
    """The run's claims catalog (ini option ``lmc_catalog``), loaded once; None when none is configured."""
    if _catalog_key not in config.stash:
        try:
            config.stash[_catalog_key] = load_catalog(str(config.getini("lmc_catalog") or ""))
        except CatalogError as exc:
            raise pytest.UsageError(str(exc)) from None
    return config.stash[_catalog_key]


def parse_claim_ids(config: pytest.Config, values: list[str]) -> list[str]:
    """``["S2,S5", "z1"]`` -> ``["S2", "S5", "Z1"]``; a ``pytest.UsageError`` names an id outside the catalog."""
    try:
        return parse_ids(values, catalog(config))
    except CatalogError as exc:
        raise pytest.UsageError(f"--lmc-claim: {exc} (e.g. --lmc-claim S2,S5)") from None


def run_order(item: pytest.Item) -> int:
    """An item's ``lmc_run_order`` (0 when it has none)."""
    mark = item.get_closest_marker(RUN_ORDER_MARK)
    return int(mark.args[0]) if mark is not None else 0


def deselect(config: pytest.Config, items: list[pytest.Item], keep: Callable[[pytest.Item], bool]) -> None:
    """Deselect (in place, reported to pytest) the items ``keep`` says no to."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (kept if keep(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def claim_from_nodeid(nodeid: str, claims: Catalog | None) -> tuple[str, str] | None:
    """``(claim, setting)`` read from a claim check's node id alone, for a process that never sees the items
    (the controller under pytest-xdist): the function is named ``test_<claim id>_...`` (every check of
    ``claims/`` is; tests/test_claim_names.py keeps it so) and the setting is its parametrize id. None for a
    node id that does not name a claim of ``claims`` (any claim id without a catalog)."""
    name = base_nodeid(nodeid).rsplit("::", 1)[-1]
    func, _, param = name.partition("[")
    claim = claim_of_check(func, claims)
    if claim is None:
        return None
    return claim, (param[:-1] if param.endswith("]") else param) or "default"


def default_setting(item: pytest.Item) -> str:
    """The item's parametrize id, or ``"default"``."""
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None and callspec.id else "default"
