"""Tests for lmccheck.report: formatting, figures, the report files and re-rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lmccheck import figures as fg
from lmccheck import report as rp
from lmccheck.jsonable import to_jsonable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _record(claim: str, setting: str, verdict: str = "PASS", **extra: Any) -> dict[str, Any]:
    """A minimal record like the plugin produces."""
    rec: dict[str, Any] = {
        "claim": claim,
        "setting": setting,
        "nodeid": f"claims/test_x.py::test_{claim}[{setting}]",
        "device": "cpu",
        "values": {"barrier": [0.2, 0.01]},
        "thresholds": {"max_barrier": 0.05},
        "seeds": [0, 1, 2],
        "fixture_keys": [],
        "summary": f"{claim} {setting} summary",
        "figures": [],
        "wall_time_s": 1.5,
        "verdict": verdict,
    }
    rec.update(extra)
    return rec


def _spec(name: str = "trajectory", **kw: Any) -> dict[str, Any]:
    """A two-series figure spec."""
    return fg.make_figure_spec(
        name,
        {"unaligned": ([0, 1, 2], [0.3, 0.2, 0.25]), "P_end (WM)": ([0, 1, 2], [0.01, 0.02, 0.0])},
        title="barrier vs epoch",
        xlabel="epoch",
        ylabel="error barrier",
        **kw,
    )


META = {"lmccheck_version": "0.1.0", "git_commit": "abc", "device": "cpu", "args": ["claims"], "start": "t0",
        "end": "t1"}


# ------------------------------------------------------------------ helpers --
def test_pct_and_number_formatting() -> None:
    assert rp.pct(0.226) == "22.6%"
    assert rp.pct(0.004, digits=2) == "0.40%"
    assert rp.pct(None) == "n/a" and rp.pct(float("nan")) == "n/a"
    assert rp.fmt_barrier(0.004) == "0.4%"
    assert rp.fmt_barrier(0.12345, percent=False) == "0.123"
    assert rp.fmt_num(123456.0) == "1.23e+05"
    assert rp.fmt_seconds(0.5) == "0.50 s"
    assert rp.fmt_seconds(75) == "1m 15s"
    assert rp.fmt_seconds(7300) == "2h 01m"


def test_to_jsonable_handles_numpy_torch_and_nesting() -> None:
    value = {"a": np.float32(0.5), "b": torch.tensor([1.0, 2.0]), "c": (np.arange(2), {3: Path("x")})}
    out = to_jsonable(value)
    assert out == {"a": 0.5, "b": [1.0, 2.0], "c": [[0, 1], {"3": "x"}]}
    json.dumps(out)


def test_claim_sort_is_natural() -> None:
    ids = ["Z1", "S10", "S2", "S1", "Z10", "Z2"]
    assert sorted(ids, key=rp.claim_sort_key) == ["S1", "S2", "S10", "Z1", "Z2", "Z10"]


def test_figure_filename_is_sanitized() -> None:
    assert rp.figure_filename("S3", "mlp512/fmnist w=2", "P_end (WM)") == "S3_mlp512_fmnist_w_2_P_end_WM.png"


def test_figure_paths_disambiguate_collisions() -> None:
    recs = [_record("S1", "a/b", figures=[_spec()]), _record("S1", "a_b", figures=[_spec()])]
    paths = [rel for _r, _s, rel in rp.figure_paths(recs)]
    assert paths == ["figures/S1_a_b_trajectory.png", "figures/S1_a_b_trajectory-2.png"]


# ------------------------------------------------------------------ figures --
def test_make_figure_spec_validates() -> None:
    spec = _spec(yerr={"unaligned": np.array([0.01, 0.02, 0.03])})
    assert spec["series"]["unaligned"]["yerr"] == pytest.approx([0.01, 0.02, 0.03])
    assert spec["series"]["P_end (WM)"]["yerr"] is None
    json.dumps(spec)
    with pytest.raises(ValueError, match="2 xs but 3 ys"):
        fg.make_figure_spec("f", {"a": ([0, 1], [1, 2, 3])})
    with pytest.raises(ValueError, match="unknown series"):
        fg.make_figure_spec("f", {"a": ([0], [1])}, yerr={"b": [0.1]})
    with pytest.raises(ValueError, match="xscale"):
        fg.make_figure_spec("f", {"a": ([0], [1])}, xscale="symlog")
    with pytest.raises(ValueError, match="no series"):
        fg.make_figure_spec("f", {})


def test_draw_figure_labels_scale_and_legend() -> None:
    spec = fg.make_figure_spec(
        "width",
        {"WM": ([8, 64, 512], [0.3, 0.1, 0.01])},
        title="barrier vs width",
        xlabel="width",
        ylabel="error barrier",
        xscale="log",
        yerr={"WM": [0.01, 0.01, 0.0]},
    )
    fig = fg.draw_figure(spec)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "width" and ax.get_ylabel() == "error barrier"
    assert ax.get_title() == "barrier vs width"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["WM"]


# ------------------------------------------------------------------ files --
def test_write_report_files(tmp_path: Path) -> None:
    import matplotlib.image

    recs = [
        _record("S10", "b", "FAIL", failure="AssertionError: barrier 0.2 > 0.05"),
        _record("S2", "a", figures=[_spec()]),
        _record("Z1", "c", "SKIP", reason="needs CUDA", summary=""),
    ]
    md_path = rp.write_report(recs, tmp_path / "out", META)
    out = tmp_path / "out"
    assert md_path == out / "claims.md"
    data = json.loads((out / "claims.json").read_text())
    assert data["meta"] == META
    assert [r["claim"] for r in data["records"]] == ["S2", "S10", "Z1"]
    md = md_path.read_text()
    assert "| S2 | a | PASS | S2 a summary | 1.50 s |" in md
    assert "| S10 | b | **FAIL** | S10 b summary | 1.50 s |" in md
    assert "| Z1 | c | SKIP | needs CUDA | 1.50 s |" in md
    assert md.count("| Claim | Setting |") == 1
    assert "## Failures" in md and "AssertionError: barrier 0.2 > 0.05" in md
    assert "(figures/S2_a_trajectory.png)" in md
    png = out / "figures" / "S2_a_trajectory.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert not [p for p in out.rglob("*.tmp")]  # atomic writes leave no temp files


@pytest.mark.slow
def test_render_reproduces_markdown(tmp_path: Path) -> None:
    recs = [_record("S1", "x", figures=[_spec()]), _record("S1", "y", "FAIL", failure="boom")]
    md_path = rp.write_report(recs, tmp_path, META)
    original = md_path.read_text()
    md_path.unlink()
    (tmp_path / "figures" / "S1_x_trajectory.png").unlink()
    assert rp.render(tmp_path / "claims.json") == md_path
    assert md_path.read_text() == original
    assert (tmp_path / "figures" / "S1_x_trajectory.png").exists()
    other = rp.render(tmp_path / "claims.json", tmp_path / "elsewhere")
    assert other.read_text() == original
    assert (tmp_path / "elsewhere" / "claims.json").exists()
    records, meta = rp.load_report(tmp_path / "claims.json")
    assert meta == META and [r["setting"] for r in records] == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("{not json", "not valid JSON"), ('{"records": 3}', "not an lmccheck report")],
    ids=["missing", "malformed", "wrong-shape"],
)
def test_load_report_errors_name_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "claims.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as excinfo:
        rp.render(path)
    assert str(path) in str(excinfo.value)


def test_format_table_sorted_and_aligned() -> None:
    recs = [_record("S10", "b"), _record("S2", "long-setting-name", "FAIL"), _record("S2", "a")]
    lines = rp.format_table(recs).splitlines()
    assert lines[0].split() == ["id", "setting", "verdict", "key", "numbers"]
    body = lines[2:]
    assert [line.split()[:3] for line in body] == [
        ["S2", "a", "PASS"],
        ["S2", "long-setting-name", "FAIL"],
        ["S10", "b", "PASS"],
    ]
    # the verdict column starts at the same offset on every row
    assert len({line.index(v) for line, v in zip(body, ["PASS", "FAIL", "PASS"])}) == 1


# ------------------------------------------------------------- assertions --
def _judged(setting: str, verdict: str, values: list[float], **extra: Any) -> dict[str, Any]:
    """A record with one real assertion (lmccheck.verdict), as the plugin writes it."""
    from lmccheck import verdict as v

    j = v.judge("barrier", v.Below(0.05), values, v.paper("the barrier is below 5%", "§3"))
    assert j.outcome == {"XPASS": "PASS"}.get(verdict, verdict)
    return _record("S3", setting, verdict, assertions=[j.to_dict()], seeds=[{"init_seed": 1000, "sgd_seed": 2000}],
                   **extra)


def test_the_report_lists_each_check_s_assertions_and_the_inconclusive_ones(tmp_path: Path) -> None:
    recs = [
        _judged("pass", "PASS", [0.019, 0.02, 0.021]),
        _judged("unsure", "INCONCLUSIVE", [0.02, 0.04, 0.06], finding_reason="barrier 9% (measured)"),
        _judged("finding", "FAIL", [0.089, 0.09, 0.091], known_finding=True, reason="barrier 9% (measured)"),
        _judged("xpass", "XPASS", [0.019, 0.02, 0.021], failure="ClaimFailed: ... now PASSes"),
        _record("Z1", "c", "SKIP", reason="needs CUDA", summary=""),
    ]
    md_path = rp.write_report(recs, tmp_path, {**META, "seed_offset": 5})
    md = md_path.read_text()
    assert "- **seed_offset**: 5" in md
    assert "- **verdicts**: FAIL 1, INCONCLUSIVE 1, PASS 1, SKIP 1, XPASS 1" in md
    assert "| S3 | unsure | INCONCLUSIVE (known finding not confirmed) | S3 unsure summary |" in md
    assert "| S3 | finding | **FAIL** (known finding) |" in md and "| S3 | xpass | **XPASS** |" in md
    assert "| S3 | pass | PASS |" in md
    failures = md[md.index("## Failures"):md.index("## Skipped")]
    assert "### S3 / finding: FAIL" in failures and "Known finding: barrier 9% (measured)" in failures
    assert "### S3 / xpass: XPASS" in failures and "now PASSes" in failures
    assert "unsure" not in failures  # INCONCLUSIVE is not a failure
    section = md[md.index("## Assertions"):md.index("## Time")]
    assert section.count("| Assertion | Bound | Observed | Interval | n | MDE | Outcome | Source |") == 4
    assert "### S3 / unsure: INCONCLUSIVE" in section and "Z1" not in section  # a record without assertions
    needed = next(r for r in recs if r["setting"] == "unsure")["assertions"][0]["seeds_needed"]
    assert (f'| barrier | < 0.05 | 0.04 | [-0.009683, 0.08968] (95%) | 3 (df 2) | 0.0653 | INCONCLUSIVE (needs '
            f'~{needed} seeds) | paper §3: "the barrier is below 5%" |') in section
    assert "**INCONCLUSIVE assertions, with the seeds each would need" in section
    assert f"- S3 unsure: barrier -- about {needed} seeds (--lmc-seeds {needed})" in section
    records, _ = rp.load_report(tmp_path / "claims.json")
    by_setting = {r["setting"]: r for r in records}
    assert by_setting["unsure"]["assertions"] == next(r for r in recs if r["setting"] == "unsure")["assertions"]
    assert by_setting["pass"]["seeds"] == [{"init_seed": 1000, "sgd_seed": 2000}]


def test_a_report_without_assertions_has_no_assertion_section() -> None:
    md = rp.format_markdown([_record("S1", "a"), _record("S2", "b", "FAIL", failure="boom")], META)
    assert "## Assertions" not in md and "INCONCLUSIVE" not in md


def test_a_reduced_budgets_report_says_its_verdicts_are_not_the_papers_size() -> None:
    recs = [_record("S3", "mlp512-fmnist"), _record("S3", "vgg16-ln-cifar10-dryrun")]
    md = rp.format_markdown(recs, {**META, "budget": "dryrun"})
    assert "**Reduced budget (dryrun)**" in md and "never stand for it" in md
    assert "| S3 | vgg16-ln-cifar10-dryrun | PASS (dryrun: not the paper's size) |" in md
    assert "| S3 | mlp512-fmnist | PASS |" in md
    full = rp.format_markdown(recs[:1], {**META, "budget": "full"})
    assert "Reduced budget" not in full and "not the paper's size" not in full
    assert rp.reduced_budget("vgg16-ln-cifar10-smoke") == "smoke" and rp.reduced_budget("smoke-mlp") == ""


def test_format_table_shows_inconclusive_and_findings_in_the_verdict_column() -> None:
    recs = [_record("S2", "a", "INCONCLUSIVE"), _record("S2", "b", "FAIL", known_finding=True), _record("S3", "c")]
    body = rp.format_table(recs).splitlines()[2:]
    assert [line.split()[:3] for line in body] == [
        ["S2", "a", "INCONCLUSIVE"], ["S2", "b", "FAIL"], ["S3", "c", "PASS"]]
    assert "FAIL (finding)" in body[1]
    assert len({line.index(f"S{n} ") for line, n in zip(body, (2, 2, 3))}) == 1
    assert len({line.index(v) for line, v in zip(body, ["INCONCLUSIVE", "FAIL", "PASS"])}) == 1
    assert "INCONCLUSIVE" in rp.VERDICTS
