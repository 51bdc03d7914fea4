"""503 while PostgreSQL is down, 200 again once it is back: no function restart.

Uses a PostgreSQL server of its own (stopping the shared one would break parallel tests),
loaded with the summary rows dbt built for this worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import requests

from common.pg import connect
from pipeline.migrate import migrate
from pipeline.postgres_embedded import EmbeddedPostgres
from tests.conftest import create_database
from tests.functions.conftest import Served, make_user

SUMMARY_DDL = """
CREATE TABLE public.summary_sales (
    product text, sale_month date, total_amount numeric, total_quantity bigint,
    avg_price numeric, transaction_count bigint
)
"""


def copy_marts(source_dsn: str, target_dsn: str) -> int:
    source = connect(source_dsn)
    rows = source.run(
        "SELECT product, sale_month, total_amount, total_quantity, avg_price, transaction_count"
        " FROM public.summary_sales"
    )
    source.close()
    target = connect(target_dsn)
    try:
        migrate(target)
        target.run(SUMMARY_DDL)
        for row in rows:
            target.run(
                "INSERT INTO public.summary_sales VALUES (:p, :m, :t, :q, :a, :c)",
                p=row[0],
                m=row[1],
                t=row[2],
                q=row[3],
                a=row[4],
                c=row[5],
            )
    finally:
        target.close()
    return len(rows)


def poll(check: Callable[[], int], want: int, timeout: float = 30) -> tuple[int, float]:
    started = time.monotonic()
    status = check()
    while status != want and time.monotonic() - started < timeout:
        time.sleep(0.2)
        status = check()
    return status, time.monotonic() - started


def test_503_then_200_after_postgres_restarts(
    own_pg_server: EmbeddedPostgres, marts_dsn: str, serve: Callable[..., Served]
) -> None:
    dsn = create_database(own_pg_server, migrated=False)
    assert copy_marts(marts_dsn, dsn) == 12
    account = make_user(dsn, "analyst")
    token_fn = serve("token", SALESMART_DATABASE_URL=dsn)
    trends_fn = serve("trends_pg", SALESMART_DATABASE_URL=dsn)
    dashboard_fn = serve("dashboard", SALESMART_DATABASE_URL=dsn)

    def get_token() -> requests.Response:
        return requests.post(
            f"{token_fn.url}/token",
            data={"username": account.username, "password": account.password},
            timeout=15,
        )

    bearer = {"Authorization": f"Bearer {get_token().json()['access_token']}"}

    def trends() -> requests.Response:
        return requests.get(f"{trends_fn.url}/sales/pg-trends", headers=bearer, timeout=15)

    def dashboard() -> requests.Response:
        return requests.get(f"{dashboard_fn.url}/", headers=bearer, timeout=15)

    assert trends().status_code == 200  # the pool now holds a live connection
    assert dashboard().status_code == 200

    own_pg_server.stop(mode="fast")
    for answer in (trends, dashboard, get_token):
        started = time.monotonic()
        response = answer()
        assert response.status_code == 503, response.text
        assert time.monotonic() - started < 5  # the connect timeout, not a hang
        assert response.headers["Retry-After"]
        body = response.json()
        assert body["error"] == "warehouse_unavailable"
        assert set(body) == {"error", "message", "request_id"}
        for leak in ("psycopg", "pg8000", "Traceback", "network error", "127.0.0.1", "SELECT"):
            assert leak not in response.text
    # Why each answered 503 is logged, naming the request it answered.
    for served in (trends_fn, dashboard_fn, token_fn):
        events = [json.loads(line) for line in served.output().splitlines() if line[:1] == "{"]
        unreachable = [e for e in events if e["message"] == "postgres unreachable"]
        failed = {e["request_id"] for e in events if e.get("status") == 503}
        assert unreachable and {e.get("request_id") for e in unreachable} <= failed, events
        assert all(e["function"] == served.name for e in unreachable)

    own_pg_server.start()
    status, waited = poll(lambda: trends().status_code, 200)
    assert status == 200, f"no recovery after {waited:.1f} s"
    assert trends().json()[0]["product"] == "Halal Laptop"
    assert poll(lambda: dashboard().status_code, 200)[0] == 200
    assert poll(lambda: get_token().status_code, 200)[0] == 200
    # Same processes throughout: nothing was restarted.
    for served in (token_fn, trends_fn, dashboard_fn):
        assert served.process.poll() is None
