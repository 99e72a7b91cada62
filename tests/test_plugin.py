"""Tests for the lmccheck pytest plugin (run inner pytest sessions with pytester)."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import shutil
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmccheck import store_admin
from lmccheck.cpus import available_cpus
from lmccheck.pytest_plugin import devices
from lmccheck.store import Store

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

FAKE_CLAIM = """
import time
import pytest
from lmccheck.verdict import Below, paper

SOURCE = paper("the aligned barrier is below 5%", "§3, Fig. 1")

@pytest.fixture
def slow_setup():
    time.sleep(0.1)

@pytest.mark.claim("S99")
@pytest.mark.parametrize("scale", [1.0, 3.0], ids=["good", "bad"])
def test_fake_claim(measure, slow_setup, scale):
    time.sleep(0.15)
    barrier = 0.02 * scale
    measure.values["error_barrier"] = [0.3, barrier]
    measure.values["nested"] = {"per_seed": [barrier, barrier]}
    measure.thresholds["max_error_barrier"] = 0.05
    measure.add_seeds({"init_seed": 0, "sgd_seed": 1})
    measure.add_seeds({"init_seed": 0, "sgd_seed": 1})  # a network used twice is recorded once
    measure.fixture_keys.append("mlp-" + str(scale))
    measure.summary = f"barrier 30.0% -> {100 * barrier:.1f}%"
    measure.figure(
        "trajectory",
        title="barrier vs epoch",
        xlabel="epoch",
        ylabel="error barrier",
        series={"unaligned": ([0, 1], [0.3, 0.3]), "aligned": ([0, 1], [0.1, barrier])},
        yerr={"aligned": [0.01, 0.01]},
    )
    # three seeds 0.001 apart: the 95% t interval is the mean +- 0.0025, far from the bound either way
    measure.expect("aligned barrier", Below(0.05), [barrier - 0.001, barrier, barrier + 0.001], SOURCE)
"""
#: FAKE_CLAIM sleeps 0.1 s in setup and 0.15 s in the call: its wall time (setup + call) is at least that
FAKE_CLAIM_MIN_WALL_S = 0.25


#: the one assertion of an inner check that tests the plugin, not a claim: it PASSes when the body ran
RAN = 'measure.expect_exact("ran", True, 1.0, "ran", reading("a test of the plugin: the check ran"))'

GPU_CLAIM = f"""
import pytest
from lmccheck.verdict import reading

@pytest.mark.gpu
@pytest.mark.claim("S98")
def test_paper_scale(measure):
    measure.summary = "ran"
    {RAN}

def test_plain():
    pass
"""


def _line_index(lines: list[str], marker: str) -> int:
    """Index of the first line containing ``marker``."""
    return next(i for i, line in enumerate(lines) if marker in line)


def _records(path: Path) -> dict[str, dict[str, Any]]:
    """Records of a claims.json keyed by setting."""
    data = json.loads(path.read_text())
    return {r["setting"]: r for r in data["records"]}


def _check_fake_records(report_dir: Path) -> None:
    """The two S99 records carry the right verdicts and values."""
    recs = _records(report_dir / "claims.json")
    assert set(recs) == {"good", "bad"}
    good, bad = recs["good"], recs["bad"]
    assert (good["claim"], good["verdict"], bad["verdict"]) == ("S99", "PASS", "FAIL")
    assert good["values"] == {"error_barrier": [0.3, 0.02], "nested": {"per_seed": [0.02, 0.02]}}
    assert bad["values"]["error_barrier"] == [0.3, pytest.approx(0.06)]
    assert bad["thresholds"] == {"max_error_barrier": 0.05} and bad["seeds"] == [{"init_seed": 0, "sgd_seed": 1}]
    assert bad["fixture_keys"] == ["mlp-3.0"] and bad["summary"] == "barrier 30.0% -> 6.0%"
    assert "ClaimFailed: claim S99 fails at bad: aligned barrier: 0.06" in bad["failure"]
    assert "vs < 0.05" in bad["failure"] and "failure" not in good
    for rec, outcome in ((good, "PASS"), (bad, "FAIL")):  # the assertion is recorded as data
        (a,) = rec["assertions"]
        assert (a["name"], a["rule"], a["bound"], a["outcome"], a["n"], a["df"]) == (
            "aligned barrier", "Below", "< 0.05", outcome, 3, 2)
        assert a["source"] == {"kind": "paper", "text": "the aligned barrier is below 5%", "where": "§3, Fig. 1"}
        lo, hi = a["interval"]
        assert lo < a["observed"] < hi and hi - lo == pytest.approx(2 * 4.303 * 0.001 / 3**0.5, rel=1e-3)
    assert good["nodeid"].endswith("test_fake_claim[good]")
    for rec in (good, bad):  # setup and call time both count, for a failing check too
        assert rec["wall_time_s"] >= FAKE_CLAIM_MIN_WALL_S
    assert good["device"] == "cpu"
    (fig,) = bad["figures"]
    assert fig["xlabel"] == "epoch" and fig["series"]["aligned"]["y"] == [0.1, pytest.approx(0.06)]


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


# ------------------------------------------------------------ inner runs --
@pytest.mark.slow
def test_claim_records_report_and_table(pytester: pytest.Pytester) -> None:
    import matplotlib.image

    pytester.makepyfile(test_fake=FAKE_CLAIM)
    result = pytester.runpytest("--lmc-report", "out", "--lmc-device", "cpu")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= lmccheck claims =*",
            "id * setting * verdict * key numbers",
            "S99 * bad * FAIL * barrier 30.0% -> 6.0%",
            "S99 * good * PASS * barrier 30.0% -> 2.0%",
            f"lmccheck report: {pytester.path / 'out' / 'claims.md'}",
        ]
    )
    out = pytester.path / "out"
    assert not (pytester.path / "report").exists()
    _check_fake_records(out)
    md = (out / "claims.md").read_text()
    assert "| S99 | good | PASS | barrier 30.0% -> 2.0% |" in md
    assert "| S99 | bad | **FAIL** | barrier 30.0% -> 6.0% |" in md
    # each check's assertions as a table: bound, estimate, interval, n (df), outcome and the threshold's source
    assert "## Assertions" in md and "### S99 / bad: FAIL" in md and "### S99 / good: PASS" in md
    assert ('| aligned barrier | < 0.05 | 0.06 | [0.05752, 0.06248] (95%) | 3 (df 2) | 0.00326 | FAIL | '
            'paper §3, Fig. 1: "the aligned barrier is below 5%" |') in md
    assert "| aligned barrier | < 0.05 | 0.02 | [0.01752, 0.02248] (95%) | 3 (df 2) | 0.00326 | PASS |" in md
    assert "- **verdicts**: FAIL 1, PASS 1" in md
    meta = json.loads((out / "claims.json").read_text())["meta"]
    assert meta["device"] == "cpu" and meta["args"][:4] == ["--lmc-report", "out", "--lmc-device", "cpu"]
    assert {"lmccheck_version", "git_commit", "torch", "python", "platform", "start", "end"} <= set(meta)
    # what precision "auto" chose on this machine is part of the record (and of every barrier's key)
    from lmccheck.cpus import native_bf16

    assert meta["barrier_precision"] == f"auto ({'bf16' if native_bf16() else 'fp32'} on cpu)"
    assert f"- **barrier_precision**: {meta['barrier_precision']}" in md
    for setting in ("good", "bad"):
        png = out / "figures" / f"S99_{setting}_trajectory.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        img = matplotlib.image.imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.mark.slow
def test_claim_records_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fake=FAKE_CLAIM)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--lmc-device", "cpu")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*= lmccheck claims =*", "S99 * bad * FAIL *", "S99 * good * PASS *"])
    _check_fake_records(pytester.path / "report")  # default --lmc-report
    assert (pytester.path / "report" / "figures" / "S99_good_trajectory.png").exists()
    # each worker ran on its share of the cores, and the report says so
    payload = json.loads((pytester.path / "report" / "claims.json").read_text())
    share = devices.threads_per_worker(available_cpus(), 2)
    assert {r["cpu_threads"] for r in payload["records"]} == {share}
    assert {r["worker"] for r in payload["records"]} <= {"gw0", "gw1"}
    workers = len({r["worker"] for r in payload["records"]})
    assert (payload["meta"]["processes"].startswith(f"{workers} worker")
            and f"{share} CPU thread" in payload["meta"]["processes"])


@pytest.mark.parametrize(("cpus", "workers", "threads"),
                         [(2, 2, 1), (2, 1, 2), (16, 2, 8), (16, 3, 5), (2, 4, 1), (1, 0, 1)])
def test_threads_per_worker_share_the_cores_evenly(cpus: int, workers: int, threads: int) -> None:
    assert devices.threads_per_worker(cpus, workers) == threads


def test_no_report_writes_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fake=FAKE_CLAIM)
    result = pytester.runpytest("--lmc-no-report", "--lmc-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*= lmccheck claims =*", "lmccheck report not written (--lmc-no-report)"])
    assert not (pytester.path / "out").exists() and not (pytester.path / "report").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_gpu_items_skipped_without_cuda(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gpu=GPU_CLAIM)
    result = pytester.runpytest("-rs", "-m", "gpu", "--lmc-report", "out")
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines([f"SKIPPED *{devices.GPU_SKIP_REASON}"])
    rec = _records(pytester.path / "out" / "claims.json")["default"]
    assert (rec["claim"], rec["verdict"], rec["reason"]) == ("S98", "SKIP", devices.GPU_SKIP_REASON)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_gpu_items_run_without_cuda_under_the_dry_run_budget(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gpu=GPU_CLAIM)
    for args in ((), ("--lmc-device", "cpu")):
        result = pytester.runpytest("-m", "gpu", "--lmc-budget", "dryrun", "--lmc-no-report", *args)
        assert result.parseoutcomes().get("skipped", 0) == 0 and result.parseoutcomes().get("deselected") == 1


def test_a_claim_failing_at_the_dry_run_size_is_reported_as_fail_and_does_not_fail_the_run(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gpu=GPU_CLAIM.replace(RAN, 'measure.expect_exact("ran", False, 0.0, "ran", '
                                                        'reading("a test of the plugin: a failing check"))'))
    result = pytester.runpytest("-m", "gpu", "--lmc-budget", "dryrun", "--lmc-report", "out")
    result.assert_outcomes(xfailed=1, deselected=1)
    rec = _records(pytester.path / "out" / "claims.json")["default"]
    assert rec["verdict"] == "FAIL" and not rec.get("known_finding") and "not the paper's size" not in rec["reason"]
    assert rec["reason"].startswith("claim S98 fails at")
    # the same failing check outside the dry run fails the run (where it runs at all)
    if torch.cuda.is_available():
        pytester.runpytest("-m", "gpu", "--lmc-no-report").assert_outcomes(failed=1, deselected=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
@pytest.mark.parametrize("setting", ["fails", "passes"])
def test_a_known_finding_does_not_apply_at_the_dry_run_size(pytester: pytest.Pytester, tmp_path: Path,
                                                            setting: str) -> None:
    """The finding was measured at the paper's size: in the dry run a FAIL there is the dry run's FAIL (not
    'known finding'), and a PASS does not fail the run as if the finding no longer held."""
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    pytester.makepyfile(test_finding=FINDING_CLAIMS.replace('@pytest.mark.claim("S95")',
                                                            '@pytest.mark.gpu\n@pytest.mark.claim("S95")'))
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "gpu", "--lmc-budget", "dryrun",
                                f"--lmc-report={tmp_path}", "-k", setting)
    (rec,) = json.loads((tmp_path / "claims.json").read_text())["records"]
    assert result.ret == pytest.ExitCode.OK
    assert not rec.get("known_finding") and "finding_reason" not in rec
    if setting == "fails":
        result.assert_outcomes(xfailed=1, deselected=3)
        assert rec["verdict"] == "FAIL" and rec["reason"].startswith("claim S95 fails at")
    else:
        result.assert_outcomes(passed=1, deselected=3)
        assert rec["verdict"] == "PASS"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_cuda_request_without_cuda_is_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_x():\n    pass\n")
    result = pytester.runpytest("--lmc-device", "cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lmc-device=cuda was requested but CUDA is not available*"])


def test_gpu_items_deselected_by_project_addopts(pytester: pytest.Pytester) -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in ini["addopts"]
    pytester.makeini(f"[pytest]\naddopts = {ini['addopts']}\n")
    pytester.makepyfile(test_gpu=GPU_CLAIM)
    default = pytester.runpytest("--lmc-no-report")
    default.assert_outcomes(passed=1, deselected=1)
    selected = pytester.runpytest("--lmc-no-report", "-m", "gpu", "--collect-only", "-q")
    selected.stdout.fnmatch_lines(["test_gpu.py::test_paper_scale", "*1/2 tests collected (1 deselected)*"])


def test_measure_requires_claim_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nomark="def test_unmarked(measure):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_unmarked*uses the `measure` fixture but has no claim marker*"])
    assert not (pytester.path / "report").exists()


def test_lmc_config_options(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMCCHECK_CACHE", str(pytester.path / "envcache"))
    pytester.makepyfile(
        test_cfg="""
import dataclasses, json
def test_cfg(lmc_config):
    print("CFG", json.dumps({k: str(v) for k, v in dataclasses.asdict(lmc_config).items()}))
"""
    )
    args = ["--lmc-device", "cpu", "--lmc-seeds", "5", "--lmc-data-root", "data", "--lmc-download", "--lmc-retrain",
            "--lmc-barrier-precision", "fp32"]
    result = pytester.runpytest("-s", *args, "--lmc-report", "rep")
    cfg = json.loads(result.outlines[_line_index(result.outlines, "CFG ")].split("CFG ", 1)[1])
    assert cfg == {
        "device": "cpu",
        "cache": str(pytester.path / "envcache"),
        "data_root": str(pytester.path / "data"),
        "download": "True",
        "seeds": "5",
        "report_dir": str(pytester.path / "rep"),
        "retrain": "True",
        "barrier_precision": "fp32",
        "budget": "full",
        "reduced_seeds": "5",
        "train_together": "False",
        "seed_offset": "0",
    }
    result = pytester.runpytest("-s", "--lmc-cache", "c")
    cfg = json.loads(result.outlines[_line_index(result.outlines, "CFG ")].split("CFG ", 1)[1])
    assert cfg["cache"] == str(pytester.path / "c") and cfg["seeds"] == "3" and cfg["data_root"] == "None"
    assert cfg["report_dir"] == str(pytester.path / "report") and cfg["retrain"] == cfg["download"] == "False"
    assert cfg["barrier_precision"] == "auto"
    bad = pytester.runpytest("--lmc-seeds", "0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert pytester.runpytest("--lmc-barrier-precision", "fp16").ret == pytest.ExitCode.USAGE_ERROR


def test_hypothesis_profiles(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from hypothesis import settings

    previous = settings.get_current_profile_name()
    pytester.makepyfile(
        test_prof="""
from hypothesis import settings
def test_p():
    s = settings.default
    print("PROFILE", settings.get_current_profile_name(), s.max_examples, s.derandomize, s.deadline)
"""
    )
    try:
        monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
        pytester.runpytest("-s").stdout.fnmatch_lines(["*PROFILE ci 25 True None*"])
        monkeypatch.setenv("HYPOTHESIS_PROFILE", "dev")
        pytester.runpytest("-s").stdout.fnmatch_lines(["*PROFILE dev 50 False None*"])
    finally:
        settings.load_profile(previous)


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


OUTCOMES = """
import pytest

@pytest.fixture
def broken(measure):
    measure.values["before"] = 1
    raise RuntimeError("fixture exploded")

@pytest.mark.claim("S97")
def test_setup_error(broken):
    pass

@pytest.mark.claim("S97")
@pytest.mark.parametrize("x", [1], ids=["skipped"])
def test_runtime_skip(measure, x):
    measure.setting = "custom-setting"
    pytest.skip("dataset not available")
"""


def test_error_and_skip_verdicts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outcomes=OUTCOMES)
    result = pytester.runpytest("--lmc-report", "out")
    result.assert_outcomes(errors=1, skipped=1)
    recs = _records(pytester.path / "out" / "claims.json")
    assert set(recs) == {"default", "custom-setting"}
    err, skip = recs["default"], recs["custom-setting"]
    assert err["verdict"] == "ERROR" and "RuntimeError: fixture exploded" in err["failure"]
    assert err["values"] == {"before": 1}
    assert skip["verdict"] == "SKIP" and skip["reason"] == "dataset not available"


FINDING_CLAIMS = """
import pytest
from lmccheck.verdict import Below, paper

SOURCE = paper("the aligned barrier is below 5%", "§3, Fig. 1")
BARRIERS = {
    "fails": [0.089, 0.09, 0.091],  # 95% interval [0.0875, 0.0925]: above 0.05, a significant FAIL
    "passes": [0.019, 0.02, 0.021],  # [0.0175, 0.0225]: below, a PASS
    "unsure": [0.03, 0.05, 0.07],  # [0.0003, 0.0997]: across the bound, INCONCLUSIVE
    "crashes": [],
}

@pytest.mark.claim("S95")
@pytest.mark.parametrize("setting", [pytest.param(k, marks=pytest.mark.lmc_finding(reason="barrier 9.0% at t=1 "
                                     "(measured)")) for k in BARRIERS])
def test_finding(setting, measure):
    if setting == "crashes":
        raise RuntimeError("a measurement bug, not the finding")
    measure.summary = f"barrier {100 * BARRIERS[setting][1]:.1f}%"
    measure.expect("aligned barrier", Below(0.05), BARRIERS[setting], SOURCE)
"""


def _finding_run(pytester: pytest.Pytester, tmp_path: Path, setting: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")  # lmc_finding is a registered marker
    pytester.makepyfile(test_finding=FINDING_CLAIMS)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--lmc-report={tmp_path}", "-k", setting)
    (rec,) = json.loads((tmp_path / "claims.json").read_text())["records"]
    return result, rec


def test_a_known_finding_that_fails_keeps_the_run_green_and_is_reported_as_fail(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    result, rec = _finding_run(pytester, tmp_path, "fails")
    result.assert_outcomes(xfailed=1, deselected=3)  # the run passes ...
    assert result.ret == pytest.ExitCode.OK
    # ... and the report shows FAIL with the numbers and the reason
    assert (rec["verdict"], rec["known_finding"], rec["reason"]) == ("FAIL", True, "barrier 9.0% at t=1 (measured)")
    assert [a["outcome"] for a in rec["assertions"]] == ["FAIL"] and "finding_reason" not in rec
    md = (tmp_path / "claims.md").read_text()
    assert "| **FAIL** (known finding) |" in md and "Known finding: barrier 9.0% at t=1 (measured)" in md
    result.stdout.fnmatch_lines(["*S95*fails*FAIL (finding)*barrier 9.0%*"])


def test_a_known_finding_that_passes_fails_the_run_as_xpass(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result, rec = _finding_run(pytester, tmp_path, "passes")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*S95 at passes is marked as a known finding but now PASSes: remove the finding*"])
    assert rec["verdict"] == "XPASS" and [a["outcome"] for a in rec["assertions"]] == ["PASS"]
    assert rec["finding_reason"] == "barrier 9.0% at t=1 (measured)" and not rec.get("known_finding")
    assert "| **XPASS** |" in (tmp_path / "claims.md").read_text()


def test_a_known_finding_that_is_inconclusive_keeps_the_run_green(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result, rec = _finding_run(pytester, tmp_path, "unsure")
    assert result.ret == pytest.ExitCode.OK and result.parseoutcomes() == {"inconclusive": 1, "deselected": 3}
    assert rec["verdict"] == "INCONCLUSIVE" and not rec.get("known_finding")
    assert rec["finding_reason"] == "barrier 9.0% at t=1 (measured)"
    assert "| INCONCLUSIVE (known finding not confirmed) |" in (tmp_path / "claims.md").read_text()


def test_a_crash_at_a_known_finding_still_fails_the_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result, rec = _finding_run(pytester, tmp_path, "crashes")
    result.assert_outcomes(failed=1, deselected=3)
    assert rec["verdict"] == "ERROR" and "RuntimeError: a measurement bug" in rec["failure"]
    assert not rec.get("known_finding") and rec["finding_reason"] == "barrier 9.0% at t=1 (measured)"


# --------------------------------------------------------------------------- verdicts from assertions
INCONCLUSIVE_CLAIMS = """
import pytest
from lmccheck.verdict import Below, reading

SOURCE = reading("a test of the plugin: 5% stands for a paper's bound")
BARRIERS = {"sure": [0.019, 0.02, 0.021], "unsure": [0.02, 0.04, 0.06]}  # unsure: 95% interval [-0.0097, 0.0897]

@pytest.mark.claim("S96")
@pytest.mark.parametrize("setting", list(BARRIERS))
def test_s96_barrier(setting, measure):
    measure.summary = f"barrier {100 * BARRIERS[setting][1]:.1f}%"
    measure.expect("aligned barrier", Below(0.05), BARRIERS[setting], SOURCE)
"""


def _check_inconclusive(result: pytest.RunResult, report_dir: Path) -> None:
    """An INCONCLUSIVE check: neither fails the run nor counts as passed; its own word and its own rows."""
    assert result.ret == pytest.ExitCode.OK
    assert result.parseoutcomes() == {"passed": 1, "inconclusive": 1}
    recs = _records(report_dir / "claims.json")
    unsure = recs["unsure"]
    assert (recs["sure"]["verdict"], unsure["verdict"]) == ("PASS", "INCONCLUSIVE")
    (a,) = unsure["assertions"]
    needed = a["seeds_needed"]
    assert a["outcome"] == "INCONCLUSIVE" and isinstance(needed, int) and needed > 3
    assert a["interval"][0] < 0.05 < a["interval"][1] and "failure" not in unsure
    result.stdout.fnmatch_lines([
        "*= lmccheck claims =*",
        "S96 * sure * PASS * barrier 2.0%",
        "S96 * unsure * INCONCLUSIVE * barrier 4.0%",
        "*INCONCLUSIVE assertions and the seeds each would need*",
        f"S96 unsure: aligned barrier -- about {needed} seeds (--lmc-seeds {needed})",
        "*= 1 passed, 1 inconclusive in *",
    ])
    md = (report_dir / "claims.md").read_text()
    assert "| S96 | unsure | INCONCLUSIVE | barrier 4.0% |" in md and "- **verdicts**: INCONCLUSIVE 1, PASS 1" in md
    assert "### S96 / unsure: INCONCLUSIVE" in md and f"| INCONCLUSIVE (needs ~{needed} seeds) |" in md
    assert f"- S96 unsure: aligned barrier -- about {needed} seeds (--lmc-seeds {needed})" in md
    assert "## Failures" not in md


def test_an_inconclusive_check_has_its_own_word_table_row_and_report_entry(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s96=INCONCLUSIVE_CLAIMS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--lmc-report", "out", "-v")
    result.stdout.fnmatch_lines(["*test_s96_barrier[[]unsure[]] INCONCLUSIVE*"])
    _check_inconclusive(result, pytester.path / "out")


@pytest.mark.slow
def test_an_inconclusive_check_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s96=INCONCLUSIVE_CLAIMS)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--lmc-report", "out")
    _check_inconclusive(result, pytester.path / "out")


NO_ASSERTIONS = """
import pytest
from lmccheck.verdict import Below, reading

@pytest.mark.claim("S93")
def test_s93_asserts_nothing(measure):
    measure.summary = "measured, asserted nothing"

@pytest.mark.claim("S93")
@pytest.mark.parametrize("setting", ["own-only"])
def test_s93_asserts_only_its_own(setting, measure):
    measure.expect("extra", Below(0.05), [0.01, 0.011, 0.012], reading("lmccheck's own"), decides=False)
"""


def test_a_check_that_asserts_nothing_is_an_error_naming_its_claim(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s93=NO_ASSERTIONS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--lmc-report", "out")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*claim S93 (default): the check records no deciding assertion*"])
    recs = _records(pytester.path / "out" / "claims.json")
    for setting in ("default", "own-only"):  # an assertion that does not decide is no assertion of the claim
        assert recs[setting]["verdict"] == "ERROR"
        assert f"claim S93 ({setting}): the check records no deciding assertion" in recs[setting]["failure"]
    assert [a["outcome"] for a in recs["own-only"]["assertions"]] == ["PASS"]


BAD_INPUTS = """
import math
import pytest
from lmccheck.verdict import Below, Within, reading

SOURCE = reading("a test of the plugin")
CASES = {
    "one-seed": lambda m: m.expect("barrier", Below(0.05), [0.01], SOURCE),
    "nan": lambda m: m.expect("barrier", Below(0.05), [0.01, math.nan, 0.02], SOURCE),
    "no-source": lambda m: m.expect("barrier", Below(0.05), [0.01, 0.02], None),
    "zero-delta": lambda m: m.expect("barrier", Within(delta=0.0), [0.01, 0.02], SOURCE),
    "nan-exact": lambda m: m.expect_exact("barrier", True, math.nan, "= 0", SOURCE),
}

@pytest.mark.claim("S94")
@pytest.mark.parametrize("setting", list(CASES))
def test_s94_bad_input(setting, measure):
    measure.expect("clear pass", Below(0.05), [0.01, 0.011, 0.012], SOURCE)  # alone, the check would PASS
    CASES[setting](measure)
"""

BAD_INPUT_CAUSES = {
    "one-seed": "1 seed(s); an interval over seeds needs at least 2",
    "nan": "a measurement is not finite",
    "no-source": "no source for its threshold",
    "zero-delta": "an equivalence needs a margin of positive width",
    "nan-exact": "the measured value is NaN",
}


def test_bad_input_to_an_assertion_is_an_error_naming_claim_and_assertion_never_a_pass(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_s94=BAD_INPUTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--lmc-report", "out")
    result.assert_outcomes(failed=len(BAD_INPUT_CAUSES))
    recs = _records(pytester.path / "out" / "claims.json")
    assert set(recs) == set(BAD_INPUT_CAUSES)
    for setting, cause in BAD_INPUT_CAUSES.items():
        rec = recs[setting]
        assert rec["verdict"] == "ERROR", setting
        assert f"VerdictInputError: claim S94 ({setting}), barrier: " in rec["failure"], rec["failure"]
        assert cause in rec["failure"], (setting, rec["failure"])
        assert [a["name"] for a in rec["assertions"]] == ["clear pass"]  # the bad one is not recorded


TEARDOWN_AFTER_INCONCLUSIVE = """
import pytest
from lmccheck.verdict import Below, reading

@pytest.fixture
def breaks_on_teardown():
    yield
    raise RuntimeError("teardown exploded")

@pytest.mark.claim("S92")
def test_s92_unsure(measure, breaks_on_teardown):
    measure.expect("barrier", Below(0.05), [0.02, 0.04, 0.06], reading("a test of the plugin"))
"""


def test_a_teardown_error_after_an_inconclusive_check_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s92=TEARDOWN_AFTER_INCONCLUSIVE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--lmc-report", "out")
    assert result.parseoutcomes() == {"inconclusive": 1, "errors": 1}
    rec = _records(pytester.path / "out" / "claims.json")["default"]
    assert rec["verdict"] == "ERROR" and "teardown exploded" in rec["failure"]


# --------------------------------------------------------------------------- --lmc-compare
COMPARED = """
import json, os
import pytest
from lmccheck.verdict import Below, reading

@pytest.mark.claim("S91")
@pytest.mark.parametrize("setting", ["a", "b", "c", "d", "e"])
def test_s91_barrier(setting, measure):
    values = json.loads(os.environ["S91_VALUES"])[setting]
    measure.expect("barrier", Below(0.05), values, reading("a test of the plugin"))
"""

#: each setting's three seeds in the earlier run and in this one
BEFORE = {"a": [0.01, 0.02, 0.03], "b": [0.010, 0.011, 0.012], "c": [0.010, 0.011, 0.012],
          "d": [0.07, 0.08, 0.09], "e": [0.010, 0.011, 0.012]}
AFTER = {"a": [0.07, 0.08, 0.09],  # PASS -> FAIL: loud
         "b": [0.02, 0.04, 0.06],  # PASS -> INCONCLUSIVE: a note (its estimate moved too)
         "c": [0.020, 0.021, 0.022],  # PASS both times, but 0.021 lies outside [0.0085, 0.0135]
         "d": [0.01, 0.02, 0.03],  # FAIL -> PASS (a known finding that passes now): loud
         "e": [0.0105, 0.0115, 0.0125]}  # PASS both times, within each other's interval: not listed


def test_lmc_compare_flags_flips_loudly_moves_to_inconclusive_as_notes_and_moved_estimates(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_s91=COMPARED)
    args = ("-p", "no:cacheprovider")
    monkeypatch.setenv("S91_VALUES", json.dumps(BEFORE))
    pytester.runpytest(*args, "--lmc-report", "old").assert_outcomes(passed=4, failed=1)
    monkeypatch.setenv("S91_VALUES", json.dumps(AFTER))
    result = pytester.runpytest(*args, "--lmc-report", "new", "--lmc-compare", "old/claims.json")
    node = "test_s91.py::test_s91_barrier"
    expected = [  # the loud ones first; per check, its verdict before its assertions
        f"!! {node}[[]a[]]: verdict flipped: PASS -> FAIL",
        f"!! {node}[[]a[]] :: barrier: outcome flipped: PASS -> FAIL",
        f"!! {node}[[]d[]]: verdict flipped: FAIL -> PASS",
        f"!! {node}[[]d[]] :: barrier: outcome flipped: FAIL -> PASS",
        f"-- {node}[[]a[]] :: barrier: estimate moved beyond its interval: 0.02 [[]*[]] (95%) -> 0.08 [[]*[]] (95%)",
        f"-- {node}[[]b[]]: verdict moved: PASS -> INCONCLUSIVE",
        f"-- {node}[[]b[]] :: barrier: outcome moved: PASS -> INCONCLUSIVE",
        f"-- {node}[[]b[]] :: barrier: estimate moved beyond its interval: 0.011 [[]*[]] (95%) -> 0.04 [[]*[]] (95%)",
        f"-- {node}[[]c[]] :: barrier: estimate moved beyond its interval: 0.011 [[]*[]] (95%) -> 0.021 [[]*[]] (95%)",
        f"-- {node}[[]d[]] :: barrier: estimate moved beyond its interval: 0.08 [[]*[]] (95%) -> 0.02 [[]*[]] (95%)",
    ]
    result.stdout.fnmatch_lines([f"*compared with {pytester.path / 'old' / 'claims.json'}*"])
    lines = result.stdout.lines[_line_index(result.stdout.lines, "compared with "):]
    flagged = [line for line in lines if line.startswith(("!! ", "-- "))]
    assert len(flagged) == len(expected), flagged
    for line, pattern in zip(flagged, expected):
        assert fnmatch.fnmatch(line, pattern), (line, pattern)
    assert f"{node}[e]" not in result.stdout.str()
    result.stdout.fnmatch_lines(["4 PASS <-> FAIL flip(s)"])
    compare_md = (pytester.path / "new" / "compare.md").read_text()
    assert compare_md.startswith(f"# lmccheck: this run compared with {pytester.path / 'old' / 'claims.json'}")
    assert f"- !! {node}[a] :: barrier: outcome flipped: PASS -> FAIL" in compare_md
    meta = json.loads((pytester.path / "new" / "claims.json").read_text())["meta"]
    assert meta["compared_with"] == str(pytester.path / "old" / "claims.json")
    # the report compared with may be the one this run overwrites: it is read first
    same = pytester.runpytest(*args, "--lmc-report", "old", "--lmc-compare", "old/claims.json")
    same.stdout.fnmatch_lines([f"!! {node}[[]a[]] :: barrier: outcome flipped: PASS -> FAIL"])
    again = pytester.runpytest(*args, "--lmc-report", "old", "--lmc-compare", "old/claims.json")
    again.stdout.fnmatch_lines(["no changes", "0 PASS <-> FAIL flip(s)"])
    # without a report of its own the run still compares
    quiet = pytester.runpytest(*args, "--lmc-no-report", "--lmc-compare", "new/claims.json")
    quiet.stdout.fnmatch_lines(["*compared with *", "no changes", "0 PASS <-> FAIL flip(s)"])


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read lmccheck report"),
                                                  ("{not json", "is not valid JSON"),
                                                  ('{"records": 3}', "is not an lmccheck report")],
                         ids=["missing", "corrupt", "wrong-shape"])
def test_lmc_compare_with_a_missing_or_corrupt_report_is_a_usage_error_at_startup(
    pytester: pytest.Pytester, content: str | None, message: str
) -> None:
    pytester.makepyfile(test_ran="def test_ran(tmp_path_factory):\n    open('ran', 'w').close()\n")
    if content is not None:
        (pytester.path / "old.json").write_text(content)
    result = pytester.runpytest("-p", "no:cacheprovider", "--lmc-compare", "old.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--lmc-compare: *{message}*"])
    assert str(pytester.path / "old.json") in result.stderr.str()
    assert not (pytester.path / "ran").exists()  # nothing ran before the error


GROUPED = """
import pytest

@pytest.mark.parametrize("s", [pytest.param(i, marks=pytest.mark.xdist_group("setting-a")) for i in range(3)]
                         + [pytest.param(9, marks=pytest.mark.xdist_group("setting-b"))])
def test_grouped(s):
    pass
"""


@pytest.mark.slow
def test_xdist_loadgroup_keeps_a_setting_on_one_worker(pytester: pytest.Pytester) -> None:
    """The claims' per-setting xdist groups only work if loadgroup does (it silently broke with pytest 9.2)."""
    pytester.makepyfile(test_grouped=GROUPED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "-v",
                                           "--lmc-no-report")
    result.assert_outcomes(passed=4)
    workers = {}
    for line in result.outlines:
        if "PASSED" in line and "test_grouped" in line:
            workers.setdefault(line.split("@")[-1].split()[0], set()).add(line.split("]")[0])
    assert set(workers) == {"setting-a", "setting-b"}, result.outlines
    assert len(workers["setting-a"]) == 1  # all three on one worker


# --------------------------------------------------------------------------- claim selection by id
SELECT_CLAIMS = f"""
import pytest
from lmccheck.verdict import reading

@pytest.mark.claim("S1")
def test_invariance(measure):
    measure.summary = "s1"
    {RAN}

@pytest.mark.claim("S2")
def test_symmetry(measure):
    measure.summary = "s2"
    {RAN}

@pytest.mark.claim("S12")
def test_fixed_points_s2_in_the_name(measure):
    measure.summary = "s12"
    {RAN}

def test_no_claim():
    pass
"""


def test_lmc_claim_selects_by_marker_id_without_over_matching(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s1_s2_s12=SELECT_CLAIMS)
    result = pytester.runpytest("--lmc-claim", "S2", "--lmc-no-report", "-v")
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(["*test_symmetry PASSED*"])
    # the keyword -k S2 over-matches: the file's name mentions s2, so it picks every check in it
    pytester.runpytest("-k", "S2", "--lmc-no-report").assert_outcomes(passed=4)


def test_lmc_run_order_runs_marked_checks_after_the_others_in_a_stable_order(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order="""
import pytest

@pytest.mark.lmc_run_order(2)
def test_late():
    pass

@pytest.mark.lmc_run_order(1)
def test_middle():
    pass

def test_first():
    pass

def test_second():
    pass
""")
    result = pytester.runpytest("--lmc-no-report", "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_first PASSED*", "*test_second PASSED*", "*test_middle PASSED*",
                                 "*test_late PASSED*"])


def test_lmc_claim_takes_lists_repeats_and_any_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s1_s2_s12=SELECT_CLAIMS)
    pytester.runpytest("--lmc-claim", "s1,S12", "--lmc-no-report").assert_outcomes(passed=2, deselected=2)
    pytester.runpytest("--lmc-claim", "S1", "--lmc-claim", "S2", "--lmc-no-report").assert_outcomes(
        passed=2, deselected=2)


def test_lmc_claim_rejects_an_id_outside_the_catalog(pytester: pytest.Pytester) -> None:
    pytester.makeini(f"[pytest]\npythonpath = {ROOT}\nlmc_catalog = claims.catalog:CATALOG\n")
    pytester.makepyfile(test_s1_s2_s12=SELECT_CLAIMS)
    result = pytester.runpytest("--lmc-claim", "S13", "--lmc-no-report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown claim id 'S13'*S1-S12, Z1-Z10*"])
    pytester.runpytest("--lmc-claim", "S12", "--lmc-no-report").assert_outcomes(passed=1, deselected=3)


#: another paper's claims, plugged in without editing lmccheck: a two-claim catalog and its checks
EXAMPLE_CATALOG = """
from lmccheck.catalog import Catalog, Claim

CATALOG = Catalog([
    Claim("A1", "Another et al. 2025", "§3", "wider networks have lower barriers"),
    Claim("A2", "Another et al. 2025", "§4", "matching is symmetric", tiers=("CPU",)),
])
"""
EXAMPLE_CHECKS = f"""
import pytest
from lmccheck.verdict import reading

@pytest.mark.claim("A1")
def test_a1_barriers_fall(measure):
    measure.summary = "a1"
    {RAN}

@pytest.mark.claim("A2")
def test_a2_symmetric(measure):
    measure.summary = "a2"
    {RAN}
"""


def test_another_papers_catalog_plugs_in_through_the_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(example_catalog=EXAMPLE_CATALOG, test_example=EXAMPLE_CHECKS)
    pytester.makeini("[pytest]\npythonpath = .\nlmc_catalog = example_catalog:CATALOG\n")
    result = pytester.runpytest("--lmc-claim", "a2", "--lmc-no-report", "-v")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_a2_symmetric PASSED*"])
    bad = pytester.runpytest("--lmc-claim", "S3", "--lmc-no-report")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*unknown claim id 'S3'*the catalog has A1-A2*"])
    # a catalog that cannot be loaded is a usage error that names the option and the fix
    pytester.makeini("[pytest]\npythonpath = .\nlmc_catalog = example_catalog:MISSING\n")
    broken = pytester.runpytest("--lmc-no-report")
    assert broken.ret == pytest.ExitCode.USAGE_ERROR
    broken.stderr.fnmatch_lines(["*lmc_catalog = 'example_catalog:MISSING'*not an lmccheck.catalog.Catalog*"])


# --------------------------------------------------------------------------- live progress
PROGRESS_CONFTEST = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from fixtures.pytest_fixtures import lab, _account_products  # noqa: F401
"""

PROGRESS_CLAIM = f"""
import pytest
from lmccheck.training import TrainConfig
from lmccheck.verdict import reading

CFG = TrainConfig(arch="mlp", model_kwargs={{"width": 8, "depth": 2}}, train_subset=256, epochs=1, batch_size=64,
                  checkpoints=(0,), eval_examples=128, init_seed=7, sgd_seed=8)

@pytest.mark.claim("S1")
@pytest.mark.parametrize("setting", ["tiny"])
def test_tiny(setting, lab, measure):
    run = lab.run(CFG)
    lab.barrier(run, run, time=0.0, n_examples=64, alphas=3)
    {RAN}
"""


def _progress_project(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PROGRESS_CONFTEST)
    pytester.makepyfile(test_progress=PROGRESS_CLAIM)


@pytest.mark.slow
def test_progress_lines_name_each_build_then_count_loads(pytester: pytest.Pytester) -> None:
    _progress_project(pytester)
    # subprocesses: an in-process rerun would import torch's submodules a second time
    args = ("-p", "no:cacheprovider", "--lmc-cache", "store", "--lmc-device", "cpu", "--lmc-no-report")
    cold = pytester.runpytest_subprocess(*args)  # output capture on, as in a plain run
    cold.assert_outcomes(passed=1)
    cold.stdout.fnmatch_lines([
        "S1 tiny: building train mlp(depth=2,width=8) fashion-mnist 1 ep, init_seed=7 sgd_seed=8 [[]*[]]",
        "S1 tiny: built train [[]*[]] in *",
        "S1 tiny: building barrier test, 3 alphas x 64 examples [[]*[]] of 7/8@0 vs 7/8@0",
        "S1 tiny: built barrier [[]*[]] in *",
        "S1 tiny: 2 products built (*), 0 loaded from the store (*)",
    ])
    warm = pytester.runpytest_subprocess(*args)
    warm.assert_outcomes(passed=1)
    warm.stdout.fnmatch_lines(["S1 tiny: 0 products built (*), 2 loaded from the store (*)"])
    assert "S1 tiny: building" not in warm.stdout.str()  # loaded products are counted, not listed
    quiet = pytester.runpytest_subprocess(*args, "--lmc-no-progress")
    assert "S1 tiny:" not in quiet.stdout.str()


@pytest.mark.slow
def test_progress_lines_under_xdist_carry_the_worker_id(pytester: pytest.Pytester) -> None:
    _progress_project(pytester)
    result = pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider", "--lmc-cache", "store",
                                           "--lmc-device", "cpu", "--lmc-no-report")
    result.assert_outcomes(passed=1)
    result.stderr.fnmatch_lines(["[[]gw0[]] S1 tiny: building train *", "[[]gw0[]] S1 tiny: built barrier *"])


# --------------------------------------------------------------------------- interrupted runs
INTERRUPTED_CLAIMS = f"""
import os
import pytest
from fixtures.recipes import Setting
from lmccheck import products
from lmccheck.training import TrainConfig
from lmccheck.verdict import reading

CFG = TrainConfig(arch="mlp", model_kwargs={{"width": 8, "depth": 2}}, train_subset=256, epochs=1, batch_size=64,
                  checkpoints=(0,), eval_examples=128, init_seed=7, sgd_seed=8)

@pytest.mark.claim("S1")
@pytest.mark.parametrize("setting", [pytest.param(Setting("tiny", CFG), id="tiny")])
def test_first(setting, lab, measure, monkeypatch):
    run = lab.run(CFG)
    if os.environ.get("INTERRUPT_BUILD"):
        kind = products._KINDS["barrier"]
        def ctrl_c(product, builder):
            raise KeyboardInterrupt
        monkeypatch.setitem(products._KINDS, "barrier", type(kind)(**{{**kind.__dict__, "build": ctrl_c}}))
    lab.barrier(run, run, time=0.0, n_examples=64, alphas=3)
    {RAN}

@pytest.mark.claim("S2")
@pytest.mark.parametrize("setting", ["tiny"])
def test_second(setting, lab, measure):
    lab.run(CFG)
    {RAN}
"""


@pytest.mark.slow
def test_an_interrupted_run_reports_what_did_not_run_and_the_next_run_resumes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(PROGRESS_CONFTEST)
    pytester.makepyfile(test_claims=INTERRUPTED_CLAIMS)
    args = ("-p", "no:cacheprovider", "--lmc-cache", "store", "--lmc-device", "cpu", "--lmc-report", "out")
    monkeypatch.setenv("INTERRUPT_BUILD", "1")
    first = pytester.runpytest_subprocess(*args)
    assert first.ret == pytest.ExitCode.INTERRUPTED
    records = {r["claim"]: r for r in json.loads((pytester.path / "out" / "claims.json").read_text())["records"]}
    assert records["S2"]["verdict"] == "NOT RUN"
    assert "stopped before this check" in records["S2"]["reason"]
    assert "## Not run" in (pytester.path / "out" / "claims.md").read_text()
    store = pytester.path / "store"
    assert not any((store / "tmp").iterdir())  # the interrupted build left nothing half-written
    monkeypatch.delenv("INTERRUPT_BUILD")
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["S1 tiny: building barrier *",
                                 "S1 tiny: 1 products built (*), 1 loaded from the store (*)"])
    records = {r["claim"]: r for r in json.loads((pytester.path / "out" / "claims.json").read_text())["records"]}
    assert records["S1"]["verdict"] == records["S2"]["verdict"] == "PASS"
    # the seeds come from the lab's train events, once per network; the setting's recipe is recorded once
    for claim in ("S1", "S2"):  # S1 loads the run from the store, S2 finds it in the lab's memory
        (seeds,) = records[claim]["seeds"]
        assert {k: v for k, v in seeds.items() if k != "key"} == {"init_seed": 7, "sgd_seed": 8}
        assert seeds["key"] in records[claim]["fixture_keys"]
    recipe = records["S1"]["recipe"]
    assert recipe["name"] == "tiny" and (recipe["recipe"]["init_seed"], recipe["recipe"]["epochs"]) == (7, 1)
    assert records["S2"]["recipe"] is None  # a plain string setting has no recipe


@pytest.mark.slow
def test_the_terminal_summary_says_where_the_time_went(pytester: pytest.Pytester) -> None:
    _progress_project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lmc-cache", "store", "--lmc-device", "cpu",
                                           "--lmc-no-report")
    result.stdout.fnmatch_lines([
        "*where the time went*",
        "check*wall*building*loading*measuring",
        "S1 tiny*",
        "product kind*built*build time*loaded*load time",
        "barrier*1*",
        "train*1*",
    ])


@pytest.mark.slow
def test_the_plan_says_what_is_stored_cold_and_warm(pytester: pytest.Pytester) -> None:
    _progress_project(pytester)
    args = ("-p", "no:cacheprovider", "--lmc-cache", "store", "--lmc-device", "cpu", "--lmc-no-report")
    cold = pytester.runpytest_subprocess(*args)
    cold.stdout.fnmatch_lines([
        "lmccheck: store */store (empty: every product will be built); device cpu; 3 seeds per setting",
        "lmccheck plan: 1 check never ran on this store with this code (S1 tiny): its products and time on this "
        "machine are unknown until it has",
    ])
    warm = pytester.runpytest_subprocess(*args)
    warm.stdout.fnmatch_lines([
        "lmccheck: store */store (2 entries, *); device cpu; 3 seeds per setting",
        "lmccheck plan: 1 of 1 checks ran on this store before: they used 2 products, all stored",
    ])
    # remove the barrier: the plan knows it is missing and how long it took to build
    store = Store(pytester.path / "store")
    barrier = next(k for k in store.keys() if store_admin.info(store, k, verify=False)["kind"] == "barrier")
    store_admin.clear(store, "barrier")
    assert not store.contains(barrier)
    again = pytester.runpytest_subprocess(*args)
    again.stdout.fnmatch_lines([
        "lmccheck plan: 1 of 1 checks ran on this store before: they used 2 products, 1 stored, 1 to build: "
        "about * to build them, from their last build times",
    ])


def test_the_plan_counts_shared_products_once_and_forgets_other_code(tmp_path: Path) -> None:
    from lmccheck import plan as plan_mod

    store = Store(tmp_path / "store")
    a = store.put("demo", {"n": 1}, {"x": torch.ones(2)}, {"wall_time_s": 3.0})
    b = store.put("demo", {"n": 2}, {"x": torch.ones(2)}, {"wall_time_s": 5.0})
    plan_mod.write_manifest(store, "t.py::one", 3, "cpu", [a.key, b.key])
    plan_mod.write_manifest(store, "t.py::two", 3, "cpu", [a.key, "not-a-key"])
    store_admin.clear(store, "demo")  # both entries gone
    lines = plan_mod.plan_run(store, [("t.py::one", "one"), ("t.py::two", "two")], 3, "cpu").lines(str)
    assert lines == ["2 of 2 checks ran on this store before: they used 2 products, 0 stored, 2 to build: "
                     "about 8.0 to build them, from their last build times"]  # a.key once, not twice
    other = plan_mod.plan_run(store, [("t.py::one", "one")], 5, "cpu")  # other seeds: another manifest
    assert other.unknown and not other.known
    path = plan_mod.manifest_path(store, "t.py::one", 3, "cpu")
    data = json.loads(path.read_text())
    data["code_versions"] = {**data["code_versions"], "barrier": -1}  # keys of that code differ from today's
    path.write_text(json.dumps(data))
    assert [c.label for c in plan_mod.plan_run(store, [("t.py::one", "one")], 3, "cpu").unknown] == ["one"]
    path.write_text("{not json")  # a corrupt manifest is unknown, never an error
    assert plan_mod.plan_run(store, [("t.py::one", "one")], 3, "cpu").unknown


def test_claim_and_setting_are_read_from_a_node_id() -> None:
    from claims.catalog import CATALOG
    from lmccheck.nodeids import base_nodeid
    from lmccheck.pytest_plugin.claims import claim_from_nodeid

    assert claim_from_nodeid("claims/test_s5_s6_imp.py::test_s5_dense_permutation[mlp128-fmnist]", CATALOG) == (
        "S5", "mlp128-fmnist")
    assert claim_from_nodeid("claims/x.py::test_z10_something", CATALOG) == ("Z10", "default")
    assert claim_from_nodeid("claims/x.py::test_S12_upper[a-b]", CATALOG) == ("S12", "a-b")
    # pytest-xdist's --dist loadgroup appends "@<group>" to the node id: one check keeps one id
    assert claim_from_nodeid("claims/x.py::test_s2_slc[mlp512-fmnist]@mlp512-fmnist", CATALOG) == (
        "S2", "mlp512-fmnist")
    assert (base_nodeid("claims/x.py::test_s2_slc[mlp512-fmnist]@mlp512-fmnist")
            == "claims/x.py::test_s2_slc[mlp512-fmnist]")
    assert base_nodeid("claims/x.py::test_plain@g") == "claims/x.py::test_plain"
    assert base_nodeid("claims/x.py::test_s2[a@b]") == "claims/x.py::test_s2[a@b]"
    for other in ("tests/test_lab.py::test_pair_seeds", "claims/x.py::test_s13_outside_catalog[a]",
                  "claims/x.py::test_fake_claim[good]", "claims/x.py::test_s5only"):
        assert claim_from_nodeid(other, CATALOG) is None
    # without a catalog any claim id is read, still only from a check's name
    assert claim_from_nodeid("claims/x.py::test_s13_outside_catalog[a]", None) == ("S13", "a")
    assert claim_from_nodeid("claims/x.py::test_fake_claim[good]", None) is None


XDIST_CLAIMS = PROGRESS_CLAIM.replace("def test_tiny(", "def test_s1_tiny(").replace('@pytest.mark.claim("S1")', """
@pytest.mark.claim("S2")
def test_s2_fails_first(measure):
    measure.expect_exact("stop here", False, 0.0, "fails", reading("a test of the plugin: this check FAILs"))


@pytest.mark.xdist_group("tiny")
@pytest.mark.claim("S1")""")


@pytest.mark.slow
def test_under_xdist_the_plan_is_printed_and_checks_that_did_not_run_are_reported(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(PROGRESS_CONFTEST)
    pytester.makepyfile(test_claims=XDIST_CLAIMS)
    args = ("-p", "no:cacheprovider", "-n", "1", "--lmc-cache", "store", "--lmc-device", "cpu", "--lmc-report", "out")
    stopped = pytester.runpytest_subprocess(*args, "--maxfail=1", "--lmc-claim", "S2,S1")
    stopped.stdout.fnmatch_lines([
        "lmccheck: store */store (empty: every product will be built); device cpu; 3 seeds per setting",
        "lmccheck plan: 2 checks never ran on this store with this code (*): their products and time on this "
        "machine are unknown*",
    ])
    records = {r["claim"]: r for r in json.loads((pytester.path / "out" / "claims.json").read_text())["records"]}
    assert records["S2"]["verdict"] == "FAIL"
    assert records["S1"]["verdict"] == "NOT RUN" and records["S1"]["setting"] == "tiny"
    done = pytester.runpytest_subprocess(*args, "--lmc-claim", "S1")
    done.assert_outcomes(passed=1)
    # --dist loadgroup appends "@tiny" to the node id: the check keeps its id, record and manifest
    warm = pytester.runpytest_subprocess(*args, "--lmc-claim", "S1", "--dist", "loadgroup")
    warm.stdout.fnmatch_lines(["lmccheck plan: 1 of 1 checks ran on this store before: they used 2 products, "
                               "all stored"])
    records = json.loads((pytester.path / "out" / "claims.json").read_text())["records"]
    assert [r["nodeid"] for r in records] == ["test_claims.py::test_s1_tiny[tiny]"]


def test_the_plan_adds_the_reference_machine_s_products_only_when_they_hold(tmp_path: Path) -> None:
    from lmccheck import plan as plan_mod

    store = Store(tmp_path / "store")
    a = store.put("demo", {"n": 1}, {"x": torch.ones(2)}, {"wall_time_s": 3.0}).key
    b = store.put("demo", {"n": 2}, {"x": torch.ones(2)}, {"wall_time_s": 5.0}).key
    c = "c" * 64  # a product the reference machine built that this store lacks
    plan_mod.write_manifest(store, "t.py::one", 3, "cpu", [a, b])
    plan_mod.write_manifest(store, "t.py::five", 5, "cpu", [a])  # other seeds: not taken
    ref = plan_mod.write_reference(store, 3, "cpu", "2-core test box", tmp_path / "ref.json")
    data = json.loads(ref.read_text())
    assert set(data["checks"]) == {"t.py::one"}
    data["checks"]["t.py::two"] = {a: 3.0, c: 30.0}  # a product has one build time, whichever check used it
    ref.write_text(json.dumps(data))
    other = Store(tmp_path / "other")  # a fresh store holds nothing
    one_two = plan_mod.reference_estimate(other, ["t.py::one", "t.py::two"], 3, "cpu", ref)
    assert one_two is not None and one_two[1:] == (3, 0, "2-core test box")  # a counts once
    assert one_two[0] == pytest.approx(30.0 + 3.0 + 5.0)
    assert plan_mod.reference_estimate(store, ["t.py::two"], 3, "cpu", ref) == (30.0, 2, 1, "2-core test box")
    assert plan_mod.reference_estimate(other, ["t.py::one", "t.py::three"], 3, "cpu", ref) is None  # not all known
    assert plan_mod.reference_estimate(other, ["t.py::one"], 5, "cpu", ref) is None  # other seeds
    assert plan_mod.reference_estimate(other, ["t.py::one"], 3, "cuda", ref) is None
    data["code_versions"]["barrier"] = -1  # written by other code: its keys, and so its times, say nothing
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert plan_mod.reference_estimate(other, ["t.py::one"], 3, "cpu", tmp_path / "old.json") is None
    assert plan_mod.reference_estimate(other, ["t.py::one"], 3, "cpu", tmp_path / "missing.json") is None
    run = plan_mod.RunPlan([plan_mod.CheckPlan("t.py::two", "two")], reference=(30.0, 2, 1, "2-core test box"))
    assert run.lines(lambda s: f"{s:g} s") == [
        "1 check never ran on this store with this code (two): its products and time on this machine are unknown "
        "until it has; on the reference machine (2-core test box) it used 2 products (1 stored here), and the "
        "others took about 30 s to build there"]
    with pytest.raises(ValueError, match="has no manifest for 7 seeds"):
        plan_mod.write_reference(store, 7, "cpu", "x", tmp_path / "none.json")


# --------------------------------------------------------------------------- --lmc-seed-offset
SEED_OFFSET = """
import json
import pytest
from fixtures import pair_configs
from lmccheck.training import TrainConfig

def test_offset(lab, lmc_config, monkeypatch):
    monkeypatch.setattr(lab, "run", lambda config: config)  # the recipes the lab asks for; nothing is trained
    pairs = lab.pairs(TrainConfig(arch="mlp"), 2)
    print("SEEDS", json.dumps({"offset": lab.seed_offset, "config": lmc_config.seed_offset,
                               "pairs": [[p.a.init_seed, p.b.init_seed] for p in pairs]}))
"""


def test_lmc_seed_offset_reaches_the_lab_and_the_report_and_refuses_negatives(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PROGRESS_CONFTEST)
    pytester.makepyfile(test_offset=SEED_OFFSET)
    from fixtures.recipes import INIT_SEED_BASE

    for offset, first in ((None, 0), ("5", 5)):
        args = ("-s", "-p", "no:cacheprovider", "--lmc-no-report") + (("--lmc-seed-offset", offset) if offset else ())
        result = pytester.runpytest(*args)
        result.assert_outcomes(passed=1)
        seen = json.loads(result.outlines[_line_index(result.outlines, "SEEDS ")].split("SEEDS ", 1)[1])
        base = INIT_SEED_BASE + 2 * first
        assert seen == {"offset": first, "config": first, "pairs": [[base, base + 1], [base + 2, base + 3]]}
    for bad in ("-1", "two"):
        result = pytester.runpytest(f"--lmc-seed-offset={bad}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--lmc-seed-offset*expected a whole number >= 0, got {bad!r}*"])


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
