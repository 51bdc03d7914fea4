"""Integration tier: real function processes on loopback, spoken to over HTTP — as the stack
and the image serve them (``salesmart-serve``: functions-framework's app under gunicorn with
read deadlines) and, once each, with the bare ``functions-framework`` command."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from pipeline.netutil import free_port
from tests.conftest import TEST_ENV
from tests.functions.conftest import Account, Served, assert_error_envelope, make_user

Serve = Callable[..., Served]


@pytest.fixture(scope="module")
def token_fn(serve: Serve, marts_dsn: str) -> Served:
    return serve("token", SALESMART_DATABASE_URL=marts_dsn)


@pytest.fixture(scope="module")
def trends_fn(serve: Serve, marts_dsn: str) -> Served:
    return serve("trends_pg", SALESMART_DATABASE_URL=marts_dsn)


@pytest.fixture(scope="module")
def user(marts_dsn: str) -> Account:
    return make_user(marts_dsn, "analyst")


@pytest.fixture(scope="module")
def bearer(token_fn: Served, user: Account) -> dict[str, str]:
    response = requests.post(
        f"{token_fn.url}/token",
        data={"username": user.username, "password": user.password},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def envelope(response: requests.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert_error_envelope(body)
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def test_token_then_trends(trends_fn: Served, bearer: dict[str, str]) -> None:
    response = requests.get(
        f"{trends_fn.url}/sales/pg-trends",
        params={"sale_month": "2023-10-15", "product_prefix": "Halal "},
        headers=bearer,
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    rows = response.json()
    assert [(r["product"], r["total_amount"]) for r in rows[:3]] == [
        ("Halal Laptop", 1999.98),
        ("Halal Keyboard", 249.95),
        ("Halal Mouse", 249.9),
    ]
    assert all(r["sale_month"] == "2023-10-01" for r in rows)


def test_every_response_has_a_request_id(
    token_fn: Served, trends_fn: Served, bearer: dict[str, str]
) -> None:
    answers = [
        requests.get(f"{trends_fn.url}/sales/pg-trends", headers=bearer, timeout=10),
        requests.get(f"{trends_fn.url}/sales/pg-trends", timeout=10),
        requests.get(f"{trends_fn.url}/nope", timeout=10),
        requests.get(f"{trends_fn.url}/robots.txt", timeout=10),
        requests.get(f"{trends_fn.url}/favicon.ico", timeout=10),
        requests.delete(f"{trends_fn.url}/sales/pg-trends", timeout=10),
        requests.post(f"{token_fn.url}/token", timeout=10),
        requests.get(f"{token_fn.url}/healthz", timeout=10),
    ]
    ids = [r.headers.get("X-Request-ID") for r in answers]
    assert all(ids) and len(set(ids)) == len(ids)
    echoed = requests.get(
        f"{trends_fn.url}/healthz", headers={"X-Request-ID": "client-id-42"}, timeout=10
    )
    assert echoed.headers["X-Request-ID"] == "client-id-42"


def test_framework_paths_get_the_json_404(trends_fn: Served) -> None:
    for path in ("/robots.txt", "/favicon.ico", "/nope", "/sales"):
        response = requests.get(f"{trends_fn.url}{path}", timeout=10)
        assert response.status_code == 404
        assert envelope(response)["error"] == "not_found"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_401_422_405_304(trends_fn: Served, bearer: dict[str, str]) -> None:
    url = f"{trends_fn.url}/sales/pg-trends"
    unauthorized = requests.get(url, timeout=10)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")
    envelope(unauthorized)

    invalid = requests.get(url, params={"limit": "5000", "x": "1"}, headers=bearer, timeout=10)
    assert invalid.status_code == 422
    assert set(envelope(invalid)["details"]) == {"limit", "x"}

    not_allowed = requests.post(url, headers=bearer, timeout=10)
    assert not_allowed.status_code == 405
    assert "GET" in not_allowed.headers["Allow"]
    envelope(not_allowed)

    first = requests.get(url, headers=bearer, timeout=10)
    assert first.headers["Cache-Control"] == "private"  # the contract's, exactly
    cached = requests.get(
        url, headers={**bearer, "If-None-Match": first.headers["ETag"]}, timeout=10
    )
    assert cached.status_code == 304
    assert cached.content == b""


def test_token_400_401_405(token_fn: Served, user: Account) -> None:
    url = f"{token_fn.url}/token"
    assert (
        requests.post(url, json={"username": "a", "password": "b"}, timeout=10).status_code == 400
    )
    wrong = requests.post(url, data={"username": user.username, "password": "nope"}, timeout=10)
    assert wrong.status_code == 401
    assert envelope(wrong)["error"] == "invalid_grant"
    for method in ("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"):
        other = requests.request(method, url, timeout=10)
        assert other.status_code == 405, method
        assert other.headers["Allow"] == "POST"
        if method != "HEAD":
            assert envelope(other)["error"] == "method_not_allowed"


def test_429_holds_across_instances(serve: Serve, marts_dsn: str) -> None:
    """Two token instances share the count: it lives in PostgreSQL, not in a process."""
    first = serve("token", SALESMART_DATABASE_URL=marts_dsn)
    second = serve("token", SALESMART_DATABASE_URL=marts_dsn)
    victim = make_user(marts_dsn, "analyst")
    statuses = []
    for attempt in range(6):
        instance = (first, second)[attempt % 2]
        response = requests.post(
            f"{instance.url}/token",
            data={"username": victim.username, "password": f"guess {attempt}"},
            timeout=10,
        )
        statuses.append(response.status_code)
    assert statuses == [401] * 5 + [429]
    assert int(response.headers["Retry-After"]) > 0
    right = requests.post(
        f"{first.url}/token",
        data={"username": victim.username, "password": victim.password},
        timeout=10,
    )
    assert right.status_code == 429


def test_health_and_openapi_of_every_function(
    serve: Serve, marts_dsn: str, token_fn: Served, trends_fn: Served
) -> None:
    dashboard = serve("dashboard", SALESMART_DATABASE_URL=marts_dsn)
    trends_bq = serve("trends_bq", SALESMART_BQ_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    expected = {
        "token": "/token",
        "trends_pg": "/sales/pg-trends",
        "dashboard": "/login",
        "trends_bq": "/sales/trends",
    }
    for served in (token_fn, trends_fn, dashboard, trends_bq):
        health = requests.get(f"{served.url}/healthz", timeout=10)
        assert health.json() == {"status": "ok", "function": served.name}
        document = requests.get(f"{served.url}/openapi.json", timeout=10).json()
        assert document["openapi"].startswith("3.0")
        assert expected[served.name] in document["paths"]
        # The document says what the function does: its root answers as its resource, and
        # another method (OPTIONS too) is a 405 naming the allowed ones.
        assert "/" in document["paths"]
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                assert "Allow" in operation["responses"]["405"]["headers"], (path, method)
            answer = requests.options(f"{served.url}{path}", timeout=10)
            assert answer.status_code == 405, (served.name, path)
            assert set(answer.headers["Allow"].split(", ")) >= {m.upper() for m in operations}


def test_trends_bq_answers_503_when_bigquery_is_unreachable(
    serve: Serve, bearer: dict[str, str]
) -> None:
    trends_bq = serve("trends_bq", SALESMART_BQ_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    url = f"{trends_bq.url}/sales/trends"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, params={"limit": "0"}, headers=bearer, timeout=10).status_code == 422
    response = requests.get(url, headers=bearer, timeout=30)
    assert response.status_code == 503
    body = envelope(response)
    assert body["error"] == "warehouse_unavailable"
    assert "Traceback" not in response.text and "127.0.0.1" not in response.text
    # Operators see why, in the function's structured log: JSON lines only.
    lines = [line for line in trends_bq.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # a plain-text line fails here
    failed = [r for r in records if r["message"] == "bigquery query failed"]
    assert failed and failed[-1]["reason"] == "unreachable", records
    assert failed[-1]["function"] == "trends_bq" and failed[-1]["severity"] == "WARNING"


def test_dashboard_over_http(serve: Serve, marts_dsn: str, user: Account) -> None:
    dashboard = serve("dashboard", SALESMART_DATABASE_URL=marts_dsn, SALESMART_ENV="dev")
    browser = requests.Session()
    browser.headers["Accept"] = "text/html"
    first = browser.get(f"{dashboard.url}/", allow_redirects=False, timeout=10)
    assert first.status_code == 303
    assert first.headers["Location"] == "/login"
    form = browser.get(f"{dashboard.url}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token
    logged_in = browser.post(
        f"{dashboard.url}/login",
        data={"username": user.username, "password": user.password, "csrf_token": token[1]},
        allow_redirects=False,
        timeout=10,
    )
    assert logged_in.status_code == 303
    assert "HttpOnly" in logged_in.headers["Set-Cookie"]
    page = browser.get(f"{dashboard.url}/", timeout=10)
    assert page.status_code == 200
    assert '<svg id="monthly-chart"' in page.text


def test_logs_are_json_without_secrets(
    token_fn: Served, trends_fn: Served, bearer: dict[str, str], user: Account
) -> None:
    requests.get(f"{trends_fn.url}/sales/pg-trends", headers=bearer, timeout=10)
    requests.post(
        f"{token_fn.url}/token",
        data={"username": user.username, "password": "typo-password-123"},
        timeout=10,
    )
    # A password typed into the username field names no account: never logged.
    requests.post(
        f"{token_fn.url}/token",
        data={"username": "pasted-password-456", "password": "x"},
        timeout=10,
    )
    token = bearer["Authorization"].split()[1]
    for served in (token_fn, trends_fn):
        text = served.output()
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert records, text
        for secret in (
            token,
            user.password,
            "typo-password-123",
            "pasted-password-456",
            TEST_ENV["SALESMART_JWT_SECRET"],
        ):
            assert secret not in text
    # A refused login for an account that exists names it (who is being locked out).
    token_log = [json.loads(line) for line in token_fn.output().splitlines() if line[:1] == "{"]
    refused = [r for r in token_log if r.get("status") == 401]
    assert [r.get("user") for r in refused[-2:]] == [user.username, None]  # this test's two
    trends_log = [
        json.loads(line) for line in trends_fn.output().splitlines() if line.startswith("{")
    ]
    served_rows = [r for r in trends_log if r.get("status") == 200 and r.get("rows")]
    assert served_rows
    assert {"function", "user", "status", "rows", "duration_ms", "request_id"} <= set(
        served_rows[-1]
    )
    assert served_rows[-1]["function"] == "trends_pg"
    assert served_rows[-1]["user"] == user.username


def test_a_local_function_given_no_keys_and_no_up_signs_with_its_folders_key(
    serve: Serve, marts_dsn: str, user: Account, tmp_path: Path
) -> None:
    """``SALESMART_ENV=dev functions-framework ...`` with no key in the environment and no
    live ``up``: before, it signed tokens with an empty key (anyone could forge an admin's).
    Now with the folder's own ``.salesmart/jwt-secret``, as the commands use it."""
    state = tmp_path / "state"
    served = serve(
        "token",
        framework_cli=True,
        SALESMART_ENV="dev",
        SALESMART_DATABASE_URL=marts_dsn,
        SALESMART_STATE_DIR=str(state),
        SALESMART_JWT_SECRET="",
        SALESMART_PII_KEY="",
    )
    login = {"username": user.username, "password": user.password}
    response = requests.post(f"{served.url}/token", data=login, timeout=10)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    header, payload, signature = token.split(".")

    def signed_with(key: bytes) -> bool:
        digest = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == signature

    assert not signed_with(b"")
    assert signed_with((state / "jwt-secret").read_text().strip().encode())
    assert (state / "jwt-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("name", ["token", "trends_pg", "trends_bq", "dashboard"])
def test_the_functions_framework_command_serves_each_function(
    serve: Serve, marts_dsn: str, bearer: dict[str, str], user: Account, name: str
) -> None:
    """CONTRACT: ``functions-framework --source functions/NAME/main.py --target NAME``."""
    served = serve(name, framework_cli=True, SALESMART_DATABASE_URL=marts_dsn)
    argv = served.process.args
    assert isinstance(argv, list) and str(argv[0]).endswith("/functions-framework")
    assert requests.get(f"{served.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{served.url}/openapi.json", timeout=10).json()["openapi"]
    if name == "token":
        login = {"username": user.username, "password": user.password}
        response = requests.post(f"{served.url}/token", data=login, timeout=10)
        assert response.status_code == 200 and response.json()["token_type"] == "bearer"
    elif name == "trends_pg":
        response = requests.get(
            f"{served.url}/sales/pg-trends",
            params={"sale_month": "2023-10"},
            headers=bearer,
            timeout=10,
        )
        assert response.status_code == 200 and response.json()
    elif name == "trends_bq":  # no BigQuery here: authenticated, validated, then 503
        assert requests.get(f"{served.url}/sales/trends", timeout=10).status_code == 401
        response = requests.get(f"{served.url}/sales/trends", headers=bearer, timeout=30)
        assert response.status_code == 503
    else:
        response = requests.get(f"{served.url}/", allow_redirects=False, timeout=10)
        assert response.status_code in (302, 303)
        assert requests.get(f"{served.url}/login", timeout=10).status_code == 200
