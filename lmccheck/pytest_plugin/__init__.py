"""pytest plugin that runs lmccheck claim checks and writes the claim report.

Loaded through the ``pytest11`` entry point ``lmccheck`` (and, from a source
tree, through the repository's root ``conftest.py``). It provides:

* the ``lmccheck`` option group (``--lmc-device``, ``--lmc-cache``, ...);
* the session fixture ``lmc_config`` (:class:`~.options.LmcConfig`);
* the function fixture ``measure`` (:class:`~lmccheck.measurement.Measurement`),
  the recorder a claim check fills in; its record rides on the test report's
  ``user_properties`` (as a JSON string under :data:`~.records.RECORD_KEY`) so
  it reaches the controller under pytest-xdist;
* the markers ``claim(id)`` and ``gpu``;
* Hypothesis profiles ``ci`` / ``dev``;
* one GPU per xdist worker (``CUDA_VISIBLE_DEVICES``) and an even share of
  the CPU cores (torch threads) per worker;
* the report (``lmccheck.report.write_report``) and a terminal table.

This module holds the hooks and fixtures pytest finds on the plugin; the work
is done in its submodules: :mod:`.options` (the options, :class:`LmcConfig`),
:mod:`.devices` (device, GPU pinning, CPU threads), :mod:`.progress` (live
progress lines), :mod:`.claims` (markers, catalog, selection), :mod:`.records`
(a check's record) and :mod:`.controller` (records, plan, report, table).

This package is the only part of lmccheck that imports pytest. torch is
imported lazily, so loading the plugin stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

import pytest

from .. import verdict as _verdict
from ..measurement import Measurement
from ..nodeids import base_nodeid
from .claims import BUDGET_MARK, claim_id, default_setting, deselect, parse_claim_ids, register_markers, run_order
from .controller import Controller
from .devices import GPU_SKIP_REASON, cuda_available, describe_device, is_worker, pin_worker_gpu, share_cpu_threads
from .options import LmcConfig, add_options, build_config, setup_hypothesis
from .records import DRYRUN_PREFIX, MEASURE_KEY, ClaimFailed, attach_record, finding, record_from

__all__ = ["ENTRY_POINT_NAME"]

#: Name of the ``pytest11`` entry point (and the plugin's registration name).
ENTRY_POINT_NAME = "lmccheck"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``lmccheck`` option group."""
    add_options(parser)


@pytest.fixture(scope="session")
def lmc_config(pytestconfig: pytest.Config) -> LmcConfig:
    """The resolved lmccheck options (device, cache, seeds, ...)."""
    return build_config(pytestconfig)


def pytest_configure(config: pytest.Config) -> None:
    """Markers, hypothesis profile, GPU pinning, CPU threads, device check, controller state."""
    register_markers(config)
    pin_worker_gpu(config)
    share_cpu_threads(config)
    setup_hypothesis(config)
    if config.getoption("lmc_device") == "cuda":
        build_config(config)  # fail fast with a UsageError when CUDA is missing
    # a bad catalog or id is a usage error before any worker starts
    parse_claim_ids(config, config.getoption("lmc_claim", None) or [])
    if not is_worker(config) and not config.pluginmanager.has_plugin(Controller.name):
        config.pluginmanager.register(Controller(config), Controller.name)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop the controller plugin (matters for in-process pytester runs)."""
    controller = config.pluginmanager.get_plugin(Controller.name)
    if controller is not None:
        config.pluginmanager.unregister(controller)


def pytest_plugin_registered(plugin: object, plugin_name: str, manager: pytest.PytestPluginManager) -> None:
    """Avoid double registration when this module is loaded by module name.

    ``-p lmccheck.pytest_plugin`` (or ``pytest_plugins`` in a conftest)
    registers this module under its module name; the ``pytest11`` entry point
    would then register the same module again as ``lmccheck`` and pluggy would
    raise. Blocking the entry-point name makes the entry point a no-op.
    """
    if plugin is sys.modules[__name__] and plugin_name != ENTRY_POINT_NAME and not manager.is_blocked(ENTRY_POINT_NAME):
        if manager.get_plugin(ENTRY_POINT_NAME) is None:
            manager.set_blocked(ENTRY_POINT_NAME)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``gpu`` items without CUDA or with --lmc-device=cpu (before any fixture is set up), except under
    ``--lmc-budget dryrun``, whose reduced GPU settings run on whatever device is there."""
    if item.get_closest_marker("gpu") is None or item.config.getoption("lmc_budget") == "dryrun":
        return
    if not cuda_available():
        pytest.skip(GPU_SKIP_REASON)
    if item.config.getoption("lmc_device") == "cpu":
        pytest.skip("gpu (paper-scale) setting skipped: --lmc-device=cpu")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Checks in ``lmc_run_order`` (a stable sort: the files' order within each rank); the checks of another
    ``--lmc-budget`` than the run's deselected; ``--lmc-claim S2,S5``: keep the checks whose claim marker names
    one of the ids, deselect the rest."""
    items.sort(key=run_order)
    chosen = str(config.getoption("lmc_budget", "full") or "full")

    def this_budget(item: pytest.Item) -> bool:
        mark = item.get_closest_marker(BUDGET_MARK)
        return mark is None or mark.args[0] == chosen

    deselect(config, items, this_budget)
    wanted = parse_claim_ids(config, config.getoption("lmc_claim") or [])
    if wanted:
        deselect(config, items, lambda item: claim_id(item) in wanted)


@pytest.fixture
def measure(request: pytest.FixtureRequest, lmc_config: LmcConfig) -> Measurement:
    """Recorder for a claim check (the item needs ``@pytest.mark.claim(id)``)."""
    item = request.node
    claim = claim_id(item)
    if claim is None:
        pytest.fail(
            f"{item.nodeid} uses the `measure` fixture but has no claim marker; "
            "decorate it with @pytest.mark.claim('<id>'), e.g. @pytest.mark.claim('S3')",
            pytrace=False,
        )
    m = Measurement(
        claim=claim, setting=default_setting(item), nodeid=base_nodeid(item.nodeid),
        device=describe_device(lmc_config.device)
    )
    item.stash[MEASURE_KEY] = m
    return m


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """After a claim check's body: its verdict from its assertions. FAIL raises :class:`ClaimFailed` (or
    xfails at a setting marked as a known finding); a known finding that PASSes fails the run; INCONCLUSIVE
    passes the pytest outcome and is reported under its own word."""
    result = yield
    m = item.stash.get(MEASURE_KEY, None)
    if m is None:
        return result
    try:
        verdict = m.conclude()
    except _verdict.VerdictInputError as exc:
        pytest.fail(str(exc), pytrace=False)
    known = finding(item)
    if verdict == _verdict.FAIL:
        if known is not None:
            pytest.xfail(f"finding: {known}")
        if item.get_closest_marker("gpu") is not None and item.config.getoption("lmc_budget") == "dryrun":
            # the dry run exercises the code path; a claim failing at its tiny size is no finding and no error
            pytest.xfail(f"{DRYRUN_PREFIX}claim {m.claim} fails at {m.setting}: " + "; ".join(m.failing()))
        raise ClaimFailed(f"claim {m.claim} fails at {m.setting}: " + "; ".join(m.failing()))
    if verdict == _verdict.PASS and known is not None:
        raise ClaimFailed(
            f"claim {m.claim} at {m.setting} is marked as a known finding but now PASSes: remove the finding "
            f"from its params (was: {known[:300]})"
        )
    return result


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, Any] | None:
    """INCONCLUSIVE claim checks get their own word in pytest's summary (they neither fail nor pass)."""
    if report.when != "call" or not report.passed:
        return None
    record = record_from(report)
    if record is not None and record.get("verdict") == _verdict.INCONCLUSIVE:
        return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Attach the claim record (JSON) to the call report, or to a setup report that did not pass."""
    outcome = yield
    attach_record(item, outcome.get_result(), call)
