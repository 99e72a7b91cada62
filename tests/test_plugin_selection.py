"""Tests of the pytest plugin's claim selection by id (--lmc-claim, run order, the catalog), of reading a
claim and setting from a node id, and of --lmc-seed-offset."""

from __future__ import annotations

import json

import pytest

from plugin_helpers import PROGRESS_CONFTEST, RAN, ROOT, line_index


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
        seen = json.loads(result.outlines[line_index(result.outlines, "SEEDS ")].split("SEEDS ", 1)[1])
        base = INIT_SEED_BASE + 2 * first
        assert seen == {"offset": first, "config": first, "pairs": [[base, base + 1], [base + 2, base + 3]]}
    for bad in ("-1", "two"):
        result = pytester.runpytest(f"--lmc-seed-offset={bad}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--lmc-seed-offset*expected a whole number >= 0, got {bad!r}*"])
