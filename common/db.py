"""A small, thread-safe, self-healing PostgreSQL pool over pg8000 (one per function instance).

- Connections are opened lazily (never at import: gunicorn forks after importing) and
  reused; at most ``max_size`` exist, one per serving thread is enough.
- Each connection prepares a statement once and reuses it (``PooledConnection.run``).
- A connection that fails at the network level, or that the server closed (shutdown,
  restart), is discarded together with every idle one (they share its fate), and the
  call is retried once on a new connection.
- When the server cannot be reached, ``WarehouseUnavailable`` (503) is raised within the
  connect timeout; the next call simply tries again, so the function recovers by itself.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common.errors import WarehouseUnavailable
from common.logging import log_event, sqlstate

CONNECT_TIMEOUT_SECONDS = 3.0
STATEMENT_TIMEOUT_MS = 2500
ACQUIRE_TIMEOUT_SECONDS = 5.0
MAX_CONNECTION_AGE_SECONDS = 1800.0

# SQLSTATEs that mean "this connection, or the server behind it, is gone".
_DEAD_CONNECTION_STATES = ("57P01", "57P02", "57P03", "53300", "08")
# SQLSTATEs that mean "the warehouse cannot answer now" without killing the connection:
# statement timeout, marts or schema not built yet, database or login missing.
_UNAVAILABLE_STATES = ("57014", "42P01", "3F000", "3D000", "28P01", "28000")
# Once per connection, one round trip. Plans made for each execution's values: after five
# runs PostgreSQL would switch the trends statement to a generic plan, which cannot turn the
# product prefix into an index range nor drop the absent ("IS NULL OR") filters, and runs
# ~1.5x slower than planning it afresh (measured on the 1M-row mart; bench/RESULTS.md).
_SESSION_SETTINGS = (
    "SELECT set_config('statement_timeout', :timeout, false),"
    " set_config('plan_cache_mode', 'force_custom_plan', false)"
)
# A cached plan went stale after the mart was rebuilt with other column types.
_STALE_PLAN_STATE = "0A000"


def default_pool_size() -> int:
    """One connection per serving thread: functions-framework's ``THREADS`` (4 x CPUs)."""
    try:
        return max(1, int(os.environ.get("THREADS", "")))
    except ValueError:
        return (os.cpu_count() or 1) * 4


def _close(raw: Any) -> None:
    with contextlib.suppress(Exception):  # a dead connection has nothing left to report
        raw.close()


def _is_dead(exc: BaseException) -> bool:
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(_DEAD_CONNECTION_STATES)
    # pg8000.InterfaceError ("network error"), socket errors, a half-read message.
    return exc.__class__.__name__ == "InterfaceError" or isinstance(
        exc, (OSError, EOFError, ConnectionError)
    )


class PooledConnection:
    """A pg8000 connection with its prepared statements."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.created = time.monotonic()
        self._prepared: dict[str, Any] = {}

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        """Run ``sql`` (``:name`` parameters) as a statement prepared once per connection."""
        statement = self._prepared.get(sql)
        if statement is None:
            statement = self.raw.prepare(sql)
            self._prepared[sql] = statement
        rows = statement.run(**params)
        return list(rows) if rows is not None else []

    def forget_statements(self) -> None:
        self._prepared.clear()


class PgPool:
    def __init__(
        self,
        dsn: str,
        *,
        max_size: int | None = None,
        application_name: str = "salesmart",
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ) -> None:
        self._dsn = dsn
        self.max_size = max_size or default_pool_size()
        self._application_name = application_name
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = statement_timeout_ms
        self._slots = threading.BoundedSemaphore(self.max_size)
        self._lock = threading.Lock()
        self._idle: list[PooledConnection] = []
        self._pid = os.getpid()
        self.opened = 0  # connections opened over the pool's life (tests and metrics)

    # -- connections ----------------------------------------------------------------------
    def _connect(self) -> PooledConnection:
        from common.pg import connect  # pg8000 is imported on first use, not at start

        try:
            raw = connect(
                self._dsn, application_name=self._application_name, timeout=self._connect_timeout
            )
        except Exception as exc:
            log_event(
                "postgres unreachable",
                level=30,
                error_type=type(exc).__name__,
                sqlstate=sqlstate(exc),
            )
            raise WarehouseUnavailable() from None
        try:
            raw.run(_SESSION_SETTINGS, timeout=str(int(self._statement_timeout_ms)))
        except Exception:
            _close(raw)
            raise WarehouseUnavailable() from None
        self.opened += 1
        return PooledConnection(raw)

    def _take_idle(self) -> PooledConnection | None:
        with self._lock:
            if self._pid != os.getpid():  # forked after use: the parent's sockets are not ours
                self._idle.clear()
                self._pid = os.getpid()
            while self._idle:
                conn = self._idle.pop()
                if time.monotonic() - conn.created < MAX_CONNECTION_AGE_SECONDS:
                    return conn
                _close(conn.raw)
        return None

    def _give_back(self, conn: PooledConnection) -> None:
        with self._lock:
            self._idle.append(conn)

    def _drain_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn.raw)

    @contextmanager
    def _checkout(self) -> Iterator[tuple[PooledConnection, bool]]:
        """A connection and whether it was reused; broken ones are dropped, not returned."""
        if not self._slots.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS):
            raise WarehouseUnavailable()
        try:
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = self._connect()
            try:
                yield conn, reused
            except BaseException as exc:
                if _is_dead(exc):
                    _close(conn.raw)
                    self._drain_idle()
                else:
                    self._give_back(conn)
                raise
            else:
                self._give_back(conn)
        finally:
            self._slots.release()

    # -- queries ----------------------------------------------------------------------------
    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        """Run one statement; retried once on a fresh connection if the old one was dead.

        Raises ``WarehouseUnavailable`` when PostgreSQL cannot answer; any other database
        error propagates (and becomes a generic 500).
        """
        for attempt in (1, 2):
            reused = False
            try:
                with self._checkout() as (conn, reused):
                    try:
                        return conn.run(sql, **params)
                    except Exception as exc:
                        if sqlstate(exc) == _STALE_PLAN_STATE:
                            conn.forget_statements()
                        raise
            except WarehouseUnavailable:
                raise
            except Exception as exc:
                code = sqlstate(exc)
                retry = attempt == 1 and ((_is_dead(exc) and reused) or code == _STALE_PLAN_STATE)
                if retry:
                    continue
                if _is_dead(exc) or (code is not None and code.startswith(_UNAVAILABLE_STATES)):
                    log_event(
                        "postgres query failed",
                        level=30,
                        error_type=type(exc).__name__,
                        sqlstate=code,
                    )
                    raise WarehouseUnavailable() from None
                raise
        raise WarehouseUnavailable()  # pragma: no cover - the loop always returns or raises

    def close(self) -> None:
        self._drain_idle()
