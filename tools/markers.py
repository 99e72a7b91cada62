"""Generated blocks in Markdown files: the text between a start and an end marker, rewritten by a tool."""

from __future__ import annotations

import sys
from pathlib import Path


def replace_between(text: str, start: str, end: str, block: str) -> str | None:
    """``text`` with the block from ``start`` to ``end`` (both included) replaced by ``block``; None when
    ``text`` lacks either marker."""
    if start not in text or end not in text:
        return None
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + block + after


def rewrite_block(path: Path, start: str, end: str, block: str, *, check: bool) -> int:
    """Put ``block`` between ``path``'s markers, or with ``check`` only compare: the exit status of the tools
    that generate Markdown blocks (0 written or up to date, 1 stale under ``check``, 2 no markers)."""
    text = path.read_text(encoding="utf-8")
    new = replace_between(text, start, end, block)
    if new is None:
        print(f"{path}: no {start} ... {end} markers", file=sys.stderr)
        return 2
    if check:
        return 0 if new == text else 1
    path.write_text(new, encoding="utf-8")
    return 0
