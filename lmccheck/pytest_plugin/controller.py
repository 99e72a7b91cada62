"""The plugin's controller: the plugin object, registered only in the process that owns the session, that
collects the claim records, prints the plan and the claim table, compares with an earlier report and writes the
report (:func:`lmccheck.report.write_report`)."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from .. import assertions as _assertions
from .. import report as _report
from ..fileio import atomic_write_bytes
from ..nodeids import base_nodeid
from .claims import catalog, claim_from_nodeid, claim_id, default_setting
from .devices import describe_device
from .options import abs_path, build_config
from .progress import progress
from .records import record_from

__all__ = ["Controller"]


def _git_commit(root: Path) -> str | None:
    """``git rev-parse HEAD`` in ``root``; None if git or the repository is unavailable."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _dist_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _now() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Controller:
    """Controller-side plugin: collects records, writes the report, prints the table.

    Registered only in the process that owns the session (never on an xdist
    worker), so it sees every report exactly once, with or without ``-n``.
    """

    name = "lmccheck-controller"

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.start = _now()
        self.records: dict[str, dict[str, Any]] = {}
        self.report_path: Path | None = None
        self.error: str | None = None
        self.expected: dict[str, tuple[str, str]] = {}
        self._store: Any = None
        self.interrupted = False
        self._xdist_collected = False
        self.compare_lines: list[str] | None = None
        self.compare_loud = 0
        self.compare_path: Path | None = None
        option = config.getoption("lmc_compare", None)
        if option:
            self.compare_path = abs_path(config, option)
            try:  # a bad path or file is a usage error now, not after an hour of training
                _report.load_report(self.compare_path)
            except ValueError as exc:
                raise pytest.UsageError(f"--lmc-compare: {exc}") from None

    def store(self) -> Any:
        """The run's fixture store (opened once: opening one tidies its stale temporary folders)."""
        if self._store is None:
            from lmccheck.store import Store

            self._store = Store(build_config(self.config).cache)
        return self._store

    def _write_manifest(self, record: dict[str, Any]) -> None:
        """Remember which stored products this check used (the plan of the next run reads it)."""
        keys = record.get("fixture_keys") or []
        if record.get("verdict") in ("SKIP", "NOT RUN", "ERROR") or not record.get("nodeid"):
            return
        try:
            from lmccheck.plan import write_manifest

            cfg = build_config(self.config)
            write_manifest(self.store(), record["nodeid"], cfg.seeds, cfg.device, keys)  # also "no products"
        except Exception as exc:  # bookkeeping never breaks a claim run
            progress(self.config).warn_once("recording the products of a check for the next plan", exc)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take records from call reports (or setup reports that did not pass)."""
        record = record_from(report)
        if record is not None:
            # under pytest-xdist the report names the worker that ran the check
            record["worker"] = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None)
            self.records[base_nodeid(report.nodeid)] = record
            self._write_manifest(record)
        elif report.when == "teardown" and report.failed and base_nodeid(report.nodeid) in self.records:
            rec = self.records[base_nodeid(report.nodeid)]
            if rec.get("verdict") in ("PASS", "FAIL", "INCONCLUSIVE", "XFAIL", "XPASS"):
                rec["verdict"] = "ERROR"
                rec["failure"] = ((rec.get("failure") or "") + "\nteardown: " + str(report.longrepr))[-4000:]

    def _budget(self) -> str:
        try:
            return build_config(self.config).budget
        except pytest.UsageError:
            return "unknown"

    def _seed_offset(self) -> int | None:
        try:
            return build_config(self.config).seed_offset
        except pytest.UsageError:
            return None

    def _barrier_precision(self) -> str | None:
        """The barriers' precision as run: the option, and what ``auto`` chose on this machine's device (bf16
        autocast on CUDA and on a CPU with native bf16, fp32 elsewhere), which is part of every barrier's key."""
        try:
            cfg = build_config(self.config)
        except pytest.UsageError:
            return None
        if cfg.barrier_precision != "auto":
            return cfg.barrier_precision
        from lmccheck.barrier_options import auto_bf16

        return f"auto ({'bf16' if auto_bf16(cfg.device) else 'fp32'} on {cfg.device})"

    def meta(self) -> dict[str, Any]:
        """Report metadata: versions, git commit, device, args, start/end time."""
        import lmccheck

        devices = sorted({r["device"] for r in self.records.values() if r.get("device")})
        if not devices:
            try:
                devices = [describe_device(build_config(self.config).device)]
            except pytest.UsageError:
                devices = ["unknown"]
        threads = sorted({int(r["cpu_threads"]) for r in self.records.values() if r.get("cpu_threads")})
        workers = len({r.get("worker") for r in self.records.values()}) or 1
        return {
            "lmccheck_version": lmccheck.__version__,
            "git_commit": _git_commit(Path(self.config.rootpath)),
            "device": ", ".join(devices),
            "budget": self._budget(),
            "barrier_precision": self._barrier_precision(),
            "seed_offset": self._seed_offset(),
            "processes": f"{workers} worker{'s' if workers > 1 else ''}"
            + (f", {'/'.join(map(str, threads))} CPU thread{'s' if threads != [1] else ''} each" if threads else ""),
            "torch": _dist_version("torch"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "args": [str(a) for a in self.config.invocation_params.args],
            "start": self.start,
            "end": _now(),
        }

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Remember the selected claim checks, so that a check that never ran is reported as such, and print
        the plan. (Under pytest-xdist the workers collect, not this process: see the hook below.)"""
        for item in session.items:
            if "measure" not in getattr(item, "fixturenames", ()):
                continue
            try:
                claim = claim_id(item)
            except pytest.UsageError:
                continue
            if claim is not None:
                self.expected[base_nodeid(item.nodeid)] = (claim, default_setting(item))
        self._announce_plan()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under pytest-xdist: the first worker to finish collecting sends the selected node ids (every worker
        collects the same ones); the claim checks among them are read from their names
        (:func:`claim_from_nodeid`), so the plan is printed and checks that never ran are reported."""
        if self._xdist_collected:
            return
        self._xdist_collected = True
        for nodeid in ids:
            parsed = claim_from_nodeid(nodeid, catalog(self.config))
            if parsed is not None:
                self.expected[base_nodeid(nodeid)] = parsed
        self._announce_plan()

    def _announce_plan(self) -> None:
        if self.expected and not self.config.getoption("collectonly"):
            try:
                self._print_plan()
            except Exception as exc:  # the plan is information, never a reason to stop
                progress(self.config).warn_once("the run's plan", exc)

    def _print_plan(self) -> None:
        """Before the first check: the store, and the products the selected checks need, how many are
        stored, how long the rest took to build (only when claim checks are selected)."""
        from lmccheck.plan import plan_run, store_size

        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:
            return
        cfg = build_config(self.config)
        exists = Path(cfg.cache).is_dir()
        store = self.store()
        size = store_size(store) if exists else "empty: every product will be built"
        seeds = (f"{cfg.seeds} seeds per setting" if cfg.budget == "full" else
                 f"{cfg.reduced_seeds} seeds per {cfg.budget} setting, {cfg.seeds} per CPU setting")
        reporter.write_line(f"lmccheck: store {cfg.cache} ({size}); device {cfg.device}; {seeds}")
        if cfg.retrain:
            reporter.write_line("lmccheck plan: --lmc-retrain: every product the checks use is built again")
            return
        checks = [(nodeid, f"{claim} {setting}") for nodeid, (claim, setting) in self.expected.items()]
        for line in plan_run(store, checks, cfg.seeds, cfg.device).lines(_report.fmt_seconds):
            reporter.write_line(f"lmccheck plan: {line}")

    def _not_run(self, session: pytest.Session) -> None:
        for nodeid, (claim, setting) in self.expected.items():
            if nodeid in self.records:
                continue
            reason = ("the run stopped before this check ran or finished (interrupted, or -x after a failure); "
                      "the next run reuses every product already stored")
            self.records[nodeid] = {"claim": claim, "setting": setting, "nodeid": nodeid, "verdict": "NOT RUN",
                                    "reason": reason, "summary": "", "values": {}, "thresholds": {}, "seeds": [],
                                    "fixture_keys": [], "figures": [], "tables": [], "wall_time_s": None}

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        """Ctrl-C: the report written at the end lists the checks that did not run."""
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the report (unless --lmc-no-report or there are no records)."""
        if self.records or self.interrupted:
            self._not_run(session)
        if not self.records or self.config.getoption("lmc_no_report"):
            return
        out_dir = abs_path(self.config, self.config.getoption("lmc_report"))
        meta = self.meta()
        self._compare(meta)
        try:
            self.report_path = _report.write_report(list(self.records.values()), out_dir, meta)
            if self.compare_lines is not None:
                text = f"# lmccheck: this run compared with {meta['compared_with']}\n\n" + (
                    "\n".join(f"- {x}" for x in self.compare_lines) if self.compare_lines else "no changes") + "\n"
                atomic_write_bytes(out_dir / "compare.md", text.encode("utf-8"))
        except OSError as exc:
            self.error = f"could not write the lmccheck report to {out_dir}: {exc}"

    def _compare(self, meta: dict[str, Any]) -> None:
        """``--lmc-compare OLD/claims.json``: the changes against an earlier report (read before this run's
        report may overwrite it)."""
        if self.compare_lines is not None or self.compare_path is None:
            return
        old, _ = _report.load_report(self.compare_path)
        changes = _assertions.compare(old, list(self.records.values()))
        self.compare_lines = [c.line() for c in changes]
        self.compare_loud = sum(c.loud for c in changes)
        meta["compared_with"] = str(self.compare_path)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the claim table under an "lmccheck claims" header, and the report path."""
        if not self.records:
            return
        tr = terminalreporter
        tr.write_sep("=", "lmccheck claims")
        for line in _report.format_table(list(self.records.values())).splitlines():
            tr.write_line(line)
        timing = _report.format_time_table(list(self.records.values()))
        if timing:
            tr.write_sep("-", "where the time went")
            for line in timing.splitlines():
                tr.write_line(line)
        if self.compare_path is not None:
            if self.compare_lines is None:  # --lmc-no-report: compare all the same
                self._compare({})
            tr.write_sep("-", f"compared with {self.compare_path}")
            for line in self.compare_lines or ["no changes"]:
                tr.write_line(line, red=line.startswith("!!"))
            tr.write_line(f"{self.compare_loud} PASS <-> FAIL flip(s)", red=bool(self.compare_loud))
        pending = _assertions.inconclusive_summary(list(self.records.values()))
        if pending:
            tr.write_sep("-", "INCONCLUSIVE assertions and the seeds each would need")
            for line in pending:
                tr.write_line(line, yellow=True)
        if self.error:
            tr.write_line(self.error, red=True)
        elif self.report_path is not None:
            tr.write_line(f"lmccheck report: {self.report_path}")
        else:
            tr.write_line("lmccheck report not written (--lmc-no-report)")
