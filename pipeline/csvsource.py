"""Streaming reader of transaction CSVs: one ``CheckedRow`` per record, memory flat.

Handles quoted fields (also spanning lines), CRLF/CR/LF line ends, a UTF-8 BOM, extra
columns, and keeps each record's raw text and first line number for the rejects table.
A file that cannot be used at all (not UTF-8, binary, empty, missing columns) raises
``UnusableInputError``, possibly mid-file: loaders run in one transaction, so nothing is kept.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import IO, NamedTuple

from common import validation
from common.config import ValidationRules
from common.masking import Masker

SNIFF_BYTES = 8192
# A text CSV may hold a stray NUL in a row (rejected as malformed), but a head full of
# control bytes, or a NUL in the header, means the file is not text at all.
BINARY_SHARE = 0.05
_BINARY_BYTES = frozenset(set(range(32)) - {9, 10, 13})
csv.field_size_limit(64 * 1024 * 1024)


class UnusableInputError(Exception):
    """The whole file is unusable; the message is one line for the user."""


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise UnusableInputError(f"{path}: no such file")
    if not path.is_file():
        raise UnusableInputError(f"{path}: not a regular file")
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise UnusableInputError(f"{path}: empty file (no CSV header)")
    first_line = head.split(b"\n", 1)[0]
    controls = sum(1 for byte in head if byte in _BINARY_BYTES)
    if b"\x00" in first_line or controls > len(head) * BINARY_SHARE:
        raise UnusableInputError(f"{path}: binary data, not a CSV text file")


def _records(handle: IO[str]) -> Iterator[tuple[int, str, list[str] | None]]:
    """``(first line number, raw text, fields)`` per record; fields None when malformed.

    Most lines hold a whole unquoted record and are split directly (the hot path); a line
    with a quote is joined with the following lines until its quotes balance, then parsed
    by ``csv``, so quoted commas, quotes and line breaks inside fields all work.
    """
    line_number = 0
    lines = iter(handle)
    for line in lines:
        line_number += 1
        first = line_number
        if '"' not in line and "\x00" not in line:
            text = line.rstrip("\r\n")
            yield first, text, text.split(",") if text else []
            continue
        parts = [line]
        quotes = line.count('"')
        while quotes % 2:
            following = next(lines, None)
            if following is None:
                break
            line_number += 1
            parts.append(following)
            quotes += following.count('"')
        text = "".join(parts)
        raw = text.rstrip("\r\n").replace("\x00", "\\x00")
        if quotes % 2 or "\x00" in text:
            yield first, raw, None  # an unterminated quote, or NUL bytes
            continue
        try:
            parsed = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error:
            yield first, raw, None
            continue
        yield first, raw, parsed[0] if len(parsed) == 1 else None


class TransactionReader:
    """Iterate ``CheckedRow`` over a CSV file; ``chars_read`` tracks progress."""

    def __init__(self, path: Path, rules: ValidationRules, pii_key: str) -> None:
        self.path = path
        self.rules = rules
        self._mask = Masker(pii_key)
        self.chars_read = 0
        _check_readable(path)

    def __iter__(self) -> Iterator[CheckedRow]:
        try:
            with self.path.open("r", encoding="utf-8-sig", newline="", errors="strict") as handle:
                yield from self._rows(handle)
        except UnicodeDecodeError as exc:
            raise UnusableInputError(
                f"{self.path}: not UTF-8 text (invalid byte at offset {exc.start} of a block)"
            ) from None

    def _rows(self, handle: IO[str]) -> Iterator[CheckedRow]:
        records = _records(handle)
        header: list[str] | None = None
        for _, _, fields in records:
            if fields is None:
                raise UnusableInputError(f"{self.path}: the header is not valid CSV")
            if fields:
                header = fields
                break
        if header is None:
            raise UnusableInputError(f"{self.path}: empty file (no CSV header)")
        names = [name.strip().lower() for name in header]
        absent = validation.missing_columns(names, self.rules)
        if absent:
            found = ", ".join(n for n in names if n)[:200] or "nothing"
            raise UnusableInputError(
                f"{self.path}: missing required column(s) {', '.join(absent)} (found: {found})"
            )
        if len(set(names)) != len(names):
            raise UnusableInputError(f"{self.path}: the header names a column twice")
        width = len(names)
        check = validation.RowValidator(self.rules, names).check
        mask = self._mask
        for line, raw, fields in records:
            self.chars_read += len(raw) + 1
            if fields is None or len(fields) != width:
                if fields == []:
                    continue  # a blank line is not a record
                yield CheckedRow(line, raw, "", "", "", None, None, None, validation.MALFORMED)
                continue
            result = check(fields)
            if isinstance(result, str):
                yield CheckedRow(line, raw, "", "", "", None, None, None, result)
                continue
            tid, product, price, quantity, sale_date = result
            yield CheckedRow(line, raw, tid, mask(tid), product, price, quantity, sale_date, None)
