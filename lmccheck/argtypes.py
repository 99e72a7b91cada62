"""argparse value types shared by the command line and the pytest plugin."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1, or an ``argparse.ArgumentTypeError`` saying what was given."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def nonnegative_int(text: str) -> int:
    """An integer >= 0, or an ``argparse.ArgumentTypeError`` saying what was given."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n
