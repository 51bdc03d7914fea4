"""Words of the messages people read (the CLI's lines, the dashboard's notes)."""

from __future__ import annotations


def how_many(count: int, noun: str) -> str:
    """``1 transaction``, ``2 transactions``: a count and its noun."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class LinePlace:
    """The line and the byte in that line that come after the bytes fed so far, as a
    reader finds them (both from 1). Fed in blocks, so a late byte in a file of GBs is
    placed without holding the file."""

    def __init__(self) -> None:
        self.line_ends = 0
        self.bytes_into_line = 0
        self._ended_in_cr = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        # Lines end at LF, CRLF or a lone CR (as csv reads them); counted, not matched one
        # by one. A CRLF cut between two blocks is one line end.
        ends = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
        if self._ended_in_cr and data.startswith(b"\n"):
            ends -= 1
        self.line_ends += ends
        start = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1  # 0: no line end in data
        self.bytes_into_line = len(data) - start if start else self.bytes_into_line + len(data)
        self._ended_in_cr = data.endswith(b"\r")

    def __str__(self) -> str:
        return f"line {self.line_ends + 1}, byte {self.bytes_into_line + 1} of the line"


def not_utf8_at(head: bytes) -> str:
    """Where the byte after ``head`` (a text's first bytes) is, as a reader finds it:
    ``line 2, byte 14 of the line`` (a file offset named no byte a reader could find in
    its line)."""
    place = LinePlace()
    place.feed(head)
    return str(place)
