"""One status line on a terminal: what a long command is doing now, rewritten in place.

Shown only when stderr is a terminal (logs, CI and pipes stay plain), cut to the
terminal's width so it never wraps, and erased when the work ends.
"""

from __future__ import annotations

import os
import sys


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (it may also be closed: ``2>&-``)."""
    return sys.stderr is not None and sys.stderr.isatty()


def printable(text: str) -> str:
    """``text`` with control and format characters escaped: a file name or a header cell
    can neither break an output line in two nor rewrite the terminal (escape codes)."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


class StatusLine:
    def __init__(self, show: bool = True) -> None:
        self.on = show and stderr_is_terminal()
        self._line = ""

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.clear()

    def show(self, text: str) -> None:
        """Replace the line with ``text`` (nothing when not on a terminal)."""
        if not self.on:
            return
        try:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError):  # not a terminal after all, or no descriptor
            return
        if columns <= 1:
            return
        line = " ".join(text.split())[: columns - 1]
        padding = " " * max(0, len(self._line) - len(line))  # what the longer one left
        sys.stderr.write("\r" + line + padding + "\r")
        sys.stderr.flush()
        self._line = line

    def clear(self) -> None:
        if self._line:
            sys.stderr.write("\r" + " " * len(self._line) + "\r")
            sys.stderr.flush()
            self._line = ""
