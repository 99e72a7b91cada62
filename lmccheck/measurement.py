"""The recorder of one claim check (the ``measure`` fixture's object): what it measured and what it asserted.

A check states its claim as assertions (:meth:`Measurement.expect` and its siblings, judged by
:mod:`lmccheck.verdict`), adds values, figures and tables, and the plugin turns the whole into the check's
record and verdict. This module imports no pytest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec

from lmccheck import figures as _figures
from lmccheck.jsonable import to_jsonable
from lmccheck import verdict as _verdict

P = ParamSpec("P")


@dataclass
class Measurement:
    """What one claim check measured and asserted; filled in by the test, reported by the plugin.

    The check states its claim with :meth:`expect` (an interval over seeds, :mod:`lmccheck.verdict`),
    :meth:`expect_share` ("most cases") or :meth:`expect_exact` (an identity or a theorem on constructed
    cases). Each assertion is recorded as data, with the source of its threshold, and the check's verdict
    is their combination (:func:`lmccheck.verdict.combine`): PASS, FAIL or INCONCLUSIVE. Set ``values`` and
    ``summary``; add figures with :meth:`figure` and tables with :meth:`table`. The setting's recipe and the
    seeds of every trained network arrive from the fixtures (:meth:`add_seeds`), the products the check used
    through :meth:`add_product`, which fills ``fixture_keys`` and the build/load time.
    """

    claim: str
    setting: str
    nodeid: str
    device: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    seeds: list[dict[str, Any]] = field(default_factory=list)
    recipe: dict[str, Any] | None = None
    assertions: list[_verdict.Judgement] = field(default_factory=list)
    verdict: str | None = None
    fixture_keys: list[str] = field(default_factory=list)
    summary: str = ""
    figures: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    build_time_s: float = 0.0
    load_time_s: float = 0.0

    def add_product(self, kind: str, key: str, source: str, seconds: float) -> None:
        """Account for a product this check used: ``source`` is built, loaded, memo (already decoded)
        or input (an input of a loaded product: its key is listed, nothing is counted).

        Every key lands in ``fixture_keys``; build and load time are kept apart
        from the time the check spent measuring.
        """
        if key not in self.fixture_keys:
            self.fixture_keys.append(key)
        if source == "input":
            return
        acc = self.products.setdefault(kind, {"built": 0, "build_s": 0.0, "loaded": 0, "load_s": 0.0, "memo": 0})
        if source == "built":
            acc["built"] += 1
            acc["build_s"] += float(seconds)
            self.build_time_s += float(seconds)
        elif source == "loaded":
            acc["loaded"] += 1
            acc["load_s"] += float(seconds)
            self.load_time_s += float(seconds)
        else:
            acc["memo"] += 1

    def add_seeds(self, seeds: Mapping[str, Any]) -> None:
        """Record the seeds of a network the check used (once each; the fixtures call this)."""
        entry = dict(seeds)
        if entry not in self.seeds:
            self.seeds.append(entry)

    def _add(self, judgement: _verdict.Judgement) -> _verdict.Judgement:
        if any(j.name == judgement.name for j in self.assertions):
            raise _verdict.VerdictInputError(f"claim {self.claim}: two assertions are named {judgement.name!r}")
        self.assertions.append(judgement)
        return judgement

    def _wrap(self, what: str, fn: Callable[P, _verdict.Judgement], *args: P.args, **kwargs: P.kwargs
              ) -> _verdict.Judgement:
        try:
            return self._add(fn(*args, **kwargs))
        except _verdict.VerdictInputError as exc:
            raise _verdict.VerdictInputError(f"claim {self.claim} ({self.setting}), {what}: {exc}") from None

    def expect(
        self,
        name: str,
        rule: _verdict.Rule,
        contrast: Any,
        source: _verdict.Source,
        *,
        over: Literal["every", "mean"] | None = None,
        noise: float | Mapping[str, float] = 0.0,
        pool: bool = False,
        decides: bool = True,
        note: str = "",
        not_exercised: str = "",
    ) -> _verdict.Judgement:
        """Assert ``rule`` of a per-seed ``contrast`` (or of a mapping of points, combined ``over`` "every" or
        "mean"), with its threshold's ``source``; see :func:`lmccheck.verdict.judge`. ``decides=False``
        records lmccheck's own addition to the paper, shown but never deciding the verdict; ``not_exercised``
        (a reason) records the contrast of a statement this setting cannot test, as INCONCLUSIVE."""
        return self._wrap(name, _verdict.judge, name, rule, contrast, source, over=over,
                          noise=noise, pool=pool, decides=decides, note=note, not_exercised=not_exercised)

    def expect_slope(self, name: str, rule: _verdict.Rule, x: Any, y: Any, source: _verdict.Source, *,
                     noise: Any = None, decides: bool = True, note: str = "") -> _verdict.Judgement:
        """Assert ``rule`` of the least-squares slope of replicates ``y[i]`` on ``x[i]``
        (:func:`lmccheck.verdict.slope`)."""
        return self._wrap(name, _verdict.slope, name, rule, x, y, source, noise=noise, decides=decides, note=note)

    def expect_share(self, name: str, successes: int, trials: int, source: _verdict.Source, *, above: float = 0.5,
                     decides: bool = True, note: str = "") -> _verdict.Judgement:
        """Assert that a share of cases exceeds ``above`` ("most"), with an exact binomial interval."""
        return self._wrap(name, _verdict.share, name, successes, trials, source, above=above, decides=decides,
                          note=note)

    def expect_exact(self, name: str, holds: bool, observed: float, bound: str, source: _verdict.Source, *,
                     decides: bool = True, note: str = "") -> _verdict.Judgement:
        """Assert a deterministic statement (no sampling noise): PASS when ``holds``."""
        return self._wrap(name, _verdict.exact, name, bool(holds), observed, bound, source, decides=decides,
                          note=note)

    def conclude(self) -> str:
        """The check's verdict from its assertions (a check that asserts nothing is an error)."""
        try:
            self.verdict = _verdict.combine(self.assertions)
        except _verdict.VerdictInputError as exc:
            raise _verdict.VerdictInputError(f"claim {self.claim} ({self.setting}): {exc}") from None
        return self.verdict

    def failing(self) -> list[str]:
        """One line per deciding assertion that FAILed."""
        return [f"{j.name}: {j.observed:.4g}, {_verdict_interval(j)} vs {j.bound}" for j in self.assertions
                if j.decides and j.outcome == _verdict.FAIL]

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Add a table (rendered as Markdown in claims.md, kept in the JSON); same name replaces."""
        spec = _figures.make_table(name, columns, rows)
        self.tables = [t for t in self.tables if t["name"] != name] + [spec]

    def figure(
        self,
        name: str,
        *,
        series: dict[str, tuple[Any, Any]] | None = None,
        panels: list[dict[str, Any]] | None = None,
        title: str = "",
        xlabel: str = "",
        ylabel: str = "",
        xscale: str = "linear",
        yscale: str = "linear",
        yerr: dict[str, Any] | None = None,
    ) -> None:
        """Add a figure: a line plot (``series`` maps a legend label to ``(xs, ys)``,
        ``yerr`` to error-bar half-widths), or ``panels`` side by side, made with
        :func:`lmccheck.report.line_panel`, ``bar_panel``, ``hist_panel`` or
        ``heatmap_panel``. A figure with the same name replaces the earlier one.
        """
        if (series is None) == (panels is None):
            raise ValueError(f"figure {name!r}: give either series (a line plot) or panels")
        if panels is not None:
            spec = _figures.make_panels_figure(name, panels, title=title)
        else:
            spec = _figures.make_figure_spec(
                name, series or {}, title=title, xlabel=xlabel, ylabel=ylabel, xscale=xscale, yscale=yscale, yerr=yerr
            )
        self.figures = [f for f in self.figures if f["name"] != name] + [spec]

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready record, without verdict and wall time."""
        return {
            "claim": self.claim,
            "setting": self.setting,
            "nodeid": self.nodeid,
            "device": self.device,
            "cpu_threads": _torch_threads(),
            "values": to_jsonable(self.values),
            "thresholds": to_jsonable(self.thresholds),
            "seeds": to_jsonable(self.seeds),
            "recipe": to_jsonable(self.recipe),
            "assertions": to_jsonable([j.to_dict() for j in self.assertions]),
            "fixture_keys": to_jsonable(self.fixture_keys),
            "summary": str(self.summary or ""),
            "figures": to_jsonable(self.figures),
            "tables": to_jsonable(self.tables),
            "products": to_jsonable(self.products),
            "build_time_s": round(self.build_time_s, 4),
            "load_time_s": round(self.load_time_s, 4),
        }


def _verdict_interval(j: _verdict.Judgement) -> str:
    lo, hi = j.interval
    return f"{j.level:.0%} interval [{lo:.4g}, {hi:.4g}]"


def _torch_threads() -> int | None:
    """torch's CPU threads in this process (None when torch was never imported)."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


