"""Figures as panels (line, bar, hist, heatmap) and tables in the claim report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmccheck import figures as fg
from lmccheck import report as rp

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
META = {"lmccheck_version": "0.1.0", "device": "cpu"}


def _record(figures=(), tables=(), **extra):
    rec = {"claim": "Z7", "setting": "mlp", "nodeid": "claims/x.py::t", "verdict": "PASS", "summary": "s",
           "wall_time_s": 3.0, "figures": list(figures), "tables": list(tables)}
    rec.update(extra)
    return rec


def test_hist_panel_counts_are_computed_when_recorded() -> None:
    rng = np.random.default_rng(0)
    lmc, indep = rng.uniform(0, 0.1, 500), rng.uniform(0.5, 1.0, 300)
    panel = fg.hist_panel({"LMC": lmc, "independent": indep}, bins=10)
    edges = panel["edges"]
    assert len(edges) == 11 and edges[0] == pytest.approx(lmc.min()) and edges[-1] == pytest.approx(indep.max())
    assert sum(panel["series"]["LMC"]["counts"]) == 500 and sum(panel["series"]["independent"]["counts"]) == 300
    # all LMC samples fall in the first bin ((max - min) / 10 > 0.1), none of the independent ones do
    assert panel["series"]["LMC"]["counts"][0] == 500 and panel["series"]["independent"]["counts"][0] == 0
    assert panel["series"]["LMC"]["mean"] == pytest.approx(lmc.mean())
    assert len(json.dumps(panel)) < 2000  # the samples themselves are not kept
    log = fg.hist_panel({"a": [1e-4, 1e-2, 1.0, 0.0]}, bins=4, xscale="log")
    assert log["edges"][0] == pytest.approx(1e-4) and sum(log["series"]["a"]["counts"]) == 3
    assert log["series"]["a"]["underflow"] == 1


def test_bar_and_heatmap_panels_validate_shapes() -> None:
    bar = fg.bar_panel(["fc1", "fc2"], {"Dist_com": [0.1, 0.2], "Dist_W": [1.0, 2.0]}, yerr={"Dist_com": [0.01, 0.02]})
    assert bar["categories"] == ["fc1", "fc2"] and bar["series"]["Dist_W"]["yerr"] is None
    with pytest.raises(ValueError, match="3 values for 2 categories"):
        fg.bar_panel(["a", "b"], {"x": [1, 2, 3]})
    with pytest.raises(ValueError, match="2 rows of 3 columns"):
        fg.heatmap_panel([[1, 2, 3]], xlabels=["a", "b", "c"], ylabels=["r1", "r2"])
    with pytest.raises(ValueError, match="style must be"):
        fg.line_panel({"a": ([0, 1], [0, 1])}, styles={"a": "wavy"})
    with pytest.raises(ValueError, match="colour for unknown series 'b'"):
        fg.line_panel({"a": ([0, 1], [0, 1])}, colors={"b": "C0"})
    with pytest.raises(ValueError, match="'C0x' is not a matplotlib colour"):
        fg.line_panel({"a": ([0, 1], [0, 1])}, colors={"a": "C0x"})
    assert fg.line_panel({"a": ([0, 1], [0, 1])}, colors={"a": "C2"})["series"]["a"]["color"] == "C2"
    with pytest.raises(ValueError, match="each panel must come from"):
        fg.make_panels_figure("f", [{"kind": "pie"}])


def test_table_rows_must_fit_the_columns() -> None:
    t = fg.make_table("stitching", ["layer", "error"], [["fc1", 0.1], ["fc2", np.float32(0.25)]])
    assert t["rows"][1] == ["fc2", 0.25]
    with pytest.raises(ValueError, match="row 1: 1 cells for 2 columns"):
        fg.make_table("t", ["a", "b"], [[1, 2], [3]])


@pytest.mark.slow
def test_every_panel_kind_and_a_table_render_to_png_and_markdown(tmp_path: Path) -> None:
    import matplotlib.image

    fig = fg.make_panels_figure("all_kinds", [
        fg.line_panel({"direct": ([1, 2, 4], [0.3, 0.2, 0.1]), "indirect": ([1, 2, 4], [0.5, 0.4, 0.3])},
                      styles={"indirect": "dashed"}, hlines={"parents": 0.05}, xscale="log", title="width",
                      colors={"direct": "C3", "indirect": "C3"}),
        fg.bar_panel(["fc1", "fc2", "fc3"], {"LMC": [0.1, 0.2, 0.3], "not LMC": [0.9, 0.8, 0.7]}, title="layers"),
        fg.hist_panel({"LMC": [0.1, 0.2, 0.2], "indep": [0.8, 0.9]}, bins=5, title="dist"),
        fg.heatmap_panel([[0.1, 0.2], [0.3, 0.4]], xlabels=["k=1", "k=2"], ylabels=["t=0", "t=1"], title="h"),
    ], title="four panels")
    table = fg.make_table("stitching", ["layer", "error A", "stitched"], [["fc1", 0.1, 0.12], ["fc2", 0.1, 0.3]])
    md_path = rp.write_report([_record([fig], [table])], tmp_path, META)
    png = tmp_path / "figures" / "Z7_mlp_all_kinds.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    h, w = matplotlib.image.imread(png).shape[:2]
    assert w >= 3.5 * h  # four panels side by side
    md = md_path.read_text()
    assert "### Z7 / mlp: stitching" in md
    assert "| layer | error A | stitched |" in md and "| fc2 | 0.1 | 0.3 |" in md
    assert "![four panels](figures/Z7_mlp_all_kinds.png)" in md  # shown inline
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data["records"][0]["tables"][0]["rows"][0] == ["fc1", 0.1, 0.12]
    drawn = fg.draw_figure(fig)
    assert [ax.get_title() for ax in drawn.axes if ax.get_title()] == ["width", "layers", "dist", "h"]
    line_ax, bar_ax, hist_ax, heat_ax = drawn.axes[:4]
    assert line_ax.get_xscale() == "log"
    assert [ln.get_linestyle() for ln in line_ax.get_lines()][:2] == ["-", "--"]
    assert len(bar_ax.patches) == 6  # 3 layers x 2 series
    assert [t.get_text() for t in bar_ax.get_xticklabels()] == ["fc1", "fc2", "fc3"]
    from matplotlib.patches import StepPatch

    steps = [p for p in hist_ax.patches if isinstance(p, StepPatch)]
    assert len(steps) == 2 and steps[0].get_data().values.sum() == pytest.approx(1.0)
    assert len(heat_ax.images) == 1 and heat_ax.images[0].get_array().shape == (2, 2)


def test_old_records_without_panels_still_render(tmp_path: Path) -> None:
    old = fg.make_figure_spec("trajectory", {"unaligned": ([0, 1], [0.3, 0.3])}, title="old style")
    assert "panels" not in old
    md_path = rp.write_report([_record([old])], tmp_path, META)
    assert (tmp_path / "figures" / "Z7_mlp_trajectory.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "old style" in md_path.read_text()
    fig = fg.draw_figure(old)
    assert fig.axes[0].get_title() == "old style"


def test_time_accounting_adds_up_per_claim_and_kind() -> None:
    recs = [
        _record(claim="S2", wall_time_s=10.0, build_time_s=6.0, load_time_s=1.0, measure_time_s=3.0,
                products={"train": {"built": 2, "build_s": 5.0, "loaded": 0, "load_s": 0.0, "memo": 0},
                          "barrier": {"built": 1, "build_s": 1.0, "loaded": 1, "load_s": 1.0, "memo": 0}}),
        _record(claim="S3", wall_time_s=2.0, build_time_s=0.0, load_time_s=0.5, measure_time_s=1.5,
                products={"train": {"built": 0, "build_s": 0.0, "loaded": 2, "load_s": 0.5, "memo": 3}}),
    ]
    t = rp.time_accounting(recs)
    assert t["kinds"]["train"] == {"built": 2, "build_s": 5.0, "loaded": 2, "load_s": 0.5}
    assert [(c["claim"], c["measure_time_s"]) for c in t["claims"]] == [("S2", 3.0), ("S3", 1.5)]
    md = rp.format_markdown(recs, META)
    assert "| S2 / mlp | 10.0 s | 6.00 s | 1.00 s | 3.00 s |" in md
    assert "| train | 2 | 5.00 s | 2 | 0.50 s |" in md


@pytest.mark.slow
def test_many_figures_render_in_parallel_to_the_same_pngs_in_order() -> None:
    """From PARALLEL_FIGURES figures on, the report draws them on a process pool: the same bytes, in order."""
    specs = [{"title": f"figure {i}", "panels": [fg.line_panel({"s": ([0, 1, 2], [i, i + 1, i * i])}, xlabel="x")]}
             for i in range(rp.PARALLEL_FIGURES + 1)]
    serial = [fg.figure_png(s) for s in specs]
    assert len(set(serial)) == len(specs)  # every figure differs, so a reordering would show
    assert rp._render_figures(specs) == serial
