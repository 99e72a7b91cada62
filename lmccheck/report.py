"""Claim-check reports: JSON records, a Markdown summary and PNG figures.

A *record* is the dict one claim check (one pytest item using the ``measure``
fixture) produces; see :mod:`lmccheck.pytest_plugin` for how it is built. The
fields used here are::

    claim, setting, nodeid, verdict, values, thresholds, seeds, fixture_keys,
    summary, figures, wall_time_s, device, failure (FAIL/ERROR), reason (SKIP)

Each entry of ``figures`` is a *figure spec* (:mod:`lmccheck.figures`)
holding the series data, so figures can be re-drawn from ``claims.json`` alone
(:func:`render`, used by ``lmccheck report report/claims.json``).

This module never imports pytest; figures are drawn by :mod:`lmccheck.figures` (matplotlib only lazily, on an
Agg canvas), several at a time in a process pool.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import assertions as _assertions
from .cpus import available_cpus
from .figures import figure_png
from .fileio import atomic_write_bytes
from .jsonable import to_jsonable

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
    "format_time_table",
    "format_table",
    "load_report",
    "pct",
    "render",
    "sort_records",
    "time_accounting",
    "write_report",
]

JSON_NAME = "claims.json"
MD_NAME = "claims.md"
FIGURES_DIR = "figures"
#: Verdicts a record can carry.
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "ERROR", "SKIP", "XFAIL", "XPASS", "NOT RUN")
_SCALES = ("linear", "log")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------- #
# Small formatting helpers (usable by claim checks for their summaries)
# --------------------------------------------------------------------------- #
def _present(x: float | None) -> float | None:
    """``float(x)``, or None for None and float NaN."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def pct(x: float | None, digits: int = 1) -> str:
    """Format a fraction as a percentage: ``pct(0.226) == "22.6%"``.

    None and NaN give ``"n/a"``.
    """
    v = _present(x)
    if v is None:
        return "n/a"
    return f"{100.0 * v:.{digits}f}%"


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits (``"n/a"`` if missing)."""
    v = _present(x)
    if v is None:
        return "n/a"
    return f"{v:.{digits}g}"


def fmt_barrier(x: float | None, *, percent: bool = True, digits: int = 1) -> str:
    """Format a barrier: error barriers (fractions) as percent, loss barriers as numbers.

    ``fmt_barrier(0.004) == "0.4%"``; ``fmt_barrier(0.1234, percent=False) == "0.123"``.
    """
    return pct(x, digits) if percent else fmt_num(x, digits + 2)


def fmt_seconds(s: float | None) -> str:
    """Human wall time: ``"0.42 s"``, ``"12.3 s"``, ``"4m 05s"``, ``"2h 03m"``."""
    v = _present(s)
    if v is None:
        return "n/a"
    s = v
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


# --------------------------------------------------------------------------- #
# Text output
# --------------------------------------------------------------------------- #
def _md_cell(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ").strip()


#: ``--lmc-budget`` values below the paper's size; a reduced setting's name ends in ``-<budget>``
REDUCED_BUDGETS = ("smoke", "dryrun")
REDUCED_NOTE = "{budget}: not the paper's size"


def reduced_budget(setting: Any) -> str:
    """The reduced budget a setting's name carries (``vgg16-ln-cifar10-dryrun`` -> ``dryrun``), else ``""``."""
    name = str(setting or "")
    return next((b for b in REDUCED_BUDGETS if name.endswith(f"-{b}")), "")


def format_markdown(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The ``claims.md`` text: title, meta list, one table, failures, figure links."""
    recs = sort_records(records)
    lines = ["# lmccheck claim report", ""]
    if meta.get("budget") in REDUCED_BUDGETS:
        lines += [f"> **Reduced budget ({meta['budget']})**: the GPU settings ran at a reduced size to exercise "
                  "every claim's whole path. Their verdicts are not the paper-scale tier's and never stand for "
                  "it; the CPU-scale rows are the CPU tier's as usual.", ""]
    for key in ("lmccheck_version", "git_commit", "device", "budget", "barrier_precision", "seed_offset", "processes",
                "torch", "python", "platform", "start", "end"):
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
        shown = "**" + verdict + "**" if verdict in ("FAIL", "ERROR", "XPASS") else verdict
        if r.get("known_finding"):
            shown += " (known finding)"
        elif r.get("finding_reason") and verdict == "INCONCLUSIVE":
            shown += " (known finding not confirmed)"
        if reduced_budget(r.get("setting")):
            shown += f" ({REDUCED_NOTE.format(budget=reduced_budget(r.get('setting')))})"
        lines.append(
            f"| {_md_cell(r.get('claim'))} | {_md_cell(r.get('setting'))} | "
            f"{shown} | "
            f"{_md_cell(r.get('summary') or r.get('reason') or '')} | {fmt_seconds(r.get('wall_time_s'))} |"
        )
    bad = [r for r in recs if r.get("verdict") in ("FAIL", "ERROR", "XPASS")]
    if bad:
        lines += ["", "## Failures", ""]
        for r in bad:
            lines += [f"### {r.get('claim')} / {r.get('setting')}: {r.get('verdict')}", "",
                      f"`{r.get('nodeid', '')}`", ""]
            if r.get("known_finding"):
                lines += [f"Known finding: {_md_cell(r.get('reason'))}", ""]
            if r.get("failure"):
                lines += ["```", str(r.get("failure")).rstrip(), "```", ""]
    skipped = [r for r in recs if r.get("verdict") == "SKIP"]
    if skipped:
        lines += ["## Skipped", ""] if lines[-1] == "" else ["", "## Skipped", ""]
        lines += [f"- {r.get('claim')} / {r.get('setting')}: {r.get('reason') or ''}" for r in skipped]
    not_run = [r for r in recs if r.get("verdict") == "NOT RUN"]
    if not_run:
        lines += ["## Not run", ""] if lines[-1] == "" else ["", "## Not run", ""]
        lines += [f"- {r.get('claim')} / {r.get('setting')}: {r.get('reason') or ''}" for r in not_run]
    judged = [r for r in recs if r.get("assertions")]
    if judged:
        lines += ["", "## Assertions", "",
                  "Each check's verdict combines its deciding assertions: FAIL if one fails, INCONCLUSIVE if one is, "
                  "else PASS. Intervals are Student t over seeds (95% for orders and indifference zones, 90% for "
                  "equivalence, exact binomial for shares); MDE is the distance from the bound the rule detects "
                  "with 80% probability at this n."]
        for r in judged:
            lines += ["", f"### {_md_cell(r.get('claim'))} / {_md_cell(r.get('setting'))}: {r.get('verdict')}", "",
                      "| " + " | ".join(_assertions.ASSERTION_COLUMNS) + " |",
                      "|" + "---|" * len(_assertions.ASSERTION_COLUMNS)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _assertions.markdown_rows(r)]
        pending = _assertions.inconclusive_summary(judged)
        if pending:
            lines += ["", "**INCONCLUSIVE assertions, with the seeds each would need if its estimate stayed where "
                      "it is:**", ""] + [f"- {_md_cell(x)}" for x in pending]
    tables = [(r, t) for r in recs for t in (r.get("tables") or [])]
    if tables:
        lines += ["", "## Tables"]
        for rec, t in tables:
            lines += ["", f"### {rec.get('claim')} / {rec.get('setting')}: {t.get('name')}", ""]
            lines.append("| " + " | ".join(_md_cell(c) for c in t.get("columns", [])) + " |")
            lines.append("|" + "---|" * len(t.get("columns", [])))
            for row in t.get("rows", []):
                lines.append("| " + " | ".join(_md_cell(_fmt_cell(c)) for c in row) + " |")
    timing = time_accounting(recs)
    if timing["claims"]:
        lines += ["", "## Time", "", "| Check | Wall | Building | Loading | Measuring |", "|---|---|---|---|---|"]
        for row in timing["claims"]:
            lines.append(
                f"| {_md_cell(row['claim'])} / {_md_cell(row['setting'])} | {fmt_seconds(row['wall_time_s'])} | "
                f"{fmt_seconds(row['build_time_s'])} | {fmt_seconds(row['load_time_s'])} | "
                f"{fmt_seconds(row['measure_time_s'])} |"
            )
        if timing["kinds"]:
            lines += ["", "| Product kind | Built | Build time | Loaded | Load time |", "|---|---|---|---|---|"]
            for kind, k in sorted(timing["kinds"].items()):
                lines.append(f"| {_md_cell(kind)} | {k['built']} | {fmt_seconds(k['build_s'])} | {k['loaded']} | "
                             f"{fmt_seconds(k['load_s'])} |")
    figs = figure_paths(recs)
    if figs:
        lines += ["", "## Figures"]
        for rec, spec, rel in figs:
            label = spec.get("title") or spec.get("name")
            lines += ["", f"**{_md_cell(rec.get('claim'))} / {_md_cell(rec.get('setting'))}: {_md_cell(label)}**",
                      "", f"![{_md_cell(label)}]({rel})"]
    return "\n".join(lines).rstrip() + "\n"


def _fmt_cell(c: Any) -> str:
    if isinstance(c, float):
        return fmt_num(c, 4)
    return "" if c is None else str(c)


def time_accounting(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Where the time went: per claim (wall, building, loading, measuring) and per product kind.

    A product built once is charged to the claim that asked for it first;
    ``kinds`` adds up every record's products, so each build is counted once.
    """
    claims = []
    kinds: dict[str, dict[str, Any]] = {}
    for r in sort_records(records):
        if r.get("wall_time_s") is None:
            continue
        claims.append({
            "claim": r.get("claim"), "setting": r.get("setting"), "wall_time_s": r.get("wall_time_s"),
            "build_time_s": r.get("build_time_s", 0.0), "load_time_s": r.get("load_time_s", 0.0),
            "measure_time_s": r.get("measure_time_s", r.get("wall_time_s")),
        })
        for kind, k in (r.get("products") or {}).items():
            acc = kinds.setdefault(kind, {"built": 0, "build_s": 0.0, "loaded": 0, "load_s": 0.0})
            for f in acc:
                acc[f] += k.get(f, 0)
    return {"claims": claims, "kinds": kinds}


def format_time_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text time accounting for the terminal: per check (wall, building, loading, measuring) and
    per product kind (built and loaded, with their time)."""
    timing = time_accounting(records)
    if not timing["claims"]:
        return ""
    rows = [("check", "wall", "building", "loading", "measuring")]
    rows += [(f"{c['claim']} {c['setting']}", fmt_seconds(c["wall_time_s"]), fmt_seconds(c["build_time_s"]),
              fmt_seconds(c["load_time_s"]), fmt_seconds(c["measure_time_s"])) for c in timing["claims"]]
    out = _aligned(rows)
    if timing["kinds"]:
        kinds = [("product kind", "built", "build time", "loaded", "load time")]
        kinds += [(kind, str(k["built"]), fmt_seconds(k["build_s"]), str(k["loaded"]), fmt_seconds(k["load_s"]))
                  for kind, k in sorted(timing["kinds"].items())]
        out += "\n\n" + _aligned(kinds)
    return out


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text aligned table (id, setting, verdict, summary) for the terminal."""
    rows = [("id", "setting", "verdict", "key numbers")]
    for r in sort_records(records):
        rows.append(
            (
                str(r.get("claim", "")),
                str(r.get("setting", "")),
                str(r.get("verdict", "?")) + (" (finding)" if r.get("known_finding") else ""),
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
#: below this many figures the report draws them in its own process (a pool's start costs more)
PARALLEL_FIGURES = 8


def _render_figures(specs: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """PNG bytes of each spec, in order: on the machine's free cores when there are many (matplotlib draws
    in one thread, about 1.5 s per figure of several panels; a dry run's report has about 90)."""
    workers = min(len(specs), available_cpus())
    if len(specs) < PARALLEL_FIGURES or workers < 2:
        return [figure_png(spec) for spec in specs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(figure_png, specs, chunksize=1))


def _write_md_and_figures(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``claims.md`` and every figure PNG under ``out_dir``; returns the md path."""
    figures = list(figure_paths(records))
    for (_rec, _spec, rel), png in zip(figures, _render_figures([spec for _, spec, _ in figures]), strict=True):
        atomic_write_bytes(out_dir / rel, png)
    md_path = out_dir / MD_NAME
    atomic_write_bytes(md_path, format_markdown(records, meta).encode("utf-8"))
    return md_path


def write_report(records: Sequence[Mapping[str, Any]], out_dir: Path | str, meta: Mapping[str, Any]) -> Path:
    """Write ``claims.json``, ``claims.md`` and ``figures/*.png`` to ``out_dir``.

    Every file is written atomically. Returns the path of ``claims.md``.
    """
    out = Path(out_dir)
    recs = [dict(r) for r in sort_records(records)]
    payload = {"meta": to_jsonable(dict(meta)), "records": to_jsonable(recs),
               "time": to_jsonable(time_accounting(recs))}
    atomic_write_bytes(out / JSON_NAME, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
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
        atomic_write_bytes(out / JSON_NAME, src.read_bytes())
    return _write_md_and_figures(records, meta, out)
