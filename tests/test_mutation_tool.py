"""tools/mutation.py's ``--rescore``: the last run's survivors rerun against today's tests, nothing else forgotten."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import mutation  # tools/ is not a package: on sys.path, as the script runs it (it imports worktree)

MODULE = "lmccheck/verdict.py"


def _work(tmp_path: Path, pristine: bytes, outcomes: list[tuple[str, str | None]]) -> tuple[Path, Path]:
    """A finished run's leftovers: the pristine module, a mutant still on disk, and cosmic-ray's results table."""
    work, repo = tmp_path / "work", tmp_path / "work" / "repo"
    (repo / "lmccheck").mkdir(parents=True)
    (work / "pristine.py").write_bytes(pristine)
    (repo / MODULE).write_text("raise RuntimeError('a mutant an interrupted exec left on disk')\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_verdict.py").write_text("# the tests of the sampled run\n")
    with sqlite3.connect(work / "session.sqlite") as db:
        db.execute("CREATE TABLE work_results (worker_outcome VARCHAR(9), output TEXT, test_outcome VARCHAR(11), "
                   "diff TEXT, job_id VARCHAR NOT NULL PRIMARY KEY)")
        db.executemany("INSERT INTO work_results VALUES (?, '', ?, '', ?)",
                       [(w, t, str(i)) for i, (w, t) in enumerate(outcomes)])
    return work, repo


def test_rescore_reopens_the_survivors_only(tmp_path: Path) -> None:
    outcomes = [("NORMAL", "SURVIVED"), ("NORMAL", "KILLED"), ("SKIPPED", None), ("NORMAL", "SURVIVED")]
    work, repo = _work(tmp_path, (mutation.ROOT / MODULE).read_bytes(), outcomes)
    assert mutation._reopen_survivors("verdict", work, repo, MODULE) == 2
    with sqlite3.connect(work / "session.sqlite") as db:
        left = db.execute("SELECT job_id FROM work_results ORDER BY job_id").fetchall()
    assert left == [("1",), ("2",)]  # the killed and the skipped mutants keep their results
    assert (repo / MODULE).read_bytes() == (mutation.ROOT / MODULE).read_bytes()  # the mutant on disk undone
    today = (mutation.ROOT / "tests" / "test_verdict.py").read_bytes()
    assert (repo / "tests" / "test_verdict.py").read_bytes() == today
    assert "rescored: the 2 survivors rerun against the tests at" in (work / "run.txt").read_text()


def test_rescore_is_refused_when_the_module_changed_since_the_run(tmp_path: Path) -> None:
    work, repo = _work(tmp_path, b"# the module as it was sampled\n", [("NORMAL", "SURVIVED")])
    with pytest.raises(SystemExit, match="changed since the last mutation run of verdict"):
        mutation._reopen_survivors("verdict", work, repo, MODULE)
    with sqlite3.connect(work / "session.sqlite") as db:
        assert db.execute("SELECT count(*) FROM work_results").fetchone() == (1,)  # nothing forgotten


def test_rescore_without_a_run_says_what_to_run_first(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="run `make mutation MODULE=verdict` first"):
        mutation._reopen_survivors("verdict", tmp_path / "work", tmp_path / "work" / "repo", MODULE)
