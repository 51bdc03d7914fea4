"""One status line on a terminal: what a long command is doing now, rewritten in place.

Shown only when stderr is a terminal (logs, CI and pipes stay plain), cut to the
terminal's width so it never wraps, and erased when the work ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (it may also be closed: ``2>&-``)."""
    return sys.stderr is not None and sys.stderr.isatty()


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (it may also be closed: ``>&-``)."""
    return sys.stdout is not None and sys.stdout.isatty()


#: The width assumed for a terminal that reports none (a pseudo-terminal never sized, as
#: some job runners and `script`-like tools open): 0 columns would draw nothing at all.
DEFAULT_COLUMNS = 80
DEFAULT_ROWS = 24


def _reported_columns() -> int | None:
    """The width the terminal on stderr reports (perhaps 0); None when it is no terminal."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):  # no terminal, or no descriptor
        return None


def stderr_columns() -> int:
    """The width of the terminal stderr is on (``DEFAULT_COLUMNS`` when it reports 0);
    0 when stderr is not a terminal after all."""
    columns = _reported_columns()
    return 0 if columns is None else columns or DEFAULT_COLUMNS


def bar_size() -> tuple[int | None, int | None]:
    """tqdm's ``ncols`` and ``nrows``: None (follow the terminal) unless the terminal
    reports no size, where tqdm would draw nothing at all."""
    return (None, None) if _reported_columns() else (DEFAULT_COLUMNS, DEFAULT_ROWS)


def printable(text: str) -> str:
    """``text`` with control and format characters escaped: a file name or a header cell
    can neither break an output line in two nor rewrite the terminal (escape codes)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def undecodable_escaped(text: str | os.PathLike[str]) -> str:
    """``text`` (a name from the file system) with the bytes that are not UTF-8, which
    Python reads as lone surrogates, written as ``\\xNN``: how loads record a file's name
    (csvsource.recorded_name) and output lines show it."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _escaped(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # a byte of a name that is not UTF-8
        return undecodable_escaped(char)
    return char.encode("unicode_escape").decode("ascii")


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
        columns = stderr_columns()
        if columns <= 1:  # not a terminal after all
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


@contextlib.contextmanager
def counted(total: int, what: str, *, show: bool = True) -> Iterator[Callable[[int], None]]:
    """A bar of ``total`` items on a terminal; the callable it gives says how many are
    done. Nothing is drawn when ``show`` is false or stderr is not a terminal."""
    if not (show and stderr_is_terminal()):
        yield lambda _done: None
        return
    from tqdm import tqdm

    columns, rows = bar_size()
    with tqdm(
        total=total,
        unit=" rows",
        unit_scale=True,
        desc=what,
        leave=False,
        ncols=columns,
        nrows=rows,
    ) as bar:

        def advance(done: int) -> None:
            bar.update(done - bar.n)

        yield advance
        advance(total)
        bar.refresh()  # the finished bar, before it is erased


def is_stdout(path: Path) -> bool:
    """Whether ``path`` is where stdout goes (``--out /dev/stdout``, or ``> path``)."""
    try:
        return os.path.samestat(path.stat(), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file, or no descriptor
        return False


class OutputUntilReaderGone:
    """``sys.stdout`` for a command's run: when its reader goes away (``salesmart ingest
    a.csv b.csv | head -1``), further output is dropped and the work goes on. A write to the
    closed pipe must not stop a command between warehouses (PostgreSQL loaded, BigQuery not)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def _gone(self) -> None:
        self.reader_gone = True
        # What the stream still buffers is flushed again at exit: let it reach nowhere
        # quietly ("Exception ignored ... BrokenPipeError" otherwise).
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the stream's
        return getattr(self._stream, name)
