"""PostgreSQL connection basics shared by the CLI and the functions (psycopg2, over libpq).

A DSN is ``postgresql://user:password@host:port/dbname[?sslmode=require]``, read by libpq's
own parser; the parameters in its query (``sslrootcert``, ``host=/cloudsql/…``, ``options``,
...) mean what they mean to libpq.

Every caller talks to PostgreSQL through :class:`PgConnection`: autocommit (``BEGIN`` and
``COMMIT`` are statements), ``:name`` parameters, rows as lists, and ``COPY … FROM STDIN``
fed from an iterator of blocks. psycopg2 is a C extension: a query costs ~70 µs of CPU
where a pure-Python driver took ~170 µs, and it holds the GIL once per round trip, not once
per socket read (bench/NOTES.md).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.config import ConfigError

if TYPE_CHECKING:
    from psycopg2.extensions import connection as raw_connection

#: How long a command (and anything else not naming its own) waits to connect; the
#: functions' pools wait less (common.db: a request is waiting).
COMMAND_CONNECT_TIMEOUT_SECONDS = 5
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: libpq's TLS file options, taken from the DSN's query as they are.
SSL_FILE_OPTIONS = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
#: A dead peer is noticed within about this long after its last sign of life (TCP
#: keepalives while waiting for an answer; ``tcp_user_timeout`` for unacknowledged sends).
DEAD_PEER_SECONDS = 10


@dataclass(frozen=True)
class PgParams:
    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)
    sslmode: str = "prefer"
    ssl_files: tuple[tuple[str, str], ...] = ()
    #: The URL's other libpq parameters (options, target_session_attrs, hostaddr, ...),
    #: passed to libpq as they are.
    other: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> str:
        """Where the bytes go: ``hostaddr`` when given (libpq connects there, the host only
        names the server), else the host."""
        return dict(self.other).get("hostaddr") or self.host

    def redacted(self) -> str:
        """The DSN without its password, safe for logs and messages."""
        if self.address != self.host:  # where the bytes go, beside the name
            return f"{self._redacted_url()} (hostaddr {self.address})"
        return self._redacted_url()

    def _redacted_url(self) -> str:
        if self.host.startswith("/"):  # a Unix socket's folder
            return f"postgresql://{self.user}@/{self.database}?host={self.host}&port={self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{self.user}@{host}:{self.port}/{self.database}"

    def password_or_env(self, environ: Mapping[str, str]) -> str:
        """The password libpq would send: the URL's, else ``PGPASSWORD`` (a ``.pgpass``
        file it reads itself, later)."""
        return self.password or environ.get("PGPASSWORD", "")


#: libpq's environment variable for each parameter that has one (libpq 17's list): how a
#: program that makes its own connections (dbt) is given the URL's other parameters.
LIBPQ_ENVIRONMENT = {
    "hostaddr": "PGHOSTADDR",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcertmode": "PGSSLCERTMODE",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    **{name: f"PG{name.upper()}" for name in SSL_FILE_OPTIONS},
}
#: What a password that breaks its URL needs (a "/" ends the host and port, an "@" the
#: user info, a "%" starts an escape).
_ENCODE_HINT = (
    "(in the user name or password, @ : / # ? % must be percent-encoded: %40 %3A %2F %23 %3F %25)"
)
#: The URL's parts PgParams holds by name; every other libpq parameter goes to ``other``.
_NAMED = ("host", "port", "user", "password", "dbname", "sslmode", *SSL_FILE_OPTIONS)


#: libpq's reasons for a URL it cannot read, as words of its message; only these are shown,
#: never the message (it quotes the URL's tokens, a password among them, and a password
#: holding a quote defeated taking the quoted parts out).
_LIBPQ_URL_REASONS = (
    ("invalid percent-encoded token", "invalid percent-encoded token"),
    ("forbidden value %00", "a %00 escape"),
    ("may not be empty", 'an empty IPv6 host "[]"'),
    ("IPv6 host address", 'an IPv6 host without its closing "]"'),
    ("invalid URI query parameter", "a query parameter libpq does not know"),
    ("extra key/value separator", 'a "=" inside a query parameter\'s value (write it %3D)'),
    ("missing key/value separator", "a query parameter without its value"),
)


def _has_control_character(text: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def parse_dsn(dsn: str) -> PgParams:
    """A ``postgresql://`` URL read by libpq's own parser (psycopg2's): a host in the
    query (``?host=/cloudsql/…``, a Unix socket's folder), escapes and repeated parameters
    mean what they mean to psql. Missing parts: host 127.0.0.1 (or the ``hostaddr``
    given), port 5432, user and database ``postgres``. White space around the URL is not
    its (a Secret made from a file keeps the file's line end: libpq would take it into
    the database's name); a control character inside it is refused."""
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn as libpq_parse

    dsn = dsn.strip()
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "SALESMART_DATABASE_URL must start with postgresql:// or postgres:// (a"
            " key=value connection string is not taken)"
        )
    if _has_control_character(dsn):
        raise ConfigError("SALESMART_DATABASE_URL holds a control character (a line end?)")
    try:
        given: dict[str, str] = libpq_parse(dsn)
    except ProgrammingError as exc:
        said = str(exc)
        reason = next((why for words, why in _LIBPQ_URL_REASONS if words in said), "")
        hint = f" {_ENCODE_HINT}" if "percent" in reason else ""
        reason = f" ({reason})" if reason else ""
        raise ConfigError(f"SALESMART_DATABASE_URL is not a valid URL{reason}{hint}") from None
    # Decoded (%0A): a line end in the database's name came back cut from the server.
    # The password may hold any byte the server takes.
    if any(_has_control_character(value) for key, value in given.items() if key != "password"):
        raise ConfigError(
            "SALESMART_DATABASE_URL holds a %-escaped control character (%0A, a line end?)"
            " outside its password"
        )
    host = given.get("host") or given.get("hostaddr") or "127.0.0.1"
    database = given.get("dbname") or "postgres"
    # libpq ends the user info at its first "@", before any "/": the password's rest is
    # then the host, or (after a "/") the port and the database.
    if "@" in host:
        raise ConfigError(f"SALESMART_DATABASE_URL has an invalid host {_ENCODE_HINT}")
    if "," in host or "," in given.get("port", ""):
        raise ConfigError(
            "SALESMART_DATABASE_URL names several hosts: give one (a load balancer's or"
            " the primary's)"
        )
    port_text = given.get("port") or "5432"
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError(f"SALESMART_DATABASE_URL has an invalid port {_ENCODE_HINT}")
    if "@" in database:
        raise ConfigError(f"SALESMART_DATABASE_URL has an invalid database name {_ENCODE_HINT}")
    timeout = given.get("connect_timeout", "0")
    if not (timeout.isascii() and timeout.isdigit() and len(timeout) <= 6):
        raise ConfigError("SALESMART_DATABASE_URL: connect_timeout must be whole seconds")
    sslmode = given.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise ConfigError(f"SALESMART_DATABASE_URL: sslmode must be one of {', '.join(SSL_MODES)}")
    return PgParams(
        host=host,
        port=int(port_text),
        user=given.get("user") or "postgres",
        password=given.get("password", ""),
        database=database,
        sslmode=sslmode,
        ssl_files=tuple((key, given[key]) for key in SSL_FILE_OPTIONS if key in given),
        other=tuple((key, value) for key, value in given.items() if key not in _NAMED),
    )


def libpq_ssl_options(params: PgParams) -> dict[str, str]:
    """libpq's TLS options for the DSN's ``sslmode`` (libpq's own meanings, one exception).

    - ``prefer``/``allow`` on a loopback address: plain TCP (``disable``). The bytes never
      leave the machine (a local server, or a Cloud SQL Auth Proxy that encrypts itself),
      and asking for TLS first costs a round trip and OpenSSL's start on every connect.
    - ``verify-full`` without ``sslrootcert``: the system's CA store (``sslrootcert=system``;
      libpq would otherwise look for ``~/.postgresql/root.crt``). ``verify-ca`` needs the
      CA file of the server's own authority in ``sslrootcert``: libpq refuses the system
      store for it, since any public CA could then vouch for any server.
    - Otherwise as given: ``require`` encrypts without verifying, ``prefer`` tries TLS
      and falls back to plain TCP, ``disable`` never encrypts.
    """
    mode = params.sslmode
    if mode in ("prefer", "allow") and _is_loopback(params.address):
        mode = "disable"
    options = {"sslmode": mode, **dict(params.ssl_files)}
    if mode == "verify-full":
        options.setdefault("sslrootcert", "system")
    return options


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.startswith("/"):  # a Unix socket is local too
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A literal, a quoted name or a comment is copied as it is; ``::`` is a cast.
_SQL_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|::|:([A-Za-z_]\w*)|%""", re.S
)


@functools.lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """``sql`` with ``:name`` parameters as psycopg2's ``%(name)s`` (and ``%`` doubled)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return f"%({match.group(1)})s"
        # psycopg2 formats the whole text, literals and comments included.
        return match.group(0).replace("%", "%%")

    return _SQL_TOKENS.sub(replace, sql)


class _ReadStopped(Exception):
    """What psycopg2 is told when the blocks fail: it sends the text to the server as the
    COPY's failure reason (into the server's log), so it says nothing of the data."""


class _BlockReader:
    """An iterator of ``bytes`` blocks as the file ``copy_expert`` reads."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._blocks: Iterator[bytes] = iter(blocks)
        #: What the blocks raised: psycopg2 reports it as a cancelled COPY, and the caller
        #: gets it back as it was (an unusable file stays an unusable file).
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        # Any length will do: psycopg2 sends what it is given and reads again until b"".
        try:
            for block in self._blocks:
                if block:
                    return block
        except Exception as exc:
            # Its message may quote the file (a header line, a row): kept for the caller.
            self.error = exc
            raise _ReadStopped("the client stopped reading its input") from None
        except BaseException as exc:  # Ctrl-C, SystemExit: carry no file content
            self.error = exc
            raise
        return b""

    readline = read  # the file protocol copy_expert is typed against; only read is called


class PgConnection:
    """One PostgreSQL session in autocommit mode. ``run`` is the only way to talk to it."""

    def __init__(self, raw: raw_connection) -> None:
        self.raw = raw

    def run(
        self, sql: str, stream: Iterable[bytes] | None = None, **params: Any
    ) -> list[list[Any]]:
        """Rows of one statement (``[]`` when it returns none), ``:name`` parameters bound.

        ``stream``: the blocks of a ``COPY … FROM STDIN``.
        """
        with self.raw.cursor() as cursor:
            if stream is not None:
                reader = _BlockReader(stream)
                try:
                    cursor.copy_expert(sql, reader)
                except Exception:
                    if reader.error is not None:
                        raise reader.error from None
                    raise
                return []
            if params:
                cursor.execute(pyformat(sql), params)
            else:
                cursor.execute(sql)  # no parameters: no ``%`` formatting either
            if cursor.description is None:
                return []
            return [list(row) for row in cursor.fetchall()]

    def close(self) -> None:
        self.raw.close()


def connect(
    dsn: str, *, application_name: str = "salesmart", timeout: float | None = None
) -> PgConnection:
    """A new connection; callers own closing it. ``timeout``: seconds to connect (a
    function's pool gives its own: a request is waiting; else the URL's ``connect_timeout``
    or ``COMMAND_CONNECT_TIMEOUT_SECONDS``)."""
    import psycopg2  # imported here: the CLI's fast paths never need it

    params = parse_dsn(dsn)
    url = dict(params.other)
    if timeout is None and "connect_timeout" in url:
        seconds = float(url["connect_timeout"]) or math.inf  # 0: libpq waits without a limit
    else:
        seconds = timeout if timeout is not None else COMMAND_CONNECT_TIMEOUT_SECONDS
    options: dict[str, Any] = {
        # The URL's liveness settings (keepalives, tcp_user_timeout) replace these.
        "keepalives": 1,
        "keepalives_idle": DEAD_PEER_SECONDS // 2,
        "keepalives_interval": 1,
        "keepalives_count": DEAD_PEER_SECONDS // 2,
        "tcp_user_timeout": DEAD_PEER_SECONDS * 1000,
        **url,
        "host": params.host,
        "port": params.port,
        "user": params.user,
        "dbname": params.database,
        "password": params.password or None,  # None: libpq's own sources (.pgpass)
        # Ours: the functions are told apart by it in pg_stat_activity.
        "application_name": application_name,
        # libpq counts whole seconds, and at least 2 (0: no limit).
        "connect_timeout": 0 if math.isinf(seconds) else max(2, math.ceil(seconds)),
        # The rows are UTF-8 (COPY sends the file's bytes): another encoding garbled them.
        "client_encoding": "UTF8",
        **libpq_ssl_options(params),
    }
    raw = psycopg2.connect(**options)
    raw.autocommit = True
    return PgConnection(raw)


#: What a failed connect was, by libpq's and the server's (English) words: a log line tells a
#: wrong password from a server that is down without quoting the message (it names hosts
#: and users). Read with every quoted name taken out (a host, role or database named "ssl"
#: is no clue), the specific ones first; anything else is "other".
_CONNECT_FAILURES = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"the database system is (starting|shutting|not yet|in recovery)", "starting_or_stopping"),
        (r"too many (clients|connections)|slots are reserved", "too_many_connections"),
        (
            r"password authentication failed|no password supplied|authentication failed",
            "auth_failed",
        ),
        (r"role +does not exist", "auth_failed"),
        (
            r"no pg_hba\.conf entry|pg_hba\.conf rejects|permission denied for database"
            r"|not permitted to log in",
            "not_allowed",
        ),
        (r"database +does not exist", "database_missing"),
        (r"connection refused", "refused"),
        (r"timeout expired|timed out", "timeout"),
        (r"could not translate host name|name or service not known", "unknown_host"),
        (r"\bssl\b|certificate", "tls"),
    )
)
#: A quoted name in libpq's and the server's messages: "host", role "x", database "y".
_QUOTED = re.compile(r'"[^"]*"')


def connect_failure(exc: BaseException) -> str:
    """A short word for why a connect failed (see ``_CONNECT_FAILURES``)."""
    words = _QUOTED.sub("", str(exc))
    return next((kind for pattern, kind in _CONNECT_FAILURES if pattern.search(words)), "other")


def close_quietly(conn: Any) -> None:
    """Close a connection that may already be closed or broken."""
    with contextlib.suppress(Exception):  # a dead connection has nothing left to report
        conn.close()
