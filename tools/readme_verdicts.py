"""Write the table of latest verdicts in docs/claims.md from a claim report (never by hand).

    .venv/bin/python tools/readme_verdicts.py report/claims.json          # rewrite docs/claims.md in place
    .venv/bin/python tools/readme_verdicts.py report/claims.json --check  # exit 1 if docs/claims.md differs
    .venv/bin/python tools/readme_verdicts.py report/claims.json --out OTHER.md   # another file with the markers

The table sits between the markers ``<!-- verdicts:start -->`` and ``<!-- verdicts:end -->`` of the target file
(default docs/claims.md; ``--readme`` is an alias of ``--out``); it is
``lmccheck report claims.json --verdict-table`` with a line naming the report's commit, machine and budget.
Exit status: 0 written (or, with ``--check``, up to date), 1 stale (``--check``), 2 a reduced-budget report or
a target without the markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lmccheck.assertions import markdown_table, verdict_rows  # after the path above
from lmccheck.report import REDUCED_BUDGETS, load_report, sort_records
from markers import rewrite_block

START, END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"
TARGET = Path(__file__).resolve().parents[1] / "docs" / "claims.md"


def table(report: Path) -> str:
    records, meta = load_report(report)
    head = (f"From a claim report: commit {str(meta.get('git_commit') or 'unknown')[:10]}, {meta.get('device')}, "
            f"{meta.get('processes')}, budget {meta.get('budget')}, seed offset {meta.get('seed_offset', 0)}, "
            + (f"barrier precision {meta['barrier_precision']}, " if meta.get("barrier_precision") else "")
            + f"{meta.get('start')} to {meta.get('end')}.")
    body = markdown_table(["id", "setting", "verdict", "deciding assertions (estimate, interval)"],
                          verdict_rows(sort_records(records)))
    return f"{START}\n{head}\n\n{body}\n{END}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a claims.json written by `make claims` (budget full)")
    parser.add_argument("--out", "--readme", dest="out", metavar="FILE", type=Path, default=TARGET,
                        help="the Markdown file whose table to rewrite (default: docs/claims.md; "
                        "--readme is an alias)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the file's table differs from the report's")
    args = parser.parse_args(argv)
    budget = load_report(args.report)[1].get("budget")
    if budget in REDUCED_BUDGETS:
        print(f"{args.report}: a --lmc-budget {budget} report; its verdicts do not stand for the tiers "
              f"{args.out} lists: use a report of `make claims` (budget full)", file=sys.stderr)
        return 2
    return rewrite_block(args.out, START, END, table(args.report), check=args.check)


if __name__ == "__main__":
    sys.exit(main())
