"""The claim record of a check: its verdict's outcome fields, timings and ``lmc_finding`` reason, made when
pytest reports the check and carried as a JSON string on the report's ``user_properties`` (under
:data:`RECORD_KEY`), so that it reaches the controller under pytest-xdist."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import pytest

from .. import verdict as _verdict
from ..measurement import Measurement
from ..nodeids import base_nodeid
from .claims import claim_id, default_setting

__all__ = [
    "DRYRUN_PREFIX",
    "MEASURE_KEY",
    "RECORD_KEY",
    "ClaimFailed",
    "attach_record",
    "finding",
    "record_from",
]

#: ``user_properties`` key of the JSON record a claim check produces.
RECORD_KEY = "lmccheck_record"
#: the xfail reason of a claim that FAILs at the dry run's size (``--lmc-budget dryrun``)
DRYRUN_PREFIX = "dry run (not the paper's size): "
#: where the ``measure`` fixture leaves an item's :class:`Measurement`
MEASURE_KEY = pytest.StashKey["Measurement"]()
_setup_duration_key = pytest.StashKey[float]()


class ClaimFailed(AssertionError):
    """A claim check whose assertions FAILed (significantly, under :mod:`lmccheck.verdict`)."""


def finding(item: pytest.Item) -> str | None:
    """The reason of the item's ``lmc_finding`` marker (a known finding at this setting), or None. A GPU
    setting at a reduced budget (``--lmc-budget smoke`` or ``dryrun``) has none: its finding was measured at the
    paper's size, which a reduced run neither confirms nor contradicts."""
    marker = item.get_closest_marker("lmc_finding")
    if marker is None:
        return None
    if item.get_closest_marker("gpu") is not None and item.config.getoption("lmc_budget") != "full":
        return None
    return str(marker.kwargs.get("reason") or (marker.args[0] if marker.args else "known finding"))


def _outcome_fields(report: pytest.TestReport, call: pytest.CallInfo[None], m: Measurement | None) -> dict[str, Any]:
    """``verdict`` plus ``failure``/``reason`` for a report of a claim item."""
    wasxfail = getattr(report, "wasxfail", None)
    if report.skipped:
        if wasxfail is not None and str(wasxfail).startswith(DRYRUN_PREFIX):
            # a claim failing at the dry run's size: reported as FAIL, the run goes on (the code path ran)
            return {"verdict": "FAIL", "reason": str(wasxfail).removeprefix(DRYRUN_PREFIX)}
        if wasxfail is not None:
            # a claim that fails significantly at a setting marked as a known finding: reported as FAIL
            return {"verdict": "FAIL", "known_finding": True, "reason": str(wasxfail).removeprefix("finding: ")}
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        return {"verdict": "SKIP", "reason": reason.removeprefix("Skipped: ")}
    if report.passed:
        verdict = m.verdict if m is not None and m.verdict else "PASS"
        return {"verdict": verdict}
    exc = call.excinfo.value if call.excinfo is not None else None
    failure = call.excinfo.exconly() if call.excinfo is not None else str(report.longrepr)
    if isinstance(exc, ClaimFailed) and m is not None and m.verdict == _verdict.PASS:
        return {"verdict": "XPASS", "failure": failure[:4000]}  # a known finding that passes now
    verdict = "FAIL" if report.when == "call" and isinstance(exc, AssertionError) else "ERROR"
    return {"verdict": verdict, "failure": failure[:4000]}


def attach_record(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
    """Attach the claim record (JSON) to the call report, or to a setup report that did not pass."""
    if report.when == "setup":
        item.stash[_setup_duration_key] = report.duration
    if report.when == "call" or (report.when == "setup" and not report.passed):
        try:
            record = _make_record(item, report, call)
            payload = None if record is None else json.dumps(record)
        except Exception as exc:  # never lose the run to a bad value
            payload = json.dumps(
                {
                    "claim": str(item.stash[MEASURE_KEY].claim) if MEASURE_KEY in item.stash else "?",
                    "setting": default_setting(item),
                    "nodeid": base_nodeid(item.nodeid),
                    "verdict": "ERROR",
                    "failure": f"lmccheck could not serialize the record: {exc!r}",
                }
            )
        if payload is not None:
            # A fresh list: the record rides on this report only, not on later phases.
            report.user_properties = [*report.user_properties, (RECORD_KEY, payload)]


def _make_record(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[None]) -> dict[str, Any] | None:
    """Finalize the record of a claim item for ``report``; None if it is no claim check."""
    m = item.stash.get(MEASURE_KEY, None)
    if m is None:
        if "measure" not in getattr(item, "fixturenames", ()):
            return None
        try:
            claim = claim_id(item)
        except pytest.UsageError:
            claim = None
        if claim is None:
            return None
        m = Measurement(claim=claim, setting=default_setting(item), nodeid=base_nodeid(item.nodeid))
    record = m.to_record()
    call_time = report.duration if report.when == "call" else 0.0
    wall = item.stash.get(_setup_duration_key, 0.0) + call_time
    record["wall_time_s"] = round(wall, 4)
    record["measure_time_s"] = round(max(0.0, wall - m.build_time_s - m.load_time_s), 4)
    record.update(_outcome_fields(report, call, item.stash.get(MEASURE_KEY, None)))
    reason = finding(item)
    if reason is not None and record.get("verdict") != "FAIL":
        record["finding_reason"] = reason
    return record


def record_from(report: pytest.TestReport) -> dict[str, Any] | None:
    """The lmccheck record carried by a report, if any."""
    for key, value in report.user_properties:
        if key == RECORD_KEY:
            return json.loads(value) if isinstance(value, str) else dict(cast(Mapping[str, Any], value))
    return None
