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

from common.config import ValidationRules

CORE_COLUMNS = ("transaction_id", "product", "price", "quantity", "date")
MAX_TRANSACTION_ID_CHARS = 128  # a primary key; a 1 MB id would break the btree index
MAX_PRICE_INTEGER_DIGITS = 15

# Reason codes, stable: they are stored in the rejects tables and printed by `ingest`.
DUPLICATE = "duplicate_transaction_id"
MALFORMED = "malformed_row"
PRODUCT_PREFIX = "product_prefix"
INVALID_PRICE = "invalid_price"
TOO_MANY_DECIMALS = "too_many_decimals"
PRICE_BELOW_MIN = "price_below_min"
INVALID_QUANTITY = "invalid_quantity"
QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"
INVALID_DATE = "invalid_date"
INVALID_TRANSACTION_ID = "invalid_transaction_id"

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_INTEGER = re.compile(r"\d+", re.ASCII)


def missing(field: str) -> str:
    return f"missing_{field}"


@dataclass(frozen=True, slots=True)
class ValidRow:
    transaction_id: str
    product: str
    price: Decimal
    quantity: int
    sale_date: date


class RowValidator:
    """Checks one row's fields (already split, not yet trimmed) against the rules."""

    def __init__(self, rules: ValidationRules) -> None:
        self.rules = rules
        self.required = tuple(dict.fromkeys((*CORE_COLUMNS, *rules.required_fields)))
        decimals = rf"(?:\.\d{{1,{rules.max_decimals}}})?" if rules.max_decimals > 0 else ""
        self._price = re.compile(rf"\d{{1,{MAX_PRICE_INTEGER_DIGITS}}}{decimals}", re.ASCII)
        self._price_any_decimals = re.compile(rf"\d{{1,{MAX_PRICE_INTEGER_DIGITS}}}\.\d+", re.ASCII)

    def check(self, fields: dict[str, str]) -> ValidRow | str:
        """A ``ValidRow``, or the reason code the row is rejected for."""
        values = {name: fields.get(name, "").strip() for name in self.required}
        for name in self.required:
            if not values[name]:
                return missing(name)
        transaction_id = values["transaction_id"]
        if len(transaction_id) > MAX_TRANSACTION_ID_CHARS:
            return INVALID_TRANSACTION_ID
        product = values["product"]
        if not product.startswith(self.rules.product_prefix):
            return PRODUCT_PREFIX
        price_text = values["price"]
        if not self._price.fullmatch(price_text):
            if self._price_any_decimals.fullmatch(price_text):
                return TOO_MANY_DECIMALS
            return INVALID_PRICE
        price = Decimal(price_text)
        if price < self.rules.min_price:
            return PRICE_BELOW_MIN
        quantity_text = values["quantity"]
        if not _INTEGER.fullmatch(quantity_text) or len(quantity_text) > 12:
            return INVALID_QUANTITY
        quantity = int(quantity_text)
        if not 1 <= quantity <= self.rules.max_quantity:
            return QUANTITY_OUT_OF_RANGE
        date_text = values["date"]
        if not _DATE.fullmatch(date_text):
            return INVALID_DATE
        try:
            sale_date = date.fromisoformat(date_text)
        except ValueError:
            return INVALID_DATE
        return ValidRow(transaction_id, product, price, quantity, sale_date)


def missing_columns(header: Sequence[str], rules: ValidationRules) -> list[str]:
    """Required columns absent from a header (names compared trimmed, case-insensitive)."""
    present = {name.strip().lower() for name in header}
    required = dict.fromkeys((*CORE_COLUMNS, *rules.required_fields))
    return [name for name in required if name.lower() not in present]
