"""argparse value types shared by the command line and the pytest plugin."""

from __future__ import annotations

import argparse


def _int_at_least(text: str, least: int, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return n


def positive_int(text: str) -> int:
    """An integer >= 1, or an ``argparse.ArgumentTypeError`` saying what was given."""
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0, or an ``argparse.ArgumentTypeError`` saying what was given."""
    return _int_at_least(text, 0, "a whole number >= 0")
