"""The one row validator for transaction CSVs, shared by every warehouse loader.

It applies the stateless rules of the contract ("Input data"). Whether a transaction id
was already loaded, earlier in the file or in an earlier file, is decided by the warehouse
in the same transaction as the load (reason ``duplicate_transaction_id``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from common.config import MAX_PRICE_INTEGER_DIGITS, MAX_PRODUCT_CHARS, ValidationRules

CORE_COLUMNS = ("transaction_id", "product", "price", "quantity", "date")
MAX_TRANSACTION_ID_CHARS = 128  # a primary key; a 1 MB id would break the btree index
# A line's raw text is kept (for the rejects tables) up to this many characters, then how
# many more there were. No valid row comes near it, and a runaway quoted field of 40 MiB
# fits no warehouse row as it is (the local BigQuery stand-in reads rows of at most 16 MiB,
# real BigQuery 100 MB); the file and line number still lead to all of it.
MAX_RAW_TEXT_CHARS = 65_536


def kept_raw_text(raw: str) -> str:
    """``raw`` as the rejects tables keep it (see ``MAX_RAW_TEXT_CHARS``)."""
    if len(raw) <= MAX_RAW_TEXT_CHARS:
        return raw
    more = len(raw) - MAX_RAW_TEXT_CHARS
    return f"{raw[:MAX_RAW_TEXT_CHARS]}... [{more} more characters not kept]"


# Reason codes, stable: they are stored in the rejects tables and printed by `ingest`.
DUPLICATE = "duplicate_transaction_id"
MALFORMED = "malformed_row"
PRODUCT_PREFIX = "product_prefix"
PRODUCT_TOO_LONG = "product_too_long"
INVALID_PRICE = "invalid_price"
TOO_MANY_DECIMALS = "too_many_decimals"
PRICE_BELOW_MIN = "price_below_min"
INVALID_QUANTITY = "invalid_quantity"
QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"
INVALID_DATE = "invalid_date"
INVALID_TRANSACTION_ID = "invalid_transaction_id"

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_INTEGER = re.compile(r"\d+", re.ASCII)
# Characters a field of the fast path never has: whitespace (so nothing needs trimming),
# the CSV delimiter and quote, and the backslash (so the line is safe as COPY text).
_PLAIN_CHAR = r'[^\s,"\\]'
_CORE_PATTERNS = {
    "transaction_id": _PLAIN_CHAR + f"{{1,{MAX_TRANSACTION_ID_CHARS}}}",
    "quantity": "[0-9]{1,12}",  # longer texts (leading zeros) are left to ``check``
    "date": "[0-9]{4}-[0-9]{2}-[0-9]{2}",
}


_DATE_CACHE_SIZE = 100_000
# A canonical valid line's fields in CORE_COLUMNS order, as text.
LineTexts = tuple[str, str, str, str, str]


def missing(field: str) -> str:
    return f"missing_{field}"


class ValidRow(NamedTuple):
    transaction_id: str
    product: str
    price: Decimal
    quantity: int
    sale_date: date


class RowValidator:
    """Checks one row's fields (split, not yet trimmed) against the rules.

    ``header`` gives the column order; rows are lists in that order (hot path: no dicts).
    """

    def __init__(self, rules: ValidationRules, header: Sequence[str] = CORE_COLUMNS) -> None:
        self.rules = rules
        names = [name.strip().lower() for name in header]
        self.required = required_columns(rules)
        absent = [name for name in self.required if name.lower() not in names]
        if absent:
            raise ValueError(f"missing required column(s): {', '.join(absent)}")
        self._positions = [(name, names.index(name.lower())) for name in self.required]
        self._core = [names.index(name) for name in CORE_COLUMNS]
        #: Fields a row needs: up to the last required column (later ones are ignored).
        self.min_width = max(position for _, position in self._positions) + 1
        # "digits, optionally a point and at most max_decimals decimals": ``10.`` is 10.
        decimals = rf"(?:\.\d{{0,{rules.max_decimals}}})?"
        # Leading zeros do not count towards the digits a price may have.
        integer = rf"0*\d{{1,{MAX_PRICE_INTEGER_DIGITS}}}"
        self._price = re.compile(rf"{integer}{decimals}", re.ASCII)
        self._price_any_decimals = re.compile(rf"{integer}\.\d+", re.ASCII)
        self._quantity_digits = len(str(rules.max_quantity))
        self._prefix = rules.product_prefix
        self._min_price = rules.min_price
        self._max_quantity = rules.max_quantity
        self._groups: tuple[int, ...] = ()
        self._line = self._line_pattern(names)
        margin = max(float(rules.min_price), 1.0) * 1e-9
        self._min_low = float(rules.min_price) - margin
        self._min_high = float(rules.min_price) + margin
        self._dates: dict[str, bool] = {}  # date text -> valid (a file has few distinct days)

    def _line_pattern(self, names: Sequence[str]) -> re.Pattern[str] | None:
        """One regular expression for a whole canonical line, when the header is exactly the
        core columns (any order) and every required field is one of them.

        It accepts only lines whose fields are all present, untrimmed-clean and well-formed
        (so ``check`` would agree on every rule up to the price minimum), and captures the
        five fields in ``CORE_COLUMNS`` order. Anything else is left to ``check``.
        """
        prefix = self._prefix
        plain_prefix = re.fullmatch(rf"{_PLAIN_CHAR}+(?: +{_PLAIN_CHAR}+)*", prefix)
        if sorted(names) != sorted(CORE_COLUMNS) or not set(self.required) <= set(CORE_COLUMNS):
            return None
        if plain_prefix is None:
            return None
        # Canonical only: a point is followed by a decimal (``10.`` is left to ``check``).
        places = self.rules.max_decimals
        fraction = rf"(?:\.[0-9]{{1,{places}}})?" if places > 0 else ""
        patterns = {
            **_CORE_PATTERNS,
            "product": re.escape(prefix) + rf"{_PLAIN_CHAR}*(?: +{_PLAIN_CHAR}+)*",
            "price": rf"0*[0-9]{{1,{MAX_PRICE_INTEGER_DIGITS}}}{fraction}",
        }
        self._groups = tuple(names.index(name) + 1 for name in CORE_COLUMNS)
        return re.compile(",".join(f"({patterns[name]})" for name in names))

    def check_line(self, text: str) -> ValidRow | str | None:
        """``check`` for a whole unquoted line, fast; None when the line is not in the
        canonical form the fast path knows (then split it and call ``check``)."""
        result = self.check_line_text(text)
        if result is None or isinstance(result, str):
            return result
        transaction_id, product, price_text, quantity_text, date_text = result
        return ValidRow(
            transaction_id,
            product,
            Decimal(price_text),
            int(quantity_text),
            date.fromisoformat(date_text),
        )

    def check_line_text(self, text: str) -> LineTexts | str | None:
        """``check_line`` without building values: a valid line's five fields as the text
        they are, already canonical (so ``Decimal``, ``int`` and ``date.fromisoformat``
        of them are the checked values), the reason code, or None."""
        if self._line is None:
            return None
        match = self._line.fullmatch(text)
        if match is None:
            return None
        texts: LineTexts = match.group(*self._groups)  # type: ignore[assignment]
        if len(texts[1]) > MAX_PRODUCT_CHARS:
            return PRODUCT_TOO_LONG
        price_text = texts[2]
        # A float decides the minimum unless the price is within rounding distance of it.
        price = float(price_text)
        if price < self._min_low or (
            price < self._min_high and Decimal(price_text) < self._min_price
        ):
            return PRICE_BELOW_MIN
        if not 1 <= int(texts[3]) <= self._max_quantity:
            return QUANTITY_OUT_OF_RANGE
        date_text = texts[4]
        valid = self._dates.get(date_text)
        if valid is None:
            try:
                date.fromisoformat(date_text)
                valid = True
            except ValueError:
                valid = False
            if len(self._dates) < _DATE_CACHE_SIZE:
                self._dates[date_text] = valid
        if not valid:
            return INVALID_DATE
        return texts

    def check(self, row: Sequence[str]) -> ValidRow | str:
        """A ``ValidRow``, or the reason code the row is rejected for."""
        for name, position in self._positions:
            if not row[position].strip():
                return missing(name)
        tid_at, product_at, price_at, quantity_at, date_at = self._core
        transaction_id = row[tid_at].strip()
        if len(transaction_id) > MAX_TRANSACTION_ID_CHARS:
            return INVALID_TRANSACTION_ID
        product = row[product_at].strip()
        if not product.startswith(self._prefix):
            return PRODUCT_PREFIX
        if len(product) > MAX_PRODUCT_CHARS:
            return PRODUCT_TOO_LONG
        price_text = row[price_at].strip()
        if not self._price.fullmatch(price_text):
            if self._price_any_decimals.fullmatch(price_text):
                return TOO_MANY_DECIMALS
            return INVALID_PRICE
        price = Decimal(price_text)
        if price < self._min_price:
            return PRICE_BELOW_MIN
        quantity_text = row[quantity_at].strip()
        if not _INTEGER.fullmatch(quantity_text):
            return INVALID_QUANTITY
        significant = quantity_text.lstrip("0")
        if len(significant) > self._quantity_digits:  # too large, however many digits
            return QUANTITY_OUT_OF_RANGE
        quantity = int(significant or "0")
        if not 1 <= quantity <= self._max_quantity:
            return QUANTITY_OUT_OF_RANGE
        date_text = row[date_at].strip()
        if not _DATE.fullmatch(date_text):
            return INVALID_DATE
        try:
            sale_date = date.fromisoformat(date_text)
        except ValueError:
            return INVALID_DATE
        return ValidRow(transaction_id, product, price, quantity, sale_date)


def required_columns(rules: ValidationRules) -> tuple[str, ...]:
    """The columns a row needs: the contract's five, then the configuration's others, each
    once whatever its case (a configured ``Product`` is the ``product`` column)."""
    columns: dict[str, str] = {}
    for name in (*CORE_COLUMNS, *rules.required_fields):
        columns.setdefault(name.lower(), name)
    return tuple(columns.values())


@dataclass(frozen=True)
class HeaderColumns:
    """What a header's columns are to loading: ``names[i]`` is the (lower case) required
    column that position ``i`` holds, or ``""`` for a column loading ignores."""

    names: list[str]
    missing: list[str]
    ambiguous: list[str]


def header_columns(header: Sequence[str], rules: ValidationRules) -> HeaderColumns:
    """Find each required column in a header: names are trimmed, and matched exactly first,
    then regardless of case. So ``Product`` beside ``product`` is an extra column (ignored,
    as every extra one is), a lone ``Product`` is the product column, and only a column
    matched twice at the same step (``product,product`` or ``Product,PRODUCT``) is
    ambiguous."""
    trimmed = [name.strip() for name in header]
    folded = [name.lower() for name in trimmed]
    names = [""] * len(header)
    missing: list[str] = []
    ambiguous: list[str] = []
    for required in required_columns(rules):
        exact = [i for i, name in enumerate(trimmed) if name == required]
        matches = exact or [i for i, name in enumerate(folded) if name == required.lower()]
        if not matches:
            missing.append(required)
        elif len(matches) > 1:
            ambiguous.append(required)
        else:
            names[matches[0]] = required.lower()
    return HeaderColumns(names, missing, ambiguous)
