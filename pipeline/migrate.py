"""Versioned, idempotent schema migrations (``pipeline/migrations/NNNN_name.sql``).

Each file runs once, in order, in its own transaction, recorded in
``salesmart_meta.schema_migrations``. An advisory lock serialises concurrent runners
(commands, ``up`` and the migration Job starting at once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 7_310_070  # arbitrary, constant: the advisory lock id for migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: A table the migrations create (schemas raw and auth), named in an undefined-table error.
MIGRATED_TABLE = re.compile(r'relation "(raw|auth)\.[^"]*" does not exist')
NOT_MIGRATED_HINT = "a database salesmart has not set up: run `salesmart migrate` first"


class NewerDatabaseError(RuntimeError):
    """The database holds migrations this release does not know: a newer one set it up."""


class NotMigratedError(RuntimeError):
    """The database has none of salesmart's migrations: ``salesmart migrate`` comes first."""


def not_migrated_hint(message: str) -> str:
    """``message``, with what to do added when it says a migrated table is missing."""
    return f"{message} ({NOT_MIGRATED_HINT})" if MIGRATED_TABLE.search(message) else message


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{directory}: two migrations share a version: {versions}")
    return found


def migrate(conn: Any, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    applied_now: list[int] = []
    # First the lock: CREATE ... IF NOT EXISTS is not safe against a concurrent create
    # (two migrators on a fresh database: a unique violation in the catalog).
    conn.run("SELECT pg_advisory_lock(:key)", key=_LOCK_KEY)
    try:
        conn.run("CREATE SCHEMA IF NOT EXISTS salesmart_meta")
        conn.run(
            "CREATE TABLE IF NOT EXISTS salesmart_meta.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = conn.run("SELECT version, name FROM salesmart_meta.schema_migrations")
        done = {row[0] for row in rows}
        known = discover(directory)
        # Going back to an older release: its code would run on a schema it does not know
        # (rules the newer one's migrations set up undone by its writes, unsaid).
        _refuse_newer(rows, known)
        for migration in known:
            if migration.version in done:
                continue
            conn.run("BEGIN")
            try:
                conn.run(migration.path.read_text(encoding="utf-8"))
                conn.run(
                    "INSERT INTO salesmart_meta.schema_migrations (version, name)"
                    " VALUES (:version, :name)",
                    version=migration.version,
                    name=migration.name,
                )
                conn.run("COMMIT")
            except Exception:
                conn.run("ROLLBACK")
                raise
            applied_now.append(migration.version)
    finally:
        conn.run("SELECT pg_advisory_unlock(:key)", key=_LOCK_KEY)
    return applied_now


def _refuse_newer(rows: Any, known: list[Migration]) -> None:
    newer = sorted((v, n) for v, n in rows if v not in {m.version for m in known})
    if newer:
        version, name = newer[-1]
        raise NewerDatabaseError(
            f"the database was set up by a newer salesmart (its migration {version},"
            f" {name}); this release knows migrations up to"
            f" {max((m.version for m in known), default=0)}: run that release or a newer"
            " one, or restore a backup made for this one"
        )


def require_known_schema(dsn: str, directory: Path = MIGRATIONS_DIR) -> None:
    """Refuse a database a newer release migrated, or one never migrated, for a command
    that does not migrate (ingest, users, transform, serve, the DAG's dbt): it would write
    to a schema it does not know, or fail on a missing table with dbt's words. A server
    that cannot be reached, or a role that may not read the record (a least-privilege
    one), is left to the command: `serve` still starts (503 until the server is back)."""
    import psycopg2
    from psycopg2 import errors

    from common.pg import connect

    try:
        conn = connect(dsn, application_name="salesmart-schema-check")
    except psycopg2.OperationalError:
        return
    try:
        rows = conn.run("SELECT version, name FROM salesmart_meta.schema_migrations")
    except (errors.UndefinedTable, errors.InvalidSchemaName):
        raise NotMigratedError(
            f"the database has no salesmart tables ({NOT_MIGRATED_HINT})"
        ) from None
    except (errors.InsufficientPrivilege, psycopg2.OperationalError):
        return
    finally:
        conn.close()
    _refuse_newer(rows, discover(directory))


def migrate_database(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """``migrate`` over a connection of its own to ``dsn``; returns the versions applied now."""
    from common.pg import connect

    conn = connect(dsn)
    try:
        return migrate(conn, directory)
    finally:
        conn.close()
