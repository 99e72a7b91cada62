"""tools/readme_verdicts.py: the latest-verdicts table of docs/claims.md comes from a report, between its markers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lmccheck.report import write_report

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "readme_verdicts.py"


def _tool():
    spec = importlib.util.spec_from_file_location("readme_verdicts", TOOL)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _report(tmp_path: Path, outcome: str, budget: str = "full") -> Path:
    assertion = {"name": "aligned below", "rule": "Below", "bound": "< 0.05", "outcome": outcome, "observed": 0.01,
                 "interval": [0.0, 0.02], "level": 0.95, "n": 3, "df": 2.0, "mde": 0.06, "seeds_needed": None,
                 "source": {"kind": "paper", "text": "3-8%", "where": "§5.1"}, "over": None, "points": [],
                 "decides": True, "note": ""}
    extra = dict(assertion, name="lmccheck's own", decides=False)
    record = {"claim": "S3", "setting": "mlp", "nodeid": "claims/test_s3.py::test_s3[mlp]", "verdict": outcome,
              "assertions": [assertion, extra]}
    write_report([record], tmp_path / f"{outcome}-{budget}",
                 {"git_commit": "abcdef0123456", "device": "cpu", "budget": budget})
    return tmp_path / f"{outcome}-{budget}" / "claims.json"


def test_the_table_replaces_what_stands_between_the_markers_and_check_says_when_it_is_stale(tmp_path: Path) -> None:
    tool = _tool()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{tool.START}\nold hand-written text\n{tool.END}\n\nafter\n", "utf-8")
    passed = _report(tmp_path, "PASS")
    assert tool.main([str(passed), "--readme", str(readme), "--check"]) == 1
    assert tool.main([str(passed), "--out", str(readme)]) == 0
    text = readme.read_text("utf-8")
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old hand-written text" not in text and "commit abcdef0123, cpu" in text
    assert "| S3 | mlp | PASS | aligned below: PASS 0.01 [0, 0.02] (95%) |" in text
    assert "lmccheck's own" not in text  # only deciding assertions
    assert tool.main([str(passed), "--readme", str(readme), "--check"]) == 0
    assert tool.main([str(_report(tmp_path, "FAIL")), "--readme", str(readme), "--check"]) == 1


def test_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    tool = _tool()
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n", "utf-8")
    assert tool.main([str(_report(tmp_path, "PASS")), "--readme", str(readme)]) == 2
    assert readme.read_text("utf-8") == "# no markers\n"


def test_a_reduced_budgets_report_never_becomes_the_readmes_table(tmp_path: Path) -> None:
    tool = _tool()
    readme = tmp_path / "README.md"
    original = f"# x\n{tool.START}\nold\n{tool.END}\n"
    readme.write_text(original, "utf-8")
    for budget in ("dryrun", "smoke"):
        assert tool.main([str(_report(tmp_path, "PASS", budget)), "--readme", str(readme)]) == 2
    assert readme.read_text("utf-8") == original


def test_the_default_target_is_docs_claims_md_with_its_markers_and_check_never_writes_it(tmp_path: Path) -> None:
    tool = _tool()
    assert tool.TARGET == ROOT / "docs" / "claims.md"
    before = tool.TARGET.read_text("utf-8")
    assert before.count(tool.START) == 1 and before.count(tool.END) == 1
    assert tool.main([str(_report(tmp_path, "PASS")), "--check"]) == 1  # a made-up report: stale, not written
    assert tool.TARGET.read_text("utf-8") == before


def test_out_and_its_alias_readme_name_the_same_target(tmp_path: Path) -> None:
    tool = _tool()
    passed = _report(tmp_path, "PASS")
    texts = []
    for option in ("--out", "--readme"):
        target = tmp_path / f"target{option}.md"
        target.write_text(f"{tool.START}\n{tool.END}\n", "utf-8")
        assert tool.main([str(passed), option, str(target)]) == 0
        texts.append(target.read_text("utf-8"))
    assert texts[0] == texts[1] and "| S3 | mlp | PASS |" in texts[0]


def test_the_readme_claims_index_is_the_catalogs(tmp_path: Path) -> None:
    """README's claims index is generated from claims/catalog.py (tools/readme_index.py): it is up to date, and
    a hand edit makes --check fail."""
    spec = importlib.util.spec_from_file_location("readme_index", ROOT / "tools" / "readme_index.py")
    tool = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(tool)
    assert tool.main(["--check"]) == 0
    edited = tmp_path / "README.md"
    edited.write_text((ROOT / "README.md").read_text(encoding="utf-8").replace("| S3 |", "| S3 (edited) |"))
    assert tool.main(["--check", "--out", str(edited)]) == 1
    assert tool.main(["--out", str(edited)]) == 0 and tool.main(["--check", "--out", str(edited)]) == 0
