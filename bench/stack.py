"""The benchmark's own services: an embedded PostgreSQL (fsync on, as in production), the
BigQuery stand-in, settings with fresh secrets, databases, the 1M-row dataset."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.config import REPO_ROOT, Settings, build_settings
from common.pg import parse_dsn
from pipeline.postgres_embedded import EmbeddedPostgres, _bin_dir, open_embedded

DATA_DIR = REPO_ROOT / "bench" / "data"
CONFIG = REPO_ROOT / "data" / "pipeline_config.yaml"
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-" + "b" * 16


def dataset(rows: int, *, seed: int = 7) -> Path:
    """The generated CSV of ``rows`` transactions (cached under bench/data/)."""
    from pipeline.generate import generate

    path = DATA_DIR / f"transactions-{rows}.csv"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        generate(partial, rows, seed=seed, id_prefix="B")
        partial.rename(path)
    return path


def pg_bin(name: str) -> Path:
    """A client program of the embedded PostgreSQL (psql, pgbench)."""
    return _bin_dir() / name


@dataclass
class Stack:
    server: EmbeddedPostgres
    root: Path
    jwt_secret: str
    pii_key: str

    def dsn(self, database: str) -> str:
        return self.server.database_dsn(database)

    def settings(self, database: str, **env: str) -> Settings:
        return build_settings(
            {
                **os.environ,
                "SALESMART_ENV": "prod",
                "SALESMART_CONFIG": str(CONFIG),
                "SALESMART_DATABASE_URL": self.dsn(database),
                "SALESMART_JWT_SECRET": self.jwt_secret,
                "SALESMART_PII_KEY": self.pii_key,
                "SALESMART_STATE_DIR": str(self.root / "state"),
                **env,
            }
        )

    def create_database(self, name: str, *, migrated: bool = True) -> str:
        """Drop and create ``name``; returns its DSN."""
        return self.server.create_database(name, migrated=migrated, replace=True)

    def client_env(self) -> dict[str, str]:
        """Environment for psql/pgbench: the password, no user configuration files."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGPASSWORD": self.server.password,
            "PGCONNECT_TIMEOUT": "10",
            "LC_ALL": "C",
            "HOME": str(self.root),
        }

    def client_args(self, database: str) -> list[str]:
        params = parse_dsn(self.dsn(database))
        return ["-h", params.host, "-p", str(params.port), "-U", params.user, "-d", database]

    def psql(self, database: str, *commands: str, timeout: float = 600) -> float:
        """Run psql commands (``-c`` each); the wall-clock seconds they took."""
        args = [str(pg_bin("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        args += self.client_args(database)
        for command in commands:
            args += ["-c", command]
        started = time.perf_counter()
        subprocess.run(
            args,
            check=True,
            env=self.client_env(),
            timeout=timeout,
            capture_output=True,
            cwd=self.root,
        )
        return time.perf_counter() - started


@contextmanager
def running_stack(keep: Path | None = None) -> Iterator[Stack]:
    """A fresh embedded PostgreSQL (fsync on) in a temporary folder the server user can
    reach (or in ``keep``, reused between runs), stopped at the end."""
    if keep is None:
        root = Path(tempfile.mkdtemp(prefix="salesmart-bench-"))
        root.chmod(0o755)
    else:
        root = keep.resolve()
        root.mkdir(parents=True, exist_ok=True)
    server = open_embedded(root / "pg", fsync=True)
    server.start()
    try:
        yield Stack(
            server=server,
            root=root,
            jwt_secret=secrets.token_urlsafe(48),
            pii_key=secrets.token_urlsafe(48),
        )
    finally:
        server.stop()
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
