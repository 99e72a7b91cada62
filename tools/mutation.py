#!/usr/bin/env python3
"""Mutation testing of one lmccheck module at a time (``make mutation``).

For each module (default: every module in :data:`TESTS`, one after the other)
this runs `cosmic-ray <https://cosmic-ray.readthedocs.io>`_ on
``lmccheck/<module>.py`` against only the unit test files that cover it, and
prints the mutation score and every surviving mutant (file:line, operator and
diff).  The summary also goes to ``mutation/<module>.txt``.

    make mutation                      # every module in TESTS, one after the other (hours)
    make mutation MODULE=permutation   # one module
    .venv/bin/python tools/mutation.py permutation --timeout 60
    .venv/bin/python tools/mutation.py permutation --resume   # finish an interrupted run
    .venv/bin/python tools/mutation.py permutation --report   # re-print the last results
    .venv/bin/python tools/mutation.py matching --sample 150  # a seeded random sample of the mutants
    .venv/bin/python tools/mutation.py verdict --rescore      # rerun the last run's survivors against today's tests

How it works, per module:

1. The working tree (``git ls-files -co --exclude-standard``) is copied to
   ``mutation/work/<module>/repo``.  cosmic-ray rewrites the module it mutates
   in place, so it only ever touches that copy, never the working tree.
2. Sanity checks in the copy: ``import lmccheck.<module>`` resolves to the copy
   (not to the editable install); the tests pass unmutated (their wall time
   sets the per-mutant timeout: 10x, at least 30 s, unless ``--timeout``); and
   a canary (the module raising on import) makes them fail, so a mutant can be
   killed at all.
3. ``cosmic-ray init`` lists the mutants.  Mutants inside type annotations are
   marked skipped when the module has ``from __future__ import annotations``:
   its annotations are never evaluated, so those mutants cannot change
   behaviour and would only show up as survivors.
4. ``cosmic-ray exec`` runs ``python -m pytest -x -q <test files>`` once per
   mutant (sequentially; a mutant whose tests fail or time out is killed).
5. The score is killed / (killed + survived); timeouts count as killed and are
   shown separately; incompetent mutants (ones that could not be run) and
   skipped ones are not counted.

``--sample N`` runs a uniform random sample of N of the mutants (seeded by
``--sample-seed``; the others are marked "not in the sample" and not scored),
for modules whose full run takes hours.  The score is then an estimate of the
full run's, printed with its 95% Wilson interval.

``--rescore`` reruns only the last run's survivors, against the working tree's
current tests (the module itself must be unchanged since that run, so the same
mutants apply): after tests are written to kill survivors, the summary then
shows which still survive, and says the survivors were rescored.

The score is information, not a gate: the command exits 0 whenever the runs
completed.  Not part of ``make test`` or CI (it takes minutes to hours).
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worktree import git_files, stage  # tools/worktree.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "mutation"
WORK_DIR = OUT_DIR / "work"

#: module of lmccheck -> the unit test files that cover it (missing files are left out)
TESTS: dict[str, list[str]] = {
    "permutation": [
        "tests/test_permutation.py", "tests/test_permutation_matrices.py", "tests/test_permutation_errors.py",
    ],
    "matching": ["tests/test_matching.py", "tests/test_activation_modules.py"],
    "weight_matching": ["tests/test_matching.py"],
    "activation_matching": ["tests/test_matching.py", "tests/test_activation_modules.py"],
    "interpolation": ["tests/test_interpolation.py"],
    "barrier_options": ["tests/test_interpolation.py", "tests/test_products.py", "tests/test_cpus.py"],
    "barrier_engine": ["tests/test_interpolation.py"],
    "barrier_curves": ["tests/test_interpolation.py"],
    "pruning": ["tests/test_pruning.py", "tests/test_masks.py"],
    "verdict": ["tests/test_verdict.py"],
    # the other modules the claims' numbers pass through (issue 26)
    "llfc": ["tests/test_llfc.py"],
    "commutativity_matching": ["tests/test_commutativity_matching.py"],
    "kinds": ["tests/test_products.py", "tests/test_lab.py", "tests/test_pruning.py"],
    "products": ["tests/test_products.py"],
    "rewinding": ["tests/test_rewinding.py"],
    "ensemble": ["tests/test_ensemble.py"],
    "training_loop": ["tests/test_training.py", "tests/test_ensemble.py", "tests/test_masks.py"],
}

PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider"]
MIN_TIMEOUT_S = 30.0
TIMEOUT_FACTOR = 10.0
SKIP_ANNOTATION = "mutant inside a type annotation (never evaluated: from __future__ import annotations)"
SKIP_UNSAMPLED = "not in the random sample (--sample)"


# --------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(f"[mutation] {msg}", flush=True)


def _module_name(arg: str) -> str:
    """``permutation``, ``lmccheck/permutation.py`` or ``lmccheck.permutation`` -> ``permutation``."""
    name = arg.strip()
    name = name.removesuffix(".py").replace("/", ".")
    name = name.removeprefix("lmccheck.")
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise SystemExit(f"not a module of lmccheck: {arg!r}")
    return name


def _module_path(name: str) -> str:
    return "lmccheck/" + name.replace(".", "/") + ".py"


def _test_files(name: str) -> list[str]:
    if name not in TESTS:
        known = ", ".join(TESTS)
        raise SystemExit(
            f"no unit tests are mapped to lmccheck/{name}.py; add it to TESTS in tools/mutation.py (known: {known})"
        )
    files = [f for f in TESTS[name] if (ROOT / f).is_file()]
    if not files:
        raise SystemExit(f"none of the test files of {name} exist: {', '.join(TESTS[name])}")
    return files


def _cosmic_ray(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "import sys; from cosmic_ray.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, check=False)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, text=True, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


# --------------------------------------------------------------------------- staging


def _stage(repo: Path) -> None:
    """Copy the working tree (tracked and untracked, not ignored files) to ``repo``."""
    if repo.exists():
        shutil.rmtree(repo)
    files = git_files(ROOT)
    if not files:  # not a git checkout: the package, the tests and the config are enough
        files = [str(p.relative_to(ROOT)) for d in ("lmccheck", "tests") for p in (ROOT / d).rglob("*") if p.is_file()]
        files += [f for f in ("conftest.py", "pyproject.toml") if (ROOT / f).is_file()]
    stage(ROOT, repo, files)


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    return env


def _run_tests(cmd: list[str], repo: Path, env: dict[str, str], timeout: float | None = None) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=repo, env=env, text=True, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - t0, "timeout"
    return p.returncode, time.perf_counter() - t0, p.stdout + p.stderr


def _sanity_checks(name: str, repo: Path, env: dict[str, str], test_cmd: list[str]) -> float:
    """Check the copy is what the tests import, and that they pass; return the baseline seconds."""
    mod_path = repo / _module_path(name)
    probe = subprocess.run(
        [sys.executable, "-c", f"import lmccheck.{name} as m; print(m.__file__)"],
        cwd=repo, env=env, text=True, capture_output=True, check=False,
    )
    imported = Path(probe.stdout.strip() or "?").resolve()
    if probe.returncode != 0 or imported != mod_path.resolve():
        raise SystemExit(
            f"import lmccheck.{name} in {repo} gives {imported} instead of the copy {mod_path}:\n{probe.stderr}"
        )
    rc, seconds, out = _run_tests(test_cmd, repo, env)
    if rc != 0:
        raise SystemExit(f"the tests of {name} fail before any mutation; fix them first:\n{out[-4000:]}")
    original = mod_path.read_text("utf-8")
    try:
        mod_path.write_text('raise RuntimeError("mutation canary")\n' + original, "utf-8")
        rc, _, out = _run_tests(test_cmd, repo, env, timeout=max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * seconds))
    finally:
        mod_path.write_text(original, "utf-8")
    if rc == 0:
        raise SystemExit(f"the tests of {name} still pass when lmccheck/{name}.py cannot be imported:\n{out[-2000:]}")
    return seconds


# --------------------------------------------------------------------------- annotation filter


def _annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, (line, character column), of every annotation in ``source``.

    Empty unless the module has ``from __future__ import annotations``.
    """
    tree = ast.parse(source)
    future = any(
        isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
        for n in tree.body
    )
    if not future:
        return []
    lines = source.splitlines()

    def char_col(line: int, byte_col: int) -> int:  # ast columns are UTF-8 byte offsets
        return len(lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))

    spans = []
    for node in ast.walk(tree):
        annos: list[ast.expr | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            annos += [arg.annotation for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            annos += [a.vararg.annotation if a.vararg else None, a.kwarg.annotation if a.kwarg else None]
            annos.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annos.append(node.annotation)
        for ann in annos:
            if ann is None or ann.end_lineno is None or ann.end_col_offset is None:
                continue
            start = (ann.lineno, char_col(ann.lineno, ann.col_offset))
            end = (ann.end_lineno, char_col(ann.end_lineno, ann.end_col_offset))
            spans.append((start, end))
    return spans


def _skip_annotation_mutants(session: Path, source: str) -> int:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = _annotation_spans(source)
    if not spans:
        return 0
    skipped = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            if all(any(s <= tuple(m.start_pos) and tuple(m.end_pos) <= e for s, e in spans) for m in item.mutations):
                skipped.append(item.job_id)
        if skipped:
            db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=SKIP_ANNOTATION))
    return len(skipped)


def _skip_unsampled(session: Path, n: int, seed: int) -> int:
    """Keep a uniform random sample of ``n`` pending mutants; mark the rest skipped."""
    import random

    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = sorted(item.job_id for item in db.pending_work_items)
        if n >= len(pending):
            return 0
        keep = set(random.Random(seed).sample(pending, n))
        rest = [j for j in pending if j not in keep]
        db.set_multiple_results(rest, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=SKIP_UNSAMPLED))
    return len(rest)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k/n (the sampled score's uncertainty)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------- running


def _exec(name: str, work: Path, repo: Path, env: dict[str, str]) -> None:
    """Run the pending mutants, printing progress every minute."""
    from cosmic_ray.work_db import WorkDB, use_db

    session = work / "session.sqlite"
    with use_db(str(session), WorkDB.Mode.open) as db:
        total = db.num_work_items
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cosmic_ray.cli import main; sys.exit(main())",
         "exec", str(work / "cosmic-ray.toml"), str(session)],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    t0 = time.monotonic()
    last = -1
    try:
        while True:
            try:
                out, _ = proc.communicate(timeout=60)
                break
            except subprocess.TimeoutExpired:
                with use_db(str(session), WorkDB.Mode.open) as db:
                    done = db.num_results
                if done != last:
                    elapsed = time.monotonic() - t0
                    _log(f"{name}: {done}/{total} mutants done ({elapsed / 60:.1f} min)")
                    last = done
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise SystemExit(f"cosmic-ray exec failed for {name} (exit {proc.returncode}):\n{out[-4000:]}")


@dataclass
class Mutant:
    line: int
    col: int
    operator: str
    occurrence: int
    definition: str | None
    outcome: str  # killed / timeout / survived / incompetent / skipped / unsampled / pending
    diff: str = ""
    output: str = ""


@dataclass
class Summary:
    module: str
    mutants: list[Mutant] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(m.outcome == outcome for m in self.mutants)

    @property
    def scored(self) -> int:
        return self.count("killed") + self.count("timeout") + self.count("survived")

    @property
    def score(self) -> float:
        return (self.count("killed") + self.count("timeout")) / self.scored if self.scored else float("nan")

    def survivors(self) -> list[Mutant]:
        return sorted((m for m in self.mutants if m.outcome == "survived"), key=lambda m: (m.line, m.col, m.operator))


def _collect(name: str, session: Path) -> Summary:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    summary = Summary(name)
    with use_db(str(session), WorkDB.Mode.open) as db:
        done = {item.job_id: (item, result) for item, result in db.completed_work_items}
        for item in db.work_items:
            m = item.mutations[0]
            mutant = Mutant(
                line=m.start_pos[0], col=m.start_pos[1], operator=m.operator_name, occurrence=m.occurrence,
                definition=m.definition_name, outcome="pending",
            )
            if item.job_id in done:
                result = done[item.job_id][1]
                mutant.diff = result.diff or ""
                mutant.output = result.output or ""
                if result.worker_outcome == WorkerOutcome.SKIPPED:
                    mutant.outcome = "unsampled" if mutant.output == SKIP_UNSAMPLED else "skipped"
                elif result.test_outcome == TestOutcome.SURVIVED:
                    mutant.outcome = "survived"
                elif result.test_outcome == TestOutcome.KILLED:
                    mutant.outcome = "timeout" if (result.output or "").strip() == "timeout" else "killed"
                else:
                    mutant.outcome = "incompetent"
            summary.mutants.append(mutant)
    return summary


def _format(summary: Summary, header: list[str]) -> str:
    name = summary.module
    path = _module_path(name)
    s = summary
    lines = list(header)
    lines.append(
        f"score: {s.count('killed') + s.count('timeout')}/{s.scored} killed = {100 * s.score:.1f}%"
        f"  ({s.count('killed')} by a failing test, {s.count('timeout')} by timeout; {s.count('survived')} survived)"
    )
    unsampled = s.count("unsampled")
    if unsampled:
        killed = s.count("killed") + s.count("timeout")
        lo, hi = wilson_interval(killed, s.scored)
        lines.append(
            f"sampled: {s.scored} scored mutants of a uniform random sample; the full run's score is "
            f"{100 * lo:.1f}-{100 * hi:.1f}% with 95% confidence (Wilson interval)"
        )
    lines.append(
        f"mutants: {len(s.mutants)} in all; not scored: {s.count('skipped')} skipped (inside type annotations), "
        + (f"{unsampled} not in the sample, " if unsampled else "")
        + f"{s.count('incompetent')} incompetent, {s.count('pending')} not run yet"
    )
    survivors = s.survivors()
    lines.append("")
    if not survivors:
        lines.append("no surviving mutants")
        return "\n".join(lines) + "\n"
    by_def: dict[str, int] = {}
    for m in survivors:
        by_def[m.definition or "<module>"] = by_def.get(m.definition or "<module>", 0) + 1
    lines.append("survivors per function:")
    lines.extend(f"  {n:4d}  {d}" for d, n in sorted(by_def.items(), key=lambda kv: (-kv[1], kv[0])))
    lines.append("")
    lines.append(f"surviving mutants ({len(survivors)}):")
    for m in survivors:
        where = f" in {m.definition}" if m.definition else ""
        lines.append("")
        lines.append(f"{path}:{m.line}:{m.col}: {m.operator} (occurrence {m.occurrence}){where}")
        diff = m.diff.splitlines()
        hunk = next((i for i, d in enumerate(diff) if d.startswith("@@")), 0)  # drop the file headers
        lines.extend("    " + d for d in diff[hunk:])
    return "\n".join(lines) + "\n"


def _require_results(name: str, session: Path) -> None:
    if not session.exists():
        raise SystemExit(f"no results for {name} yet: run `make mutation MODULE={name}` first")


def _reopen_survivors(name: str, work: Path, repo: Path, mod_path: str) -> int:
    """Copy today's tests into ``repo`` and forget the survivors' results, so an exec reruns just them."""
    session, pristine = work / "session.sqlite", work / "pristine.py"
    _require_results(name, session)
    if pristine.read_bytes() != (ROOT / mod_path).read_bytes():
        raise SystemExit(f"{mod_path} changed since the last mutation run of {name}, so its mutants no longer "
                         f"apply: run a new sample (tools/mutation.py {name} --sample N)")
    shutil.copy2(pristine, repo / mod_path)  # an interrupted exec can leave a mutant on disk
    stage(ROOT, repo, [f for f in git_files(ROOT) if f.startswith("tests/") or f in ("conftest.py", "pyproject.toml")])
    with sqlite3.connect(session) as db:
        n = db.execute(
            "DELETE FROM work_results WHERE worker_outcome = 'NORMAL' AND test_outcome = 'SURVIVED'").rowcount
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", "tests") else ""
    with (work / "run.txt").open("a", encoding="utf-8") as meta:
        meta.write(f"rescored: the {n} survivor{'' if n == 1 else 's'} rerun against the tests at {commit}{dirty} "
                   f"({_dt.datetime.now().isoformat(timespec='seconds')})\n")
    return n


def run_module(
    name: str, *, timeout: float | None, resume: bool, report_only: bool, sample: int | None = None,
    sample_seed: int = 0, rescore: bool = False
) -> Summary:
    mod_path = _module_path(name)
    if not (ROOT / mod_path).is_file():
        raise SystemExit(f"no such module: {mod_path}")
    tests = _test_files(name)
    work = WORK_DIR / name
    repo = work / "repo"
    session = work / "session.sqlite"
    config = work / "cosmic-ray.toml"
    pristine = work / "pristine.py"
    env = _env(repo)
    test_cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests]
    meta_file = work / "run.txt"

    if rescore:
        n = _reopen_survivors(name, work, repo, mod_path)
        _log(f"{name}: rerunning the {n} survivors against the current tests")
    elif report_only or (resume and session.exists()):
        _require_results(name, session)
        # an interrupted exec can leave a mutant on disk: put the original back
        if pristine.exists() and not report_only:
            shutil.copy2(pristine, repo / mod_path)
    else:
        _log(f"{name}: copying the working tree to {repo.relative_to(ROOT)}")
        work.mkdir(parents=True, exist_ok=True)
        _stage(repo)
        shutil.copy2(repo / mod_path, pristine)
        _log(f"{name}: baseline run of {' '.join(tests)}")
        baseline = _sanity_checks(name, repo, env, test_cmd)
        per_mutant = timeout if timeout is not None else max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * baseline)
        config.write_text(
            "[cosmic-ray]\n"
            f"module-path = {_toml_str(mod_path)}\n"
            f"timeout = {per_mutant:.1f}\n"
            "excluded-modules = []\n"
            f"test-command = {_toml_str(shlex.join(test_cmd))}\n"
            "\n[cosmic-ray.distributor]\n"
            'name = "local"\n',
            "utf-8",
        )
        session.unlink(missing_ok=True)
        r = _cosmic_ray("init", str(config), str(session), cwd=repo, env=env)
        if r.returncode != 0:
            raise SystemExit(f"cosmic-ray init failed for {name}:\n{r.stdout}\n{r.stderr}")
        n_skipped = _skip_annotation_mutants(session, (repo / mod_path).read_text("utf-8"))
        n_unsampled = _skip_unsampled(session, sample, sample_seed) if sample is not None else 0
        commit = _git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", mod_path, *tests) else ""
        meta_file.write_text(
            f"module: {mod_path}\n"
            f"commit: {commit}{dirty}\n"
            f"started: {_dt.datetime.now().isoformat(timespec='seconds')}\n"
            f"tests: {' '.join(tests)}\n"
            f"test command: python -m pytest {' '.join(PYTEST_ARGS)} {' '.join(tests)}\n"
            f"baseline: {baseline:.1f} s; per-mutant timeout: {per_mutant:.0f} s\n"
            + (f"sample: {sample} mutants (seed {sample_seed})\n" if sample is not None else ""),
            "utf-8",
        )
        from cosmic_ray.work_db import WorkDB, use_db

        with use_db(str(session), WorkDB.Mode.open) as db:
            total = db.num_work_items
        _log(f"{name}: {total} mutants, {n_skipped} of them inside type annotations (skipped), "
             f"{n_unsampled} not in the sample; "
             f"baseline {baseline:.1f} s, timeout {per_mutant:.0f} s per mutant")

    if not report_only:
        t0 = time.monotonic()
        _exec(name, work, repo, env)
        _log(f"{name}: mutants run in {(time.monotonic() - t0) / 60:.1f} min")

    summary = _collect(name, session)
    header = [f"mutation testing of {mod_path} with cosmic-ray {_cr_version()}"]
    if meta_file.exists():
        header += meta_file.read_text("utf-8").splitlines()
    header.append("")
    text = _format(summary, header)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / f"{name}.txt").write_text(text, "utf-8")
    print(text, flush=True)
    _log(f"{name}: summary written to {(OUT_DIR / f'{name}.txt').relative_to(ROOT)}")
    return summary


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cr_version() -> str:
    try:
        from importlib.metadata import version

        return version("cosmic-ray")
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help=f"modules of lmccheck (default: {' '.join(TESTS)})")
    ap.add_argument("--timeout", type=float, default=None,
                    help=f"seconds per mutant (default: {TIMEOUT_FACTOR:g}x the baseline run, "
                         f"at least {MIN_TIMEOUT_S:g})")
    ap.add_argument("--resume", action="store_true", help="run only the mutants an interrupted run left over")
    ap.add_argument("--report", action="store_true", help="only print the summary of the last run")
    ap.add_argument("--sample", type=int, default=None, metavar="N",
                    help="run a uniform random sample of N mutants (an estimate, with its 95%% interval)")
    ap.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample draw (default 0)")
    ap.add_argument("--rescore", action="store_true",
                    help="rerun the last run's survivors against the current tests (the module unchanged)")
    args = ap.parse_args(argv)
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        raise SystemExit("cosmic-ray is not installed: .venv/bin/pip install -e '.[test,mutation]'") from None
    names = [_module_name(m) for arg in args.modules for m in arg.split()] or list(TESTS)
    if args.rescore and (args.sample is not None or args.resume or args.report):
        raise SystemExit("--rescore reruns the last run's survivors: it takes no --sample, --resume or --report")
    if args.sample is not None and args.sample < 1:
        raise SystemExit(f"--sample must be at least 1, got {args.sample}")
    summaries = [
        run_module(n, timeout=args.timeout, resume=args.resume, report_only=args.report,
                   sample=args.sample, sample_seed=args.sample_seed, rescore=args.rescore)
        for n in names
    ]
    if len(summaries) > 1:
        print("module          score")
        for s in summaries:
            killed = s.count("killed") + s.count("timeout")
            print(f"{s.module:<15} {killed}/{s.scored} = {100 * s.score:.1f}%  ({len(s.survivors())} survivors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
