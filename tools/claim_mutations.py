#!/usr/bin/env python3
"""Break one assertion of a claim check at a time and show that the check reacts (issue 24's acceptance).

Issue 24 asks of every assertion it changed: "Each changed assertion is checked by breaking it (for example
the 0.8 constant back, or the per-seed conjunction back), and the check reacts". The catalog
``tools/claim_mutation_catalog.py`` (:data:`~claim_mutation_catalog.MUTATIONS`) is that list: each entry
replaces one piece of text in one file under ``claims/`` (its fields are described there); this module runs them.

For each selected mutation the tool

1. copies the working tree (``git ls-files -co --exclude-standard``: tracked files and untracked ones git
   does not ignore) to a temporary folder and applies the replacement there (never to the working tree);
2. runs only the mutated claim's checks of that file (of the check files the entry names, ``checks``, when
   the file is a helper module the checks import, such as ``llfc_pairs.py``), in that copy, against the
   fixture store ``--store``::

       <repo>/.venv/bin/python -m pytest claims/<file> --lmc-claim <ids> -p no:cacheprovider -q \\
           --lmc-no-progress --lmc-report <tmp>/report [options of the baseline run]

   with ``LMCCHECK_CACHE=<store>`` and ``PYTHONPATH=<copy>`` (the copy's ``claims`` and ``fixtures`` are the
   ones imported). ``--lmc-claim`` selects by the checks' ``claim`` marker: ``-k`` matches file names too, so
   ``-k S2`` also picks S1 (file ``test_s1_s2_symmetry.py``), ``-k S12`` picks S7 and S8 (files
   ``test_s7_s12_...``, ``test_s8_s12_...``), ``-k S5`` picks S6, ``-k S1`` picks S10-S12 and ``-k Z1`` Z10.
   The file path keeps a claim whose checks live in two files (S12) to the mutated one. The options that key
   products or choose settings (``--lmc-seeds``, ``--lmc-seed-offset``, ``--lmc-barrier-precision``,
   ``--lmc-budget``, ``--lmc-device``) are taken from the baseline report's recorded command line, so the
   mutated run reads the products the baseline run used (the store is content-addressed: a mutation that needs
   another product builds it, and nothing stored is changed). The run still writes the plan manifests of the
   checks it ran (``<store>/plans/``); the tool puts them back as they were afterwards (``--keep-plans`` leaves
   them);
3. compares the mutated run's ``claims.json`` with the baseline report's records of the same checks: the
   check's verdict before -> after, and every assertion whose outcome, estimate, interval, bound, rule,
   ``decides`` or points changed, or which appeared or disappeared (an assertion whose name changed with
   the mutation, e.g. "all but 0 of 4", is paired with its closest old name). lmccheck's own comparison
   (:func:`lmccheck.assertions.compare`, ``--lmc-compare``) is printed too; it lists only estimates that
   moved beyond their interval, which is why the finer comparison is needed here.

A mutation REACTS when a check's verdict changes, or a deciding assertion's outcome, estimate, interval,
bound, rule, role (``decides``) or points change, or a deciding assertion appears or disappears. A run that
ends in ERROR / NOT RUN, or writes no report, is BROKEN (a broken mutation, not a reaction). The exit status
is 0 when every mutation reacts, 1 otherwise (2 for a usage error).

Usage (the baseline must be a report of the same code, store and options, e.g. the latest ``make claims``)::

    .venv/bin/python tools/claim_mutations.py --list
    .venv/bin/python tools/claim_mutations.py --store ~/.cache/lmccheck --baseline report/claims.json \\
        [--only S3-ratio-3of70 --only S8-fig4-0.8 ...] [--control] [--out mutations.md]
    .venv/bin/python tools/claim_mutations.py --store DIR --baseline report/claims.json --dry-run

``--control`` first runs each file of the selected mutations unmutated (with every claim they run there) and
reports any difference from the baseline: a stale baseline, or one made from another tree, store or options,
would make every mutation look as if it reacted (a control that differs makes the exit status 1). The copies
are the working tree as it is now, uncommitted changes included, so the baseline must come from the same tree.
``--dry-run`` applies and compiles every selected mutation in a copy and prints the commands, running nothing.
Each mutated run is a claim run in one process: seconds to minutes per mutation with a warm store (a cold
store trains everything first). Do not run it beside another claim run on the same store (the plan manifests
are put back as they were before each mutated run).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# beside this script: tools/claim_mutation_catalog.py (the catalog) and tools/worktree.py (the copies)
from claim_mutation_catalog import CLAIMS_DIR, MUTATIONS, Mutation, MutationError, by_name, check_catalog, claims_in
from worktree import git_files
from worktree import stage as _stage_files

ROOT = Path(__file__).resolve().parents[1]
#: verdicts that mean the mutated check did not run to a verdict (a broken mutation, not a reaction)
BROKEN_VERDICTS = ("ERROR", "NOT RUN")
#: options of the baseline run that key products or choose the checks' settings, copied to every mutated run
KEYED_OPTIONS = ("--lmc-seeds", "--lmc-seed-offset", "--lmc-barrier-precision", "--lmc-budget", "--lmc-device",
                 "--lmc-data-root")
#: relative tolerance of "changed" for numbers (the same stored products give the same numbers; a difference of
#: thread count may move float32 computations done inside a check in their last bits)
DEFAULT_RTOL = 1e-6
ABS_TOL = 1e-12
#: pytest exit codes that mean the run itself failed (interrupted, internal error, usage error, nothing collected)
PYTEST_BROKEN_RC = (2, 3, 4, 5)


# --------------------------------------------------------------------------------------------------------------- #
# Comparing two reports' records
# --------------------------------------------------------------------------------------------------------------- #
@dataclass(frozen=True)
class RowChange:
    """One changed field of one assertion (or a whole assertion that appeared or disappeared)."""

    assertion: str
    what: str
    before: str
    after: str
    deciding: bool


@dataclass
class CheckDiff:
    """One check of the mutated run against the baseline's record of it."""

    nodeid: str
    before: str
    after: str
    rows: list[RowChange] = field(default_factory=list)
    compare_lines: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return self.after in BROKEN_VERDICTS or self.after == "absent" or self.before == "absent"

    @property
    def reacts(self) -> bool:
        if self.broken:
            return False
        return self.before != self.after or any(r.deciding for r in self.rows)


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "nan"
    return f"{f:.{digits}g}"


def _same_num(x: Any, y: Any, rtol: float) -> bool:
    if x is None or y is None:
        return x is None and y is None
    try:
        fx, fy = float(x), float(y)
    except (TypeError, ValueError):
        return x == y
    if math.isnan(fx) or math.isnan(fy):
        return math.isnan(fx) and math.isnan(fy)
    return math.isclose(fx, fy, rel_tol=rtol, abs_tol=ABS_TOL)


def _same_interval(a: Any, b: Any, rtol: float) -> bool:
    a, b = list(a or []), list(b or [])
    return len(a) == len(b) and all(_same_num(x, y, rtol) for x, y in zip(a, b))


def _interval(a: Mapping[str, Any]) -> str:
    iv = list(a.get("interval") or [])
    text = f"[{_num(iv[0])}, {_num(iv[1])}]" if len(iv) == 2 else "[]"
    level = a.get("level")
    return text + (f" ({float(level):.0%})" if isinstance(level, (int, float)) else "")


def _estimate(a: Mapping[str, Any]) -> str:
    return f"{_num(a.get('observed'))} {_interval(a)}"


def _point_text(p: Mapping[str, Any]) -> str:
    return f"{p.get('label')}: {_num(p.get('mean'))} {_interval(p)} {p.get('outcome')}"


def _points_change(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], rtol: float,
                   limit: int = 6) -> tuple[str, str] | None:
    """A short before/after text of the points that appeared, disappeared or changed (None: no change)."""
    o = {str(p.get("label")): p for p in old}
    n = {str(p.get("label")): p for p in new}
    gone = [k for k in o if k not in n]
    added = [k for k in n if k not in o]
    changed = [k for k in o if k in n and (
        o[k].get("outcome") != n[k].get("outcome") or not _same_num(o[k].get("mean"), n[k].get("mean"), rtol)
        or not _same_interval(o[k].get("interval"), n[k].get("interval"), rtol))]
    if not (gone or added or changed):
        return None

    def listing(keys: list[str], src: Mapping[str, Mapping[str, Any]], prefix: str) -> list[str]:
        shown = [prefix + _point_text(src[k]) for k in keys[:limit]]
        return shown + ([f"... {len(keys) - limit} more"] if len(keys) > limit else [])

    before = listing(gone, o, "-") + listing(changed, o, "")
    after = listing(added, n, "+") + listing(changed, n, "")
    return "; ".join(before) or "(none)", "; ".join(after) or "(none)"


def _pair_assertions(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
                     ) -> tuple[list[tuple[Mapping[str, Any], Mapping[str, Any]]], list[Mapping[str, Any]],
                                list[Mapping[str, Any]]]:
    """(pairs matched by name, then by the closest remaining name; old ones left; new ones left)."""
    old_by = {str(a.get("name")): a for a in old}
    new_left: list[Mapping[str, Any]] = []
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    for b in new:
        a = old_by.pop(str(b.get("name")), None)
        (new_left.append(b) if a is None else pairs.append((a, b)))
    still: list[Mapping[str, Any]] = []
    for b in new_left:
        close = difflib.get_close_matches(str(b.get("name")), list(old_by), n=1, cutoff=0.85)
        if close:
            pairs.append((old_by.pop(close[0]), b))
        else:
            still.append(b)
    return pairs, list(old_by.values()), still


def diff_assertions(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
                    rtol: float = DEFAULT_RTOL) -> list[RowChange]:
    """Every changed field of the assertions two records of one check share, and the assertions only one has."""
    pairs, gone, added = _pair_assertions(old, new)
    rows: list[RowChange] = []
    for a, b in pairs:
        name = str(b.get("name"))
        deciding = bool(a.get("decides", True)) or bool(b.get("decides", True))
        if str(a.get("name")) != name:
            rows.append(RowChange(name, "renamed", str(a.get("name")), name, False))
        for key in ("outcome", "rule", "bound", "decides"):
            if a.get(key) != b.get(key):
                rows.append(RowChange(name, key, str(a.get(key)), str(b.get(key)), deciding))
        if not (_same_num(a.get("observed"), b.get("observed"), rtol)
                and _same_interval(a.get("interval"), b.get("interval"), rtol)
                and _same_num(a.get("level"), b.get("level"), rtol)):
            rows.append(RowChange(name, "estimate", _estimate(a), _estimate(b), deciding))
        pts = _points_change(a.get("points") or [], b.get("points") or [], rtol)
        if pts is not None:
            rows.append(RowChange(name, "points", pts[0], pts[1], deciding))
    for a in gone:
        rows.append(RowChange(str(a.get("name")), "assertion gone", f"{a.get('outcome')} {_estimate(a)}", "absent",
                              bool(a.get("decides", True))))
    for b in added:
        rows.append(RowChange(str(b.get("name")), "new assertion", "absent", f"{b.get('outcome')} {_estimate(b)}",
                              bool(b.get("decides", True))))
    return rows


def _record_key(record: Mapping[str, Any]) -> str:
    return str(record.get("nodeid") or f"{record.get('claim')}[{record.get('setting')}]")


def diff_records(baseline: Sequence[Mapping[str, Any]], mutated: Sequence[Mapping[str, Any]],
                 rtol: float = DEFAULT_RTOL) -> list[CheckDiff]:
    """Per check of the mutated run: its verdict in the baseline and now, the assertion changes, and lmccheck's own
    comparison lines (:func:`lmccheck.assertions.compare`) for it."""
    from lmccheck.assertions import compare

    base = {_record_key(r): r for r in baseline}
    out = []
    for r in mutated:
        key = _record_key(r)
        old = base.get(key)
        if old is None:
            out.append(CheckDiff(key, "absent", str(r.get("verdict")),
                                 compare_lines=["the baseline report has no record of this check"]))
            continue
        d = CheckDiff(key, _verdict_text(old), _verdict_text(r),
                      diff_assertions(old.get("assertions") or [], r.get("assertions") or [], rtol))
        d.compare_lines = [c.line() for c in compare([old], [r])]
        out.append(d)
    return out


def _verdict_text(record: Mapping[str, Any]) -> str:
    v = str(record.get("verdict"))
    return v + (" (known finding)" if record.get("known_finding") else "")


# --------------------------------------------------------------------------------------------------------------- #
# Running one mutation
# --------------------------------------------------------------------------------------------------------------- #
@dataclass
class Outcome:
    """The result of one mutated (or control) run."""

    name: str
    mutation: Mutation | None
    checks: list[CheckDiff] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    command: str = ""
    log: Path | None = None
    #: whether the copy, its log and report outlive the run (--keep, --workdir)
    kept: bool = False

    @property
    def reacts(self) -> bool:
        return not self.error and bool(self.checks) and any(c.reacts for c in self.checks)

    @property
    def status(self) -> str:
        if self.error or not self.checks or all(c.broken for c in self.checks):
            return "BROKEN"
        if self.mutation is None:  # a control run: it should not differ from the baseline at all
            differs = any(c.rows or c.before != c.after for c in self.checks)
            return "DIFFERS FROM BASELINE" if differs else "SAME AS BASELINE"
        return "REACTS" if self.reacts else "DOES NOT REACT"


def _git_files(root: Path) -> list[str]:
    files = git_files(root)
    if files is None:
        raise SystemExit(f"cannot list the files of {root} with git (is it a git checkout?)")
    return files


def stage(root: Path, dest: Path, files: Sequence[str] | None = None) -> Path:
    """Copy the working tree's files (``git ls-files -co --exclude-standard``) of ``root`` to ``dest``."""
    return _stage_files(root, dest, files if files is not None else _git_files(root))


def baseline_options(meta: Mapping[str, Any]) -> list[str]:
    """The options of the baseline run that key products or choose settings (:data:`KEYED_OPTIONS`), from its
    recorded command line; the seed offset and device from the meta where the command line lacks them."""
    args = [str(a) for a in meta.get("args") or []]
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(args):
        a = args[i]
        for opt in KEYED_OPTIONS:
            if a == opt and i + 1 < len(args):
                out += [opt, args[i + 1]]
                seen.add(opt)
                i += 1
            elif a.startswith(opt + "="):
                out += [opt, a.split("=", 1)[1]]
                seen.add(opt)
        i += 1
    if "--lmc-seed-offset" not in seen and meta.get("seed_offset"):
        out += ["--lmc-seed-offset", str(meta["seed_offset"])]
    if "--lmc-device" not in seen and str(meta.get("device") or "").startswith("cpu"):
        out += ["--lmc-device", "cpu"]
    return out


def baseline_threads(meta: Mapping[str, Any]) -> str | None:
    """The torch CPU threads each process of the baseline run had ("2 workers, 1 CPU thread each" -> "1")."""
    m = re.search(r"(\d+) CPU threads? each", str(meta.get("processes") or ""))
    return m.group(1) if m else None


def pytest_command(python: Path, m_paths: Sequence[str], claims: Sequence[str], report: Path, options: Sequence[str],
                   k: str = "", extra: Sequence[str] = ()) -> list[str]:
    cmd = [str(python), "-m", "pytest", *m_paths, "--lmc-claim", ",".join(claims), "-p", "no:cacheprovider", "-q",
           "--lmc-no-progress", "--lmc-report", str(report), *options]
    if k:
        cmd += ["-k", k]
    return cmd + list(extra)


@contextlib.contextmanager
def preserve_plans(store: Path, enabled: bool = True) -> Iterator[None]:
    """Put ``<store>/plans/`` back as it was: a mutated run rewrites the manifests of the checks it runs."""
    plans = store / "plans"
    before = {p.name: p.read_bytes() for p in plans.glob("*.json")} if enabled and plans.is_dir() else {}
    try:
        yield
    finally:
        if enabled and plans.is_dir():
            for p in plans.glob("*.json"):
                if p.name not in before:
                    p.unlink(missing_ok=True)
                elif p.read_bytes() != before[p.name]:
                    p.write_bytes(before[p.name])


def run_one(name: str, mutation: Mutation | None, check_files: Sequence[str], claims: Sequence[str], *, work: Path,
            files: list[str], store: Path, baseline: Sequence[Mapping[str, Any]], options: Sequence[str],
            env: Mapping[str, str], python: Path, timeout: float, rtol: float, keep_plans: bool, extra: Sequence[str],
            k: str = "", dry_run: bool = False, kept: bool = False) -> Outcome:
    """Stage a copy, apply ``mutation`` (None: a control run), run the checks of ``check_files`` (names under
    ``claims/``), compare with the baseline."""
    tree = work / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if tree.exists():
        shutil.rmtree(tree)
    stage(ROOT, tree / "repo", files)
    repo = tree / "repo"
    paths = [f"{CLAIMS_DIR}/{f}" for f in check_files]
    out = Outcome(name, mutation, log=tree / "pytest.log", kept=kept)
    if mutation is not None:
        target = repo / mutation.path
        try:
            text = mutation.apply(target.read_text(encoding="utf-8"))
            compile(text, str(target), "exec")
        except (MutationError, SyntaxError) as exc:
            out.error = str(exc)
            return out
        target.write_text(text, encoding="utf-8")
    report = tree / "report"
    cmd = pytest_command(python, paths, claims, report, options, k, extra)
    out.command = shlex.join(cmd)
    if dry_run:
        return out
    run_env = dict(env)
    run_env["PYTHONPATH"] = str(repo) + (os.pathsep + run_env["PYTHONPATH"] if run_env.get("PYTHONPATH") else "")
    t0 = time.monotonic()
    with preserve_plans(store, enabled=not keep_plans), open(out.log, "w", encoding="utf-8") as log:
        log.write(f"$ {out.command}\n(cwd {repo}, LMCCHECK_CACHE={store})\n\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, cwd=repo, env=run_env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    out.seconds = time.monotonic() - t0
    if rc is None:
        out.error = f"timed out after {timeout:g} s: {_tail(out.log)}"
        return out
    json_path = report / "claims.json"
    if rc in PYTEST_BROKEN_RC or not json_path.is_file():
        out.error = f"pytest exited {rc} without a usable report: {_tail(out.log)}"
        return out
    from lmccheck.report import load_report

    records, _ = load_report(json_path)
    if not records:
        out.error = f"the run selected no claim check: {_tail(out.log)}"
        return out
    out.checks = diff_records(baseline, records, rtol)
    return out


def _tail(log: Path, n: int = 6) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def check_import_from_copy(python: Path, repo: Path, env: Mapping[str, str], file: str) -> str | None:
    """None when ``claims.<module>`` imports from the copy ``repo`` (not from the working tree); else why not."""
    module = f"{CLAIMS_DIR}.{Path(file).stem}"
    run_env = dict(env)
    run_env["PYTHONPATH"] = str(repo) + (os.pathsep + run_env["PYTHONPATH"] if run_env.get("PYTHONPATH") else "")
    probe = subprocess.run([str(python), "-c", f"import {module} as m, fixtures as f; print(m.__file__); "
                                               "print(f.__file__)"],
                           cwd=repo, env=run_env, capture_output=True, text=True, check=False)
    paths = [Path(p).resolve() for p in probe.stdout.split()]
    if probe.returncode != 0 or len(paths) != 2 or not all(repo.resolve() in p.parents for p in paths):
        return f"{module} / fixtures do not import from the copy {repo}: {probe.stdout.strip()} {probe.stderr[-800:]}"
    return None


# --------------------------------------------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------------------------------------------- #
def _short(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def print_outcome(o: Outcome, stream: Any = sys.stdout) -> None:
    m = o.mutation
    head = f"[{o.name}]" + (f" {m.claim} {m.path}: {m.breaks}" if m else " control (unmutated)")
    print(head, file=stream)
    if m:
        print(f"  expected: {m.expected}", file=stream)
    if o.error:
        print(f"  error: {o.error}", file=stream)
    for c in o.checks:
        print(f"  {_short(c.nodeid)}: {c.before} -> {c.after}", file=stream)
        for r in c.rows:
            mark = "*" if r.deciding else " "
            print(f"    {mark} {r.assertion[:110]}: {r.what}: {r.before[:300]} -> {r.after[:300]}", file=stream)
        for line in c.compare_lines:
            print(f"      lmccheck compare: {line[:300]}", file=stream)
    took = f" ({o.seconds:.0f} s)" if o.seconds else ""
    quiet = ("REACTS", "SAME AS BASELINE")
    where = (f"; log {o.log}" if o.kept else "; --keep keeps its log") if o.log and o.status not in quiet else ""
    print(f"  => {o.status}{took}{where}", file=stream)
    print(file=stream, flush=True)


def markdown(outcomes: Sequence[Outcome], controls: Sequence[Outcome], meta: Mapping[str, Any]) -> str:
    from lmccheck.assertions import markdown_table

    lines = ["# Claim mutations: does each check react when its assertion is broken?", "",
             f"Baseline: {meta.get('baseline')} (commit {str(meta.get('commit') or '?')[:10]}); store "
             f"{meta.get('store')}; options {' '.join(meta.get('options') or []) or '(none)'}.", "",
             "A mutation REACTS when a check's verdict changes or a deciding assertion's outcome, estimate, "
             "interval, bound, rule, role or points change (or it appears / disappears). `*` marks deciding rows.",
             ""]
    rows = []
    for o in outcomes:
        m = o.mutation
        checks = "; ".join(f"{_short(c.nodeid)}: {c.before} → {c.after}" for c in o.checks) or o.error
        n = sum(1 for c in o.checks for r in c.rows if r.deciding)
        rows.append([o.name, m.claim if m else "", m.breaks if m else "", checks, str(n), o.status])
    lines.append(markdown_table(["mutation", "claim", "breaks / restores", "check: before → after",
                                 "deciding rows changed", "reaction"], rows))
    if controls:
        lines += ["", "## Control runs (unmutated)", ""]
        lines.append(markdown_table(["run", "checks", "changed rows", "result"], [
            [o.name, "; ".join(f"{_short(c.nodeid)}: {c.before} → {c.after}" for c in o.checks) or o.error,
             str(sum(len(c.rows) for c in o.checks)), o.status]
            for o in controls]))
    lines += ["", "## Details", ""]
    for o in outcomes:
        m = o.mutation
        lines += [f"### {o.name}: {o.status}", ""]
        if m:
            lines += [f"- file: `{m.path}`, claims {m.claim}", f"- breaks: {m.breaks}", f"- expected: {m.expected}",
                      f"- replaced `{m.old.strip()[:200]}` by `{m.new.strip()[:200]}`"]
        if o.command:
            lines.append(f"- command: `{o.command}`" + (f" ({o.seconds:.0f} s)" if o.seconds else ""))
        if o.error:
            lines.append(f"- error: {o.error}")
        lines.append("")
        for c in o.checks:
            lines += [f"**{c.nodeid}**: {c.before} → {c.after}", ""]
            if c.rows:
                lines.append(markdown_table(["", "assertion", "what", "before", "after"], [
                    ["*" if r.deciding else "", r.assertion, r.what, r.before[:400], r.after[:400]] for r in c.rows]))
                lines.append("")
            if c.compare_lines:
                lines += [f"- lmccheck compare: {x}" for x in c.compare_lines] + [""]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="the fixture store the baseline run used (LMCCHECK_CACHE)")
    parser.add_argument("--baseline", type=Path, help="the baseline report's claims.json (same code, store, options)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only these mutations (repeatable, or comma-separated)")
    parser.add_argument("--out", type=Path, help="write a Markdown table and the details to this file")
    parser.add_argument("--list", action="store_true", help="print the catalog and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="apply and compile every selected mutation in a copy and print the commands; run nothing")
    parser.add_argument("--control", action="store_true",
                        help="first run each selected (file, claims) unmutated and report differences from the "
                             "baseline")
    parser.add_argument("--workdir", type=Path, help="where the copies go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the copies, logs and reports")
    parser.add_argument("--keep-plans", action="store_true",
                        help="leave the plan manifests the mutated runs write in <store>/plans/")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run (default 3600)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help=f"relative tolerance of a changed number (default {DEFAULT_RTOL:g})")
    parser.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python",
                        help="the interpreter that runs pytest (default: the repository's .venv)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, one shell-quoted string")
    args = parser.parse_args(argv)

    selected = by_name(args.only) if args.only else list(MUTATIONS)
    if args.list:
        for m in selected:
            checks = f", checks of {', '.join(m.check_files)}" if m.checks else ""
            print(f"{m.name}  [{m.claim}, {m.path}{checks}]\n  breaks: {m.breaks}\n  expected: {m.expected}\n")
        return 0
    try:
        check_catalog()
    except MutationError as exc:
        print(f"claim_mutations: {exc}", file=sys.stderr)
        return 2
    if args.store is None or args.baseline is None:
        parser.error("--store and --baseline are required (unless --list)")
    if not args.python.is_file():
        parser.error(f"no interpreter at {args.python}: run `make test` once, or pass --python")
    store = args.store.expanduser().resolve()
    if not store.is_dir() and not args.dry_run:
        parser.error(f"the store {store} does not exist")
    from lmccheck.report import load_report

    try:
        baseline, meta = load_report(args.baseline.expanduser())
    except ValueError as exc:
        parser.error(str(exc))
    options = baseline_options(meta)
    env = dict(os.environ)
    env["LMCCHECK_CACHE"] = str(store)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    threads = baseline_threads(meta)
    if threads and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = threads  # as many torch threads as each baseline process had
    extra = shlex.split(args.pytest_args)
    files = _git_files(ROOT)
    work = (args.workdir.expanduser().resolve() if args.workdir
            else Path(tempfile.mkdtemp(prefix="claim-mutations-")))
    work.mkdir(parents=True, exist_ok=True)
    print(f"claim_mutations: {len(selected)} mutation(s); baseline {args.baseline} (commit "
          f"{str(meta.get('git_commit') or '?')[:10]}); store {store}; options {' '.join(options) or '(none)'}"
          + (f"; OMP_NUM_THREADS={env['OMP_NUM_THREADS']}" if env.get("OMP_NUM_THREADS") else "")
          + f"; copies under {work}", flush=True)
    common = dict(work=work, files=files, store=store, baseline=baseline, options=options, env=env,
                  python=args.python, timeout=args.timeout, rtol=args.rtol, keep_plans=args.keep_plans, extra=extra,
                  dry_run=args.dry_run, kept=args.keep or args.workdir is not None)
    controls: list[Outcome] = []
    outcomes: list[Outcome] = []
    try:
        if not args.dry_run:
            probe_tree = stage(ROOT, work / "_probe" / "repo", files)
            why = check_import_from_copy(args.python, probe_tree, env, selected[0].file)
            shutil.rmtree(work / "_probe", ignore_errors=True)
            if why:
                print(f"claim_mutations: {why}", file=sys.stderr)
                return 2
        if args.control and not args.dry_run:
            per_file: dict[str, list[str]] = {}
            for m in selected:  # one unmutated run per check file, with every claim the selected mutations run there
                for f in m.check_files:
                    per_file.setdefault(f, [])
                    per_file[f] += [c for c in claims_in(f, m.claims) if c not in per_file[f]]
            for file, ids in per_file.items():
                claim = ",".join(ids)
                o = run_one(f"control {file} {claim}", None, [file], ids, **common)
                controls.append(o)
                print_outcome(o)
                if o.status == "DIFFERS FROM BASELINE":
                    print(f"  WARNING: the unmutated run differs from the baseline for {claim}: the baseline is stale "
                          "or the run is not reproducible; reactions of these checks are not evidence", flush=True)
        for m in selected:
            o = run_one(m.name, m, m.check_files, m.claims, k=m.k, **common)
            outcomes.append(o)
            if args.dry_run:
                print(f"[{m.name}] " + (f"error: {o.error}" if o.error else f"applies and compiles\n  {o.command}"))
            else:
                print_outcome(o)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.dry_run:
        return 1 if any(o.error for o in outcomes) else 0
    stale = {o.name.split()[1] for o in controls if o.status != "SAME AS BASELINE"}
    print("summary:")
    for o in outcomes:
        note = " [control of this file differs from the baseline: not evidence]" if o.mutation and \
            any(f in stale for f in o.mutation.check_files) else ""
        print(f"  {o.status:15} {o.name}" + (f" ({o.mutation.claim})" if o.mutation else "") + note)
    if args.out:
        args.out.write_text(markdown(outcomes, controls, {"baseline": args.baseline, "store": store, "options": options,
                                                          "commit": meta.get("git_commit")}), encoding="utf-8")
        print(f"written: {args.out}")
    return 0 if outcomes and not stale and all(o.status == "REACTS" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
