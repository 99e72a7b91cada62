"""tools/claim_mutation_catalog.py: every catalog entry applies to its claim file exactly once and still compiles;
tools/claim_mutations.py: the comparison of two records says whether a check reacted. No claim check runs here."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# the catalog under its own name: the runner imports it by that name (with tools/ on sys.path), so both share it
cat = _load("claim_mutation_catalog", TOOLS / "claim_mutation_catalog.py")
cm = _load("claim_mutations_under_test", TOOLS / "claim_mutations.py")


@pytest.mark.parametrize("mutation", cat.MUTATIONS, ids=lambda m: m.name)
def test_mutation_applies_once_and_compiles(mutation) -> None:
    path = ROOT / mutation.path
    text = path.read_text(encoding="utf-8")
    assert text.count(mutation.old) == 1, f"{mutation.name}: old text must occur exactly once in {mutation.path}"
    assert mutation.new != mutation.old
    mutated = mutation.apply(text)
    assert mutated != text
    compile(mutated, str(path), "exec")


@pytest.mark.parametrize("mutation", cat.MUTATIONS, ids=lambda m: m.name)
def test_mutation_names_claims_of_its_file(mutation) -> None:
    """The claims run are those of the mutated file, or, for a helper module (not a check file), of the check
    files the entry names; each of those files holds one of them."""
    assert mutation.file.startswith("test_") or mutation.checks, f"{mutation.name}: a helper module names no checks"
    texts = {f: (ROOT / "claims" / f).read_text(encoding="utf-8") for f in mutation.check_files}
    assert mutation.claims, mutation.name
    for claim in mutation.claims:
        assert re.fullmatch(r"[SZ][0-9]+", claim), (mutation.name, claim)
        assert any(f'@pytest.mark.claim("{claim}")' in t for t in texts.values()), \
            f"{mutation.name}: {', '.join(texts)} have no {claim} check"
    for f in texts:
        assert cat.claims_in(f, mutation.claims), f"{mutation.name}: {f} has none of {mutation.claim}"
    assert mutation.breaks.strip() and mutation.expected.strip()


def test_catalog_names_unique_and_checked() -> None:
    names = [m.name for m in cat.MUTATIONS]
    assert len(names) == len(set(names))
    cat.check_catalog(ROOT)
    assert cat.by_name(["S3-ratio-3of70,Z10-sign"]) == [cat.MUTATIONS[0], cat.MUTATIONS[-1]]
    with pytest.raises(SystemExit, match="unknown mutation"):
        cat.by_name(["no-such-mutation"])


def test_apply_refuses_missing_or_repeated_text() -> None:
    m = cat.Mutation(name="demo", claim="S3", file="x.py", old="A = 1", new="A = 2", breaks="b", expected="e")
    assert m.apply("A = 1\n") == "A = 2\n"
    with pytest.raises(cat.MutationError, match="demo.*does not occur"):
        m.apply("B = 1\n")
    with pytest.raises(cat.MutationError, match="demo.*occurs 2 times"):
        m.apply("A = 1\nA = 1\n")


def _assertion(name: str, outcome: str = "PASS", observed: float = 0.1, decides: bool = True,
               points: list | None = None, bound: str = "> 0") -> dict:
    return {"name": name, "rule": "Above", "bound": bound, "outcome": outcome, "observed": observed,
            "interval": [observed - 0.05, observed + 0.05], "level": 0.95, "decides": decides,
            "points": points or []}


def test_diff_reacts_only_on_deciding_changes() -> None:
    old = [_assertion("a"), _assertion("own", decides=False)]
    same = cm.CheckDiff("n", "PASS", "PASS", cm.diff_assertions(old, [dict(x) for x in old]))
    assert same.rows == [] and not same.reacts

    recorded_only = cm.CheckDiff("n", "PASS", "PASS", cm.diff_assertions(old, [old[0], _assertion("own", "FAIL", 0.3,
                                                                                                   decides=False)]))
    assert {r.what for r in recorded_only.rows} == {"outcome", "estimate"} and not recorded_only.reacts

    moved = cm.CheckDiff("n", "PASS", "PASS", cm.diff_assertions(old, [_assertion("a", observed=0.1 + 1e-3), old[1]]))
    assert [r.what for r in moved.rows] == ["estimate"] and moved.reacts

    bound = cm.CheckDiff("n", "PASS", "PASS", cm.diff_assertions(old, [_assertion("a", bound="> 0.05"), old[1]]))
    assert [r.what for r in bound.rows] == ["bound"] and bound.reacts

    verdict = cm.CheckDiff("n", "PASS", "FAIL", [])
    assert verdict.reacts
    broken = cm.CheckDiff("n", "PASS", "ERROR", [])
    assert broken.broken and not broken.reacts


def test_diff_points_and_renamed_assertions() -> None:
    p = {"label": "t=1", "mean": 0.1, "interval": [0.0, 0.2], "outcome": "PASS"}
    q = {"label": "t=3", "mean": 0.0, "interval": [-0.1, 0.1], "outcome": "FAIL"}
    old = [_assertion("nearly all the layers (all but 1 of 4)", points=[p])]
    new = [_assertion("nearly all the layers (all but 0 of 4)", points=[p, q])]
    rows = cm.diff_assertions(old, new)
    assert [r.what for r in rows] == ["renamed", "points"]
    assert rows[1].deciding and "+t=3" in rows[1].after
    gone = cm.diff_assertions([_assertion("x")], [_assertion("something else entirely")])
    assert {r.what for r in gone} == {"assertion gone", "new assertion"}


def test_baseline_options_and_threads() -> None:
    meta = {"args": ["claims", "-n", "2", "--lmc-seeds", "5", "--lmc-barrier-precision=fp32", "-q"],
            "seed_offset": 100, "device": "cpu", "processes": "2 workers, 1 CPU thread each"}
    assert cm.baseline_options(meta) == ["--lmc-seeds", "5", "--lmc-barrier-precision", "fp32",
                                         "--lmc-seed-offset", "100", "--lmc-device", "cpu"]
    assert cm.baseline_threads(meta) == "1"
    assert cm.baseline_options({"args": ["claims", "--lmc-seed-offset", "7"], "seed_offset": 7,
                                "device": "cuda (NVIDIA H200)"}) == ["--lmc-seed-offset", "7"]
