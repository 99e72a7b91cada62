"""Node ids of claim checks, as one id per check whether or not pytest-xdist runs it (no torch, no pytest)."""

from __future__ import annotations

import re

__all__ = ["base_nodeid"]

_XDIST_GROUP = re.compile(r"@[^@/:\[\]]*$")


def base_nodeid(nodeid: str) -> str:
    """``nodeid`` without the ``@<group>`` that pytest-xdist's ``--dist loadgroup`` appends, so that a check
    has one id (one record, one manifest) with and without ``-n``."""
    return _XDIST_GROUP.sub("", nodeid)
