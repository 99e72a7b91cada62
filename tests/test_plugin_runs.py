"""Tests of the pytest plugin's inner runs (pytester): the report and table, GPU items, options, outcomes
(errors, skips) and known findings."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

from lmccheck.cpus import available_cpus
from lmccheck.pytest_plugin import devices

from plugin_helpers import RAN, ROOT, line_index, read_records


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


def _check_fake_records(report_dir: Path) -> None:
    """The two S99 records carry the right verdicts and values."""
    recs = read_records(report_dir / "claims.json")
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
    rec = read_records(pytester.path / "out" / "claims.json")["default"]
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
    rec = read_records(pytester.path / "out" / "claims.json")["default"]
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
    cfg = json.loads(result.outlines[line_index(result.outlines, "CFG ")].split("CFG ", 1)[1])
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
    cfg = json.loads(result.outlines[line_index(result.outlines, "CFG ")].split("CFG ", 1)[1])
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


# ------------------------------------------------------------ outcomes and known findings --
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
    recs = read_records(pytester.path / "out" / "claims.json")
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
