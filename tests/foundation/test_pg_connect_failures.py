"""Why a connect failed, in the functions' log: a wrong password (after a rotation) and a
server that is down were the same line, "postgres unreachable"."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from common.config import Settings
from common.pg import connect, connect_failure
from tests.conftest import free_port_base


def with_netloc(dsn: str, *, password: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(dsn)
    user = parts.username or ""
    secret = parts.password if password is None else password
    netloc = f"{user}:{secret}@{parts.hostname}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def failure_of(dsn: str) -> str:
    with pytest.raises(psycopg2.OperationalError) as caught:
        connect(dsn, timeout=5).close()
    return connect_failure(caught.value)


def test_a_wrong_password_is_not_a_server_that_is_down(settings: Settings) -> None:
    assert failure_of(with_netloc(settings.database_url, password="not-the-password")) == (
        "auth_failed"
    )
    assert failure_of(with_netloc(settings.database_url, port=free_port_base(1))) == "refused"
    missing = urlsplit(settings.database_url)._replace(path="/no_such_database")
    assert failure_of(urlunsplit(missing)) == "database_missing"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        # libpq's and the server's words, read after "... failed: " (a host name is no clue)
        (
            'connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  the database'
            " system is starting up",
            "starting_or_stopping",
        ),
        (
            'connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  permission'
            ' denied for database "salesmart"',
            "not_allowed",
        ),
        (
            'connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  too many'
            ' connections for role "salesmart"',
            "too_many_connections",
        ),
        (
            'connection to server at "ssl-db" (10.0.0.5), port 5432 failed: Connection refused',
            "refused",
        ),
        (
            'connection to server at "db" (10.0.0.5), port 5432 failed: Connection timed out',
            "timeout",
        ),
        (
            'connection to server at "db" (10.0.0.5), port 5432 failed: SSL error: certificate'
            " verify failed",
            "tls",
        ),
        (
            'could not translate host name "nowhere" to address: Name or service not known',
            "unknown_host",
        ),
        # Names are no clue: a host, role or database called "ssl..." or "certificates".
        (
            'connection to server at "ssl-db" (10.0.0.5), port 5432 failed: FATAL:  role'
            ' "ssl_reader" is not permitted to log in',
            "not_allowed",
        ),
        (
            'connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  database'
            ' "certificates" does not exist',
            "database_missing",
        ),
        (
            'connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  remaining'
            " connection slots are reserved for roles with the SUPERUSER attribute",
            "too_many_connections",
        ),
        ("something new", "other"),
    ],
)
def test_a_failure_is_named_by_its_reason_not_its_host(message: str, kind: str) -> None:
    assert connect_failure(RuntimeError(message)) == kind
