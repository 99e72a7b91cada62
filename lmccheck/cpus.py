"""The CPU cores this process may run on (what the xdist workers share, and what the report's figure pool uses)."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """Cores in this process's affinity mask (Linux), else ``os.cpu_count()``; at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
