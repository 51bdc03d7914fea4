"""Streaming reader of transaction CSVs: one ``CheckedRow`` per record, memory flat.

Handles quoted fields (also spanning lines), CRLF/CR/LF line ends, a UTF-8 BOM, extra
columns, and keeps each record's raw text and first line number for the rejects table.
A file that cannot be used at all (not UTF-8, binary, empty, missing columns) raises
``UnusableInputError``, possibly mid-file: loaders run in one transaction, so nothing is kept.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple, cast

from common import validation
from common.config import ValidationRules
from common.masking import Masker
from common.wording import LinePlace
from pipeline.progress import printable, undecodable_escaped

SNIFF_BYTES = 8192
# A text CSV may hold a stray NUL in a row (rejected as malformed), but a NUL in the
# header, or NULs among a head full of control bytes, means the file is not text at all.
BINARY_SHARE = 0.05
_BINARY_BYTES = frozenset(set(range(32)) - {9, 10, 13})
csv.field_size_limit(64 * 1024 * 1024)


class UnusableInputError(Exception):
    """The whole file is unusable; the message is one line for the user."""


# A valid row in canonical form, as text: (line number, raw text, transaction id, masked id,
# product, price, quantity, date); see ``TransactionReader.copy_rows``.
TextRow = tuple[int, str, str, str, str, str, str, str]


class CheckedRow(NamedTuple):
    line_number: int
    raw_text: str
    transaction_id: str
    masked_transaction_id: str
    product: str
    price: Decimal | None
    quantity: int | None
    sale_date: date | None
    reason: str | None  # None: passed the stateless rules


def recorded_name(path: Path | str) -> str:
    """A file's name as its load and rejects record it: text, where a POSIX name may hold
    any bytes. Bytes that are not UTF-8 are written as ``\\xNN`` escapes (the name as
    Python reads it holds lone surrogates there, which neither database can store)."""
    return undecodable_escaped(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_readable(path: Path) -> None:
    try:
        if not path.exists():
            raise UnusableInputError(f"{path}: no such file")
        if not path.is_file():
            raise UnusableInputError(f"{path}: not a regular file")
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:  # e.g. no permission: unusable like a missing file
        raise UnusableInputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise UnusableInputError(f"{path}: empty file (no CSV header)")
    if _utf16_like(head):  # its NULs would call it binary: name the fix instead
        raise UnusableInputError(f"{path}: UTF-16 or UTF-32 text, not UTF-8 (save it as UTF-8)")
    first_line = re.split(rb"[\r\n]", head, maxsplit=1)[0]  # any line end, CR alone too
    if b"\x00" in first_line:
        raise UnusableInputError(f"{path}: binary data, not a CSV text file")
    # Text may hold a few control characters (terminal colour codes pasted into a
    # product), and a damaged row NULs: they only reject or pass their rows, whatever the
    # file's size. Below a first line that is not text, a NUL among many of them is binary.
    if (
        b"\x00" in head
        and not _text_line(first_line)
        and sum(byte in _BINARY_BYTES for byte in head) > len(head) * BINARY_SHARE
    ):
        raise UnusableInputError(f"{path}: binary data, not a CSV text file")


def _text_line(line: bytes) -> bool:
    """Whether ``line`` (perhaps cut at the sniffed length) is UTF-8 without control bytes."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(line, final=False)
    except UnicodeDecodeError:
        return False
    return not any(byte in _BINARY_BYTES for byte in line)


def _utf16_like(head: bytes) -> bool:
    """A UTF-16/32 byte order mark, or ASCII-range text with a NUL in every other byte (a
    spreadsheet's "Unicode text" export without one)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # UTF-32's start so
        return True
    sample = head[:64]
    if len(sample) < 8:
        return False
    even_nul = all(byte == 0 for byte in sample[0::2])
    odd_nul = all(byte == 0 for byte in sample[1::2])
    return even_nul != odd_nul


def first_invalid_utf8(path: Path) -> tuple[int, str] | None:
    """``(byte offset, where)`` of the first byte of ``path`` that is not UTF-8 (where: its
    line and its byte in that line, in words), or None. Read in blocks (a character cut in
    two by a block is carried over)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # of the block being decoded
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            carried = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return _position(path, offset - carried + exc.start)
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a character
            return _position(path, offset - len(exc.object) + exc.start)
    return None


def _position(path: Path, offset: int) -> tuple[int, str]:
    """``(offset, where)``: the offset, and the line and byte a reader finds it at (the
    file's head read again in blocks: it may be GBs)."""
    place, left = LinePlace(), offset
    with path.open("rb") as handle:
        while left and (block := handle.read(min(left, 1 << 20))):
            place.feed(block)
            left -= len(block)
    return offset, str(place)


def _not_utf8(path: Path, where: tuple[int, str] | None = None) -> UnusableInputError:
    """The error for a file that is not UTF-8 text, saying where (found if not given)."""
    where = where or first_invalid_utf8(path)
    at = f" ({where[1]})" if where else ""
    return UnusableInputError(f"{path}: not UTF-8 text{at}")


# ``fields`` of a record that is one plain line (no quote, no NUL), not split yet: the
# validator may check the whole line at once (``RowValidator.check_line``).
PLAIN: list[str] = []


# How ``csv`` (with ``skipinitialspace``) reads one line: a double quote opens a quoted
# field only at the start of a field (after spaces); anywhere else it is a plain character,
# as in a product ``Halal Monitor 27"``. A line is a whole record unless it ends inside a
# quoted field. Possessive, so that a doubled quote is never read back as a closing one;
# runs of plain characters are matched in one step, as fast as counting quotes.
_FIELD = rb'(?: *"[^"\n]*+(?:""[^"\n]*+)*+"[^,\r\n]*|(?! *")[^,\r\n]*)'
_WHOLE_LINE = re.compile(rb"%s(?:,%s)*\r?\n?" % (_FIELD, _FIELD))
_WHOLE_LINES = re.compile(rb"(?:%s(?:,%s)*\r?\n)*+(?:%s(?:,%s)*\r?)?" % ((_FIELD,) * 4))


def _opens_multiline_field(block: bytes) -> bool:
    """Whether a line of ``block`` (whole lines) ends inside a quoted field.

    A file quoting every field is matched block by block; a few quoted lines among plain
    ones are found and matched one by one (the same answer, either way faster)."""
    quotes = block.count(b'"')
    if not quotes:
        return False
    if quotes > block.count(b"\n") // 4:
        return _WHOLE_LINES.fullmatch(block) is None
    return _opens_line_by_line(block)


def _opens_line_by_line(block: bytes) -> bool:
    at = block.find(b'"')
    while at != -1:
        start = block.rfind(b"\n", 0, at) + 1
        end = block.find(b"\n", at)
        end = len(block) if end == -1 else end + 1
        if not _WHOLE_LINE.fullmatch(block, start, end):
            return True
        at = block.find(b'"', end)
    return False


def _lone_cr(block: bytes) -> bool:
    """Whether ``block`` has a CR that is not part of a CRLF."""
    return b"\r" in block and block.count(b"\r") != block.count(b"\r\n")


class Segment(NamedTuple):
    """A byte range of a file that starts at a line boundary, and its first line number."""

    start: int
    end: int
    first_line: int


# A quoted field may span lines, but not without end: past this many lines (or at the end
# of the file, when text follows its closing quote, or when it would swallow a line that is
# a whole row on its own) its opening quote is taken as a mistake. That line alone is
# rejected and the lines read after it are read again, each on its own, so one stray quote
# loses no other row, memory stays bounded, and no file costs more than reading it twice.
MAX_RECORD_LINES = 1_000


class _Unclosed(Exception):
    """A quoted field did not close within ``MAX_RECORD_LINES`` or before the end."""


def _record_lines(first: str, following: Iterator[str], parts: list[str]) -> Iterator[str]:
    """The lines ``csv`` asks for to finish the record starting with ``first``, kept in
    ``parts``; ``_Unclosed`` when it asks past the limit or the end."""
    yield first
    while len(parts) < MAX_RECORD_LINES:
        line = next(following, None)
        if line is None:
            break
        parts.append(line)
        yield line
    raise _Unclosed


# A record as RFC 4180 allows it, with the spaces the reader trims: a quoted field is the
# quotes and what they enclose, with nothing but blanks after its closing quote (``csv``
# would quietly glue the rest on: ``"10"5`` read as ``105``); an unquoted field is
# anything without a comma or line break that does not start with a quote.
_RECORD_FIELD = r'(?: *"(?:[^"]++|"")*+"[^\S\r\n]*|(?! *")[^,\r\n]*)'
_WELL_FORMED = re.compile(rf"{_RECORD_FIELD}(?:,{_RECORD_FIELD})*(?:\r\n|\n|\r)?")


def _raw(text: str) -> str:
    return text.rstrip("\r\n").replace("\x00", "\\x00")


def _parsed(
    parts: list[str], following: Iterator[str], row_width: int = 0
) -> tuple[str, list[str] | None] | None:
    """``(raw text, fields)`` of the record that starts with ``parts[0]``, reading on from
    ``following`` into ``parts`` while a quoted field is open (fields None: malformed);
    None when that field does not close, or closes into a record that is not well formed
    (text after a closing quote), or swallows a line that is a whole row on its own (at
    least ``row_width`` fields): its opening quote was a mistake after all."""
    try:
        fields = next(csv.reader(_record_lines(parts[0], following, parts), skipinitialspace=True))
    except (_Unclosed, csv.Error):  # csv.Error: a field over the size limit
        return None
    text = "".join(parts)
    if not _WELL_FORMED.fullmatch(text):
        return None if len(parts) > 1 else (_raw(text), None)
    if len(parts) > 1 and row_width and any(_whole_row(part, row_width) for part in parts[1:]):
        return None
    return _raw(text), None if "\x00" in text else fields


def _whole_row(line: str, row_width: int) -> bool:
    """Whether ``line`` read on its own is a well-formed record of ``row_width`` fields or
    more: then it is a row that a stray quote before it would swallow (``27"`` closing that
    quote lines later), not the inside of a field that spans lines."""
    record = _parsed([line], iter(()))
    return record is not None and record[1] is not None and len(record[1]) >= row_width


def _row_width(header: list[str]) -> int:
    """The header's number of fields, unnamed ones at its end aside (spreadsheets add them,
    and leave out their empty cells in the rows)."""
    width = len(header)
    while width and not header[width - 1].strip():
        width -= 1
    return width


def _records(
    handle: Iterable[str], line_number: int = 0
) -> Iterator[tuple[int, str, list[str] | None]]:
    """``(first line number, raw text, fields)`` per record; fields None when malformed,
    ``PLAIN`` (identity) for a plain line whose raw text is the record.

    Most lines hold a whole unquoted record (the hot path); a line with a quote is parsed
    by ``csv``, which reads on into the following lines while a quoted field is open, so
    quoted commas, quotes and line breaks inside fields all work. Text after a closing quote
    makes the record malformed. A quote that never closes, or whose record spans lines and
    is malformed or swallows a line that is a whole row (as many fields as the header),
    rejects its own line; the lines read after it are read again one by one.
    """
    lines = iter(handle)
    row_width = 0  # the header's, once read (the first record with fields)
    for line in lines:
        line_number += 1
        if '"' not in line and "\x00" not in line:
            if not row_width and line.strip(" \t\r\n"):
                row_width = _row_width(line.split(","))
            yield line_number, line.rstrip("\r\n"), PLAIN
            continue
        parts = [line]
        record = _parsed(parts, lines, row_width)
        if record is not None:
            if not row_width and record[1]:
                row_width = _row_width(record[1])
            yield line_number, *record
            line_number += len(parts) - 1
            continue
        yield line_number, _raw(line), None
        for again in parts[1:]:
            line_number += 1
            record = _parsed([again], iter(()))  # on its own: no reading on
            yield line_number, *(record or (_raw(again), None))


def _found_columns(names: list[str], absent: list[str]) -> str:
    """What the header line held, for the message: its names when some are columns the
    rules know (a misspelt header); otherwise not its text, which may be data (a file
    without a header: clear ids would reach logs) or anything a path points to."""
    known = {*validation.CORE_COLUMNS, *absent}
    if any(name in known for name in names):
        return "found: " + ", ".join(printable(n) for n in names if n)[:200]
    return _other_separator(",".join(names)) or (
        "its first line names none of them: is the header missing?"
    )


# What spreadsheets write between fields instead of commas (a European Excel's CSV, TSV).
_OTHER_SEPARATORS = ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars"))


def _other_separator(header: str) -> str | None:
    """Advice for a header whose names are separated by something else than commas."""
    for separator, called in _OTHER_SEPARATORS:
        parts = (part.strip(' "').lower() for part in header.split(separator))
        if separator in header and any(part in validation.CORE_COLUMNS for part in parts):
            return f"its first line separates the names with {called}: save it as CSV with commas"
    return None


class TransactionReader:
    """Iterate ``CheckedRow`` over a CSV file; ``chars_read`` tracks progress.

    ``segments(n)`` cuts a file whose records are each one line (no quoted field spans
    lines, no lone CR) into ``n`` line-aligned byte ranges that ``copy_rows(segment)`` reads
    independently (in parallel processes), with the same rows, line numbers and raw texts
    as reading the whole file.
    """

    def __init__(self, path: Path, rules: ValidationRules, pii_key: str) -> None:
        self.path = path
        self.rules = rules
        self._mask = Masker(pii_key)
        self._names: list[str] = []
        self.chars_read = 0
        _check_readable(path)

    def check_whole_file(self) -> None:
        """Raise ``UnusableInputError`` now for what loading would find unusable only on
        the way (the header, a byte that is not UTF-8 however far in): a command given
        several files checks them all before it loads any."""
        with _Utf8Text(self.path) as handle:
            self._header(_records(handle))
        where = first_invalid_utf8(self.path)
        if where is not None:
            raise _not_utf8(self.path, where)

    def __iter__(self) -> Iterator[CheckedRow]:
        with _Utf8Text(self.path) as handle:
            records = _records(handle)
            names, _ = self._header(records)
            yield from cast(Iterator[CheckedRow], self._checked(records, names))

    def _header(
        self, records: Iterator[tuple[int, str, list[str] | None]]
    ) -> tuple[list[str], int]:
        """The header's columns as loading reads them (``validation.header_columns``:
        a required column's name, ``""`` for an ignored one), checked, and its line number
        (also the number of lines up to it and with it when ``segments`` cuts the file:
        then every record, the header too, is one line)."""
        header: list[str] | None = None
        header_line = 0
        for header_line, raw, fields in records:  # noqa: B007 - its value after the loop
            if fields is PLAIN:
                fields = raw.split(",") if raw.strip(" \t") else []
            if fields is None:
                advice = _other_separator(raw)
                raise UnusableInputError(
                    f"{self.path}: the header is not valid CSV" + (f" ({advice})" if advice else "")
                )
            if fields:
                header = fields
                break
        if header is None:
            raise UnusableInputError(f"{self.path}: empty file (no CSV header)")
        # Extra columns are ignored, so only a required one named twice is ambiguous
        # (spreadsheets end headers with empty names, and may repeat a note column).
        columns = validation.header_columns(header, self.rules)
        if columns.missing:
            shown = [name.strip().lower() for name in header]
            raise UnusableInputError(
                f"{self.path}: missing required column(s) {', '.join(columns.missing)}"
                f" ({_found_columns(shown, columns.missing)})"
            )
        if columns.ambiguous:
            raise UnusableInputError(
                f"{self.path}: the header names column(s) {', '.join(columns.ambiguous)}"
                " more than once"
            )
        return columns.names, header_line

    def _checked(
        self,
        records: Iterator[tuple[int, str, list[str] | None]],
        names: list[str],
        *,
        texts: bool = False,
    ) -> Iterator[CheckedRow | TextRow]:
        """Checked rows of ``records``; with ``texts``, a canonical valid line comes as a
        ``TextRow`` (no values built: the loader of PostgreSQL sends text anyway)."""
        width = len(names)
        validator = validation.RowValidator(self.rules, names)
        # A row may lack trailing cells of ignored columns (spreadsheets drop empty ones),
        # never a required one, and may not have more fields than the header.
        min_width = validator.min_width
        check, check_line = validator.check, validator.check_line
        check_text = validator.check_line_text if texts else None
        mask = self._mask
        max_raw, kept_raw = validation.MAX_RAW_TEXT_CHARS, validation.kept_raw_text
        for line, raw, fields in records:
            self.chars_read += len(raw) + 1
            kept = raw if len(raw) <= max_raw else kept_raw(raw)
            result: validation.ValidRow | str | None = None
            if fields is PLAIN:
                if check_text is None:
                    result = check_line(raw)
                else:
                    found = check_text(raw)
                    if found is None or isinstance(found, str):
                        result = found
                    else:
                        tid, product, price_text, quantity_text, date_text = found
                        yield (
                            line,
                            kept,
                            tid,
                            mask(tid),
                            product,
                            price_text,
                            quantity_text,
                            date_text,
                        )
                        continue
                if result is None:
                    fields = raw.split(",") if raw.strip(" \t") else []
            if result is None:
                if (
                    fields is not None
                    and len(fields) > width
                    and not "".join(fields[width:]).strip()
                ):
                    fields = fields[:width]  # empty cells past the header's end (a trailing comma)
                if fields is None or not min_width <= len(fields) <= width:
                    if fields == []:
                        continue  # a blank line (or one of only spaces) is no record
                    yield CheckedRow(line, kept, "", "", "", None, None, None, validation.MALFORMED)
                    continue
                result = check(fields)
            if isinstance(result, str):
                yield CheckedRow(line, kept, "", "", "", None, None, None, result)
                continue
            tid, product, price, quantity, sale_date = result
            yield CheckedRow(line, kept, tid, mask(tid), product, price, quantity, sale_date, None)

    def copy_rows(self, segment: Segment | None = None) -> Iterator[CheckedRow | TextRow]:
        """The rows of the file (or of one segment from ``segments``), a valid canonical
        line as a ``TextRow``, any other row as a ``CheckedRow``."""
        if segment is None:
            with _Utf8Text(self.path) as handle:
                records = _records(handle)
                names, _ = self._header(records)
                yield from self._checked(records, names, texts=True)
            return
        with _Utf8Text(self.path, (segment.start, segment.end)) as handle:
            records = _records(handle, segment.first_line - 1)
            yield from self._checked(records, self._names, texts=True)

    # -- parallel reading of plain files ---------------------------------------------------
    def segments(self, count: int) -> list[Segment] | None:
        """``count`` line-aligned byte ranges covering every record after the header, or
        None when the file needs sequential reading: a quoted field spanning lines or a
        lone CR line end makes LF positions unreliable as record boundaries."""
        with self.path.open("rb") as handle:
            if handle.read(3) != b"\xef\xbb\xbf":  # a BOM would hide a quote at the start
                handle.seek(0)
            while block := handle.read(1 << 20):
                # Before reading on to an LF that may never come (a final CR may be the
                # first half of a CRLF).
                if _lone_cr(block[:-1] if block.endswith(b"\r") else block):
                    return None
                block += handle.readline()  # whole lines only
                if _lone_cr(block) or _opens_multiline_field(block):
                    return None
        with _Utf8Text(self.path) as handle:
            self._names, header_lines = self._header(_records(handle))
        size = self.path.stat().st_size
        with self.path.open("rb") as handle:
            start = 0
            for _ in range(header_lines):  # the header and blank lines before it
                start += len(handle.readline())
            cuts = [start]
            for part in range(1, count):
                target = start + (size - start) * part // count
                if target <= cuts[-1]:
                    continue
                handle.seek(target)
                handle.readline()  # on to the next line boundary
                cuts.append(min(handle.tell(), size))
            cuts.append(size)
            segments = []
            line = header_lines + 1
            for begin, end in itertools.pairwise(cuts):
                if end <= begin:
                    continue
                segments.append(Segment(begin, end, line))
                handle.seek(begin)
                left = end - begin
                while left > 0:
                    block = handle.read(min(1 << 20, left))
                    if not block:
                        break
                    left -= len(block)
                    line += block.count(b"\n")
        return segments


class _Utf8Text:
    """The file as strict UTF-8 text lines (BOM skipped), optionally limited to a byte range;
    a decoding error becomes ``UnusableInputError``."""

    def __init__(self, path: Path, byte_range: tuple[int, int] | None = None) -> None:
        self.path = path
        self._binary = path.open("rb")
        self._range = byte_range

    def __enter__(self) -> _Utf8Text:
        return self

    def __exit__(self, *exc: object) -> None:
        self._binary.close()

    def __iter__(self) -> Iterator[str]:
        if self._range is not None:
            yield from self._range_lines(*self._range)
            return
        text = io.TextIOWrapper(self._binary, encoding="utf-8-sig", newline="", errors="strict")
        try:
            yield from text
        except UnicodeDecodeError:
            raise _not_utf8(self.path) from None

    def _range_lines(self, start: int, end: int) -> Iterator[str]:
        """Lines of a plain (LF-only) byte range, decoded a block at a time."""
        handle = self._binary
        handle.seek(start)
        position = start
        while position < end:
            block = handle.read(min(1 << 20, end - position))
            if not block:
                return
            position += len(block)
            if position < end and not block.endswith(b"\n"):
                tail = handle.readline()
                position += len(tail)
                block += tail
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError:
                raise _not_utf8(self.path) from None
            lines = text.split("\n")
            last = lines.pop()  # after the block's last LF: empty, or the file's last line
            for line in lines:
                yield line + "\n"
            if last:
                yield last
