"""Repository-root conftest: load the lmccheck pytest plugin from a source tree.

When lmccheck is installed, pytest loads the plugin through the ``pytest11``
entry point ``lmccheck``; naming that entry point here is then a no-op (or
loads it when plugin autoloading is disabled) and never registers the module
twice. Without an installed entry point (a bare source checkout), the module is
loaded by its import name. ``pytester`` is enabled for the plugin's own tests.
"""

from __future__ import annotations

from importlib.metadata import entry_points


def _plugin_spec() -> str:
    """``"lmccheck"`` (the entry point) when installed, else the module name."""
    installed = any(ep.value == "lmccheck.pytest_plugin" for ep in entry_points(group="pytest11", name="lmccheck"))
    return "lmccheck" if installed else "lmccheck.pytest_plugin"


pytest_plugins = [_plugin_spec(), "pytester"]
