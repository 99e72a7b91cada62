"""Figure specs and their drawing: what a claim check's figure holds, and how it becomes a PNG.

A *figure spec* is a JSON-able dict holding the series data (:func:`make_figure_spec`, or panels built with
:func:`line_panel`, :func:`bar_panel`, :func:`hist_panel`, :func:`heatmap_panel` and :func:`make_panels_figure`),
so a report's figures can be re-drawn from ``claims.json`` alone; :func:`make_table` is a table's spec.
:func:`draw_figure` draws one with matplotlib's object-oriented API on an Agg canvas (imported lazily;
``matplotlib.pyplot`` is never imported, so no display and no global backend switch are needed).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .jsonable import to_jsonable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = [
    "PANEL_KINDS",
    "bar_panel",
    "draw_figure",
    "figure_panels",
    "figure_png",
    "heatmap_panel",
    "hist_panel",
    "line_panel",
    "make_figure_spec",
    "make_panels_figure",
    "make_table",
]

_SCALES = ("linear", "log")


def _float_list(values: Iterable[Any], what: str) -> list[float]:
    """Convert a 1-D sequence (list, array, tensor) to a list of floats."""
    data = to_jsonable(values)
    if not isinstance(data, list):
        raise ValueError(f"{what} must be a 1-D sequence of numbers, got {type(values).__name__}")
    try:
        return [float("nan") if v is None else float(v) for v in data]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a 1-D sequence of numbers: {exc}") from None


def make_figure_spec(
    name: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xscale: str = "linear",
    yscale: str = "linear",
    yerr: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Validate and build a JSON-serializable figure spec (a line plot).

    ``series`` maps a legend label to ``(xs, ys)``; ``yerr`` optionally maps a
    label to per-point error-bar half-widths (e.g. the spread over seeds).
    The spec is ``{"name", "title", "xlabel", "ylabel", "xscale", "yscale",
    "series": {label: {"x": [...], "y": [...], "yerr": [...] | None}}}``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("figure name must be a non-empty string")
    if xscale not in _SCALES or yscale not in _SCALES:
        raise ValueError(f"xscale/yscale must be one of {_SCALES}, got {xscale!r}/{yscale!r}")
    if not series:
        raise ValueError(f"figure {name!r} has no series")
    yerr = dict(yerr or {})
    unknown = set(yerr) - set(series)
    if unknown:
        raise ValueError(f"figure {name!r}: yerr for unknown series {sorted(unknown)}")
    out: dict[str, dict[str, Any]] = {}
    for label, xy in series.items():
        try:
            xs, ys = xy
        except (TypeError, ValueError):
            raise ValueError(f"figure {name!r}, series {label!r}: expected a pair (xs, ys)") from None
        x = _float_list(xs, f"figure {name!r}, series {label!r}: xs")
        y = _float_list(ys, f"figure {name!r}, series {label!r}: ys")
        if len(x) != len(y):
            raise ValueError(f"figure {name!r}, series {label!r}: {len(x)} xs but {len(y)} ys")
        err = None
        if label in yerr:
            err = _float_list(yerr[label], f"figure {name!r}, yerr {label!r}")
            if len(err) != len(y):
                raise ValueError(f"figure {name!r}, yerr {label!r}: {len(err)} values for {len(y)} points")
        out[str(label)] = {"x": x, "y": y, "yerr": err}
    return {
        "name": name,
        "title": str(title),
        "xlabel": str(xlabel),
        "ylabel": str(ylabel),
        "xscale": xscale,
        "yscale": yscale,
        "series": out,
    }


_STYLES = ("solid", "dashed", "dotted", "dashdot")
#: a log x axis is labelled at its measured values (e.g. widths) when there are at most this many
_MAX_LOG_TICKS = 12
PANEL_KINDS = ("line", "bar", "hist", "heatmap")


def _check_scales(what: str, *scales: str) -> None:
    for sc in scales:
        if sc not in _SCALES:
            raise ValueError(f"{what}: scale must be one of {_SCALES}, got {sc!r}")


def line_panel(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xscale: str = "linear",
    yscale: str = "linear",
    yerr: Mapping[str, Sequence[float]] | None = None,
    styles: Mapping[str, str] | None = None,
    hlines: Mapping[str, float] | None = None,
    colors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A line panel: ``series`` maps a label to ``(xs, ys)``; ``styles`` maps a label to
    solid/dashed/dotted/dashdot; ``hlines`` maps a label to a horizontal line's y; ``colors`` maps a label
    to a matplotlib colour (e.g. ``"C0"``), so that series drawn in two styles can share one."""
    spec = make_figure_spec("panel", series, title=title, xlabel=xlabel, ylabel=ylabel, xscale=xscale,
                            yscale=yscale, yerr=yerr)
    spec.pop("name")
    for label, style in (styles or {}).items():
        if label not in spec["series"]:
            raise ValueError(f"line panel: style for unknown series {label!r}")
        if style not in _STYLES:
            raise ValueError(f"line panel: style must be one of {_STYLES}, got {style!r}")
        spec["series"][label]["style"] = style
    for label, color in (colors or {}).items():
        from matplotlib.colors import is_color_like  # matplotlib only where colours are given

        if label not in spec["series"]:
            raise ValueError(f"line panel: colour for unknown series {label!r}")
        if not is_color_like(color):
            raise ValueError(f"line panel: {color!r} is not a matplotlib colour (e.g. 'C0', 'tab:blue', '#1f77b4')")
        spec["series"][label]["color"] = str(color)
    spec["hlines"] = {str(k): float(v) for k, v in (hlines or {}).items()}
    return {"kind": "line", **spec}


def bar_panel(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    yscale: str = "linear",
    yerr: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Grouped bars over categorical x (e.g. layer names): ``series`` maps a label to one value per category."""
    _check_scales("bar panel", yscale)
    cats = [str(c) for c in categories]
    if not cats or not series:
        raise ValueError("bar panel needs at least one category and one series")
    out: dict[str, dict[str, Any]] = {}
    for label, ys in series.items():
        y = _float_list(ys, f"bar panel, series {label!r}")
        if len(y) != len(cats):
            raise ValueError(f"bar panel, series {label!r}: {len(y)} values for {len(cats)} categories")
        err = None
        if yerr and label in yerr:
            err = _float_list(yerr[label], f"bar panel, yerr {label!r}")
            if len(err) != len(cats):
                raise ValueError(f"bar panel, yerr {label!r}: {len(err)} values for {len(cats)} categories")
        out[str(label)] = {"y": y, "yerr": err}
    return {"kind": "bar", "title": str(title), "xlabel": str(xlabel), "ylabel": str(ylabel), "yscale": yscale,
            "categories": cats, "series": out}


def hist_panel(
    samples: Mapping[str, Sequence[float]],
    *,
    bins: int = 30,
    range: tuple[float, float] | None = None,  # numpy's name
    title: str = "",
    xlabel: str = "",
    ylabel: str = "fraction of samples",
    xscale: str = "linear",
) -> dict[str, Any]:
    """Histograms of per-sample values, one per label, on common bin edges.

    Edges and counts are computed here, so a record holds ``bins`` numbers per
    series, not the samples. With ``xscale="log"`` the edges are log-spaced
    (non-positive samples are counted below the first edge in ``underflow``).
    """
    import numpy as np

    _check_scales("hist panel", xscale)
    if not samples:
        raise ValueError("hist panel has no series")
    if bins < 1:
        raise ValueError(f"hist panel: bins must be positive, got {bins}")
    data = {str(k): np.asarray(_float_list(v, f"hist panel, series {k!r}"), dtype=float) for k, v in samples.items()}
    finite = np.concatenate([d[np.isfinite(d)] for d in data.values()]) if data else np.array([])
    if xscale == "log":
        finite = finite[finite > 0]
    if range is not None:
        lo, hi = float(range[0]), float(range[1])
    elif finite.size:
        lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = (1e-3, 1.0) if xscale == "log" else (0.0, 1.0)
    if hi <= lo:
        hi = lo * 10 if (xscale == "log" and lo > 0) else lo + 1.0
    edges = np.geomspace(lo, hi, bins + 1) if xscale == "log" else np.linspace(lo, hi, bins + 1)
    out = {}
    for label, d in data.items():
        counts, _ = np.histogram(d[np.isfinite(d)], bins=edges)
        out[label] = {
            "counts": counts.astype(int).tolist(),
            "n": int(d.size),
            "underflow": int((d < edges[0]).sum()),
            "overflow": int((d > edges[-1]).sum()),
            "mean": float(d[np.isfinite(d)].mean()) if np.isfinite(d).any() else None,
        }
    return {"kind": "hist", "title": str(title), "xlabel": str(xlabel), "ylabel": str(ylabel), "xscale": xscale,
            "edges": edges.tolist(), "series": out}


def heatmap_panel(
    values: Sequence[Sequence[float]],
    *,
    xlabels: Sequence[str],
    ylabels: Sequence[str],
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    colorbar: str = "",
) -> dict[str, Any]:
    """A heatmap of ``values[row][col]`` with labelled rows and columns."""
    rows = [_float_list(r, f"heatmap row {i}") for i, r in enumerate(values)]
    if len(rows) != len(ylabels) or any(len(r) != len(xlabels) for r in rows):
        raise ValueError(f"heatmap: values must be {len(ylabels)} rows of {len(xlabels)} columns")
    return {"kind": "heatmap", "title": str(title), "xlabel": str(xlabel), "ylabel": str(ylabel),
            "colorbar": str(colorbar), "xlabels": [str(x) for x in xlabels], "ylabels": [str(y) for y in ylabels],
            "values": rows}


def make_panels_figure(name: str, panels: Sequence[Mapping[str, Any]], *, title: str = "") -> dict[str, Any]:
    """A figure of several panels side by side (each from ``line_panel``, ``bar_panel``, ...)."""
    if not isinstance(name, str) or not name:
        raise ValueError("figure name must be a non-empty string")
    if not panels:
        raise ValueError(f"figure {name!r} has no panels")
    for p in panels:
        if not isinstance(p, Mapping) or p.get("kind") not in PANEL_KINDS:
            raise ValueError(f"figure {name!r}: each panel must come from line_panel, bar_panel, hist_panel or "
                             "heatmap_panel")
    return {"name": name, "title": str(title), "panels": [dict(p) for p in panels]}


def figure_panels(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The panels of a figure spec; a spec without panels (older records) is one line panel."""
    if spec.get("panels"):
        return list(spec["panels"])
    return [{"kind": "line", **{k: v for k, v in spec.items() if k != "name"}}]


def make_table(name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A table for the report: ``rows`` of cells, one per column."""
    if not isinstance(name, str) or not name:
        raise ValueError("table name must be a non-empty string")
    cols = [str(c) for c in columns]
    if not cols:
        raise ValueError(f"table {name!r} has no columns")
    out = []
    for i, row in enumerate(rows):
        cells = to_jsonable(list(row))
        if len(cells) != len(cols):
            raise ValueError(f"table {name!r}, row {i}: {len(cells)} cells for {len(cols)} columns")
        out.append(cells)
    return {"name": name, "columns": cols, "rows": out}


def _draw_line(ax: Any, panel: Mapping[str, Any]) -> None:
    for label, sr in (panel.get("series") or {}).items():
        ls = {"solid": "-", "dashed": "--", "dotted": ":", "dashdot": "-."}[sr.get("style") or "solid"]
        color = {"color": sr["color"]} if sr.get("color") else {}
        if sr.get("yerr") is not None:
            ax.errorbar(sr["x"], sr["y"], yerr=sr["yerr"], marker="o", markersize=4, capsize=3, label=label,
                        linestyle=ls, **color)
        else:
            ax.plot(sr["x"], sr["y"], marker="o", markersize=4, label=label, linestyle=ls, **color)
    for i, (label, y) in enumerate((panel.get("hlines") or {}).items()):
        ax.axhline(y, color=f"C{(len(panel.get('series') or {}) + i) % 10}", linestyle="--", label=label)
    ax.set_xscale(panel.get("xscale", "linear"))
    ax.set_yscale(panel.get("yscale", "linear"))
    xs = sorted({float(x) for sr in (panel.get("series") or {}).values() for x in sr["x"]})
    if panel.get("xscale") == "log" and 0 < len(xs) <= _MAX_LOG_TICKS and xs[0] > 0:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])  # the measured values (widths...), not powers of ten
        ax.minorticks_off()
    if panel.get("series") or panel.get("hlines"):
        _legend(ax)


def _legend(ax: Any) -> None:
    """The legend beside the axes, to their right, so that it never covers the data."""
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _draw_bar(ax: Any, panel: Mapping[str, Any]) -> None:
    cats = panel["categories"]
    series = panel.get("series") or {}
    width = 0.8 / max(1, len(series))
    for i, (label, sr) in enumerate(series.items()):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(cats))]
        ax.bar(xs, sr["y"], width=width, yerr=sr.get("yerr"), capsize=3 if sr.get("yerr") else 0, label=label)
    ax.set_xticks(list(range(len(cats))))
    rotate = max((len(c) for c in cats), default=0) > 6
    ax.set_xticklabels(cats, rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize="small")
    ax.set_yscale(panel.get("yscale", "linear"))
    if series:
        _legend(ax)


def _draw_hist(ax: Any, panel: Mapping[str, Any]) -> None:
    edges = panel["edges"]
    for label, sr in (panel.get("series") or {}).items():
        total = max(1, int(sr.get("n") or sum(sr["counts"])))  # outside the edges counts in the total
        ax.stairs([c / total for c in sr["counts"]], edges, label=f"{label} (n={total})", fill=False)
    ax.set_xscale(panel.get("xscale", "linear"))
    if panel.get("series"):
        _legend(ax)


def _draw_heatmap(ax: Any, panel: Mapping[str, Any], fig: Any) -> None:
    im = ax.imshow(panel["values"], aspect="auto", origin="lower")
    ax.set_xticks(list(range(len(panel["xlabels"]))))
    ax.set_xticklabels(panel["xlabels"], fontsize="small")
    ax.set_yticks(list(range(len(panel["ylabels"]))))
    ax.set_yticklabels(panel["ylabels"], fontsize="small")
    fig.colorbar(im, ax=ax, label=panel.get("colorbar", ""))


def draw_figure(spec: Mapping[str, Any]) -> Figure:
    """Draw a figure spec, one axes per panel side by side; returns the Figure.

    Panel kinds: ``line`` (markers, optional error bars, styles and
    horizontal lines), ``bar`` (categorical x), ``hist`` (precomputed bin
    counts, normalized) and ``heatmap``. A spec without panels is one line
    panel. Uses ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, no display).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = figure_panels(spec)
    fig = Figure(figsize=(8.0 * len(panels), 4.0 + (0.4 if spec.get("panels") and spec.get("title") else 0)), dpi=100)
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        kind = panel.get("kind", "line")
        if kind == "bar":
            _draw_bar(ax, panel)
        elif kind == "hist":
            _draw_hist(ax, panel)
        elif kind == "heatmap":
            _draw_heatmap(ax, panel, fig)
        else:
            _draw_line(ax, panel)
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", "") if spec.get("panels") else spec.get("title", ""))
        if kind != "heatmap":
            ax.grid(True, alpha=0.3)
    if spec.get("panels") and spec.get("title"):
        fig.suptitle(spec["title"])
    fig.tight_layout()
    return fig


def figure_png(spec: Mapping[str, Any]) -> bytes:
    """Render a figure spec to PNG bytes."""
    fig = draw_figure(spec)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # tight_layout has fitted it: a "tight" bbox would draw it a second time
    return buf.getvalue()
