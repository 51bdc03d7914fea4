"""The trends query on PostgreSQL's ``summary_sales`` mart (schema ``Settings.mart_schema``).

One fixed statement, planned for each execution's values (psycopg2 binds them
client-side); absent filters are NULL parameters that the planner folds away. The product
prefix is matched literally: ``LIKE`` wildcards and the escape character in it are escaped,
so ``%`` and ``_`` are ordinary characters (and the ``product text_pattern_ops`` index can
still serve it).
Row order and columns are ``common.trends``'s, the same as BigQuery's.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from common.config import SCHEMA_NAME
from common.db import PgPool
from common.trends import (
    COMPARISONS,
    INT64_MAX,
    ORDER_BY,
    SUMMARY_COLUMNS,
    Comparison,
    TrendFilters,
    ValueKind,
)

_SQL_TYPES: dict[ValueKind, str] = {"date": "date", "money": "numeric", "count": "bigint"}


def _condition(comparison: Comparison) -> str:
    """One filter as a bound parameter; NULL (no filter) folds its condition away."""
    value = f"CAST(:{comparison.parameter} AS {_SQL_TYPES[comparison.kind]})"
    return f"({value} IS NULL OR {comparison.column} {comparison.operator} {value})"


_WHERE = "\nWHERE product LIKE CAST(:pattern AS text) ESCAPE '!'\n" + "".join(
    f"  AND {_condition(comparison)}\n" for comparison in COMPARISONS
)


def like_prefix(prefix: str) -> str:
    """A ``LIKE ... ESCAPE '!'`` pattern matching ``prefix`` literally, then anything."""
    return re.sub(r"([!%_])", r"!\1", prefix) + "%"


def _qualified(order_by: str, alias: str) -> str:
    """``ORDER_BY`` with each column qualified by ``alias``."""
    return ", ".join(f"{alias}.{term.strip()}" for term in order_by.split(","))


def _table(schema: str) -> str:
    if not SCHEMA_NAME.fullmatch(schema):  # settings check it; SQL is built from it here
        raise ValueError(f"mart schema must be a lower-case identifier, found {schema!r}")
    return f'"{schema}".summary_sales'


def _params(filters: TrendFilters) -> dict[str, Any]:
    return {
        "pattern": like_prefix(filters.product_prefix),
        **{comparison.parameter: comparison.value(filters) for comparison in COMPARISONS},
    }


def _page_params(filters: TrendFilters) -> dict[str, Any]:
    return {**_params(filters), "limit": filters.limit, "offset": min(filters.offset, INT64_MAX)}


def summary_json_statement(schema: str, filters: TrendFilters) -> tuple[str, dict[str, Any]]:
    """The statement ``PgTrends.summary_json`` runs for ``filters``, and its parameters
    (the benchmark runs it under pgbench: the database floor of trends_pg)."""
    return _Statements(schema).summary_json, _page_params(filters)


class _Statements:
    """The trends statements over one schema's ``summary_sales``."""

    def __init__(self, schema: str) -> None:
        self.table = table = _table(schema)
        # sale_month as ISO text: parsing it here is much cheaper than the driver's strptime.
        columns = ", ".join(
            "CAST(sale_month AS text)" if name == "sale_month" else name for name in SUMMARY_COLUMNS
        )
        self.summary = (
            f"SELECT {columns}\nFROM {table}{_WHERE}"  # nosec B608 - identifiers from settings/constants; values are bound parameters
            f"ORDER BY {ORDER_BY}\n"
            "LIMIT CAST(:limit AS bigint) OFFSET CAST(:offset AS bigint)"
        )
        # The API's body built by PostgreSQL, as PostgREST does: one text value to decode
        # instead of six per row, no Decimal rounding or JSON encoding here. Same keys, order,
        # rounding (half away from zero) and month text as ``common.api.summary_body`` (the
        # page's sale_month is ISO text); numbers keep their exact decimals (``249.90``).
        # Spelled out rather than ``row_to_json``: the same bytes, ~100 µs less per query.
        # No column can be NULL (the grain is tested not null; the rest aggregate non-null
        # staged values over groups of at least one row), so no element can vanish.
        element = (
            """'{"product":' || CAST(to_json(page.product) AS text)"""
            """ || ',"sale_month":"' || substr(page.sale_month, 1, 7) || '-01"'"""
            """ || ',"total_amount":' || CAST(round(page.total_amount, 2) AS text)"""
            """ || ',"total_quantity":' || CAST(page.total_quantity AS text)"""
            """ || ',"avg_price":' || CAST(round(page.avg_price, 2) AS text)"""
            """ || ',"transaction_count":' || CAST(page.transaction_count AS text) || '}'"""
        )
        self.summary_json = (
            f"SELECT count(*), coalesce('[' || string_agg({element}, ','"  # nosec B608 - composed of the statement above and constants; values are bound parameters
            f" ORDER BY {_qualified(ORDER_BY, 'page')}) || ']', '[]')\n"
            f"FROM ({self.summary}) AS page"
        )
        self.monthly = (
            f"SELECT CAST(sale_month AS text), sum(total_amount) AS total_amount, count(*)\n"  # nosec B608 - identifiers from settings/constants; values are bound parameters
            f"FROM {table}{_WHERE}"
            "GROUP BY sale_month\nORDER BY sale_month"
        )


class PgTrends:
    """The trends queries of one function instance over its pool."""

    def __init__(self, pool: PgPool, schema: str) -> None:
        self._pool = pool
        self._sql = _Statements(schema)

    def summary_json(self, filters: TrendFilters) -> tuple[int, bytes]:
        """The page's rows as the contract's JSON array, and how many there are."""
        ((count, body),) = self._pool.run(self._sql.summary_json, **_page_params(filters))
        return int(count), str(body).encode()

    def page_and_monthly_totals(
        self, filters: TrendFilters
    ) -> tuple[list[dict[str, Any]], list[tuple[date, Decimal]], int]:
        """The page's rows as dicts of ``SUMMARY_COLUMNS`` (Decimal money, date months);
        ``(sale_month, sum of total_amount)`` over every matching row
        (no paging); and how many rows match (what the pages add up to). All read from one
        snapshot: the dashboard never shows one dbt build's rows beside the next one's
        totals (two statements did, while a build swapped the mart between them)."""
        page, monthly = self._pool.run_in_one_snapshot(
            (self._sql.summary, _page_params(filters)),
            (self._sql.monthly, _params(filters)),
            tables=(self._sql.table,),
        )
        return _summary_rows(page), *_monthly(monthly)


def _summary_rows(rows: list[list[Any]]) -> list[dict[str, Any]]:
    result = []
    for row in rows:
        values = dict(zip(SUMMARY_COLUMNS, row, strict=True))
        values["sale_month"] = date.fromisoformat(values["sale_month"])
        result.append(values)
    return result


def _monthly(rows: list[list[Any]]) -> tuple[list[tuple[date, Decimal]], int]:
    return [(date.fromisoformat(row[0]), row[1]) for row in rows], sum(int(r[2]) for r in rows)
