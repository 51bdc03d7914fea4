"""A ``summary_sales`` mart on the BigQuery stand-in, written directly (no dbt): rows that
exercise every filter, the order and the literal prefix."""

from __future__ import annotations

from common import bigquery as bq
from common.config import Settings

SUMMARY_COLUMNS: tuple[bq.Column, ...] = (
    ("product", "STRING", "REQUIRED"),
    ("sale_month", "DATE", "REQUIRED"),
    ("total_amount", "NUMERIC", "REQUIRED"),
    ("total_quantity", "INT64", "REQUIRED"),
    ("avg_price", "NUMERIC", "REQUIRED"),
    ("transaction_count", "INT64", "REQUIRED"),
)
# product, month, total_amount, total_quantity, avg_price, transaction_count
ROWS = [
    ("Halal Laptop", "2023-10-01", "1999.98", 2, "999.99", 1),
    ("Halal Keyboard", "2023-10-01", "249.95", 5, "49.99", 1),
    ("Halal Mouse", "2023-10-01", "249.90", 10, "24.99", 1),
    ("Halal Laptop", "2023-11-01", "249.95", 1, "249.95", 1),
    ("Halal Mouse", "2023-11-01", "249.90", 10, "24.99", 2),
    ("Halal_Tea", "2023-10-01", "0.30", 3, "0.10", 3),
    ("Halal%Dates", "2023-12-01", "10.00", 100, "0.10", 1),
    ("HalalX Rice", "2023-12-01", "55.555555555", 7, "7.936507936", 7),
    ("halal lower", "2023-10-01", "5000.00", 1, "5000.00", 1),
    ("Other Pork", "2023-10-01", "9999.00", 1, "9999.00", 1),
]


def _values(rows: list[tuple[str, str, str, int, str, int]], month_type: str) -> str:
    # Test data only: literals written by this file, not user input.
    return ", ".join(
        f"('{p}', CAST(DATE '{m}' AS {month_type}), NUMERIC '{a}', {q}, NUMERIC '{v}', {n})"
        for p, m, a, q, v, n in rows
    )


def make_summary(settings: Settings, month_type: str = "DATE") -> None:
    s = settings.bigquery
    bq.ensure_datasets(s)
    columns = tuple(
        (name, month_type if name == "sale_month" else kind, mode)
        for name, kind, mode in SUMMARY_COLUMNS
    )
    bq.create_table(s.mart_dataset, "summary_sales", columns, settings=s)
    bq.run_query(
        f"INSERT INTO {bq.table_ref(s.mart_dataset, 'summary_sales', s)} "
        f"VALUES {_values(ROWS, month_type)}",
        function="test",
        settings=s,
    )
