"""Streaming reader of transaction CSVs: one ``CheckedRow`` per record, memory flat.

Handles quoted fields (also spanning lines), CRLF/CR/LF line ends, a UTF-8 BOM, extra
columns, and keeps each record's raw text and first line number for the rejects table.
A file that cannot be used at all (not UTF-8, binary, empty, missing columns) raises
``UnusableInputError``, possibly mid-file: loaders run in one transaction, so nothing is kept.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import IO

from common import validation
from common.config import ValidationRules
from common.masking import mask_with, masker

SNIFF_BYTES = 8192
csv.field_size_limit(64 * 1024 * 1024)


class UnusableInputError(Exception):
    """The whole file is unusable; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class CheckedRow:
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
    if b"\x00" in head:
        raise UnusableInputError(f"{path}: binary data, not a CSV text file")


class _LineTap:
    """Feeds lines to ``csv.reader`` while remembering them as the record's raw text."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.pending: list[str] = []
        self.lines_read = 0
        self.had_nul = False
        self.chars_read = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._handle)
        self.lines_read += 1
        self.chars_read += len(line)
        self.pending.append(line)
        if "\x00" in line:
            # csv refuses NUL; the row is rejected as malformed but keeps its raw text.
            self.had_nul = True
            line = line.replace("\x00", "")
        return line

    def take(self) -> tuple[int, str, bool]:
        first_line = self.lines_read - len(self.pending) + 1
        raw = "".join(self.pending).rstrip("\r\n").replace("\x00", "\\x00")
        had_nul = self.had_nul
        self.pending.clear()
        self.had_nul = False
        return first_line, raw, had_nul


class TransactionReader:
    """Iterate ``CheckedRow`` over a CSV file; ``bytes_read`` tracks progress."""

    def __init__(self, path: Path, rules: ValidationRules, pii_key: str) -> None:
        self.path = path
        self.rules = rules
        self.validator = validation.RowValidator(rules)
        self._mask_proto = masker(pii_key)
        self._tap: _LineTap | None = None
        _check_readable(path)

    @property
    def chars_read(self) -> int:
        """Characters consumed so far (for progress bars)."""
        return self._tap.chars_read if self._tap else 0

    def __iter__(self) -> Iterator[CheckedRow]:
        try:
            with self.path.open("r", encoding="utf-8-sig", newline="", errors="strict") as handle:
                yield from self._rows(handle)
        except UnicodeDecodeError as exc:
            raise UnusableInputError(
                f"{self.path}: not UTF-8 text (invalid byte at offset {exc.start} of a block)"
            ) from None

    def _rows(self, handle: IO[str]) -> Iterator[CheckedRow]:
        tap = self._tap = _LineTap(handle)
        reader = csv.reader(tap)
        try:
            header = next(reader)
        except StopIteration:
            raise UnusableInputError(f"{self.path}: empty file (no CSV header)") from None
        except csv.Error:
            raise UnusableInputError(f"{self.path}: the header is not valid CSV") from None
        tap.take()
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
        mask_proto = self._mask_proto
        check = self.validator.check
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error:
                line, raw, _ = tap.take()
                yield self._reject(line, raw, validation.MALFORMED)
                continue
            line, raw, had_nul = tap.take()
            if not fields:
                continue  # a blank line is not a record
            if had_nul or len(fields) != width:
                yield self._reject(line, raw, validation.MALFORMED)
                continue
            result = check(dict(zip(names, fields, strict=True)))
            if isinstance(result, str):
                yield self._reject(line, raw, result)
                continue
            yield CheckedRow(
                line_number=line,
                raw_text=raw,
                transaction_id=result.transaction_id,
                masked_transaction_id=mask_with(mask_proto, result.transaction_id),
                product=result.product,
                price=result.price,
                quantity=result.quantity,
                sale_date=result.sale_date,
                reason=None,
            )

    @staticmethod
    def _reject(line: int, raw: str, reason: str) -> CheckedRow:
        return CheckedRow(line, raw, "", "", "", None, None, None, reason)
