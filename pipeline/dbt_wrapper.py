"""``salesmart-dbt``: ``dbt`` with the salesmart connection settings filled in.

The Airflow DAG runs each dbt model as its own task (astronomer-cosmos, subprocess mode),
and cosmos calls ``salesmart-dbt ARGS`` exactly where it would call ``dbt ARGS``. This
wrapper reads ``--target`` (``postgres`` or ``bigquery``) from the arguments, builds the
environment ``dbt/profiles.yml`` reads with :func:`pipeline.transform.dbt_environment` (the
same as ``salesmart transform``: settings from the environment, else the services of a
running ``salesmart up``), and replaces itself with dbt (``SALESMART_DBT``, else
``.venv-dbt/bin/dbt``).

So connection values and secrets are resolved on the worker when a task runs: they are
never part of the DAG, its serialized form in Airflow's database, or the task's command
line. Without ``--target`` (``dbt --version``), dbt runs with no connection settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

TARGET_FLAGS = ("--target", "-t")


def target_of(args: Sequence[str]) -> str | None:
    """The value of ``--target``/``-t`` in dbt arguments, or None."""
    for index, arg in enumerate(args):
        if arg in TARGET_FLAGS:
            return args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("--target="):
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from common.config import ConfigError, without_secrets
    from pipeline.migrate import NewerDatabaseError, NotMigratedError, require_known_schema
    from pipeline.transform import TransformError, dbt_environment, dbt_executable

    args = list(sys.argv[1:] if argv is None else argv)
    exe = dbt_executable()
    if not exe.exists():
        print(f"salesmart-dbt: dbt is not installed ({exe} is missing)", file=sys.stderr)
        return 1
    target = target_of(args)
    env = without_secrets(os.environ)  # dbt never needs ours (dbt_environment agrees)
    if target is not None:
        from pipeline.runtime import (
            BigQueryNotAnswering,
            cli_settings,
            require_bigquery_answers,
            require_deployment_database,
        )

        try:
            settings = cli_settings(with_secrets=False)  # dbt never sees the keys
            if target == "postgres":
                require_deployment_database(settings)  # as every command
                if settings.database_url:  # as every command (unreachable: left to dbt)
                    require_known_schema(settings.database_url)
            env, _ = dbt_environment(target, settings)
            if target == "bigquery":  # a DAG task would otherwise wait out its whole timeout
                require_bigquery_answers(settings)
        except (
            TransformError,
            ConfigError,
            BigQueryNotAnswering,
            NewerDatabaseError,
            NotMigratedError,
        ) as exc:
            print(f"salesmart-dbt: {exc}", file=sys.stderr)
            return 1
    os.execve(exe, [str(exe), *args], env)  # noqa: S606 - dbt replaces this process  # nosec B606
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
