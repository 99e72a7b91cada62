"""What every ``lmccheck`` command shares: the program name, the user-error exit code and :class:`CliError`."""

from __future__ import annotations

PROG = "lmccheck"
EXIT_USER_ERROR = 2


class CliError(Exception):
    """A user error: printed as ``lmccheck: error: <message>``, exit code 2."""
