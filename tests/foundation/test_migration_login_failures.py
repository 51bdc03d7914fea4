"""Migrations: a database a newer release set up is refused; `migrate` says what it
applied. 0005: counters kept for names that match no account (in clear: perhaps a password
typed in the wrong field) are dropped when failures start being counted under an HMAC; an
account's counter (a lock in force) stays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import build_settings
from common.pg import connect
from pipeline.migrate import MIGRATIONS_DIR, NewerDatabaseError, migrate_database
from pipeline.postgres_embedded import EmbeddedPostgres
from tests.conftest import create_database, run_cli, salesmart


def test_clear_counters_of_unknown_names_are_dropped(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    fresh_dsn = create_database(pg_server, migrated=False)
    before = tmp_path / "migrations"
    before.mkdir()
    for script in sorted(MIGRATIONS_DIR.glob("000[1-4]_*.sql")):
        shutil.copy(script, before)
    assert migrate_database(fresh_dsn, before) == [1, 2, 3, 4]
    conn = connect(fresh_dsn)
    try:
        conn.run(
            "INSERT INTO auth.users (username, password_hash, role)"
            " VALUES ('alice', 'x', 'analyst')"
        )
        for name in ("alice", "Tr0ub4dor&3", "#" + "0" * 64):
            conn.run("INSERT INTO auth.login_failures (username, failures) VALUES (:u, 3)", u=name)
        assert migrate_database(fresh_dsn) == [5]
        kept = [row[0] for row in conn.run("SELECT username FROM auth.login_failures ORDER BY 1")]
    finally:
        conn.close()
    assert kept == ["alice"]


def test_a_database_a_newer_release_migrated_is_refused(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Going back to an older release: its code ran silently on a schema it did not know,
    and undid what the newer migrations set up (an upgrade audit found it)."""
    dsn = create_database(pg_server)
    conn = connect(dsn)
    try:
        conn.run(
            "INSERT INTO salesmart_meta.schema_migrations (version, name)"
            " VALUES (9999, 'from_a_newer_release')"
        )
    finally:
        conn.close()
    known = max(int(path.name[:4]) for path in MIGRATIONS_DIR.glob("*.sql"))
    with pytest.raises(NewerDatabaseError) as refused:
        migrate_database(dsn)
    assert str(refused.value) == (
        "the database was set up by a newer salesmart (its migration 9999,"
        f" from_a_newer_release); this release knows migrations up to {known}: run that"
        " release or a newer one, or restore a backup made for this one"
    )
    settings = build_settings({**os.environ, "SALESMART_DATABASE_URL": dsn})
    done = run_cli(settings, tmp_path, "migrate")
    assert done.returncode == 1
    assert done.stderr.strip() == f"salesmart: {refused.value}"
    # Nor does a command that does not migrate write to it (ingest loaded the file, users
    # added an account, where the README said going back is refused).
    csv = tmp_path / "one.csv"
    csv.write_text("transaction_id,product,price,quantity,date\nT1,Halal Dates,2.50,1,2024-01-05\n")
    for command in (
        ("ingest", str(csv), "--target", "postgres"),
        ("users", "list"),
        ("transform", "--target", "postgres"),
    ):
        refused_command = run_cli(settings, tmp_path, *command)
        assert refused_command.returncode == 1, (command, refused_command.stdout)
        assert refused_command.stderr.strip() == f"salesmart: {refused.value}", command
    # The DAG's dbt tasks too (salesmart-dbt, run in a process of its own: it becomes dbt).
    dbt = subprocess.run(
        [sys.executable, "-m", "pipeline.dbt_wrapper", "build", "--target", "postgres"],
        env={**os.environ, "SALESMART_DATABASE_URL": dsn, "SALESMART_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (dbt.returncode, dbt.stderr.strip()) == (1, f"salesmart-dbt: {refused.value}")
    conn = connect(dsn)
    try:
        assert conn.run("SELECT count(*) FROM raw.transactions") == [[0]]
    finally:
        conn.close()


def test_migrate_says_what_it_applied_to_the_folders_own_server(tmp_path: Path) -> None:
    """The embedded server was migrated before the command looked: "none (up to date)"
    after applying two migrations."""
    env = {k: v for k, v in os.environ.items() if k != "SALESMART_DATABASE_URL"}
    env["SALESMART_STATE_DIR"] = str(tmp_path / "state")
    every = ", ".join(str(int(path.name[:4])) for path in sorted(MIGRATIONS_DIR.glob("*.sql")))
    said = []
    for _ in range(2):
        done = salesmart("migrate", env=env)
        assert done.returncode == 0, done.stderr
        said.append(done.stdout.strip().splitlines()[-1])
    assert said == [f"migrations applied: {every}", "migrations applied: none (up to date)"]
