"""Settings the claim checks are parametrized over: CPU scale by default, GPU scale marked ``gpu``.

Each setting is its own pytest-xdist group, so under ``-n N --dist loadgroup``
the checks that share a setting (and so its networks) run on one worker, and
different settings spread over the workers.
"""

from __future__ import annotations

import pytest

from fixtures.recipes import CPU, GPU, Setting


def params(cpu: list[str], gpu: list[str]) -> list[object]:
    """``pytest.param`` objects for the named settings; GPU ones carry the ``gpu`` marker."""
    out: list[object] = [pytest.param(CPU[name], id=name, marks=pytest.mark.xdist_group(name)) for name in cpu]
    out += [
        pytest.param(GPU[name], id=name, marks=[pytest.mark.gpu, pytest.mark.xdist_group(name)]) for name in gpu
    ]
    return out


def describe(setting: Setting) -> dict[str, object]:
    """The recipe of a setting, for the claim record."""
    return {"name": setting.name, "recipe": setting.config.recipe()}
