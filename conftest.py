"""Repository-root conftest: load the lmccheck pytest plugin from a source tree.

When lmccheck is installed, pytest loads the plugin through the ``pytest11``
entry point ``lmccheck``; naming that entry point here is then a no-op and
never registers the module twice. With plugin autoloading disabled, or without
an installed entry point (a bare source checkout), the module is loaded by its
import name. ``pytester`` is enabled for the plugin's own tests.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points


def _plugin_spec() -> str:
    """``"lmccheck"`` (the entry point) when installed and autoloaded, else the module name.

    With ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, pytest < 9.2 does not resolve an
    entry-point name in ``pytest_plugins``, so the module is named directly.
    """
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return "lmccheck.pytest_plugin"
    installed = any(ep.value == "lmccheck.pytest_plugin" for ep in entry_points(group="pytest11", name="lmccheck"))
    return "lmccheck" if installed else "lmccheck.pytest_plugin"


pytest_plugins = [_plugin_spec(), "pytester"]
