"""``query_summary``: every filter, the order, pagination and types, on the real stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal

import pytest

from common import bigquery as bq
from common.config import Settings
from common.trends import TrendFilters, mart_bound
from pipeline.bq_emulator import EmulatorHandle
from tests.bigquery.conftest import settings_for
from tests.bigquery.marts import make_summary


@pytest.fixture(scope="module")
def mart(bq_emulator: EmulatorHandle) -> Iterator[Settings]:
    settings = settings_for(bq_emulator.endpoint)
    make_summary(settings)
    yield settings
    bq.reset_clients()


def query(settings: Settings, **filters: object) -> list[dict[str, object]]:
    return bq.query_summary(TrendFilters(**filters), user="tester", settings=settings.bigquery)  # type: ignore[arg-type]


def keys(rows: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(r["product"], str(r["sale_month"])[:7]) for r in rows]


def test_default_filters_keep_the_halal_prefix_case_sensitive_in_contract_order(
    mart: Settings,
) -> None:
    assert keys(query(mart)) == [
        ("Halal Laptop", "2023-10"),
        ("Halal Keyboard", "2023-10"),  # 249.95 tie: product ascending
        ("Halal Laptop", "2023-11"),
        ("Halal Mouse", "2023-10"),  # 249.90 tie on product too: month ascending
        ("Halal Mouse", "2023-11"),
        ("HalalX Rice", "2023-12"),
        ("Halal%Dates", "2023-12"),
        ("Halal_Tea", "2023-10"),
    ]


def test_rows_have_contract_types_and_exact_decimals(mart: Settings) -> None:
    rows = {(r["product"], r["sale_month"]): r for r in query(mart)}
    laptop = rows[("Halal Laptop", date(2023, 10, 1))]
    assert laptop == {
        "product": "Halal Laptop",
        "sale_month": date(2023, 10, 1),
        "total_amount": Decimal("1999.98"),
        "total_quantity": 2,
        "avg_price": Decimal("999.99"),
        "transaction_count": 1,
    }
    for row in rows.values():
        assert type(row["sale_month"]) is date
        assert isinstance(row["total_amount"], Decimal)
        assert isinstance(row["avg_price"], Decimal)
        assert type(row["total_quantity"]) is int
        assert type(row["transaction_count"]) is int
    rice = rows[("HalalX Rice", date(2023, 12, 1))]
    assert rice["total_amount"] == Decimal("55.555555555")
    assert rice["avg_price"] == Decimal("7.936507936")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("Halal_", {"Halal_Tea"}),  # "_" is literal, not LIKE's any-character
        ("Halal%", {"Halal%Dates"}),  # "%" is literal
        ("Halal ", {"Halal Laptop", "Halal Keyboard", "Halal Mouse"}),
        ("HalalX", {"HalalX Rice"}),
        ("halal", {"halal lower"}),
        ("Nothing", set()),
    ],
)
def test_product_prefix_is_a_literal_prefix(
    mart: Settings, prefix: str, expected: set[str]
) -> None:
    assert {r["product"] for r in query(mart, product_prefix=prefix)} == expected


def test_sale_month_keeps_that_month(mart: Settings) -> None:
    assert sorted(keys(query(mart, sale_month=date(2023, 10, 1)))) == [
        ("Halal Keyboard", "2023-10"),
        ("Halal Laptop", "2023-10"),
        ("Halal Mouse", "2023-10"),
        ("Halal_Tea", "2023-10"),
    ]
    assert query(mart, sale_month=date(2024, 1, 1)) == []


def test_min_amount_is_inclusive(mart: Settings) -> None:
    assert keys(query(mart, min_amount=Decimal("249.95"))) == [
        ("Halal Laptop", "2023-10"),
        ("Halal Keyboard", "2023-10"),
        ("Halal Laptop", "2023-11"),
    ]


def test_money_filters_compare_the_shown_value(mart: Settings) -> None:
    """HalalX Rice's total is 55.555555555, shown 55.56: a client filtering on what it
    was shown gets the row, and every row it gets passes the filter as shown."""
    rice = ("HalalX Rice", "2023-12")
    for kept in ("55.56", "55.5555555551", "55.555", "0"):
        assert rice in keys(query(mart, min_amount=Decimal(kept))), kept
    assert rice not in keys(query(mart, min_amount=Decimal("55.561")))
    assert query(mart, min_amount=Decimal("1e40")) == []


def test_max_quantity_is_inclusive(mart: Settings) -> None:
    assert sorted(keys(query(mart, max_quantity=5))) == [
        ("Halal Keyboard", "2023-10"),
        ("Halal Laptop", "2023-10"),
        ("Halal Laptop", "2023-11"),
        ("Halal_Tea", "2023-10"),
    ]
    assert query(mart, max_quantity=0) == []
    assert len(query(mart, max_quantity=2**70)) == 8


def test_avg_price_bounds_are_inclusive(mart: Settings) -> None:
    rows = query(mart, min_avg_price=Decimal("24.99"), max_avg_price=Decimal("249.95"))
    assert sorted(keys(rows)) == [
        ("Halal Keyboard", "2023-10"),
        ("Halal Laptop", "2023-11"),
        ("Halal Mouse", "2023-10"),
        ("Halal Mouse", "2023-11"),
    ]
    # HalalX Rice's avg_price 7.936507936 is shown 7.94: the bounds compare that.
    rice = ("HalalX Rice", "2023-12")
    assert rice in keys(query(mart, min_avg_price=Decimal("7.94"), max_avg_price=Decimal("7.94")))
    assert rice not in keys(query(mart, max_avg_price=Decimal("7.9365079369")))
    assert rice not in keys(query(mart, min_avg_price=Decimal("7.941")))
    assert len(query(mart, max_avg_price=Decimal("1e40"))) == 8


def test_filters_combine(mart: Settings) -> None:
    rows = query(
        mart,
        product_prefix="Halal M",
        sale_month=date(2023, 11, 1),
        min_amount=Decimal("100"),
        max_quantity=10,
        min_avg_price=Decimal("20"),
        max_avg_price=Decimal("30"),
    )
    assert keys(rows) == [("Halal Mouse", "2023-11")]
    assert rows[0]["transaction_count"] == 2


def test_limit_and_offset_page_through_the_same_order(mart: Settings) -> None:
    everything = query(mart)
    pages = [query(mart, limit=3, offset=offset) for offset in (0, 3, 6, 9)]
    assert [len(p) for p in pages] == [3, 3, 2, 0]
    assert [row for page in pages for row in page] == everything
    assert query(mart, limit=1, offset=2**70) == []


def test_a_month_typed_datetime_still_comes_back_as_a_date(
    bq_settings: Settings,
) -> None:
    """The stand-in types ``DATE_TRUNC(date, MONTH)`` DATETIME; callers still get dates."""
    make_summary(bq_settings, month_type="DATETIME")
    rows = bq.query_summary(
        TrendFilters(sale_month=date(2023, 10, 1)), settings=bq_settings.bigquery
    )
    assert len(rows) == 4
    assert all(type(r["sale_month"]) is date for r in rows)


def test_numeric_arithmetic_on_table_columns_is_exact(bq_settings: Settings) -> None:
    """dbt's money columns rely on exact NUMERIC sums and averages of stored columns.

    (On the stand-in an AVG over a literal array is FLOAT64 and ``CAST(x AS NUMERIC)``
    keeps 3 decimals, even as ``NUMERIC(38, 9)`` around a division; plain column
    arithmetic is exact.)
    """
    s = bq_settings.bigquery
    bq.ensure_datasets(s)
    bq.create_table(
        s.mart_dataset,
        "n",
        (("x", "NUMERIC", "REQUIRED"), ("q", "INT64", "REQUIRED")),
        settings=s,
    )
    table = bq.table_ref(s.mart_dataset, "n", s)
    bq.run_query(
        f"INSERT INTO {table} VALUES (NUMERIC '0.1', 1), (NUMERIC '0.2', 2), (NUMERIC '24.99', 3)",
        function="test",
        settings=s,
    )
    [row] = bq.run_query(
        "SELECT SUM(x) AS total, AVG(x) AS mean, SUM(x * q) AS amount, "
        "SUM(x * q) / SUM(q) AS weighted "
        f"FROM {table}",
        function="test",
        settings=s,
    )
    assert row == {
        "total": Decimal("25.29"),
        "mean": Decimal("8.43"),
        "amount": Decimal("75.47"),
        "weighted": Decimal("12.578333333"),
    }
    assert all(isinstance(v, Decimal) for v in row.values())


def test_summary_row_normalizes_backend_types() -> None:
    row = bq.summary_row(
        {
            "product": "Halal A",
            "sale_month": datetime(2023, 10, 1),
            "total_amount": 10.1,
            "total_quantity": 3.0,
            "avg_price": "3.3666",
            "transaction_count": 2,
        }
    )
    assert row["sale_month"] == date(2023, 10, 1) and type(row["sale_month"]) is date
    assert row["total_amount"] == Decimal("10.1")
    assert row["avg_price"] == Decimal("3.3666")
    assert row["total_quantity"] == 3


@pytest.mark.parametrize(
    "min_amount", ["12345678901234567890", "99999999999999999999999999999.99", "1e28"]
)
def test_large_money_bounds_reach_bigquery_as_postgresql_gets_them(min_amount: str) -> None:
    """Totals can pass 10^19 (150 rows of a 15-digit price x 100): such bounds were read
    as beyond NUMERIC (28-digit rounding failed) and the answer was [] without a query."""
    built = bq.summary_query(TrendFilters(min_amount=Decimal(min_amount)))
    assert built is not None
    _, params = built
    assert params["min_amount"] == mart_bound(Decimal(min_amount), lower=True)
    # A row shown as 1e29 may be in NUMERIC (its largest value is shown so); 1e30 cannot.
    assert bq.summary_query(TrendFilters(min_amount=Decimal("1e29"))) is not None
    assert bq.summary_query(TrendFilters(min_amount=Decimal("1e30"))) is None  # above NUMERIC
