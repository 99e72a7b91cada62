"""Tests of the pytest plugin's verdicts from assertions (INCONCLUSIVE, no assertion, bad inputs, teardown
errors) and of --lmc-compare."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from plugin_helpers import line_index, read_records


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
    recs = read_records(report_dir / "claims.json")
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
    recs = read_records(pytester.path / "out" / "claims.json")
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
    recs = read_records(pytester.path / "out" / "claims.json")
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
    rec = read_records(pytester.path / "out" / "claims.json")["default"]
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
    lines = result.stdout.lines[line_index(result.stdout.lines, "compared with "):]
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
