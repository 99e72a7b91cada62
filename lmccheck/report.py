"""Claim-check reports: JSON records, a Markdown summary and PNG figures.

A *record* is the dict one claim check (one pytest item using the ``measure``
fixture) produces; see :mod:`lmccheck.pytest_plugin` for how it is built. The
fields used here are::

    claim, setting, nodeid, verdict, values, thresholds, seeds, fixture_keys,
    summary, figures, wall_time_s, device, failure (FAIL/ERROR), reason (SKIP)

Each entry of ``figures`` is a *figure spec* (see :func:`make_figure_spec`)
holding the series data, so figures can be re-drawn from ``claims.json`` alone
(:func:`render`, used by ``lmccheck report report/claims.json``).

This module never imports pytest, and matplotlib only lazily, through its
object-oriented API on an Agg canvas: ``matplotlib.pyplot`` is never imported,
so no display and no global backend switch are ever needed.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = [
    "JSON_NAME",
    "MD_NAME",
    "FIGURES_DIR",
    "VERDICTS",
    "claim_sort_key",
    "figure_filename",
    "figure_paths",
    "fmt_barrier",
    "fmt_num",
    "fmt_seconds",
    "format_markdown",
    "format_table",
    "load_report",
    "make_figure_spec",
    "pct",
    "render",
    "sort_records",
    "to_jsonable",
    "write_report",
]

JSON_NAME = "claims.json"
MD_NAME = "claims.md"
FIGURES_DIR = "figures"
#: Verdicts a record can carry.
VERDICTS = ("PASS", "FAIL", "ERROR", "SKIP", "XFAIL", "XPASS")
_SCALES = ("linear", "log")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------- #
# Small formatting helpers (usable by claim checks for their summaries)
# --------------------------------------------------------------------------- #
def _is_missing(x: Any) -> bool:
    """True for None and float NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x: float | None, digits: int = 1) -> str:
    """Format a fraction as a percentage: ``pct(0.226) == "22.6%"``.

    None and NaN give ``"n/a"``.
    """
    if _is_missing(x):
        return "n/a"
    return f"{100.0 * float(x):.{digits}f}%"


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits (``"n/a"`` if missing)."""
    if _is_missing(x):
        return "n/a"
    return f"{float(x):.{digits}g}"


def fmt_barrier(x: float | None, *, percent: bool = True, digits: int = 1) -> str:
    """Format a barrier: error barriers (fractions) as percent, loss barriers as numbers.

    ``fmt_barrier(0.004) == "0.4%"``; ``fmt_barrier(0.1234, percent=False) == "0.123"``.
    """
    return pct(x, digits) if percent else fmt_num(x, digits + 2)


def fmt_seconds(s: float | None) -> str:
    """Human wall time: ``"0.42 s"``, ``"12.3 s"``, ``"4m 05s"``, ``"2h 03m"``."""
    if _is_missing(s):
        return "n/a"
    s = float(s)
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


# --------------------------------------------------------------------------- #
# JSON conversion and figure specs
# --------------------------------------------------------------------------- #
def to_jsonable(obj: Any) -> Any:
    """Convert measured values to plain JSON types.

    Handles nested dicts/lists/tuples, numpy / torch scalars and arrays
    (anything with ``tolist()`` or ``item()``), and :class:`pathlib.Path`.
    Anything else is converted with ``repr`` so a report is never lost to one
    odd value.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        try:
            return to_jsonable(obj.detach().cpu().tolist() if hasattr(obj, "detach") else obj.tolist())
        except Exception:  # noqa: BLE001 - fall through to repr
            pass
    if hasattr(obj, "item"):
        try:
            return to_jsonable(obj.item())
        except Exception:  # noqa: BLE001
            pass
    return repr(obj)


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


# --------------------------------------------------------------------------- #
# Ordering
# --------------------------------------------------------------------------- #
def claim_sort_key(claim: str) -> tuple[Any, ...]:
    """Natural-order key for claim ids: S1 < S2 < S10 < Z1."""
    parts = re.split(r"(\d+)", str(claim))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def sort_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records sorted by claim id (natural order), then setting, then node id."""
    return sorted(
        records,
        key=lambda r: (claim_sort_key(r.get("claim", "")), str(r.get("setting", "")), str(r.get("nodeid", ""))),
    )


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #
def figure_filename(claim: str, setting: str, figname: str) -> str:
    """``<claim>_<setting>_<figname>.png`` restricted to ``[A-Za-z0-9._-]``."""
    stem = "_".join(_UNSAFE.sub("_", str(p)).strip("_") or "x" for p in (claim, setting, figname))
    return f"{stem}.png"


def figure_paths(records: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any], str]]:
    """``(record, figure_spec, relative_path)`` for every figure, in report order.

    Names that collide after sanitizing get a ``-2``, ``-3``... suffix, so the
    mapping is deterministic for a given record list.
    """
    seen: dict[str, int] = {}
    out = []
    for rec in sort_records(records):
        for spec in rec.get("figures") or []:
            fname = figure_filename(rec.get("claim", ""), rec.get("setting", ""), spec.get("name", "figure"))
            n = seen.get(fname, 0) + 1
            seen[fname] = n
            if n > 1:
                fname = f"{fname[:-4]}-{n}.png"
            out.append((rec, spec, f"{FIGURES_DIR}/{fname}"))
    return out


def draw_figure(spec: Mapping[str, Any]) -> Figure:
    """Draw one figure spec as a line plot with markers; returns the Figure.

    Uses ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, no display).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, s in (spec.get("series") or {}).items():
        if s.get("yerr") is not None:
            ax.errorbar(s["x"], s["y"], yerr=s["yerr"], marker="o", markersize=4, capsize=3, label=label)
        else:
            ax.plot(s["x"], s["y"], marker="o", markersize=4, label=label)
    ax.set_xscale(spec.get("xscale", "linear"))
    ax.set_yscale(spec.get("yscale", "linear"))
    ax.set_xlabel(spec.get("xlabel", ""))
    ax.set_ylabel(spec.get("ylabel", ""))
    ax.set_title(spec.get("title", ""))
    ax.grid(True, alpha=0.3)
    if spec.get("series"):
        ax.legend()
    fig.tight_layout()
    return fig


def _figure_png(spec: Mapping[str, Any]) -> bytes:
    """Render a figure spec to PNG bytes."""
    fig = draw_figure(spec)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------- #
# Text output
# --------------------------------------------------------------------------- #
def _md_cell(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ").strip()


def format_markdown(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The ``claims.md`` text: title, meta list, one table, failures, figure links."""
    recs = sort_records(records)
    lines = ["# lmccheck claim report", ""]
    for key in ("lmccheck_version", "git_commit", "device", "torch", "python", "platform", "start", "end"):
        if key in meta:
            value = meta[key]
            lines.append(f"- **{key}**: {_md_cell(value) if value not in (None, '') else 'unknown'}")
    if "args" in meta:
        lines.append(f"- **args**: `{' '.join(map(str, meta['args'] or []))}`")
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.get("verdict", "?")] = counts.get(r.get("verdict", "?"), 0) + 1
    lines.append("- **verdicts**: " + (", ".join(f"{v} {n}" for v, n in sorted(counts.items())) or "none"))
    lines += ["", "| Claim | Setting | Verdict | Key numbers | Wall time |", "|---|---|---|---|---|"]
    for r in recs:
        verdict = r.get("verdict", "?")
        lines.append(
            f"| {_md_cell(r.get('claim'))} | {_md_cell(r.get('setting'))} | "
            f"{'**' + verdict + '**' if verdict in ('FAIL', 'ERROR') else verdict} | "
            f"{_md_cell(r.get('summary') or r.get('reason') or '')} | {fmt_seconds(r.get('wall_time_s'))} |"
        )
    bad = [r for r in recs if r.get("verdict") in ("FAIL", "ERROR", "XPASS")]
    if bad:
        lines += ["", "## Failures", ""]
        for r in bad:
            lines += [f"### {r.get('claim')} / {r.get('setting')}: {r.get('verdict')}", "", f"`{r.get('nodeid', '')}`", ""]
            lines += ["```", str(r.get("failure") or "(no message)").rstrip(), "```", ""]
    skipped = [r for r in recs if r.get("verdict") == "SKIP"]
    if skipped:
        lines += ["## Skipped", ""] if lines[-1] == "" else ["", "## Skipped", ""]
        lines += [f"- {r.get('claim')} / {r.get('setting')}: {r.get('reason') or ''}" for r in skipped]
    figs = figure_paths(recs)
    if figs:
        lines += ["", "## Figures", ""]
        for rec, spec, rel in figs:
            label = spec.get("title") or spec.get("name")
            lines.append(f"- {rec.get('claim')} / {rec.get('setting')}: [{label}]({rel})")
    return "\n".join(lines).rstrip() + "\n"


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text aligned table (id, setting, verdict, summary) for the terminal."""
    rows = [("id", "setting", "verdict", "key numbers")]
    for r in sort_records(records):
        rows.append(
            (
                str(r.get("claim", "")),
                str(r.get("setting", "")),
                str(r.get("verdict", "?")),
                str(r.get("summary") or r.get("reason") or "").replace("\n", " "),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
        if n == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * max(len(row[3]), 11))
    return "\n".join(line.rstrip() for line in out)


# --------------------------------------------------------------------------- #
# Files
# --------------------------------------------------------------------------- #
def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_md_and_figures(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``claims.md`` and every figure PNG under ``out_dir``; returns the md path."""
    for _rec, spec, rel in figure_paths(records):
        _atomic_write(out_dir / rel, _figure_png(spec))
    md_path = out_dir / MD_NAME
    _atomic_write(md_path, format_markdown(records, meta).encode("utf-8"))
    return md_path


def write_report(records: Sequence[Mapping[str, Any]], out_dir: Path | str, meta: Mapping[str, Any]) -> Path:
    """Write ``claims.json``, ``claims.md`` and ``figures/*.png`` to ``out_dir``.

    Every file is written atomically. Returns the path of ``claims.md``.
    """
    out = Path(out_dir)
    payload = {"meta": to_jsonable(dict(meta)), "records": to_jsonable([dict(r) for r in sort_records(records)])}
    _atomic_write(out / JSON_NAME, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
    return _write_md_and_figures(payload["records"], payload["meta"], out)


def load_report(path: Path | str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read ``claims.json``; returns ``(records, meta)``.

    Raises ValueError naming the file if it is missing, not JSON, or not a report.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read lmccheck report {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("records"), list)
        or not isinstance(data.get("meta", {}), dict)
        or not all(isinstance(r, dict) for r in data["records"])
    ):
        raise ValueError(f"{p} is not an lmccheck report: expected {{'meta': {{...}}, 'records': [{{...}}, ...]}}")
    return data["records"], data.get("meta", {})


def render(json_path: Path | str, out_dir: Path | str | None = None) -> Path:
    """Re-render ``claims.md`` and the figures from a ``claims.json``.

    ``out_dir`` defaults to the JSON file's directory; when it differs, the
    JSON is copied there too so the report folder is self-contained.
    Returns the path of the written ``claims.md``.
    """
    src = Path(json_path)
    records, meta = load_report(src)
    out = Path(out_dir) if out_dir is not None else src.parent
    if (out / JSON_NAME).resolve() != src.resolve():
        _atomic_write(out / JSON_NAME, src.read_bytes())
    return _write_md_and_figures(records, meta, out)
