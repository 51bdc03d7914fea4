"""Failures no retry can fix fail their task at once (real Airflow, dbt skipped by Airflow's
own test switch): an unusable landing file, and marts that do not match the raw area. The
scenario's config retries a failed task once, so a retried task would start twice."""

from __future__ import annotations

import pytest

from tests.airflow.conftest import NEEDS_AIRFLOW, Stack, ended_ok, tail

pytestmark = [pytest.mark.slow, NEEDS_AIRFLOW]

GOOD = "transaction_id,product,price,quantity,date\nG1,Halal Dates,12.50,2,2023-10-01\n"
NO_PRICE = "transaction_id,product,quantity,date\nU1,Halal Dates,2,2023-10-01\n"
# Every dbt task is marked successful without running: the marts are never built.
SKIP_DBT = ("--mark-success-pattern", r"dbt_.*")


def starts(log: str, task_id: str) -> int:
    return log.count(f"starting task_id={task_id}")


@pytest.fixture(scope="module")
def unusable_run(stack: Stack) -> str:
    (stack.landing / "a-good.csv").write_text(GOOD)
    (stack.landing / "b-no-price.csv").write_text(NO_PRICE)
    return stack.run_dag("2023-10-05", *SKIP_DBT)


@pytest.fixture(scope="module")
def stale_run(stack: Stack, unusable_run: str) -> str:
    (stack.landing / "b-no-price.csv").unlink()  # dealt with, as dags/README.md says
    return stack.run_dag("2023-10-06", *SKIP_DBT)


def test_an_unusable_landing_file_is_not_retried(stack: Stack, unusable_run: str) -> None:
    assert not ended_ok(unusable_run), tail(unusable_run)
    assert "unusable input (exit 2), not retried" in unusable_run, tail(unusable_run)
    assert starts(unusable_run, "ingest_landing") == 1, tail(unusable_run)
    assert "b-no-price.csv: missing required column(s) price" in unusable_run
    assert stack.pg("SELECT count(*) FROM raw.transactions") == [[1]]  # the good file
    assert starts(unusable_run, "check_marts") == 0


def test_marts_that_do_not_match_are_not_retried(stack: Stack, stale_run: str) -> None:
    assert not ended_ok(stale_run), tail(stale_run)
    assert starts(stale_run, "ingest_landing") == 1
    assert starts(stale_run, "check_marts") == 1, tail(stale_run)
    assert "they need a new build, not a retry" in stale_run, tail(stale_run)
    assert '"ok": false' in stale_run  # the check's own findings are in the task log
