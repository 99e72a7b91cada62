"""Generated blocks in Markdown files: the text between a start and an end marker, rewritten by a tool."""

from __future__ import annotations


def replace_between(text: str, start: str, end: str, block: str) -> str | None:
    """``text`` with the block from ``start`` to ``end`` (both included) replaced by ``block``; None when
    ``text`` lacks either marker."""
    if start not in text or end not in text:
        return None
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + block + after
