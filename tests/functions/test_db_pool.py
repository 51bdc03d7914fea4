"""The PostgreSQL pool: reuse, self-healing after a killed backend, fast 503s."""

from __future__ import annotations

import threading
import time

import pytest

from common.db import PgPool
from common.errors import WarehouseUnavailable
from common.pg import connect
from pipeline.netutil import free_port


def backend_pids(dsn: str, application: str) -> list[int]:
    conn = connect(dsn)
    try:
        rows = conn.run(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :a", a=application
        )
    finally:
        conn.close()
    return [int(row[0]) for row in rows]


def test_connections_are_reused_not_opened_per_request(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=4, application_name="pool-reuse")
    try:
        for _ in range(50):
            assert pool.run("SELECT CAST(:x AS integer) + 1", x=1) == [[2]]
        assert pool.opened == 1
        assert len(backend_pids(fresh_dsn, "pool-reuse")) == 1
    finally:
        pool.close()


def test_concurrent_callers_share_at_most_max_size(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=3, application_name="pool-bound")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                pool.run("SELECT pg_sleep(0.005)")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert 1 <= pool.opened <= 3
    finally:
        pool.close()


def test_a_killed_connection_is_replaced_transparently(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=2, application_name="pool-heal")
    try:
        assert pool.run("SELECT 1") == [[1]]
        (pid,) = backend_pids(fresh_dsn, "pool-heal")
        admin = connect(fresh_dsn)
        admin.run("SELECT pg_terminate_backend(:pid)", pid=pid)
        admin.close()
        time.sleep(0.2)
        assert pool.run("SELECT 2") == [[2]]  # retried once on a new connection
        assert pool.opened == 2
        assert backend_pids(fresh_dsn, "pool-heal") != [pid]
    finally:
        pool.close()


def test_unreachable_database_is_a_fast_503() -> None:
    pool = PgPool(f"postgresql://u:p@127.0.0.1:{free_port()}/db", max_size=2)
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailable) as caught:
        pool.run("SELECT 1")
    assert time.monotonic() - started < 3
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"]


def test_statement_timeout_and_missing_marts_are_503(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=1, statement_timeout_ms=200)
    try:
        with pytest.raises(WarehouseUnavailable):
            pool.run("SELECT pg_sleep(2)")
        with pytest.raises(WarehouseUnavailable):
            pool.run("SELECT * FROM public.summary_sales")  # dbt has not run here
        assert pool.run("SELECT 3") == [[3]]  # the same connection still works
        assert pool.opened == 1
    finally:
        pool.close()


def test_other_database_errors_propagate(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=1)
    try:
        with pytest.raises(Exception) as caught:
            pool.run("SELECT 1 / 0")
        assert not isinstance(caught.value, WarehouseUnavailable)
        assert pool.run("SELECT 4") == [[4]]
    finally:
        pool.close()
