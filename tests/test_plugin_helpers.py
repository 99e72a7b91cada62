"""Tests of the pytest plugin's pure helpers (devices, worker shares), its frozen config, its registration (the
root conftest registers it once however pytest is started) and its import without torch."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmccheck.pytest_plugin import devices

from plugin_helpers import ROOT


# ------------------------------------------------------------ pure helpers --
@pytest.mark.parametrize(
    ("worker", "visible", "n_gpus", "expected"),
    [
        ("gw0", None, 4, "0"),
        ("gw5", None, 4, "1"),
        ("gw3", None, 0, None),
        ("gw1", "2,5", 8, "5"),
        ("gw2", "2,5", 0, "2"),
        ("gw0", "GPU-abc, GPU-def", 0, "GPU-abc"),
        ("gw1", "", 4, None),
        ("gw1", "-1", 4, None),
        ("master", None, 4, None),
        ("gwx", None, 4, None),
    ],
)
def test_gpu_for_worker(worker: str, visible: str | None, n_gpus: int, expected: str | None) -> None:
    assert devices.gpu_for_worker(worker, visible, n_gpus) == expected


@given(i=st.integers(0, 200), n=st.integers(1, 16))
def test_gpu_for_worker_round_robin(i: int, n: int) -> None:
    assert devices.gpu_for_worker(f"gw{i}", None, n) == str(i % n)
    visible = ",".join(str(10 + k) for k in range(n))
    assert devices.gpu_for_worker(f"gw{i}", visible, 0) == str(10 + i % n)


def _fake_worker_config(worker_id: str) -> Any:
    """Just enough of a pytest.Config for ``_pin_worker_gpu`` on an xdist worker."""
    return SimpleNamespace(workerinput={"workerid": worker_id})


@pytest.mark.skipif(torch.cuda.is_initialized(), reason="CUDA already initialized in this process")
def test_pin_worker_gpu_sets_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    devices.pin_worker_gpu(_fake_worker_config("gw3"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(devices, "count_visible_gpus", lambda: 0)
    devices.pin_worker_gpu(_fake_worker_config("gw1"))
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setattr(devices, "count_visible_gpus", lambda: 2)
    devices.pin_worker_gpu(_fake_worker_config("gw3"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda"
    assert devices.resolve_device("cuda") == "cuda"
    assert devices.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        devices.resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        devices.resolve_device("tpu")


def test_lmc_config_fixture_is_frozen(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_frozen="""
import dataclasses, pytest
def test_frozen(lmc_config):
    assert (lmc_config.device, lmc_config.seeds) == ("cpu", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lmc_config.seeds = 7
    assert lmc_config.seeds == 2
"""
    )
    pytester.runpytest("--lmc-device", "cpu", "--lmc-seeds", "2", "--lmc-no-report").assert_outcomes(passed=1)


@pytest.mark.parametrize(("cpus", "workers", "threads"),
                         [(2, 2, 1), (2, 1, 2), (16, 2, 8), (16, 3, 5), (2, 4, 1), (1, 0, 1)])
def test_threads_per_worker_share_the_cores_evenly(cpus: int, workers: int, threads: int) -> None:
    assert devices.threads_per_worker(cpus, workers) == threads


# ------------------------------------------------------------ registration --
REGISTRATION_CHECK = """
import lmccheck.pytest_plugin as plugin
def test_registered_once(request, lmc_config):
    pm = request.config.pluginmanager
    names = [name for name, p in pm.list_name_plugin() if p is plugin]
    print("NAMES", names)
"""


def _patched_entry_points(**kwargs: Any) -> Any:
    """entry_points() as if lmccheck were not installed (a bare source tree)."""
    eps = _REAL_ENTRY_POINTS(**kwargs)
    return [ep for ep in eps if ep.value != "lmccheck.pytest_plugin"]


_REAL_ENTRY_POINTS = importlib.metadata.entry_points


@pytest.mark.parametrize(
    ("args", "autoload", "installed", "expected"),
    [
        ((), True, True, "['lmccheck']"),
        (("-p", "lmccheck.pytest_plugin"), True, True, "['lmccheck.pytest_plugin']"),
        (("-p", "lmccheck"), True, True, "['lmccheck']"),
        ((), False, True, "['lmccheck.pytest_plugin']"),
        ((), False, False, "['lmccheck.pytest_plugin']"),
    ],
    ids=["entry-point", "p-module", "p-entry-point", "no-autoload", "source-tree"],
)
def test_root_conftest_registers_plugin_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], autoload: bool, installed: bool,
    expected: str
) -> None:
    shutil.copy(ROOT / "conftest.py", pytester.path / "conftest.py")
    pytester.makepyfile(test_reg=REGISTRATION_CHECK)
    if not autoload:
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    if not installed:
        monkeypatch.setattr(importlib.metadata, "entry_points", _patched_entry_points)
    result = pytester.runpytest("-s", *args)
    result.assert_outcomes(passed=1)
    assert f"NAMES {expected}" in result.stdout.str()


def test_the_plugin_and_its_precision_choices_load_without_torch() -> None:
    """The xdist controller imports the plugin; its --lmc-barrier-precision choices and default are the library's
    (``lmccheck.barrier_options``), read without loading torch."""
    import subprocess
    import sys

    code = ("import sys; import lmccheck.pytest_plugin; from lmccheck.pytest_plugin.options import LmcConfig; "
            "from lmccheck.barrier_options import PRECISIONS, BarrierOptions; "
            "print('torch' in sys.modules, PRECISIONS, LmcConfig.barrier_precision == BarrierOptions.precision)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False ('auto', 'fp32', 'bf16') True"
