"""Migration 0005: counters kept for names that match no account (in clear: perhaps a
password typed in the wrong field) are dropped when failures start being counted under an
HMAC; an account's counter (a lock in force) stays."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.pg import connect
from pipeline.migrate import MIGRATIONS_DIR, migrate_database
from pipeline.postgres_embedded import EmbeddedPostgres
from tests.conftest import create_database


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
