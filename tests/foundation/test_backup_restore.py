"""The README's backup recipe: what it dumps restores into an empty database that every
command then uses (a dump without ``salesmart_meta`` left migrations to run again, and the
first one failed on the restored tables)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from common.config import Settings
from common.pg import connect
from pipeline.ingest import ingest_postgres
from pipeline.migrate import migrate_database
from pipeline.postgres_embedded import EmbeddedPostgres, _bin_dir
from pipeline.users import add_user, list_users
from tests.conftest import create_database

# The schemas the README's "Backups" line names.
BACKED_UP = ("raw", "auth", "salesmart_meta")
FILE = (
    "transaction_id,product,price,quantity,date\n"
    "T1,Halal Dates,12.50,2,2024-01-05\n"
    "T2,Pork Pie,11.00,1,2024-01-06\n"
)


def test_the_backed_up_schemas_restore_into_an_empty_database(
    settings: Settings, pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    source = tmp_path / "sales.csv"
    source.write_text(FILE)
    conn = connect(settings.database_url)
    try:
        ingest_postgres(conn, source, settings)
        add_user(conn, "alice", "a-long-enough-password", "analyst", rounds=4)
    finally:
        conn.close()

    dump = tmp_path / "backup.sql"
    schemas = [arg for name in BACKED_UP for arg in ("-n", name)]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"`pg_dump {' '.join(schemas)}`" in readme
    subprocess.run(
        [str(_bin_dir() / "pg_dump"), *schemas, "-f", str(dump), settings.database_url],
        check=True,
        capture_output=True,
    )
    restored = create_database(pg_server, migrated=False)
    subprocess.run(
        [str(_bin_dir() / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), restored],
        check=True,
        capture_output=True,
    )

    assert migrate_database(restored) == []  # nothing to apply again
    conn = connect(restored)
    try:
        assert [user.username for user in list_users(conn)] == ["alice"]
        again = ingest_postgres(conn, source, dataclasses.replace(settings, database_url=restored))
        assert again.already_loaded and again.loaded == 0
        [[loaded, rejected]] = conn.run(
            "SELECT (SELECT count(*) FROM raw.transactions),"
            " (SELECT count(*) FROM raw.rejected_transactions)"
        )
        assert (loaded, rejected) == (1, 1)
    finally:
        conn.close()
