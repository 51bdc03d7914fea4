"""The DAG folder as Airflow 3 loads it (its own DagBag, in .venv-airflow): no import
errors, the schedule and run policies, and the task order."""

from __future__ import annotations

import json
import shutil
import subprocess
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
    airflow_env,
    tail,
)
from tests.conftest import REPO_ROOT
from tests.dockerfile import stage

pytestmark = [pytest.mark.slow, NEEDS_AIRFLOW]


# -- the DAG as Airflow loads it -----------------------------------------------------------
def load_dag_info(airflow_home: Path, dags: Path, **env: str) -> dict[str, Any]:
    """The DAG folder ``dags`` as .venv-airflow's DagBag loads it (dag_info.py)."""
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), str(Path(__file__).with_name("dag_info.py")), str(dags), DAG_ID],
        env={**airflow_env(airflow_home, AIRFLOW__CORE__DAGS_FOLDER=str(dags)), **env},
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


@pytest.fixture(scope="module")
def dag_info(airflow_home: Path) -> dict[str, Any]:
    return load_dag_info(airflow_home, DAGS)


def test_dag_folder_imports_without_errors(dag_info: dict[str, Any]) -> None:
    assert dag_info["import_errors"] == {}
    assert dag_info["dag_ids"] == [DAG_ID]


def test_the_dag_loads_in_the_airflow_images_layout(airflow_home: Path, tmp_path: Path) -> None:
    """The Dockerfile's `airflow` stage, without Docker: its COPY lines laid out under a
    temporary root, its virtualenvs as this checkout's, its ENV with the same paths rebased.
    The DAG must find its dbt project, dbt and `salesmart` from that ENV alone (found by a
    review: the image set variables nothing read, and no DAG loaded)."""
    image = stage("airflow")

    def rebased(path: str) -> Path:
        return tmp_path / path.lstrip("/")

    for source, destination in image.copies:
        target = rebased(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO_ROOT / source).is_dir():
            shutil.copytree(
                REPO_ROOT / source, target, ignore=shutil.ignore_patterns("target", "logs")
            )
        else:
            shutil.copy(REPO_ROOT / source, target)
    venvs = {"/opt/airflow/dbt-venv": ".venv-dbt", "/opt/airflow/salesmart-venv": ".venv"}
    for made, checkout in venvs.items():
        assert any(f"python -m venv {made}" in run for run in image.runs), made
        rebased(made).symlink_to(REPO_ROOT / checkout)
    env = {name: str(rebased(value)) for name, value in image.env.items() if value.startswith("/")}
    info = load_dag_info(airflow_home, rebased("/opt/airflow/dags"), **env)
    assert info["import_errors"] == {}, info["import_errors"]
    assert info["dag_ids"] == [DAG_ID]
    assert any(task.startswith("dbt_postgres.") for task in info["tasks"]), sorted(info["tasks"])


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


@pytest.mark.parametrize(
    ("orchestration", "message"),
    [
        (
            "  retries: three\n",
            "orchestration.retries must be a whole number from 0 to 100, found 'three'",
        ),
        ("  retries: -1\n", "orchestration.retries must be a whole number from 0 to 100, found -1"),
        (
            "  retry_delay_seconds: -5\n",
            "orchestration.retry_delay_seconds must be a whole number from 1 to 86400, found -5",
        ),
        (
            "  schedule: not a cron\n",
            "orchestration.schedule must be a cron expression of 5 fields naming a time that"
            " comes, an Airflow preset (@daily ...) or null, found 'not a cron'",
        ),
        ("  schedule: '@dayly'\n", "found '@dayly'"),
        # Taken by croniter, never run by Airflow (an audit): a date that never comes, and
        # seconds and years fields.
        ("  schedule: '0 0 30 2 *'\n", "found '0 0 30 2 *'"),
        ("  schedule: '0 0 * * * 0 2030'\n", "found '0 0 * * * 0 2030'"),
        ("  schedule: [0 0 * * *\n", "not valid YAML (line"),
        # As the salesmart command refuses it (the DAG took the last, every task stopped).
        (
            "  retries: 1\n  retries: 2\n",
            "not valid YAML (the key 'retries' is given twice, line 3",
        ),
    ],
)
def test_a_bad_orchestration_value_is_the_dags_one_line_error(
    airflow_home: Path, tmp_path: Path, orchestration: str, message: str
) -> None:
    """A traceback naming no key (retries: three), or nothing at all (-1), before."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text("orchestration:\n" + orchestration)
    info = load_dag_info(airflow_home, DAGS, SALESMART_CONFIG=str(config))
    assert info["dag_ids"] == []
    (error,) = info["import_errors"].values()
    last = error.strip().splitlines()[-1]  # Airflow keeps the traceback: its last line
    assert f"transform_sales_mart.OrchestrationConfigError: {config}: " in last, last
    assert message in last


def test_orchestration_takes_what_airflow_and_the_config_take(
    airflow_home: Path, tmp_path: Path
) -> None:
    """No schedule (runs started by hand) and numbers written as the config's other keys
    may be (quoted, 2.0)."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(
        "orchestration:\n  schedule: null\n  retries: '2'\n  retry_delay_seconds: 60.0\n"
    )
    info = load_dag_info(airflow_home, DAGS, SALESMART_CONFIG=str(config))
    assert info["import_errors"] == {}
    assert info["dag"]["timetable"] == "NullTimetable"
    assert {task["retries"] for task in info["tasks"].values()} == {2}
    assert {task["retry_delay_seconds"] for task in info["tasks"].values()} == {60}


def test_croniters_own_aliases_are_schedules_too(airflow_home: Path, tmp_path: Path) -> None:
    """@midnight: Airflow runs it (a review found it refused by the check that refuses a
    date that never comes)."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text("orchestration:\n  schedule: '@midnight'\n")
    info = load_dag_info(airflow_home, DAGS, SALESMART_CONFIG=str(config))
    assert info["import_errors"] == {}
    assert info["dag"]["schedule"] == "@midnight"


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


def test_a_config_file_named_but_missing_is_the_dags_one_line_error(
    airflow_home: Path, tmp_path: Path
) -> None:
    """The DAG took the built-in schedule and retries, and every task then failed on the
    file (an orchestration audit); the salesmart command refuses it the same way."""
    missing = tmp_path / "no-such-config.yaml"
    info = load_dag_info(airflow_home, DAGS, SALESMART_CONFIG=str(missing))
    assert info["dag_ids"] == []
    (error,) = info["import_errors"].values()
    last = error.strip().splitlines()[-1]
    assert last.endswith(f"OrchestrationConfigError: SALESMART_CONFIG={missing}: no such file")
