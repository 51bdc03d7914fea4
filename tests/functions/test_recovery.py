"""503 while PostgreSQL is down, 200 again once it is back: no function restart.

Uses a PostgreSQL server of its own (stopping the shared one would break parallel tests),
loaded with the summary rows dbt built for this worker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from common.pg import connect
from pipeline.migrate import migrate
from pipeline.postgres_embedded import EmbeddedPostgres
from tests.conftest import create_database
from tests.functions.conftest import Account, Served, make_user

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


@dataclass
class Browser:
    """A logged-in browser: its cookies (as a header: they are ``Secure``, over plain
    HTTP here) and the CSRF token of its forms."""

    headers: dict[str, str]
    csrf_token: str


def log_in_browser(url: str, account: Account) -> Browser:
    form = requests.get(f"{url}/login", headers={"Accept": "text/html"}, timeout=15)
    nonce = form.cookies["__Host-salesmart-csrf"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    done = requests.post(
        f"{url}/login",
        headers={"Accept": "text/html", "Cookie": f"__Host-salesmart-csrf={nonce}"},
        data={"username": account.username, "password": account.password, "csrf_token": token[1]},
        timeout=15,
        allow_redirects=False,
    )
    assert done.status_code == 303, done.text
    cookie = "; ".join(f"{name}={value}" for name, value in done.cookies.items())
    page = requests.get(url, headers={"Accept": "text/html", "Cookie": cookie}, timeout=15)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text
    return Browser({"Accept": "text/html", "Cookie": cookie}, token[1])


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
    browser = log_in_browser(dashboard_fn.url, account)

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
    # Logging out cannot end the session now: the browser is told it is still signed in,
    # and its cookie is kept (clearing it would only pretend).
    out = requests.post(
        f"{dashboard_fn.url}/logout",
        headers={**browser.headers, "Accept": "text/html"},
        data={"csrf_token": browser.csrf_token},
        timeout=15,
        allow_redirects=False,
    )
    assert out.status_code == 503
    assert "Logging out failed: you are still signed in" in out.text
    assert "Set-Cookie" not in out.headers
    # Why each answered 503 is logged, naming the request it answered.
    for served in (trends_fn, dashboard_fn, token_fn):
        events = [json.loads(line) for line in served.output().splitlines() if line[:1] == "{"]
        unreachable = [e for e in events if e["message"] == "postgres unreachable"]
        failed = {e["request_id"] for e in events if e.get("status") == 503}
        assert unreachable and {e.get("request_id") for e in unreachable} <= failed, events
        assert all(e["function"] == served.name for e in unreachable)
        assert {e["reason"] for e in unreachable} == {"refused"}  # not a password's fault

    own_pg_server.start()
    status, waited = poll(lambda: trends().status_code, 200)
    assert status == 200, f"no recovery after {waited:.1f} s"
    assert trends().json()[0]["product"] == "Halal Laptop"
    assert poll(lambda: dashboard().status_code, 200)[0] == 200
    assert poll(lambda: get_token().status_code, 200)[0] == 200
    signed_in = requests.get(dashboard_fn.url, headers=browser.headers, timeout=15)
    assert signed_in.status_code == 200  # as the failed logout said
    out = requests.post(
        f"{dashboard_fn.url}/logout",
        headers=browser.headers,
        data={"csrf_token": browser.csrf_token},
        timeout=15,
        allow_redirects=False,
    )
    assert out.status_code == 303
    ended = requests.get(
        dashboard_fn.url, headers=browser.headers, timeout=15, allow_redirects=False
    )
    assert ended.status_code == 303 and ended.headers["Location"] == "/login"
    # Same processes throughout: nothing was restarted.
    for served in (token_fn, trends_fn, dashboard_fn):
        assert served.process.poll() is None
