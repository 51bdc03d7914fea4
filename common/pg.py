"""PostgreSQL connection basics shared by the CLI and the functions (pg8000, pure Python).

A DSN is ``postgresql://user:password@host:port/dbname[?sslmode=require]``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from common.config import ConfigError

CONNECT_TIMEOUT_SECONDS = 5
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


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
    sslmode = query.get("sslmode", ["prefer"])[0]
    if sslmode not in SSL_MODES:
        raise ConfigError(f"SALESMART_DATABASE_URL: sslmode must be one of {', '.join(SSL_MODES)}")
    return PgParams(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        database=database,
        sslmode=sslmode,
    )


def ssl_context_for(params: PgParams) -> ssl.SSLContext | bool | None:
    """pg8000's ``ssl_context`` for the DSN's ``sslmode`` (libpq's meanings).

    - ``disable``, and ``prefer``/``allow`` on a loopback address: plain TCP. The bytes never
      leave the machine (a local server, or a Cloud SQL Auth Proxy that encrypts itself),
      and pg8000's own "prefer" builds a default context on every connect, loading the
      system's CA store only to then not verify: ~50 ms of a cold start.
    - ``prefer``/``allow`` elsewhere: ``None``, pg8000 tries TLS without verifying it.
    - ``require``: TLS, not verified (libpq's meaning), so no CA store is loaded.
    - ``verify-ca`` / ``verify-full``: the system's CAs; ``verify-full`` also checks the name.
    """
    mode = params.sslmode
    if mode == "disable" or (mode in ("prefer", "allow") and _is_loopback(params.host)):
        return False
    if mode in ("prefer", "allow"):
        return None
    if mode == "require":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    context.check_hostname = mode == "verify-full"
    return context


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(dsn: str, *, application_name: str = "salesmart", timeout: float | None = None) -> Any:
    """A new ``pg8000.native.Connection``; callers own closing it."""
    import pg8000.native  # imported here: the CLI's fast paths never need it

    params = parse_dsn(dsn)
    return pg8000.native.Connection(
        user=params.user,
        host=params.host,
        port=params.port,
        database=params.database,
        password=params.password or None,
        ssl_context=ssl_context_for(params),
        timeout=timeout,
        application_name=application_name,
    )


def close_quietly(conn: Any) -> None:
    """Close a connection that may already be closed or broken."""
    with contextlib.suppress(Exception):  # a dead connection has nothing left to report
        conn.close()
