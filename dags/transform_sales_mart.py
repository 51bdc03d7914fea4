"""
### transform_sales_mart

The daily refresh of the sales marts on both warehouses, at 00:00 UTC:

1. **ingest_landing**: load the new CSV files of the landing location (a local folder, or
   `gs://bucket/prefix` in production; `SALESMART_LANDING` / `data_lake.landing`) into
   PostgreSQL and BigQuery. Files already loaded (same SHA-256) are skipped, so a run with
   nothing new loads nothing and still succeeds.
2. **dbt_postgres**, **dbt_bigquery**: one task per dbt model, in lineage order, each a
   `dbt build --select MODEL` (its unit tests, the model, its data tests). A failing dbt
   test fails its task, leaves the models downstream of it unbuilt, and fails the run.
3. **check_marts**: the marts must match the raw area after the build (row counts, total
   amounts, the newest load's rows present); stale marts fail the run.

A failure that a retry cannot fix fails its task at once: an unusable landing file, and
marts that do not match (they need a new build, not the same check again). Others (a
warehouse that cannot be reached) are retried.

No business logic lives here: each task runs the project's own command
(`salesmart ingest-landing`, `salesmart-dbt`, `salesmart check-marts`). See dags/README.md.
"""

# Why the tasks run the project's commands as subprocesses instead of importing it: the
# project is not installed in Airflow's environment (.venv-airflow). Installing it there
# would bring the warehouse clients (psycopg2, google-cloud-bigquery/-storage) into Airflow's
# pins, and dbt cannot share an environment with them at all (dags/README.md). Calling
# `.venv/bin/salesmart` keeps one environment per tool, runs the exact code and exit codes
# a person runs by hand, and resolves connections and secrets on the worker when a task
# runs, so none of them is ever part of this DAG or of Airflow's database.

from __future__ import annotations

import json
import os
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import yaml
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException
from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
)
from cosmos.constants import InvocationMode, LoadMode, TestBehavior, TestIndirectSelection

DAG_ID = "transform_sales_mart"
#: The repository (its dbt project, config and environments); SALESMART_HOME overrides.
REPO_ROOT = Path(os.environ.get("SALESMART_HOME") or Path(__file__).resolve().parent.parent)
#: The project's environment: `salesmart` and `salesmart-dbt` (SALESMART_BIN_DIR overrides).
BIN_DIR = Path(os.environ.get("SALESMART_BIN_DIR") or REPO_ROOT / ".venv" / "bin")
SALESMART = BIN_DIR / "salesmart"
SALESMART_DBT = BIN_DIR / "salesmart-dbt"
#: dbt itself, used only to list the models when the DAG is parsed (no connection needed).
DBT = Path(os.environ.get("SALESMART_DBT") or REPO_ROOT / ".venv-dbt" / "bin" / "dbt")
DBT_PROJECT = REPO_ROOT / "dbt"
#: Where `salesmart up` keeps endpoints.json and local secrets; absolute for the tasks.
STATE_DIR = Path(os.environ.get("SALESMART_STATE_DIR") or REPO_ROOT / ".salesmart").resolve()
_CONFIG_NAMED = Path(
    os.environ.get("SALESMART_CONFIG") or REPO_ROOT / "data" / "pipeline_config.yaml"
)
# A relative name not found from here is the repository's, as the salesmart command reads it.
CONFIG = (
    REPO_ROOT / _CONFIG_NAMED
    if not _CONFIG_NAMED.is_absolute() and not _CONFIG_NAMED.exists()
    else _CONFIG_NAMED
).resolve()
EXIT_UNUSABLE = 2  # salesmart: unusable input, which no retry can fix


class OrchestrationConfigError(ValueError):
    """A bad ``orchestration`` value: Airflow shows this one line as the DAG's import error
    (a traceback naming no key before)."""


class _KeyGivenTwice(yaml.composer.ComposerError):
    pass


class _ConfigLoader(yaml.SafeLoader):
    """A key given twice refused, as the salesmart command refuses it (common/config.py's
    loader, which this file cannot import): otherwise the DAG took the last one and every
    task stopped on it."""

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if (key_node.tag, key_node.value) in seen:
                raise _KeyGivenTwice(
                    None, None, f"the key {key_node.value!r} is given twice", key_node.start_mark
                )
            seen.add((key_node.tag, key_node.value))
        return node


def orchestration_config() -> dict[str, Any]:
    """The ``orchestration`` section of the pipeline config (schedule, retries)."""
    try:
        data = yaml.load(CONFIG.read_text(encoding="utf-8"), Loader=_ConfigLoader) or {}  # noqa: S506 - a SafeLoader  # nosec B506
    except FileNotFoundError:
        if os.environ.get("SALESMART_CONFIG"):  # named: a typo must not mean the defaults
            raise OrchestrationConfigError(
                f"SALESMART_CONFIG={os.environ['SALESMART_CONFIG']}: no such file"
            ) from None
        return {}
    except UnicodeDecodeError:
        raise OrchestrationConfigError(f"{CONFIG}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        said = [str(exc.problem)] if isinstance(exc, _KeyGivenTwice) else []
        where = [f"line {mark.line + 1}, column {mark.column + 1}"] if mark else []
        detail = ", ".join(said + where)
        raise OrchestrationConfigError(
            f"{CONFIG}: not valid YAML" + (f" ({detail})" if detail else "")
        ) from None
    if not isinstance(data, dict):
        raise OrchestrationConfigError(f"{CONFIG}: the top level must be a mapping")
    section = data.get("orchestration")
    if section is not None and not isinstance(section, dict):
        raise OrchestrationConfigError(f"{CONFIG}: orchestration must be a mapping")
    return section or {}


#: Airflow's own presets (airflow.sdk's CRON_PRESETS, @once and @continuous).
SCHEDULE_PRESETS = frozenset(
    {"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@once", "@continuous"}
)


def schedule_of(section: dict[str, Any]) -> str | None:
    """``orchestration.schedule``: a cron expression (5 fields, UTC), one of Airflow's
    presets, or null (no schedule: runs are started by hand)."""
    from croniter import croniter  # Airflow's own dependency, which parses its crons

    value = section.get("schedule", "0 0 * * *")
    if value is None:
        return None
    if isinstance(value, str) and (
        value in SCHEDULE_PRESETS or (value.startswith("@") and croniter.is_valid(value))
    ):
        return value  # a preset, or one of croniter's (@midnight, @annually)
    # Five fields, and a time they name: croniter also takes a sixth and seventh field
    # (seconds, years), and a date that never comes (30 February), which Airflow then
    # never schedules, with no import error.
    if isinstance(value, str) and len(value.split()) == 5:
        try:
            croniter(value).get_next()
            return value
        except (ValueError, KeyError):  # CroniterBadDateError is a ValueError
            pass
    raise OrchestrationConfigError(
        f"{CONFIG}: orchestration.schedule must be a cron expression of 5 fields naming a"
        f" time that comes, an Airflow preset (@daily ...) or null, found {value!r}"
    )


def whole_number(section: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    """A whole number in ``low..high``, as common.config reads one: 3, 3.0 or '3', not `true`,
    2.5 or 'three'."""
    value = section.get(key, default)
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not low <= number <= high:
        raise OrchestrationConfigError(
            f"{CONFIG}: orchestration.{key} must be a whole number from {low} to {high},"
            f" found {value!r}"
        )
    return number


SETTINGS = orchestration_config()
SCHEDULE = schedule_of(SETTINGS)
RETRIES = whole_number(SETTINGS, "retries", 3, 0, 100)
RETRY_DELAY = timedelta(
    seconds=whole_number(SETTINGS, "retry_delay_seconds", 300, 1, 86400)  # at most a day
)


#: Paths every project command gets, whatever its working directory. Only these are part
#: of the DAG: everything else (connections, secrets) comes from the worker's environment
#: when a task runs.
PATHS_ENV = {"SALESMART_STATE_DIR": str(STATE_DIR), "SALESMART_CONFIG": str(CONFIG)}


def task_env() -> dict[str, str]:
    """The environment of a project command: the worker's, plus the paths."""
    return {**os.environ, **PATHS_ENV}


def salesmart(*args: str, capture: bool = False) -> str:
    """Run ``salesmart ARGS`` from the repository; its output goes to the task log (and,
    with ``capture``, is returned once it ends)."""
    command = [str(SALESMART), *args]
    print(f"$ {shlex.join(command)}", flush=True)
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=task_env(),
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    output = done.stdout or ""
    print(output, end="", flush=True)
    if done.returncode == EXIT_UNUSABLE:
        raise AirflowFailException(f"salesmart {args[0]}: unusable input (exit 2), not retried")
    if done.returncode != 0 and capture and stale_marts(output):
        raise AirflowFailException(
            "the marts do not match the raw area: they need a new build, not a retry"
        )
    if done.returncode != 0:
        raise RuntimeError(f"salesmart {args[0]} exited with code {done.returncode}")
    return output


def stale_marts(output: str) -> bool:
    """Whether ``check-marts --json`` answered and found a problem: it prints one result
    per target once every warehouse answered, and nothing when one could not be reached."""
    results = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return any(not result.get("ok", True) for result in results)


def dbt_build(target: str) -> DbtTaskGroup:
    """``dbt build`` on ``target``: one task per model, in lineage order (cosmos).

    Each task runs ``dbt build --select MODEL``: the model's unit tests, the model, then
    its data tests, including those that also read models upstream of it ("buildable"
    selection). A failing test fails the task and leaves the models downstream unbuilt.
    """
    return DbtTaskGroup(
        group_id=f"dbt_{target}",
        project_config=ProjectConfig(DBT_PROJECT),
        profile_config=ProfileConfig(
            profile_name="salesmart",
            target_name=target,
            profiles_yml_filepath=DBT_PROJECT / "profiles.yml",
        ),
        # dbt runs in its own environment: subprocess mode, never imported here.
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS,
            dbt_executable_path=DBT,
            invocation_mode=InvocationMode.SUBPROCESS,
            test_behavior=TestBehavior.BUILD,
            # No Airflow assets per table: nothing schedules on them, and cosmos' URIs only
            # add warnings under Airflow 3.
            emit_datasets=False,
        ),
        execution_config=ExecutionConfig(
            dbt_executable_path=SALESMART_DBT,
            invocation_mode=InvocationMode.SUBPROCESS,
            test_indirect_selection=TestIndirectSelection.BUILDABLE,
        ),
        # append_env (cosmos' default for local tasks) adds the worker's environment.
        operator_args={"install_deps": False, "env": PATHS_ENV, "append_env": True},
    )


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2023, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "data-platform",
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "execution_timeout": timedelta(hours=2),
    },
    tags=["salesmart", "dbt", "marts"],
    doc_md=__doc__,
)
def transform_sales_mart() -> None:
    @task
    def ingest_landing() -> None:
        """Load the landing location's new files into PostgreSQL and BigQuery."""
        salesmart("ingest-landing", "--target", "all")

    @task
    def check_marts() -> None:
        """Fail unless both warehouses' marts match their raw area after the build."""
        salesmart("check-marts", "--target", "all", "--json", capture=True)

    ingest_landing() >> [dbt_build("postgres"), dbt_build("bigquery")] >> check_marts()


transform_sales_mart()
