"""Airflow plumbing for the DAG tests: a migrated Airflow home per test process, ``airflow``
commands from .venv-airflow, and an isolated target for whole DAG runs (a fresh database on
the test PostgreSQL, a BigQuery stand-in, a landing folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from common import bigquery as bq
from common.config import Settings, build_settings
from common.pg import connect
from pipeline.bq_emulator import EmulatorHandle, start_emulator
from pipeline.postgres_embedded import EmbeddedPostgres
from tests.conftest import REPO_ROOT, create_database

AIRFLOW = REPO_ROOT / ".venv-airflow" / "bin" / "airflow"
AIRFLOW_PYTHON = REPO_ROOT / ".venv-airflow" / "bin" / "python"
DAGS = REPO_ROOT / "dags"
DAG_ID = "transform_sales_mart"
PROJECT = "salesmart-airflow-test"
AIRFLOW_TIMEOUT = 600
# A missing environment fails these tests (never skips them): `make test` installs it.
NEEDS_AIRFLOW = pytest.mark.usefixtures("airflow_installed")


@pytest.fixture(scope="session")
def airflow_installed() -> None:
    assert AIRFLOW.exists(), "no .venv-airflow: run 'make install'"


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "SALESMART_DATABASE_URL", "SALESMART_BQ_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The first parse after a dbt change lists the models with dbt (seconds on a
            # busy machine); cosmos then caches the listing in Airflow's database.
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
            "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos"),
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "DO_NOT_TRACK": "1",
        }
    )
    env.update(extra)
    return env


def run_airflow(
    args: list[str], env: dict[str, str], timeout: float = AIRFLOW_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AIRFLOW), *args],
        env=env,
        cwd=env["AIRFLOW_HOME"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def airflow_home() -> Iterator[Path]:
    """A migrated Airflow home (SQLite) per test process: the modules of one xdist worker
    run one after the other, so they share it (one migration, one dbt listing)."""
    home = Path(tempfile.mkdtemp(prefix="salesmart-airflow-"))
    done = run_airflow(["db", "migrate"], airflow_env(home), timeout=300)
    assert done.returncode == 0, tail(done.stdout + done.stderr)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@dataclass
class Stack:
    """What a DAG run works on: a fresh database, a stand-in, a landing folder."""

    home: Path
    root: Path
    settings: Settings
    landing: Path
    emulator: EmulatorHandle

    def env(self) -> dict[str, str]:
        return airflow_env(
            self.home,
            SALESMART_DATABASE_URL=self.settings.database_url,
            SALESMART_BQ_ENDPOINT=self.emulator.endpoint,
            SALESMART_BQ_PROJECT=PROJECT,
            SALESMART_LANDING=str(self.landing),
            SALESMART_STATE_DIR=str(self.root / "state"),
            SALESMART_CONFIG=str(self.root / "pipeline_config.yaml"),
        )

    def run_dag(self, logical_date: str, *options: str) -> str:
        """``airflow dags test``: its whole output, ending with a line ``EXIT <code>``."""
        done = run_airflow(["dags", "test", *options, DAG_ID, logical_date], self.env())
        log = f"{done.stdout}\n{done.stderr}\nEXIT {done.returncode}\n"
        (self.root / f"dags-test-{logical_date}.log").write_text(log)
        return log

    def pg(self, sql: str) -> list[list[Any]]:
        conn = connect(self.settings.database_url)
        try:
            return [list(row) for row in conn.run(sql) or []]
        finally:
            conn.close()

    def bq(self, sql: str) -> list[dict[str, Any]]:
        return bq.run_query(sql, function="test", settings=self.settings.bigquery, timeout=60)

    def bq_table(self, dataset: str, table: str) -> str:
        return f"`{PROJECT}.{dataset}.{table}`"


def ended_ok(log: str) -> bool:
    return log.rstrip().endswith("EXIT 0")


@pytest.fixture(scope="module")
def stack(
    airflow_home: Path, pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="salesmart-dagrun-"))
    emulator = start_emulator(root / "bq", PROJECT, persistent=False)
    settings = build_settings(
        {
            **os.environ,
            "SALESMART_DATABASE_URL": create_database(pg_server),
            "SALESMART_BQ_ENDPOINT": emulator.endpoint,
            "SALESMART_BQ_PROJECT": PROJECT,
        }
    )
    landing = root / "landing"
    landing.mkdir()
    # The project's config, except that a failed task is retried once after a second (not
    # three times after five minutes), so a failing run ends quickly.
    config = yaml.safe_load((REPO_ROOT / "data" / "pipeline_config.yaml").read_text())
    config["orchestration"].update(retries=1, retry_delay_seconds=1)
    (root / "pipeline_config.yaml").write_text(yaml.safe_dump(config))
    try:
        yield Stack(airflow_home, root, settings, landing, emulator)
    finally:
        emulator.stop()
        bq.reset_clients()
        kept = tmp_path_factory.mktemp("dag-runs")
        for log in root.glob("dags-test-*.log"):  # for a failing test's post-mortem
            shutil.copy(log, kept / log.name)
        shutil.rmtree(root, ignore_errors=True)
