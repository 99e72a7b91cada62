"""The report's view of claim assertions: the assertion table, and a run compared with an earlier report.

Each claim record carries ``assertions`` (:meth:`lmccheck.verdict.Judgement.to_dict`): the observed
value, its interval, n and df, the bound, the outcome, the minimum detectable effect, the seeds an
INCONCLUSIVE one would need, and the source of its threshold. :func:`markdown_rows` renders them for
``claims.md``; :func:`compare` matches two reports assertion by assertion (``--lmc-compare``), as
pytest-benchmark's ``--benchmark-compare`` does for timings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
#: record verdicts that are a claim's result (not SKIP, ERROR, NOT RUN)
JUDGED = (PASS, FAIL, INCONCLUSIVE)


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{float(x):.{digits}g}"


def interval_text(a: Mapping[str, Any]) -> str:
    lo, hi = (a.get("interval") or [None, None])[:2]
    level = a.get("level")
    if a.get("rule") == "Exact":
        return "exact"
    return f"[{_num(lo)}, {_num(hi)}]" + (f" ({float(level):.0%})" if level is not None else "")


def source_text(a: Mapping[str, Any], limit: int = 240) -> str:
    src = a.get("source") or {}
    if src.get("kind") == "paper":
        text = f'paper {src.get("where", "")}: "{src.get("text", "")}"'
    else:
        text = f"lmccheck's reading: {src.get('text', '')}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def outcome_text(a: Mapping[str, Any]) -> str:
    out = str(a.get("outcome", "?"))
    if out == INCONCLUSIVE:
        needed = a.get("seeds_needed")
        out += f" (needs ~{needed} seeds)" if needed else " (more seeds would not decide it)"
    if not a.get("decides", True):
        out += ", lmccheck's own: does not decide"
    return out


def markdown_rows(record: Mapping[str, Any]) -> list[list[str]]:
    """One row per assertion of a record: name, bound, observed, interval, n (df), MDE, outcome, source."""
    rows = []
    for a in record.get("assertions") or []:
        df = a.get("df")
        n = f"{a.get('n')}" + (f" (df {float(df):.3g})" if df is not None else "")
        if a.get("over"):
            n += f", {a.get('over')} of {len(a.get('points') or [])} points"
        rows.append([str(a.get("name", "")), str(a.get("bound", "")), _num(a.get("observed")), interval_text(a), n,
                     _num(a.get("mde"), 3), outcome_text(a), source_text(a)])
    return rows


ASSERTION_COLUMNS = ["Assertion", "Bound", "Observed", "Interval", "n", "MDE", "Outcome", "Source"]


def inconclusive_summary(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per INCONCLUSIVE deciding assertion, with the seeds it would need."""
    out = []
    for r in records:
        for a in r.get("assertions") or []:
            if a.get("outcome") == INCONCLUSIVE and a.get("decides", True):
                needed = a.get("seeds_needed")
                out.append(f"{r.get('claim')} {r.get('setting')}: {a.get('name')} -- "
                           + (f"about {needed} seeds (--lmc-seeds {needed})" if needed
                              else "not decidable by more seeds at this setting"))
    return out


# --------------------------------------------------------------------------- #
# Comparing two reports
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Change:
    """One difference between an earlier report and this run."""

    check: str
    assertion: str
    what: str
    old: str
    new: str
    loud: bool

    def line(self) -> str:
        mark = "!!" if self.loud else "--"
        where = f"{self.check}" + (f" :: {self.assertion}" if self.assertion else "")
        return f"{mark} {where}: {self.what}: {self.old} -> {self.new}"


def _key(record: Mapping[str, Any]) -> str:
    return str(record.get("nodeid") or f"{record.get('claim')}[{record.get('setting')}]")


def _name(key: str) -> str:
    """A check's name without its file: ``test_z1_...[mlp512-fmnist]`` of ``claims/test_z.py::test_z1_...[...]``."""
    return key.rsplit("::", 1)[-1]


def _moved(old: Mapping[str, Any], new_keys: Sequence[str]) -> dict[str, str]:
    """Checks that moved to another file: a new key absent from the old report whose name (file part dropped)
    names exactly one old check absent from the new run, and no other new check. Returns ``{new: old}``."""
    gone = [k for k in old if k not in set(new_keys)]
    added = [k for k in new_keys if k not in old]
    by_name: dict[str, list[str]] = {}
    for k in gone:
        by_name.setdefault(_name(k), []).append(k)
    added_names = [_name(k) for k in added]
    return {k: by_name[_name(k)][0] for k in added
            if len(by_name.get(_name(k), [])) == 1 and added_names.count(_name(k)) == 1}


def _flip(old: str, new: str) -> tuple[str, bool] | None:
    if old == new:
        return None
    if {old, new} == {PASS, FAIL}:
        return "outcome flipped", True
    if INCONCLUSIVE in (old, new):
        return "outcome moved", False
    return "outcome changed", old in JUDGED and new in JUDGED


def _outside(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the new estimate lies outside the old interval, or the old outside the new one."""
    try:
        o, n = float(old["observed"]), float(new["observed"])
        olo, ohi = (float(x) for x in old["interval"])
        nlo, nhi = (float(x) for x in new["interval"])
    except (KeyError, TypeError, ValueError):
        return False
    if old.get("rule") == "Exact":
        return False
    return not (olo <= n <= ohi) or not (nlo <= o <= nhi)


def compare(old_records: Sequence[Mapping[str, Any]], new_records: Sequence[Mapping[str, Any]]) -> list[Change]:
    """The differences between an earlier report and this one: every check and assertion whose outcome changed
    (PASS <-> FAIL loud, to or from INCONCLUSIVE a note), and every assertion whose estimate moved by more than
    its interval (the new one outside the old interval, or the old outside the new). Checks only one run has
    are listed as notes. A check that moved to another file (the same test name and parameters, and no other
    check of that name on either side) is compared with its old self, and the move is a note."""
    old = {_key(r): r for r in old_records}
    moved = _moved(old, [_key(r) for r in new_records])
    changes: list[Change] = []
    for r in new_records:
        k = _key(r)
        if k in moved:
            changes.append(Change(k, "", "check moved", moved[k], k, False))
        elif k not in old:
            changes.append(Change(k, "", "new check", "absent", str(r.get("verdict")), False))
            continue
        o = old[moved.get(k, k)]
        flip = _flip(str(o.get("verdict")), str(r.get("verdict")))
        if flip is not None:
            changes.append(Change(k, "", "verdict " + flip[0].split()[-1], str(o.get("verdict")), str(r.get("verdict")),
                                  flip[1]))
        old_a = {a.get("name"): a for a in o.get("assertions") or []}
        for a in r.get("assertions") or []:
            name = str(a.get("name"))
            if name not in old_a:
                changes.append(Change(k, name, "new assertion", "absent", str(a.get("outcome")), False))
                continue
            b = old_a[name]
            flip = _flip(str(b.get("outcome")), str(a.get("outcome")))
            if flip is not None:
                changes.append(Change(k, name, flip[0], str(b.get("outcome")), str(a.get("outcome")), flip[1]))
            if _outside(b, a):
                changes.append(Change(k, name, "estimate moved beyond its interval",
                                      f"{_num(b.get('observed'))} {interval_text(b)}",
                                      f"{_num(a.get('observed'))} {interval_text(a)}", False))
        for name in old_a.keys() - {a.get("name") for a in r.get("assertions") or []}:
            changes.append(Change(k, str(name), "assertion gone", str(old_a[name].get("outcome")), "absent", False))
    for k in old.keys() - {_key(r) for r in new_records} - set(moved.values()):
        changes.append(Change(k, "", "check not in this run", str(old[k].get("verdict")), "absent", False))
    return sorted(changes, key=lambda c: (not c.loud, c.check, c.assertion))


def outcome_table(reports: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[list[str]]:
    """Rows ``[check, assertion, outcome in run 1, run 2, ...]`` for several reports (the stability table)."""
    names = list(reports)
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for run, records in reports.items():
        for r in records:
            cells.setdefault((_key(r), ""), {})[run] = str(r.get("verdict"))
            for a in r.get("assertions") or []:
                cells.setdefault((_key(r), str(a.get("name"))), {})[run] = str(a.get("outcome"))
    return [[check, name, *(row.get(run, "") for run in names)] for (check, name), row in sorted(cells.items())]


def verdict_rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The README's claims index from a report: ``[claim, setting, verdict, deciding assertions]``, each
    assertion as its outcome and its estimate with the interval (generated, never copied by hand)."""
    rows = []
    for r in records:
        verdict = str(r.get("verdict", "?")) + (" (known finding)" if r.get("known_finding") else "")
        parts = []
        for a in r.get("assertions") or []:
            if not a.get("decides", True):
                continue
            est = "" if a.get("rule") == "Exact" else f" {_num(a.get('observed'), 3)} {interval_text(a)}"
            parts.append(f"{a.get('name')}: {a.get('outcome')}{est}")
        rows.append([str(r.get("claim", "")), str(r.get("setting", "")), verdict,
                     "; ".join(parts) or str(r.get("reason") or r.get("summary") or "")])
    return rows


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (cells escaped)."""
    def cell(x: Any) -> str:
        return str(x if x is not None else "").replace("|", "\\|").replace("\n", " ").strip()

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
