"""The whole DAG run twice by real Airflow 3 (``airflow dags test`` in .venv-airflow: no
scheduler) against the test PostgreSQL and a real BigQuery stand-in, with real dbt: the same
commands a deployment runs. New files land, then nothing new does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.airflow.conftest import NEEDS_AIRFLOW, Stack, ended_ok, tail

pytestmark = [pytest.mark.slow, NEEDS_AIRFLOW]

FILE_A = (
    "transaction_id,product,price,quantity,date\n"
    "A1,Halal Dates,12.50,2,2023-10-01\n"
    "A2,Halal Honey,30.00,1,2023-10-15\n"
    "A3,Pork Sausage,10.00,1,2023-10-16\n"  # rejected: product_prefix
    "A4,Halal Dates,20.00,3,2023-11-02\n"
)
FILE_B = (
    "transaction_id,product,price,quantity,date\r\n"
    "B1,Halal Laptop,999.99,2,2023-10-01\r\n"
    "B2,Halal Mouse,24.99,10,2023-10-02\r\n"
)
# 12.50*2 + 30 + 20*3 + 999.99*2 + 24.99*10
TOTAL = (
    Decimal("25.00") + Decimal("30.00") + Decimal("60.00") + Decimal("1999.98") + Decimal("249.90")
)


# -- new files, then nothing new ---------------------------------------------
@pytest.fixture(scope="module")
def first_run(stack: Stack) -> str:
    """Two new files (one in a sub-folder) and an unfinished upload in the landing folder."""
    (stack.landing / "2023-10-a.csv").write_text(FILE_A)
    (stack.landing / "day2").mkdir()
    (stack.landing / "day2" / "b.csv").write_text(FILE_B)
    (stack.landing / "_upload-in-progress.csv").write_text("not,a,finished\n")
    return stack.run_dag("2023-10-01")


@pytest.fixture(scope="module")
def second_run(stack: Stack, first_run: str) -> str:
    """Nothing new in the landing folder."""
    return stack.run_dag("2023-10-02")


def test_a_run_loads_the_landing_files_into_both_marts(stack: Stack, first_run: str) -> None:
    assert ended_ok(first_run), tail(first_run)
    # PostgreSQL: both files loaded once (the unfinished upload left alone), every valid
    # row in the marts.
    assert stack.pg("SELECT count(*) FROM raw.loads") == [[2]]
    assert stack.pg("SELECT count(*) FROM raw.rejected_transactions") == [[1]]
    assert stack.pg("SELECT count(*), sum(amount) FROM public.pg_sales") == [[5, TOTAL]]
    assert stack.pg(
        "SELECT sum(transaction_count), sum(total_amount) FROM public.summary_sales"
    ) == [[5, TOTAL]]
    assert stack.pg(
        "SELECT sale_month::text, transaction_count, total_amount FROM public.summary_sales"
        " WHERE product = 'Halal Dates' ORDER BY sale_month"
    ) == [["2023-10-01", 1, Decimal("25.00")], ["2023-11-01", 1, Decimal("60.00")]]
    # BigQuery: the same rows in its marts.
    bqs = stack.settings.bigquery
    fact = stack.bq(
        f"SELECT COUNT(*) AS n, SUM(amount) AS total"
        f" FROM {stack.bq_table(bqs.mart_dataset, 'fact_sales')}"
    )
    assert (fact[0]["n"], Decimal(fact[0]["total"])) == (5, TOTAL)
    summary = stack.bq(
        f"SELECT SUM(transaction_count) AS n, SUM(total_amount) AS total"
        f" FROM {stack.bq_table(bqs.mart_dataset, 'summary_sales')}"
    )
    assert (summary[0]["n"], Decimal(summary[0]["total"])) == (5, TOTAL)
    loads = stack.bq(f"SELECT COUNT(*) AS n FROM {stack.bq_table(bqs.warehouse_dataset, 'loads')}")
    assert loads == [{"n": 2}]
    # The project's own commands did the work, and the check saw the marts move.
    assert "2023-10-a.csv -> postgres: read 4, loaded 3, rejected 1" in first_run
    assert "b.csv -> bigquery: read 2, loaded 2, rejected 0" in first_run
    # check_marts' findings, one JSON line per warehouse, are in the task log.
    for target in ("postgres", "bigquery"):
        assert f'{{"target": "{target}", "ok": true, "problems": [], "raw_rows": 5,' in first_run


def test_a_second_run_loads_nothing_new_and_succeeds(stack: Stack, second_run: str) -> None:
    assert ended_ok(second_run), tail(second_run)
    assert "2023-10-a.csv -> postgres: already loaded" in second_run
    assert "b.csv -> bigquery: already loaded" in second_run
    assert "new loads: 0 (one per new file and warehouse)" in second_run
    assert stack.pg("SELECT count(*) FROM raw.loads") == [[2]]
    assert stack.pg("SELECT count(*), sum(amount) FROM public.pg_sales") == [[5, TOTAL]]
    bqs = stack.settings.bigquery
    loads = stack.bq(f"SELECT COUNT(*) AS n FROM {stack.bq_table(bqs.warehouse_dataset, 'loads')}")
    assert loads == [{"n": 2}]
