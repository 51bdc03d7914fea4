"""The trends query, warehouse-neutral: its filters and its fixed order.

``TrendFilters`` is what trends_bq (``common.bigquery.query_summary``) and trends_pg both
take, already validated against the contract's parameter rules by the HTTP layer
(``common.params``, whose 422 names each broken rule); it checks the same rules again, so
no other caller can build filters the contract refuses.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import Literal

DEFAULT_PRODUCT_PREFIX = "Halal"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_PREFIX_CHARS = 64
# A prefix's characters: letters (L*), combining marks (M*: vowel signs of Indic and Arabic
# scripts), decimal digits, spaces and hyphens.
_PREFIX_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd"})


def is_prefix_char(char: str) -> bool:
    """Whether ``char`` may be part of a ``product_prefix`` (the API's, and the loading
    rule's: rows loaded under a prefix the API cannot name could never be asked for)."""
    return char in " -" or unicodedata.category(char) in _PREFIX_CATEGORIES


#: Money in responses: rounded to cents, half away from zero.
CENT = Decimal("0.01")
_HALF_CENT = Decimal("0.005")
#: Mart values carry at most 9 decimals (NUMERIC's scale, on both warehouses).
MART_SCALE = Decimal("1e-9")
#: Above every mart value: BigQuery's NUMERIC ends below 10^29, and a PostgreSQL total past
#: it would take some 10^15 rows of the largest price and quantity in one product-month.
#: Larger bounds are capped.
BOUND_CAP = Decimal(10) ** 40
#: The warehouses' largest integer (BIGINT, INT64): larger quantity/offset bounds are capped.
INT64_MAX = 2**63 - 1
#: Room for any mart value or capped bound with its 9 decimals. Rounding money in the
#: default context (28 digits) fails from 10^26 on: 47 rows of the largest price and a
#: configured quantity of 2^31-1 made trends_bq and the dashboard answer 500.
MONEY_CONTEXT = Context(prec=60)

#: Result columns, in order, of both warehouses' ``summary_sales``.
SUMMARY_COLUMNS = (
    "product",
    "sale_month",
    "total_amount",
    "total_quantity",
    "avg_price",
    "transaction_count",
)
#: The contract orders by total_amount descending, then product; sale_month last makes
#: pages deterministic when one product has equal totals in two months. Valid SQL on both.
ORDER_BY = "total_amount DESC, product ASC, sale_month ASC"


@dataclass(frozen=True, slots=True)
class TrendFilters:
    """Filters of ``GET /sales/trends`` and ``/sales/pg-trends``; None means "no filter".

    - ``product_prefix``: literal prefix of ``product`` (no wildcards, case-sensitive);
    - ``sale_month``: the first day of the month to keep;
    - ``min_amount``: keep ``total_amount >= min_amount`` (0 by default: never None);
    - ``max_quantity``: keep ``total_quantity <= max_quantity``;
    - ``min_avg_price`` / ``max_avg_price``: bounds on ``avg_price`` (inclusive);
    - ``limit`` (1..1000) and ``offset`` (>= 0): the page.
    """

    product_prefix: str = DEFAULT_PRODUCT_PREFIX
    sale_month: date | None = None
    min_amount: Decimal = Decimal(0)
    max_quantity: int | None = None
    min_avg_price: Decimal | None = None
    max_avg_price: Decimal | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def __post_init__(self) -> None:
        if not self.product_prefix or len(self.product_prefix) > MAX_PREFIX_CHARS:
            raise ValueError(f"product_prefix must be 1-{MAX_PREFIX_CHARS} characters")
        if self.sale_month is not None and self.sale_month.day != 1:
            raise ValueError("sale_month must be the first day of a month")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1-{MAX_LIMIT}")
        if self.offset < 0:
            raise ValueError("offset must be >= 0")
        for name in MONEY_BOUNDS:
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, Decimal) or not value.is_finite() or value < 0
            ):
                raise ValueError(f"{name} must be a finite Decimal >= 0")
        if self.max_quantity is not None and self.max_quantity < 0:
            raise ValueError("max_quantity must be >= 0")
        for low_name, high_name in RANGE_PAIRS:
            low, high = getattr(self, low_name), getattr(self, high_name)
            if low is not None and high is not None and low > high:
                raise ValueError(f"{low_name} must be <= {high_name}")


# The query parameters of both trends endpoints (and the dashboard's form), in order.
PARAMETERS = tuple(field.name for field in fields(TrendFilters))
#: The money bounds: the parameters typed Decimal.
MONEY_BOUNDS = tuple(field.name for field in fields(TrendFilters) if "Decimal" in str(field.type))
_FIELD_TYPES = {field.name: str(field.type) for field in fields(TrendFilters)}
ValueKind = Literal["date", "money", "count"]
_KINDS: tuple[tuple[str, ValueKind], ...] = (
    ("Decimal", "money"),
    ("int", "count"),
    ("date", "date"),
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A filter parameter as the comparison of one mart column with its value."""

    parameter: str
    column: str
    operator: Literal["=", ">=", "<="]

    @property
    def kind(self) -> ValueKind:
        """What the value is (from ``TrendFilters``' field type): each warehouse's SQL type."""
        annotation = _FIELD_TYPES[self.parameter]
        for prefix, kind in _KINDS:
            if annotation.startswith(prefix):
                return kind
        raise TypeError(f"{self.parameter}: no comparison for a {annotation} value")

    def value(self, filters: TrendFilters) -> date | Decimal | int | None:
        """The value to compare the mart's column with, None for no filter: a money bound
        on the value shown, as a bound on the exact one (``mart_bound``, capped at
        ``BOUND_CAP``); a count capped at ``INT64_MAX`` (no mart value is above it)."""
        value: date | Decimal | int | None = getattr(filters, self.parameter)
        if isinstance(value, Decimal):
            return mart_bound(value, lower=self.operator == ">=")
        if isinstance(value, int):
            return min(value, INT64_MAX)
        return value


#: Every filter but the product prefix (a literal prefix match, each warehouse's own), as
#: both warehouses' queries apply them. A new filter is a ``TrendFilters`` field, a request
#: schema field (``common.params``), a line here and an input of the dashboard's form
#: (``FORM_FIELDS``, ``common.dashboard``): README, "Developing".
COMPARISONS = (
    Comparison("sale_month", "sale_month", "="),
    Comparison("min_amount", "total_amount", ">="),
    Comparison("max_quantity", "total_quantity", "<="),
    Comparison("min_avg_price", "avg_price", ">="),
    Comparison("max_avg_price", "avg_price", "<="),
)
#: Parameters that bound one column from both sides: the lower may not exceed the upper
#: (a 422), in the request schema, here, and in the tests' fuzzing hooks.
RANGE_PAIRS = tuple(
    (low.parameter, high.parameter)
    for low in COMPARISONS
    for high in COMPARISONS
    if low.column == high.column and (low.operator, high.operator) == (">=", "<=")
)


def shown_value_bound(value: Decimal, *, lower: bool) -> Decimal:
    """The bound on a mart's exact value that keeps the rows whose value *as responses show
    it* (rounded to cents, half away from zero) passes ``value``.

    So a client filtering on a number it was shown gets that row back, and every row it gets
    passes the filter as shown: an ``avg_price`` of 10.025 is shown 10.03, and is kept by
    ``min_avg_price=10.03`` and dropped by ``max_avg_price=10.025``. Shown values (never
    negative) are whole cents, hence ``shown >= v`` exactly when
    ``exact >= ceil_to_cent(v) - 0.005``, and ``shown <= v`` exactly when
    ``exact < floor_to_cent(v) + 0.005``, i.e. ``<=`` that less one unit of the ninth decimal.
    """
    if value >= BOUND_CAP:  # beyond every mart value: the comparison's answer is the same
        return value
    context = MONEY_CONTEXT
    if lower:
        return context.subtract(
            value.quantize(CENT, rounding=ROUND_CEILING, context=context), _HALF_CENT
        )
    return context.subtract(
        context.add(value.quantize(CENT, rounding=ROUND_FLOOR, context=context), _HALF_CENT),
        MART_SCALE,
    )


def mart_bound(value: Decimal, *, lower: bool) -> Decimal:
    """``shown_value_bound`` as a bound with the marts' 9 decimals (a lower bound rounds up,
    an upper one down: the same rows match), capped at ``BOUND_CAP``."""
    value = min(shown_value_bound(value, lower=lower), BOUND_CAP)
    return value.quantize(
        MART_SCALE, rounding=ROUND_CEILING if lower else ROUND_FLOOR, context=MONEY_CONTEXT
    )
