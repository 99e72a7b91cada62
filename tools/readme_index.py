"""Write the README's claims index from the claims catalog (claims/catalog.py; never by hand).

    .venv/bin/python tools/readme_index.py           # rewrite README.md's index in place
    .venv/bin/python tools/readme_index.py --check   # exit 1 if README.md's index differs from the catalog

The index sits between ``<!-- claims-index:start -->`` and ``<!-- claims-index:end -->``: one row per claim (id,
paper and section, statement, tiers). Exit status: 0 written (or up to date), 1 stale (``--check``), 2 a
target without the markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from claims.catalog import CATALOG  # noqa: E402 - after the path above
from lmccheck.assertions import markdown_table  # noqa: E402
from lmccheck.catalog import Catalog  # noqa: E402
from markers import rewrite_block  # noqa: E402

START, END = "<!-- claims-index:start -->", "<!-- claims-index:end -->"
TARGET = ROOT / "README.md"


def index(catalog: Catalog) -> str:
    rows = [[c.id, f"{c.paper.split(' et al.')[0]} {c.section}", c.statement, ", ".join(c.tiers)] for c in catalog]
    return f"{START}\n{markdown_table(['id', 'paper', 'claim', 'tiers'], rows)}\n{END}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="FILE", type=Path, default=TARGET, help="default: README.md")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the index is stale")
    args = parser.parse_args(argv)
    return rewrite_block(args.out, START, END, index(CATALOG), check=args.check)


if __name__ == "__main__":
    sys.exit(main())
