"""The trends query on PostgreSQL's ``summary_sales`` mart (schema ``Settings.mart_schema``).

One fixed statement, prepared once per pooled connection; absent filters are NULL
parameters that the planner folds away. The product prefix is matched literally:
``LIKE`` wildcards and the escape character in it are escaped, so ``%`` and ``_`` are
ordinary characters (and the ``product text_pattern_ops`` index can still serve it).
Row order and columns are ``common.trends``'s, the same as BigQuery's.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from common.db import PgPool
from common.trends import ORDER_BY, SUMMARY_COLUMNS, TrendFilters

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_WHERE = """
WHERE product LIKE CAST(:pattern AS text) ESCAPE '!'
  AND (CAST(:sale_month AS date) IS NULL OR sale_month = CAST(:sale_month AS date))
  AND total_amount >= CAST(:min_amount AS numeric)
  AND (CAST(:max_quantity AS bigint) IS NULL OR total_quantity <= CAST(:max_quantity AS bigint))
  AND (CAST(:min_avg_price AS numeric) IS NULL OR avg_price >= CAST(:min_avg_price AS numeric))
  AND (CAST(:max_avg_price AS numeric) IS NULL OR avg_price <= CAST(:max_avg_price AS numeric))
"""


def like_prefix(prefix: str) -> str:
    """A ``LIKE ... ESCAPE '!'`` pattern matching ``prefix`` literally, then anything."""
    return re.sub(r"([!%_])", r"!\1", prefix) + "%"


def _table(schema: str) -> str:
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"mart schema must be a plain identifier, found {schema!r}")
    return f'"{schema}".summary_sales'


def _params(filters: TrendFilters) -> dict[str, Any]:
    return {
        "pattern": like_prefix(filters.product_prefix),
        "sale_month": filters.sale_month,
        "min_amount": filters.min_amount,
        "max_quantity": filters.max_quantity,
        "min_avg_price": filters.min_avg_price,
        "max_avg_price": filters.max_avg_price,
    }


class PgTrends:
    """The trends queries of one function instance over its pool."""

    def __init__(self, pool: PgPool, schema: str) -> None:
        table = _table(schema)
        self._pool = pool
        # sale_month as ISO text: parsing it here is much cheaper than the driver's strptime.
        columns = ", ".join(
            "CAST(sale_month AS text)" if name == "sale_month" else name for name in SUMMARY_COLUMNS
        )
        self._summary_sql = (
            f"SELECT {columns}\nFROM {table}{_WHERE}"
            f"ORDER BY {ORDER_BY}\n"
            "LIMIT CAST(:limit AS bigint) OFFSET CAST(:offset AS bigint)"
        )
        self._monthly_sql = (
            f"SELECT CAST(sale_month AS text), sum(total_amount) AS total_amount\n"
            f"FROM {table}{_WHERE}"
            "GROUP BY sale_month\nORDER BY sale_month"
        )

    def summary(self, filters: TrendFilters) -> list[dict[str, Any]]:
        """Rows as dicts of ``SUMMARY_COLUMNS`` (Decimal money, date months)."""
        rows = self._pool.run(
            self._summary_sql, **_params(filters), limit=filters.limit, offset=filters.offset
        )
        result = []
        for row in rows:
            values = dict(zip(SUMMARY_COLUMNS, row, strict=True))
            values["sale_month"] = date.fromisoformat(values["sale_month"])
            result.append(values)
        return result

    def monthly_totals(self, filters: TrendFilters) -> list[tuple[date, Decimal]]:
        """``(sale_month, sum of total_amount)`` over every matching row (no paging)."""
        rows = self._pool.run(self._monthly_sql, **_params(filters))
        return [(date.fromisoformat(row[0]), row[1]) for row in rows]
