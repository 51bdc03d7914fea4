"""Words of the messages people read (the CLI's lines, the dashboard's notes)."""

from __future__ import annotations


def how_many(count: int, noun: str) -> str:
    """``1 transaction``, ``2 transactions``: a count and its noun."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def not_utf8_at(head: bytes) -> str:
    """Where the byte after ``head`` (a text's first bytes) is, as a reader finds it:
    ``line 2, byte 14 of the line`` (both from 1; a file offset named no byte a reader
    could find in its line)."""
    # Lines end at LF, CRLF or a lone CR (as csv reads them); counted, not matched one by
    # one (a late byte in a file of GBs).
    line_ends = head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n")
    start = max(head.rfind(b"\n"), head.rfind(b"\r")) + 1
    return f"line {line_ends + 1}, byte {len(head) - start + 1} of the line"
