"""PostgreSQL connection basics shared by the CLI and the functions (pg8000, pure Python).

A DSN is ``postgresql://user:password@host:port/dbname[?sslmode=require]``.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from common.config import ConfigError

CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class PgParams:
    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)
    sslmode: str = "prefer"

    def redacted(self) -> str:
        """The DSN without its password, safe for logs and messages."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def parse_dsn(dsn: str) -> PgParams:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("SALESMART_DATABASE_URL must start with postgresql://")
    query = parse_qs(parts.query)
    try:
        port = parts.port or 5432
    except ValueError:
        raise ConfigError("SALESMART_DATABASE_URL has an invalid port") from None
    database = unquote(parts.path.lstrip("/")) or "postgres"
    return PgParams(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        database=database,
        sslmode=query.get("sslmode", ["prefer"])[0],
    )


def connect(dsn: str, *, application_name: str = "salesmart", timeout: float | None = None) -> Any:
    """A new ``pg8000.native.Connection``; callers own closing it."""
    import pg8000.native  # imported here: the CLI's fast paths never need it

    params = parse_dsn(dsn)
    ssl_context: ssl.SSLContext | bool | None = None
    if params.sslmode in ("require", "verify-ca", "verify-full"):
        ssl_context = ssl.create_default_context()
        if params.sslmode == "require":
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
    return pg8000.native.Connection(
        user=params.user,
        host=params.host,
        port=params.port,
        database=params.database,
        password=params.password or None,
        ssl_context=ssl_context,
        timeout=timeout,
        application_name=application_name,
    )


def close_quietly(conn: Any) -> None:
    """Close a connection that may already be closed or broken."""
    with contextlib.suppress(Exception):  # a dead connection has nothing left to report
        conn.close()
