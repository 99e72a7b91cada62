"""Live progress of a claim check on the real terminal, through pytest's output capture: :class:`Progress` (a
line per product built, training bars) and :func:`progress`, the session's one."""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any

import pytest

from .devices import worker_input

__all__ = ["Progress", "progress"]


class Progress:
    """Lines (and training bars) on the real terminal while a claim check runs.

    pytest captures a test's output; these suspend the capture for the time of
    one write, as ``capsys.disabled()`` does. On the controller a line goes
    through the terminal reporter (it starts on a fresh line); on a
    pytest-xdist worker it goes to the worker's stderr, which xdist leaves
    attached to the terminal, prefixed with the worker id. Bars only where they
    cannot interleave: on the controller, when stderr is a terminal.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.enabled = not config.getoption("lmc_no_progress", False)
        self.worker = str(worker_input(config).get("workerid", ""))
        self.prefix = f"[{self.worker}] " if self.worker else ""
        self._warned: set[str] = set()

    def _uncaptured(self) -> Any:
        capman = self.config.pluginmanager.getplugin("capturemanager")
        return capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()

    def line(self, text: str) -> None:
        """Print one progress line (nothing with ``--lmc-no-progress``)."""
        if not self.enabled:
            return
        with self._uncaptured():
            reporter = None if self.worker else self.config.pluginmanager.getplugin("terminalreporter")
            if reporter is not None:
                # start on a fresh line (after "claims/test_x.py " or a test's "."), whatever wrote last
                if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                    reporter.write("\n")
                reporter.line(self.prefix + text)
            else:
                sys.stderr.write(self.prefix + text + "\n")
                sys.stderr.flush()

    def bar_stream(self) -> Any:
        """A stream for tqdm training bars, or None where bars would interleave or there is no terminal."""
        if not self.enabled or self.worker:
            return None
        with self._uncaptured():  # under fd capture, stderr is a temp file until the capture is suspended
            tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        if not tty:
            return None
        try:  # tqdm's monitor thread would refresh bars (and toggle pytest's capture) from another thread
            import tqdm

            tqdm.tqdm.monitor_interval = 0
        except ImportError:  # pragma: no cover - tqdm is a dependency
            return None
        return _UncapturedStream(self)

    def warn_once(self, what: str, exc: BaseException) -> None:
        """Report a failure of the run's bookkeeping (plan, manifests, progress) once, never fail the run."""
        if what in self._warned:
            return
        self._warned.add(what)
        try:
            self.line(f"lmccheck: {what} failed and is skipped for this run: {type(exc).__name__}: {exc}")
        except Exception:  # never let reporting break a run
            pass


class _UncapturedStream(io.TextIOBase):
    """A text stream whose writes reach the real stderr, capture suspended (for tqdm)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self._progress = progress

    encoding = "utf-8"

    def write(self, text: str) -> int:
        with self._progress._uncaptured():
            sys.stderr.write(text)
            sys.stderr.flush()
        return len(text)

    def isatty(self) -> bool:
        return True


def progress(config: pytest.Config) -> Progress:
    """The session's :class:`Progress` (one per process)."""
    if _progress_key not in config.stash:
        config.stash[_progress_key] = Progress(config)
    return config.stash[_progress_key]


_progress_key = pytest.StashKey[Progress]()
