"""Tests of the pytest plugin's live progress, interrupted runs, the plan (what is stored, cold and warm,
and the reference machine's estimate) and runs under pytest-xdist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmccheck import store_admin
from lmccheck.store import Store

from plugin_helpers import PROGRESS_CONFTEST, RAN


# --------------------------------------------------------------------------- live progress
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


# --------------------------------------------------------------------------- pytest-xdist
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
