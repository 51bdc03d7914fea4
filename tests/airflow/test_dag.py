"""The Airflow DAG ``transform_sales_mart``, loaded and run by real Airflow 3 (.venv-airflow).

The DAG folder is loaded by Airflow's own DagBag; the runs use ``airflow dags test`` (the
whole DAG, no scheduler) against the test PostgreSQL and a real BigQuery stand-in, with
real dbt: the same commands a deployment runs. One scenario, two runs in a row.
"""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.airflow.conftest import (
    AIRFLOW_PYTHON,
    AIRFLOW_TIMEOUT,
    DAG_ID,
    DAGS,
    NEEDS_AIRFLOW,
    Stack,
    airflow_env,
    ended_ok,
    tail,
)
from tests.conftest import REPO_ROOT

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


# -- 1. the DAG as Airflow loads it --------------------------------------------------------
@pytest.fixture(scope="module")
def dag_info(airflow_home: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), str(Path(__file__).with_name("dag_info.py")), str(DAGS), DAG_ID],
        env=airflow_env(airflow_home),
        cwd=airflow_home,
        capture_output=True,
        text=True,
        timeout=AIRFLOW_TIMEOUT,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("DAG-INFO ")]
    assert done.returncode == 0 and lines, tail(done.stdout + done.stderr)
    info: dict[str, Any] = json.loads(lines[-1].removeprefix("DAG-INFO "))
    return info


def test_dag_folder_imports_without_errors(dag_info: dict[str, Any]) -> None:
    assert dag_info["import_errors"] == {}
    assert dag_info["dag_ids"] == [DAG_ID]


def test_dag_schedule_and_policies(dag_info: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO_ROOT / "data" / "pipeline_config.yaml").read_text())
    dag = dag_info["dag"]
    assert dag["schedule"] == config["orchestration"]["schedule"] == "0 0 * * *"
    assert dag["timetable"] == "CronTriggerTimetable"
    assert dag["cron"] == "0 0 * * *"
    assert dag["timezone"] == dag["cron_timezone"] == "UTC"
    assert dag["start_date"].startswith("2023-10-01T00:00:00")
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    assert "salesmart" in dag["tags"]
    assert "check_marts" in dag["doc_md"]
    for task_id, task in dag_info["tasks"].items():
        assert task["retries"] == 3, task_id
        assert task["retry_delay_seconds"] >= 60, task_id


def upstream_closure(tasks: dict[str, Any], task_id: str) -> set[str]:
    seen: set[str] = set()
    todo = list(tasks[task_id]["upstream"])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(tasks[current]["upstream"])
    return seen


def test_task_order(dag_info: dict[str, Any]) -> None:
    tasks = dag_info["tasks"]
    order = list(tasks)  # topological
    dbt_tasks = [t for t in tasks if t.startswith(("dbt_postgres.", "dbt_bigquery."))]
    assert order[0] == "ingest_landing" and tasks["ingest_landing"]["upstream"] == []
    assert order[-1] == "check_marts"
    # Every dbt task runs after the ingest, and the check after every dbt task.
    for task_id in dbt_tasks:
        assert "ingest_landing" in upstream_closure(tasks, task_id), task_id
    assert set(dbt_tasks) <= upstream_closure(tasks, "check_marts")
    # One task per model, in lineage order; each warehouse gets its own sales mart.
    for group, sales in (("dbt_postgres", "pg_sales"), ("dbt_bigquery", "fact_sales")):
        stg = f"{group}.stg_transactions_model_build"
        for mart in (f"{group}.{sales}_model_build", f"{group}.summary_sales_model_build"):
            assert mart in tasks, sorted(tasks)
            assert stg in upstream_closure(tasks, mart)
    assert not any("fact_sales" in t for t in tasks if t.startswith("dbt_postgres."))
    assert not any("pg_sales" in t for t in tasks if t.startswith("dbt_bigquery."))
    # dbt runs from its own environment, through salesmart-dbt, as a subprocess.
    for task_id in dbt_tasks:
        assert tasks[task_id]["dbt_executable"].endswith("/salesmart-dbt"), task_id
        assert tasks[task_id]["invocation_mode"].endswith("SUBPROCESS"), task_id


# -- 2. whole runs: new files, then nothing new ---------------------------------------------
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
    assert "postgres: raw 5 rows" in first_run and "bigquery: raw 5 rows" in first_run


def test_a_second_run_loads_nothing_new_and_succeeds(stack: Stack, second_run: str) -> None:
    assert ended_ok(second_run), tail(second_run)
    assert "2023-10-a.csv -> postgres: already loaded" in second_run
    assert "b.csv -> bigquery: already loaded" in second_run
    assert "loaded 0 new file load(s)" in second_run
    assert stack.pg("SELECT count(*) FROM raw.loads") == [[2]]
    assert stack.pg("SELECT count(*), sum(amount) FROM public.pg_sales") == [[5, TOTAL]]
    bqs = stack.settings.bigquery
    loads = stack.bq(f"SELECT COUNT(*) AS n FROM {stack.bq_table(bqs.warehouse_dataset, 'loads')}")
    assert loads == [{"n": 2}]
