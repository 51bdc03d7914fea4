"""Words of the messages people read (the CLI's lines, the dashboard's notes)."""

from __future__ import annotations


def how_many(count: int, noun: str) -> str:
    """``1 transaction``, ``2 transactions``: a count and its noun."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
