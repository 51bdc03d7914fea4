"""Secrets and PII never reach a log line or an error body.

Functions started with known secrets get a broad sample of traffic (logins right and
wrong, form logins with CSRF, token use, trends, dashboard, forged tokens, errors, a
warehouse that cannot be reached); the ``salesmart`` command adds a user and ingests a file.
Every line the processes wrote is then searched for the JWT secret, the PII key, every
password, every full token or session cookie, the database password and each clear
transaction id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from common.config import Settings
from pipeline.netutil import free_port
from tests.conftest import SAMPLE_CSV, TEST_ENV, run_cli
from tests.functions.conftest import EXTRA_CSV, Served

WRONG_PASSWORD = "Wrong-Pa55word-in-a-log?"
NEW_PASSWORD = "cli-user-password-7731"
TRACE_OR_SQL = re.compile(
    r"Traceback|File \"|SELECT |INSERT INTO|UPDATE auth| FROM [a-z_]+\.|pg8000|psycopg|"
    r"sqlstate|postgresql://|google\.api_core|Exception|Error:"
)


def transaction_ids() -> list[str]:
    ids = []
    for text in (SAMPLE_CSV.read_text(), EXTRA_CSV):
        for line in text.splitlines()[1:]:
            ids.append(line.split(",", 1)[0])
    return [i for i in ids if i]


def cli(settings: Settings, tmp_path: Path, *args: str, stdin: str = "") -> str:
    result = run_cli(settings, tmp_path, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_no_secret_or_pii_in_any_log_line(
    serve: Callable[..., Served], marts_dsn: str, settings: Settings, tmp_path: Path
) -> None:
    # The command: add a user (password on stdin) to the functions' database, ingest a file.
    marts_settings = Settings(**{**settings.__dict__, "database_url": marts_dsn})
    username = f"leak{os.urandom(4).hex()}"
    outputs = [
        cli(
            marts_settings,
            tmp_path,
            "users",
            "add",
            username,
            "--role",
            "analyst",
            "--password-stdin",
            stdin=NEW_PASSWORD + "\n",
        ),
        cli(settings, tmp_path, "ingest", str(SAMPLE_CSV)),
        cli(settings, tmp_path, "ingest", "--target", "postgres", "--json", str(SAMPLE_CSV)),
        cli(marts_settings, tmp_path, "users", "list"),
    ]

    env = {"SALESMART_DATABASE_URL": marts_dsn}
    token_fn = serve("token", **env)
    trends_fn = serve("trends_pg", **env)
    dashboard_fn = serve("dashboard", SALESMART_ENV="dev", **env)  # plain-HTTP cookies
    bq_fn = serve("trends_bq", SALESMART_BQ_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    errors: list[requests.Response] = []
    tokens: list[str] = []

    def token(user: str, password: str) -> requests.Response:
        return requests.post(
            f"{token_fn.url}/token", data={"username": user, "password": password}, timeout=30
        )

    good = token(username, NEW_PASSWORD)
    assert good.status_code == 200
    tokens.append(good.json()["access_token"])
    bearer = {"Authorization": f"Bearer {tokens[0]}"}
    errors.append(token(username, WRONG_PASSWORD))
    errors.append(token("nobody-" + username, WRONG_PASSWORD))
    errors.append(
        requests.post(
            f"{token_fn.url}/token",
            data="password=" + WRONG_PASSWORD,
            headers={"Content-Type": "text/plain"},
            timeout=30,
        )
    )
    for _ in range(6):  # into the 429 limiter
        errors.append(token("victim-" + username, WRONG_PASSWORD))
    assert errors[-1].status_code == 429
    assert token(username, NEW_PASSWORD).status_code == 200

    trends = f"{trends_fn.url}/sales/pg-trends"
    assert requests.get(trends, headers=bearer, timeout=30).status_code == 200
    assert (
        requests.get(
            trends, params={"sale_month": "2023-10"}, headers=bearer, timeout=30
        ).status_code
        == 200
    )
    forged = tokens[0][:-4] + ("AAAA" if not tokens[0].endswith("AAAA") else "BBBB")
    errors += [
        requests.get(
            trends, params={"limit": "0", "product_prefix": "T001"}, headers=bearer, timeout=30
        ),
        requests.get(trends, headers={"Authorization": f"Bearer {forged}"}, timeout=30),
        requests.get(trends, headers={"Authorization": f"Basic {WRONG_PASSWORD}"}, timeout=30),
        requests.get(trends, timeout=30),
        requests.delete(trends, headers=bearer, timeout=30),
        requests.get(f"{trends_fn.url}/nope?token={tokens[0]}", timeout=30),
        requests.get(f"{bq_fn.url}/sales/trends", headers=bearer, timeout=60),  # 503
    ]
    assert errors[-1].status_code == 503

    # A browser session: the login form with CSRF, the page, a bad CSRF token.
    browser = requests.Session()
    browser.headers["Accept"] = "text/html"
    form = browser.get(f"{dashboard_fn.url}/login", timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf
    errors.append(
        requests.post(
            f"{dashboard_fn.url}/login",
            data={"username": username, "password": NEW_PASSWORD, "csrf_token": "forged"},
            timeout=30,
        )
    )
    logged_in = browser.post(
        f"{dashboard_fn.url}/login",
        data={"username": username, "password": NEW_PASSWORD, "csrf_token": csrf[1]},
        allow_redirects=False,
        timeout=30,
    )
    assert logged_in.status_code == 303
    cookies = [c.value for c in browser.cookies if c.value]
    assert browser.get(f"{dashboard_fn.url}/", timeout=30).status_code == 200
    assert requests.get(f"{dashboard_fn.url}/", headers=bearer, timeout=30).status_code == 200
    errors.append(browser.get(f"{dashboard_fn.url}/", params={"limit": "-1"}, timeout=30))

    # Error bodies: the envelope (or the HTML error page), no stack trace, no SQL.
    for response in errors:
        assert response.status_code >= 400, response.text[:200]
        assert not TRACE_OR_SQL.search(response.text), response.text[:500]
        for secret in (WRONG_PASSWORD, NEW_PASSWORD, *tokens):
            assert secret not in response.text

    logs = {served.name: served.output() for served in (token_fn, trends_fn, dashboard_fn, bq_fn)}
    logs["cli"] = "\n".join(outputs)
    db_password = urlsplit(marts_dsn).password
    secrets = {
        "JWT secret": TEST_ENV["SALESMART_JWT_SECRET"],
        "PII key": TEST_ENV["SALESMART_PII_KEY"],
        "password": NEW_PASSWORD,
        "wrong password": WRONG_PASSWORD,
        **{f"token {n}": t for n, t in enumerate(tokens)},
        **{f"cookie {n}": c for n, c in enumerate(cookies) if len(c) >= 16},
        **({"database password": db_password} if db_password else {}),
    }
    ids = transaction_ids()
    lines = 0
    for name, text in logs.items():
        for line in text.splitlines():
            lines += 1
            for label, secret in secrets.items():
                assert secret not in line, f"{label} in the {name} log: {line[:300]}"
            for clear in ids:
                assert not re.search(rf"\b{re.escape(clear)}\b", line), (
                    f"transaction id {clear} in the {name} log: {line[:300]}"
                )
    print(
        f"{lines} log lines, {len(errors)} error bodies, {len(secrets)} secrets,"
        f" {len(ids)} transaction ids: none leaked"
    )
    assert lines > 30
