"""A failing dbt test makes the DAG run fail (real Airflow, dbt, PostgreSQL, stand-in)."""

from __future__ import annotations

import pytest

from common.pg import connect
from pipeline.ingest import ingest_postgres
from tests.airflow.conftest import NEEDS_AIRFLOW, Stack, ended_ok, tail

pytestmark = [pytest.mark.slow, NEEDS_AIRFLOW]

HEADER = "transaction_id,product,price,quantity,date\n"
EARLIER = HEADER + "E1,Halal Dates,12.50,2,2023-10-01\nE2,Halal Honey,30.00,1,2023-10-15\n"
NEW = HEADER + "N1,Halal Honey,15.00,4,2023-12-01\n"


@pytest.fixture(scope="module")
def failing_run(stack: Stack) -> str:
    """Rows loaded earlier, one of them broken so that a dbt test on PostgreSQL fails
    (stg_transactions: the masked id must be 12 lowercase hex characters); a new file lands.

    The BigQuery dbt tasks are marked successful without running (``--mark-success-pattern``,
    Airflow's own test switch): this run is about PostgreSQL, and they only cost time.
    """
    earlier = stack.root / "earlier.csv"
    earlier.write_text(EARLIER)
    conn = connect(stack.settings.database_url)
    try:
        ingest_postgres(conn, earlier, stack.settings)
    finally:
        conn.close()
    stack.pg(
        "UPDATE raw.transactions SET masked_transaction_id = 'NOT-A-HASH'"
        " WHERE transaction_id = 'E1'"
    )
    (stack.landing / "new.csv").write_text(NEW)
    return stack.run_dag("2023-10-03", "--mark-success-pattern", r"dbt_bigquery\..*")


def test_a_failing_dbt_test_fails_the_run(stack: Stack, failing_run: str) -> None:
    assert not ended_ok(failing_run), tail(failing_run)
    assert "DagRun failed" in failing_run, tail(failing_run)
    assert "matches_pattern" in failing_run, tail(failing_run)
    # The failing task was retried (the scenario's config: one retry), and failed again.
    assert failing_run.count("starting task_id=dbt_postgres.stg_transactions_model_build") == 2
    # The ingest ran (the new file is loaded) ...
    assert "new.csv -> postgres: read 1, loaded 1, rejected 0" in failing_run
    assert stack.pg("SELECT count(*) FROM raw.loads") == [[2]]
    # ... but nothing downstream of the failing test was built, and the check never ran.
    assert stack.pg("SELECT to_regclass('public.pg_sales') IS NULL") == [[True]]
    assert stack.pg("SELECT to_regclass('public.summary_sales') IS NULL") == [[True]]
    assert '"target": "postgres"' not in failing_run
