"""Shared fixtures: a real embedded PostgreSQL per test worker, migrated databases, secrets.

Every test process (xdist worker) starts its own server in a temporary folder with fsync
off (tests need speed, not durability), and each ``fresh_database`` is a new database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import Settings, build_settings
from common.pg import connect
from pipeline.migrate import migrate
from pipeline.postgres_embedded import EmbeddedPostgres, open_embedded

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO_ROOT / "data" / "transactions.csv"

# Known, long-enough test secrets (so tests also run the production secret checks).
TEST_ENV = {
    "SALESMART_JWT_SECRET": "test-jwt-secret-" + "j" * 32,
    "SALESMART_PII_KEY": "test-pii-key-" + "p" * 32,
    "SALESMART_BCRYPT_ROUNDS": "4",
    "SALESMART_CONFIG": str(REPO_ROOT / "data" / "pipeline_config.yaml"),
}


@pytest.fixture(scope="session", autouse=True)
def _test_environment() -> Iterator[None]:
    saved = {
        key: os.environ.get(key) for key in (*TEST_ENV, "SALESMART_DATABASE_URL", "SALESMART_ENV")
    }
    os.environ.update(TEST_ENV)
    os.environ.pop("SALESMART_DATABASE_URL", None)
    os.environ.pop("SALESMART_ENV", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's tmp (0700 as root): the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    server = open_embedded(root / "pg", fsync=False)
    server.start()
    yield server
    server.stop(mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


def create_database(server: EmbeddedPostgres, *, migrated: bool = True) -> str:
    """A new empty database on ``server``; returns its DSN."""
    name = "t_" + secrets.token_hex(6)
    admin = connect(server.dsn)
    try:
        admin.run(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    dsn = server.dsn.rsplit("/", 1)[0] + "/" + name
    if migrated:
        conn = connect(dsn)
        try:
            migrate(conn)
        finally:
            conn.close()
    return dsn


@pytest.fixture
def fresh_dsn(pg_server: EmbeddedPostgres) -> str:
    """A new, migrated, empty database for one test."""
    return create_database(pg_server)


@pytest.fixture
def settings(fresh_dsn: str) -> Settings:
    return build_settings({**os.environ, "SALESMART_DATABASE_URL": fresh_dsn})
