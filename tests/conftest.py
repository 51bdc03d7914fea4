"""Shared fixtures: a real embedded PostgreSQL per test worker, migrated databases, secrets.

Every test process (xdist worker) starts its own server in a temporary folder with fsync
off (tests need speed, not durability), and each ``fresh_database`` is a new database.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from common.config import Settings, build_settings
from common.pg import connect
from pipeline.netutil import port_is_free
from pipeline.postgres_embedded import EmbeddedPostgres, open_embedded

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO_ROOT / "data" / "transactions.csv"

# Property tests check answers, not speed: Hypothesis's 200 ms per-example deadline would
# fail them on a busy CI machine (two xdist workers, their databases and servers).
hypothesis_settings.register_profile("salesmart", deadline=None)
hypothesis_settings.load_profile("salesmart")

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


@contextlib.contextmanager
def scratch_pg_server(prefix: str) -> Iterator[EmbeddedPostgres]:
    """A running embedded PostgreSQL in a temporary folder, removed afterwards."""
    # Not under pytest's tmp (0700 as root): the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    server = open_embedded(root / "pg", fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    with scratch_pg_server("salesmart-pg-") as server:
        yield server


def create_database(server: EmbeddedPostgres, *, migrated: bool = True) -> str:
    """A new empty database on ``server``; returns its DSN."""
    return server.create_database("t_" + secrets.token_hex(6), migrated=migrated)


@pytest.fixture
def fresh_dsn(pg_server: EmbeddedPostgres) -> str:
    """A new, migrated, empty database for one test."""
    return create_database(pg_server)


@pytest.fixture
def settings(fresh_dsn: str) -> Settings:
    return build_settings({**os.environ, "SALESMART_DATABASE_URL": fresh_dsn})


# -- the `salesmart` command, as a test runs it -------------------------------------------------
def free_port_base(count: int = 4) -> int:
    """``count`` free ports in a row, below the kernel's ephemeral range: a server started
    with them may bind them seconds later (``up`` after its loading and dbt), and a port of
    that range can meanwhile become the local end of any outgoing connection of a test
    running beside this one."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(10_000, max(10_000 + count, low - count))
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} free ports in a row")


def cli_env(settings: Settings, tmp_path: Path, **extra_env: str) -> dict[str, str]:
    """The environment of a `salesmart` command run by a test: the test's database and a
    state folder of its own (so no `make up` of the checkout is picked up)."""
    return {
        **os.environ,
        "SALESMART_DATABASE_URL": settings.database_url,
        "SALESMART_STATE_DIR": str(tmp_path / "state"),
        **extra_env,
    }


def salesmart(
    *args: str, env: dict[str, str], stdin: str = "", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`salesmart ARGS` to completion in exactly ``env``, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli(
    settings: Settings, tmp_path: Path, *args: str, stdin: str = "", **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """`salesmart ARGS` against the test's database and a state folder of its own."""
    return salesmart(*args, env=cli_env(settings, tmp_path, **extra_env), stdin=stdin)


def scalar(settings: Settings, sql: str) -> int:
    """The integer one query returns (a count, usually)."""
    conn = connect(settings.database_url)
    try:
        return int(conn.run(sql)[0][0])
    finally:
        conn.close()


def process_alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def eventually(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Whether ``check()`` holds within ``seconds`` (asked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
