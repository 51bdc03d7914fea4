"""Messages that say what to do: a URL whose password needs encoding, a database never
migrated, an empty user list, and the database's own reason when a dbt model fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.config import Settings, build_settings
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.transform import _describe_failure
from tests.conftest import create_database, run_cli


@pytest.mark.parametrize(
    ("password", "broken"),
    [
        ("se/cret", "has an invalid port"),  # the host and port end at "/"
        ("se@cret", "has an invalid host"),  # libpq: the user info ends at the first "@"
        ("se%cret", "is not a valid URL (invalid percent-encoded token)"),
    ],
)
def test_a_password_that_breaks_the_url_is_explained(
    settings: Settings, tmp_path: Path, password: str, broken: str
) -> None:
    done = run_cli(
        settings,
        tmp_path,
        "users",
        "list",
        SALESMART_DATABASE_URL=f"postgresql://app:{password}@127.0.0.1:5432/sales",
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"salesmart: SALESMART_DATABASE_URL {broken} (in the user name or password,"
        " @ : / # ? % must be percent-encoded: %40 %3A %2F %23 %3F %25)"
    )
    assert "cret" not in done.stderr


def test_a_database_never_migrated_says_so(pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    dsn = create_database(pg_server, migrated=False)
    settings = build_settings({**os.environ, "SALESMART_DATABASE_URL": dsn})
    done = run_cli(settings, tmp_path, "users", "list")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "salesmart: the database has no salesmart tables (a database"
        " salesmart has not set up: run `salesmart migrate` first)"
    )


def test_transform_on_a_database_never_migrated_says_so(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    # The README's steps for a PostgreSQL of one's own, run out of order: the line says what
    # to do before dbt starts (it failed on the raw tables the migrations create, in words
    # that named a unit test's relation).
    dsn = create_database(pg_server, migrated=False)
    settings = build_settings({**os.environ, "SALESMART_DATABASE_URL": dsn})
    for command in (("transform", "--target", "postgres"), ("users", "list")):
        done = run_cli(settings, tmp_path, *command)
        assert done.returncode == 1
        assert done.stderr == (
            "salesmart: the database has no salesmart tables (a database salesmart has not"
            " set up: run `salesmart migrate` first)\n"
        ), command
    # Both warehouses asked for: the line says which one was not built either.
    both = run_cli(settings, tmp_path, "transform", "--target", "all")
    assert both.returncode == 1
    assert both.stderr.endswith("run `salesmart migrate` first); bigquery not built\n"), both


def test_an_empty_user_list_says_so_on_stderr(settings: Settings, tmp_path: Path) -> None:
    done = run_cli(settings, tmp_path, "users", "list")
    assert done.returncode == 0
    assert done.stdout == ""  # a script reading the list gets no line
    assert done.stderr.strip() == "no users yet: add one with `salesmart users add`"


def test_a_failed_model_names_the_databases_reason_and_never_its_sql() -> None:
    # The shape dbt-postgres writes into run_results.json for a model the role cannot create.
    result = {
        "unique_id": "model.salesmart.pg_sales",
        "status": "error",
        "message": (
            "Database Error in model pg_sales (models/marts/pg_sales.sql)\n"
            "  permission denied for schema public\n"
            '  LINE 2: create table "salesmart"."public"."pg_sales__dbt_tmp"\n'
            "  compiled code at target/run/salesmart/models/marts/pg_sales.sql"
        ),
    }
    assert _describe_failure(result, "model", "error") == (
        "model pg_sales (error: permission denied for schema public)"
    )
    # A failing test keeps its row count; a message-less error its status alone.
    failing = {"unique_id": "test.salesmart.not_null_x", "status": "fail", "failures": 3}
    assert _describe_failure(failing, "test", "fail") == "test not_null_x (fail, 3 rows)"
    bare = {"unique_id": "model.salesmart.pg_sales", "status": "error", "message": None}
    assert _describe_failure(bare, "model", "error") == "model pg_sales (error)"
