"""A small, thread-safe, self-healing PostgreSQL pool (one per function instance).

- Connections (``common.pg.PgConnection``) are opened lazily (never at import: gunicorn
  forks after importing) and reused; at most ``max_size`` exist, one per serving thread is
  enough.
- Statements are planned for each execution's values (psycopg2 binds them client-side):
  a generic plan cannot turn the product prefix into an index range nor drop the absent
  ("IS NULL OR") filters, and ran ~1.5x slower on the 1M-row mart.
- A connection that fails at the network level, or that the server closed (shutdown,
  restart), is discarded together with every idle one (they share its fate), and the
  call is retried once on a new connection.
- When the server cannot be reached, ``WarehouseUnavailable`` (503) is raised within the
  connect timeout; the next call simply tries again, so the function recovers by itself.
- A server that stops answering on an open connection (frozen, a paused VM, a dead NAT
  path) would leave the call waiting: its kernel still acknowledges, so neither keepalives
  nor the server's own ``statement_timeout`` end the wait. A watchdog shuts the socket of
  a statement still running ``ANSWER_GRACE_SECONDS`` after its statement timeout; the
  call then fails like any dead connection (retried once, else 503).
- Statements that must agree (a page and its totals) run in one read-only snapshot
  (``run_in_one_snapshot``): a dbt build that swaps a mart between them is seen by all of
  them or none.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from common.config import Settings, require_database, serving_threads
from common.errors import WarehouseUnavailable
from common.logging import log_event, sqlstate
from common.pg import PgConnection, close_quietly

POOL_CONNECT_TIMEOUT_SECONDS = 3.0
STATEMENT_TIMEOUT_MS = 2500
ACQUIRE_TIMEOUT_SECONDS = 5.0
MAX_CONNECTION_AGE_SECONDS = 1800.0
ANSWER_GRACE_SECONDS = 2.0

# SQLSTATEs that mean "this connection, or the server behind it, is gone".
_DEAD_CONNECTION_STATES = ("57P01", "57P02", "57P03", "53300", "08")
# SQLSTATEs that mean "the warehouse cannot answer now" without killing the connection:
# statement timeout, marts or schema not built yet, database or login missing.
_UNAVAILABLE_STATES = ("57014", "42P01", "3F000", "3D000", "28P01", "28000")
# Once per connection, one round trip.
_SESSION_SETTINGS = "SELECT set_config('statement_timeout', :timeout, false)"
_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
#: A statement and its parameters.
Statement = tuple[str, dict[str, Any]]
T = TypeVar("T")


def default_pool_size() -> int:
    """One connection per serving thread, so no request waits for one."""
    return serving_threads(os.environ)


def _is_dead(exc: BaseException) -> bool:
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(_DEAD_CONNECTION_STATES)
    # psycopg2's OperationalError without a SQLSTATE ("server closed the connection
    # unexpectedly", a refused or timed-out connect), InterfaceError ("connection already
    # closed"), socket errors.
    return exc.__class__.__name__ in ("OperationalError", "InterfaceError") or isinstance(
        exc, (OSError, EOFError, ConnectionError)
    )


class _Watchdog:
    """Shuts the socket of a statement that outlives its deadline (one thread a process,
    started on first use: gunicorn forks after import)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        # token -> (deadline, socket fd) of each statement running; a handful at most.
        self._running: dict[int, tuple[float, int]] = {}
        self._next = 0
        self._pid = 0

    @contextmanager
    def watching(self, fd: int, seconds: float) -> Iterator[Callable[..., None]]:
        """Watch ``fd`` for ``seconds``; yields ``rearm``, which gives the next statement
        on it its own ``seconds`` (a snapshot of several is not given their sum: a frozen
        server then held the dashboard's 503 for 13.5 s, not 4.5)."""
        with self._ready:
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                self._running.clear()
                threading.Thread(target=self._loop, name="pg-watchdog", daemon=True).start()
            self._next += 1
            token = self._next
            # No wake-up: the loop looks again within a second, well before any deadline.
            self._running[token] = (time.monotonic() + seconds, fd)

        def rearm(statements: int = 1) -> None:
            """The next message's deadline: ``statements`` deadlines (a message of several,
            each of which the server times out on its own)."""
            with self._ready:
                if token in self._running:  # not once it fired: the socket is shut
                    self._running[token] = (time.monotonic() + seconds * statements, fd)

        try:
            yield rearm
        finally:
            with self._ready:
                self._running.pop(token, None)

    def _loop(self) -> None:
        import socket

        while True:
            with self._ready:
                if not self._running:
                    self._ready.wait(1.0)
                    continue
                token, (deadline, fd) = min(self._running.items(), key=lambda item: item[1][0])
                left = deadline - time.monotonic()
                if left > 0:
                    self._ready.wait(min(left, 1.0))
                    continue
                # Still registered, so the fd is still that connection's socket: shutting it
                # down (through a duplicate) makes the waiting libpq call fail at once.
                del self._running[token]
                try:
                    with socket.socket(fileno=os.dup(fd)) as duplicate:
                        duplicate.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                log_event(
                    "postgres did not answer", level=logging.WARNING, seconds_waited=round(-left, 1)
                )


_WATCHDOG = _Watchdog()


class PooledConnection:
    """A connection of the pool and when it was opened."""

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn
        self.created = time.monotonic()

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        return self.conn.run(sql, **params)

    def run_in_one_snapshot(
        self,
        statements: Sequence[Statement],
        tables: Sequence[str],
        before_each: Callable[..., None] = lambda statements=1: None,
    ) -> list[list[list[Any]]]:
        # The locks before the snapshot (the first SELECT takes it): a rebuild swapping a
        # table in is waited for, and then seen. A snapshot taken first, then waiting on
        # the swap, saw the new table empty. One round trip with the BEGIN, each lock
        # given its own deadline (each may wait out a swap).
        locks = [f"LOCK TABLE {table} IN ACCESS SHARE MODE" for table in tables]
        try:
            before_each(max(1, len(locks)))  # the BEGIN answers at once; each lock may wait
            self.conn.run("; ".join([_SNAPSHOT, *locks]))  # inside: an interrupt rolls back
            results = []
            for sql, params in statements:
                before_each()
                results.append(self.conn.run(sql, **params))
            before_each()
            self.conn.run("COMMIT")
        except BaseException:
            try:
                self.conn.run("ROLLBACK")
            except Exception:
                close_quietly(self.conn)  # never back in the pool inside a transaction
            raise
        return results


class PgPool:
    def __init__(
        self,
        dsn: str,
        *,
        max_size: int | None = None,
        application_name: str = "salesmart",
        connect_timeout: float = POOL_CONNECT_TIMEOUT_SECONDS,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ) -> None:
        self._dsn = dsn
        self.max_size = max_size or default_pool_size()
        self._application_name = application_name
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = statement_timeout_ms
        #: How long a statement may go unanswered before its connection counts as dead.
        self._answer_seconds = statement_timeout_ms / 1000 + ANSWER_GRACE_SECONDS
        self._slots = threading.BoundedSemaphore(self.max_size)
        self._lock = threading.Lock()
        self._idle: list[PooledConnection] = []
        self._pid = os.getpid()
        self.opened = 0  # connections opened over the pool's life (tests and metrics)

    # -- connections ----------------------------------------------------------------------
    def _connect(self) -> PooledConnection:
        from common.pg import connect, connect_failure  # psycopg2: on first use, not at start

        try:
            raw = connect(
                self._dsn, application_name=self._application_name, timeout=self._connect_timeout
            )
        except Exception as exc:
            log_event(
                "postgres unreachable",
                level=logging.WARNING,
                error_type=type(exc).__name__,
                # A wrong password (after a rotation) is not an outage: said apart.
                reason=connect_failure(exc),
                sqlstate=sqlstate(exc),
            )
            raise WarehouseUnavailable() from None
        try:
            with _WATCHDOG.watching(raw.raw.fileno(), self._answer_seconds):
                raw.run(_SESSION_SETTINGS, timeout=str(int(self._statement_timeout_ms)))
        except Exception as exc:
            close_quietly(raw)
            log_event(
                "postgres session setup failed",
                level=logging.WARNING,
                error_type=type(exc).__name__,
                sqlstate=sqlstate(exc),
            )
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
                close_quietly(conn.conn)
        return None

    def _give_back(self, conn: PooledConnection) -> None:
        with self._lock:
            self._idle.append(conn)

    def _drain_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            close_quietly(conn.conn)

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
                    close_quietly(conn.conn)
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
        return self._on_a_connection(lambda conn, _: conn.run(sql, **params))

    def run_in_one_snapshot(
        self, *statements: Statement, tables: Sequence[str] = ()
    ) -> list[list[list[Any]]]:
        """Each statement's rows, all read from one snapshot of the database (a read-only
        ``REPEATABLE READ`` transaction on one connection); as ``run`` otherwise. ``tables``
        (qualified names, never input) are the ones a dbt build may be swapping: the
        snapshot is taken once they are free."""
        return self._on_a_connection(
            lambda conn, rearm: conn.run_in_one_snapshot(statements, tables, rearm)
        )

    def _on_a_connection(self, work: Callable[[PooledConnection, Callable[..., None]], T]) -> T:
        """``work`` on a pooled connection, each of its statements watched (``work`` is
        given the watchdog's ``rearm`` to call before each statement after the first)."""
        for attempt in (1, 2):
            reused = False
            try:
                with (
                    self._checkout() as (conn, reused),
                    _WATCHDOG.watching(conn.conn.raw.fileno(), self._answer_seconds) as rearm,
                ):
                    return work(conn, rearm)
            except WarehouseUnavailable:
                raise
            except Exception as exc:
                code = sqlstate(exc)
                retry = attempt == 1 and _is_dead(exc) and reused
                if retry:
                    continue
                if _is_dead(exc) or (code is not None and code.startswith(_UNAVAILABLE_STATES)):
                    log_event(
                        "postgres query failed",
                        level=logging.WARNING,
                        error_type=type(exc).__name__,
                        sqlstate=code,
                    )
                    raise WarehouseUnavailable() from None
                raise
        raise WarehouseUnavailable()  # pragma: no cover - the loop always returns or raises

    def close(self) -> None:
        self._drain_idle()


def function_pool(function: str, settings: Settings) -> PgPool:
    """A function's pool, named after it in ``pg_stat_activity``; a function without a
    usable database URL refuses to start (``require_database``), connections open on use."""
    require_database(settings)
    return PgPool(settings.database_url, application_name=f"salesmart-{function}")
