"""lmccheck.assertions: the report's assertion rows, the INCONCLUSIVE list and ``--lmc-compare``'s changes."""

from __future__ import annotations

from typing import Any

import pytest

from lmccheck import assertions as la
from lmccheck import verdict as v


def _assertion(name: str, outcome: str, observed: float, interval: tuple[float, float], **extra: Any) -> dict[str, Any]:
    """An assertion as a record carries it (Judgement.to_dict), with only what the report reads."""
    a = {"name": name, "rule": "Below", "bound": "< 0.05", "outcome": outcome, "observed": observed,
         "interval": list(interval), "level": 0.95, "n": 3, "df": 2.0, "mde": 0.0653, "seeds_needed": None,
         "source": {"kind": "reading", "text": "a test", "where": ""}, "over": None, "points": [], "decides": True,
         "note": ""}
    a.update(extra)
    return a


def _rec(setting: str, verdict: str, *assertions: dict[str, Any]) -> dict[str, Any]:
    return {"claim": "S3", "setting": setting, "nodeid": f"claims/test_s3.py::test_s3[{setting}]", "verdict": verdict,
            "assertions": list(assertions)}


# ------------------------------------------------------------------ rows --
def test_markdown_rows_show_interval_bound_n_df_mde_outcome_and_source() -> None:
    # three seeds 0.02, 0.04, 0.06: mean 0.04, sd 0.02, se 0.011547; t(0.975, 2) = 4.3027 -> +- 0.049683
    j = v.judge("barrier", v.Below(0.05), [0.02, 0.04, 0.06], v.paper("the barrier is below 5%", "§3, Fig. 2"))
    (row,) = la.markdown_rows({"assertions": [j.to_dict()]})
    needed = j.seeds_needed
    assert isinstance(needed, int) and needed > 3
    assert row == ["barrier", "< 0.05", "0.04", "[-0.009683, 0.08968] (95%)", "3 (df 2)", f"{j.mde:.3g}",
                   f"INCONCLUSIVE (needs ~{needed} seeds)", 'paper §3, Fig. 2: "the barrier is below 5%"']
    assert len(row) == len(la.ASSERTION_COLUMNS)


def test_markdown_rows_of_points_shares_exact_statements_and_lmccheck_s_own_assertions() -> None:
    every = v.judge("levels", v.Above(0.0), {"1": [0.1, 0.2, 0.3], "2": [0.2, 0.3, 0.4]}, v.reading("an ordering"),
                    over="every")
    most = v.share("most", 9, 10, v.reading("most"), above=0.5)
    exact = v.exact("identity", True, 1e-7, "|x| < 1e-6", v.reading("float tolerance"))
    own = v.judge("extra", v.Within(delta=0.01), [0.001, 0.002, 0.0015], v.reading("own"), decides=False)
    rows = la.markdown_rows({"assertions": [j.to_dict() for j in (every, most, exact, own)]})
    assert rows[0][4] == "3 (df 2), every of 2 points"
    assert rows[1][2:5] == ["0.9", "[0.555, 0.9975] (95%)", "10"] and rows[1][5] == ""  # a share has no MDE
    assert rows[2][3] == "exact" and rows[2][6] == "PASS"
    assert rows[3][3].endswith("(90%)") and rows[3][6] == "PASS, lmccheck's own: does not decide"
    assert la.markdown_rows({"verdict": "SKIP"}) == []


def test_an_inconclusive_assertion_that_no_number_of_seeds_decides_says_so() -> None:
    a = _assertion("zone", "INCONCLUSIVE", 0.07, (0.05, 0.09))
    assert la.outcome_text(a) == "INCONCLUSIVE (more seeds would not decide it)"
    assert la.inconclusive_summary([_rec("x", "INCONCLUSIVE", a)]) == [
        "S3 x: zone -- not decidable by more seeds at this setting"]


def test_source_text_quotes_the_paper_and_shortens_long_reasons() -> None:
    assert la.source_text({"source": {"kind": "paper", "text": "q", "where": "§5"}}) == 'paper §5: "q"'
    long = la.source_text({"source": {"kind": "reading", "text": "x" * 500}}, limit=50)
    assert len(long) == 50 and long.startswith("lmccheck's reading: xxx") and long.endswith("…")


def test_the_inconclusive_list_names_deciding_assertions_and_their_seeds() -> None:
    recs = [
        _rec("a", "INCONCLUSIVE", _assertion("barrier", "INCONCLUSIVE", 0.04, (0.0, 0.09), seeds_needed=34),
             _assertion("other", "PASS", 0.01, (0.0, 0.02))),
        _rec("b", "PASS", _assertion("own", "INCONCLUSIVE", 0.04, (0.0, 0.09), seeds_needed=9, decides=False)),
    ]
    assert la.inconclusive_summary(recs) == ["S3 a: barrier -- about 34 seeds (--lmc-seeds 34)"]


# --------------------------------------------------------------- compare --
OLD = [
    _rec("flip", "PASS", _assertion("barrier", "PASS", 0.02, (0.01, 0.03))),
    _rec("finding", "FAIL", _assertion("barrier", "FAIL", 0.08, (0.07, 0.09))),
    _rec("unsure", "PASS", _assertion("barrier", "PASS", 0.02, (0.01, 0.03))),
    _rec("moved", "PASS", _assertion("barrier", "PASS", 0.02, (0.01, 0.03))),
    _rec("steady", "PASS", _assertion("barrier", "PASS", 0.02, (0.01, 0.03)), _assertion("gone", "PASS", 0, (0, 0))),
    _rec("exact", "PASS", _assertion("identity", "PASS", 1e-9, (1e-9, 1e-9), rule="Exact")),
    _rec("dropped", "PASS"),
]
NEW = [
    _rec("flip", "FAIL", _assertion("barrier", "FAIL", 0.025, (0.011, 0.029))),
    _rec("finding", "PASS", _assertion("barrier", "PASS", 0.08, (0.07, 0.09))),
    _rec("unsure", "INCONCLUSIVE", _assertion("barrier", "INCONCLUSIVE", 0.02, (0.01, 0.06))),
    _rec("moved", "PASS", _assertion("barrier", "PASS", 0.035, (0.03, 0.04))),  # outside [0.01, 0.03]
    _rec("steady", "PASS", _assertion("barrier", "PASS", 0.021, (0.012, 0.03)), _assertion("added", "PASS", 0, (0, 0))),
    _rec("exact", "PASS", _assertion("identity", "PASS", 3e-9, (3e-9, 3e-9), rule="Exact")),  # no interval to leave
    _rec("new", "PASS"),
]


def test_compare_flags_pass_fail_flips_loudly_and_everything_else_as_notes() -> None:
    changes = la.compare(OLD, NEW)
    lines = [c.line() for c in changes]
    node = "claims/test_s3.py::test_s3"
    assert lines == [
        f"!! {node}[finding]: verdict flipped: FAIL -> PASS",
        f"!! {node}[finding] :: barrier: outcome flipped: FAIL -> PASS",
        f"!! {node}[flip]: verdict flipped: PASS -> FAIL",
        f"!! {node}[flip] :: barrier: outcome flipped: PASS -> FAIL",
        f"-- {node}[dropped]: check not in this run: PASS -> absent",
        f"-- {node}[moved] :: barrier: estimate moved beyond its interval: 0.02 [0.01, 0.03] (95%) -> "
        "0.035 [0.03, 0.04] (95%)",
        f"-- {node}[new]: new check: absent -> PASS",
        f"-- {node}[steady] :: added: new assertion: absent -> PASS",
        f"-- {node}[steady] :: gone: assertion gone: PASS -> absent",
        f"-- {node}[unsure]: verdict moved: PASS -> INCONCLUSIVE",
        f"-- {node}[unsure] :: barrier: outcome moved: PASS -> INCONCLUSIVE",
    ]
    assert sum(c.loud for c in changes) == 4
    assert la.compare(NEW, NEW) == []


def test_a_check_moved_to_another_file_is_compared_with_its_old_self() -> None:
    def at(path: str, name: str, verdict: str, observed: float) -> dict[str, Any]:
        return {**_rec(name, verdict, _assertion("barrier", verdict, observed, (observed - 0.01, observed + 0.01))),
                "nodeid": f"{path}::test_s3[{name}]"}

    old = [at("claims/old.py", "a", "PASS", 0.02), at("claims/old.py", "b", "PASS", 0.02)]
    same = [at("claims/new.py", "a", "PASS", 0.02), at("claims/new.py", "b", "PASS", 0.02)]
    assert [c.line() for c in la.compare(old, same)] == [
        f"-- claims/new.py::test_s3[{n}]: check moved: claims/old.py::test_s3[{n}] -> claims/new.py::test_s3[{n}]"
        for n in "ab"]
    flipped = la.compare(old, [at("claims/new.py", "a", "FAIL", 0.09), same[1]])
    assert [c.what for c in flipped if c.loud] == ["verdict flipped", "outcome flipped"]
    assert "estimate moved beyond its interval" in [c.what for c in flipped]
    # a name that is not unique on one side is not guessed: new and gone, as before
    twice = [at("claims/new.py", "a", "PASS", 0.02), at("claims/other.py", "a", "PASS", 0.02)]
    assert sorted(c.what for c in la.compare(old[:1], twice)) == ["check not in this run", "new check", "new check"]


@pytest.mark.parametrize(("old", "new", "loud"), [
    ("PASS", "FAIL", True), ("FAIL", "PASS", True),
    ("PASS", "INCONCLUSIVE", False), ("INCONCLUSIVE", "FAIL", False), ("FAIL", "INCONCLUSIVE", False),
    ("PASS", "ERROR", False), ("ERROR", "PASS", False), ("SKIP", "FAIL", False),
])
def test_only_a_pass_fail_flip_is_loud(old: str, new: str, loud: bool) -> None:
    [change] = la.compare([_rec("x", old)], [_rec("x", new)])
    assert change.loud is loud and change.line().startswith("!!" if loud else "--")


def test_an_estimate_is_flagged_when_either_lies_outside_the_other_s_interval() -> None:
    def moved(old: tuple[float, tuple[float, float]], new: tuple[float, tuple[float, float]]) -> bool:
        a = [_rec("x", "PASS", _assertion("b", "PASS", old[0], old[1]))]
        b = [_rec("x", "PASS", _assertion("b", "PASS", new[0], new[1]))]
        return bool(la.compare(a, b))

    assert not moved((0.02, (0.01, 0.03)), (0.03, (0.02, 0.04)))  # each inside the other's interval (bounds count)
    assert moved((0.02, (0.01, 0.03)), (0.031, (0.0, 0.05)))  # the new estimate left the old interval
    assert moved((0.02, (0.0, 0.04)), (0.03, (0.025, 0.035)))  # 0.03 lies in the old interval, 0.02 not in the new


def test_outcome_table_lines_up_checks_and_assertions_over_runs() -> None:
    rows = la.outcome_table({"default": OLD[:2], "workers=1": NEW[:1]})
    node = "claims/test_s3.py::test_s3"
    assert rows == [
        [f"{node}[finding]", "", "FAIL", ""],
        [f"{node}[finding]", "barrier", "FAIL", ""],
        [f"{node}[flip]", "", "PASS", "FAIL"],
        [f"{node}[flip]", "barrier", "PASS", "FAIL"],
    ]
