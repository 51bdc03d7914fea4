"""dashboard called directly with Flask requests: login form, CSRF, cookies, page, masking."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from http.cookies import SimpleCookie
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from common.auth import Principal, TokenService, session_audience
from common.config import Settings
from common.errors import InvalidToken
from common.masking import mask
from common.pg import connect
from pipeline.netutil import free_port
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.users import disable_user, enable_user, set_password
from tests.conftest import TEST_ENV, create_database
from tests.functions.conftest import (
    Account,
    Caller,
    caller,
    load_function,
    load_marts,
    settings_for,
)

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PII_KEY = TEST_ENV["SALESMART_PII_KEY"]
SESSION = "__Host-salesmart-session"
CSRF = "__Host-salesmart-csrf"


@pytest.fixture(scope="module")
def module(marts_dsn: str) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        yield load_function("dashboard", patch, SALESMART_DATABASE_URL=marts_dsn)


@pytest.fixture
def call(module: ModuleType, flask_app: Any) -> Caller:
    return caller(flask_app, module.dashboard)


def set_cookies(response: Any) -> dict[str, Any]:
    jar: dict[str, Any] = {}
    for header in response.headers.getlist("Set-Cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            jar[name] = (morsel.value, header)
    return jar


def cookie_header(**cookies: str) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def login_form(call: Caller) -> tuple[str, str]:
    """(csrf cookie nonce, form token) as a browser gets them from GET /login."""
    page = call("/login", headers=BROWSER)
    assert page.status_code == 200
    nonce = set_cookies(page)[CSRF][0]
    return nonce, csrf_from(page.get_data(as_text=True))


def log_in(call: Caller, account: Account, **fields: str) -> Any:
    """POST /login as a browser does, with ``fields`` added to the form."""
    nonce, token = login_form(call)
    return call(
        "/login",
        method="POST",
        headers={**BROWSER, **cookie_header(**{CSRF: nonce})},
        data={
            "username": account.username,
            "password": account.password,
            "csrf_token": token,
            **fields,
        },
    )


def test_unauthenticated_browser_is_redirected_to_login(call: Caller) -> None:
    response = call("/", headers=BROWSER)
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    expired = call("/", headers={**BROWSER, **cookie_header(**{SESSION: "bogus.token.here"})})
    assert expired.status_code == 303
    assert SESSION in set_cookies(expired)  # the stale cookie is cleared


def test_login_returns_to_the_page_asked_for(call: Caller, analyst: Account) -> None:
    asked = call("/", headers=BROWSER, query_string={"sale_month": "2023-10", "limit": "2"})
    assert asked.status_code == 303
    assert asked.headers["Location"] == "/login?next=%2F%3Fsale_month%3D2023-10%26limit%3D2"
    page = call("/login?next=%2F%3Fsale_month%3D2023-10%26limit%3D2", headers=BROWSER)
    html = page.get_data(as_text=True)
    assert 'name="next" value="/?sale_month=2023-10&amp;limit=2"' in html
    response = log_in(call, analyst, next="/?sale_month=2023-10&limit=2")
    assert response.status_code == 303
    assert response.headers["Location"] == "/?sale_month=2023-10&limit=2"


@pytest.mark.parametrize(
    "elsewhere",
    ["//evil.example/", "/\\evil.example", "https://evil.example/", "/login", "?x=1", "/? x"],
)
def test_login_never_returns_to_another_site(
    call: Caller, analyst: Account, elsewhere: str
) -> None:
    response = log_in(call, analyst, next=elsewhere)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    form = call("/login", headers=BROWSER, query_string={"next": elsewhere})
    assert 'name="next" value="/"' in form.get_data(as_text=True)


def test_a_return_address_too_long_to_keep_still_logs_in(call: Caller, analyst: Account) -> None:
    response = log_in(call, analyst, next="/?product_prefix=" + "a" * 5000)
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_a_disabled_users_session_ends_with_it(
    call: Caller, analyst: Account, marts_dsn: str
) -> None:
    """Disabling a user ends their dashboard session at once (it ran on until the cookie's
    token expired: 30 minutes by default, up to a day)."""
    session = set_cookies(log_in(call, analyst))[SESSION][0]
    browser = {**BROWSER, **cookie_header(**{SESSION: session})}
    assert call("/", headers=browser).status_code == 200
    conn = connect(marts_dsn)
    try:
        disable_user(conn, analyst.username)
    finally:
        conn.close()
    page = call("/", headers=browser)
    assert page.status_code == 303 and page.headers["Location"] == "/login"


def test_enabling_a_user_again_does_not_bring_back_the_sessions_disabling_ended(
    call: Caller, analyst: Account, marts_dsn: str
) -> None:
    """An account is disabled on suspicion of a stolen cookie: enabling it lets its user log
    in again, not the old cookie back in (it did, until the cookie's token expired)."""
    session = set_cookies(log_in(call, analyst))[SESSION][0]
    browser = {**BROWSER, **cookie_header(**{SESSION: session})}
    assert call("/", headers=browser).status_code == 200
    # Within the second of the login, and a new login within the second after: a session's
    # token holds what its login read, not a time in whole seconds (both went wrong then).
    conn = connect(marts_dsn)
    try:
        disable_user(conn, analyst.username)
        enable_user(conn, analyst.username)
    finally:
        conn.close()
    page = call("/", headers=browser)
    assert page.status_code == 303 and page.headers["Location"] == "/login"
    fresh = set_cookies(log_in(call, analyst))[SESSION][0]
    assert call("/", headers={**BROWSER, **cookie_header(**{SESSION: fresh})}).status_code == 200


def test_a_new_password_ends_the_sessions_started_before_it(
    call: Caller, analyst: Account, marts_dsn: str
) -> None:
    """A password reset after a compromise locks the old cookies out, as disabling does (they
    ran on until their token expired); a login with the new password works."""
    session = set_cookies(log_in(call, analyst))[SESSION][0]
    browser = {**BROWSER, **cookie_header(**{SESSION: session})}
    assert call("/", headers=browser).status_code == 200
    new_password = "a-new-password-for-the-analyst"
    conn = connect(marts_dsn)  # at once: within the second of the login (as above)
    try:
        set_password(conn, analyst.username, new_password, rounds=4)
    finally:
        conn.close()
    page = call("/", headers=browser)
    assert page.status_code == 303 and page.headers["Location"] == "/login"
    fresh = set_cookies(log_in(call, Account(analyst.username, new_password, analyst.role)))[
        SESSION
    ][0]
    assert call("/", headers={**BROWSER, **cookie_header(**{SESSION: fresh})}).status_code == 200


def test_a_login_checked_before_a_new_password_ends_with_it(
    analyst: Account, marts_dsn: str, fn_settings: Settings
) -> None:
    """A login whose password was checked against the old hash while the password changed
    (bcrypt takes a quarter of a second) gets no session that outlives the change."""
    from common.auth import LoginService, Sessions
    from common.db import PgPool

    pool = PgPool(marts_dsn, max_size=1)
    try:
        sessions = Sessions(pool, fn_settings)
        login = LoginService(pool, fn_settings)
        checked = login.authenticate(analyst.username, analyst.password)
        assert sessions.principal(sessions.start(checked).access_token) == checked
        conn = connect(marts_dsn)
        try:
            set_password(conn, analyst.username, "changed-while-the-login-was-checked", rounds=4)
        finally:
            conn.close()
        time.sleep(1.1)  # issued a second after the change: a whole-second rule let it live
        issued = sessions.start(checked)
        with pytest.raises(InvalidToken):
            sessions.principal(issued.access_token)
    finally:
        pool.close()


def test_a_session_token_from_before_the_exact_rule_is_held_to_its_issue_time(
    call: Caller, analyst: Account, marts_dsn: str, fn_settings: Settings
) -> None:
    """A session token an instance of the previous version issued (no ``sessions_since``
    claim: a rolling upgrade) still works, and still ends at a later password change."""
    tokens = TokenService(fn_settings, audience=session_audience(fn_settings))
    conn = connect(marts_dsn)
    try:
        set_password(conn, analyst.username, analyst.password, rounds=4)
    finally:
        conn.close()
    time.sleep(1.1)  # the old rule: whole seconds of iat after the change
    old = tokens.issue(Principal(analyst.username, analyst.role)).access_token
    browser = {**BROWSER, **cookie_header(**{SESSION: old})}
    assert call("/", headers=browser).status_code == 200
    time.sleep(1.1)
    conn = connect(marts_dsn)
    try:
        set_password(conn, analyst.username, analyst.password, rounds=4)
    finally:
        conn.close()
    page = call("/", headers=browser)
    assert page.status_code == 303 and page.headers["Location"] == "/login"


def test_pages_link_to_their_neighbours_with_the_same_filters(
    call: Caller, fn_settings: Settings
) -> None:
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    bearer = {**BROWSER, "Authorization": f"Bearer {token}"}
    everything = call("/", headers=bearer, query_string={"limit": "1000"})
    summary = everything.get_data(as_text=True).split('id="summary"')[1].split("</table>")[0]
    total = summary.count("<tr>") - 1  # the header row
    assert total >= 3

    first = call("/", headers=bearer, query_string={"limit": "2", "product_prefix": "Halal"})
    html = first.get_data(as_text=True)
    assert "Rows 1–2" in html and 'id="page-previous"' not in html
    assert 'href="/?product_prefix=Halal&amp;limit=2&amp;offset=2" rel="next"' in html

    second = call(
        "/", headers=bearer, query_string={"limit": "2", "product_prefix": "Halal", "offset": "2"}
    )
    html = second.get_data(as_text=True)
    assert "Rows 3–" in html
    assert 'href="/?product_prefix=Halal&amp;limit=2" rel="prev"' in html

    last = call("/", headers=bearer, query_string={"limit": "1000"})
    html = last.get_data(as_text=True)
    assert f"Rows 1–{total} of {total}" in html and 'id="page-next"' not in html

    # A last page that is full has no Next (it led to an empty page).
    pages = -(-total // 2)
    final = call("/", headers=bearer, query_string={"limit": "1", "offset": str(total - 1)})
    html = final.get_data(as_text=True)
    assert f"Rows {total}–{total} of {total}" in html and 'id="page-next"' not in html
    assert pages >= 2

    # From past the end, one link back to the rows (Previous would step through nothing).
    beyond = call("/", headers=bearer, query_string={"offset": "5000", "limit": "2"})
    html = beyond.get_data(as_text=True)
    assert f"No rows here: {total} match" in html and 'id="page-previous"' not in html
    assert f'href="/?limit=2&amp;offset={(total - 1) // 2 * 2}" id="page-last"' in html
    nothing = call("/", headers=bearer, query_string={"product_prefix": "Zzz"})
    assert "No rows match" in nothing.get_data(as_text=True)


def test_login_form_sets_a_csrf_cookie(call: Caller) -> None:
    page = call("/login", headers=BROWSER)
    html = page.get_data(as_text=True)
    assert '<form method="post" action="/login"' in html
    assert 'name="username"' in html and 'name="password"' in html
    nonce, header = set_cookies(page)[CSRF]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" in header
    assert csrf_from(html).startswith(nonce + ".")
    assert page.headers["Cache-Control"] == "no-store"


def test_login_sets_a_secure_httponly_samesite_session(call: Caller, analyst: Account) -> None:
    response = log_in(call, analyst)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    token, header = set_cookies(response)[SESSION]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" in header
    assert "Path=/" in header and "Domain" not in header
    page = call("/", headers={**BROWSER, **cookie_header(**{SESSION: token})})
    assert page.status_code == 200
    assert analyst.username in page.get_data(as_text=True)


@pytest.mark.parametrize("case", ["no_cookie", "no_field", "mismatch", "forged_mac", "stale"])
def test_login_without_valid_csrf_is_refused(call: Caller, analyst: Account, case: str) -> None:
    nonce, token = login_form(call)
    _other_nonce, other_token = login_form(call)
    cookies = cookie_header(**{CSRF: nonce})
    form = {"username": analyst.username, "password": analyst.password, "csrf_token": token}
    if case == "no_cookie":
        cookies = {}
    elif case == "no_field":
        del form["csrf_token"]
    elif case == "mismatch":
        form["csrf_token"] = other_token
    elif case == "forged_mac":
        form["csrf_token"] = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    elif case == "stale":
        parts = token.split(".")
        form["csrf_token"] = f"{parts[0]}.1000000000.{parts[2]}"
    response = call("/login", method="POST", headers={**BROWSER, **cookies}, data=form)
    assert response.status_code == 400
    assert SESSION not in set_cookies(response)
    assert "did not come from this site" in response.get_data(as_text=True)
    # An API client gets the JSON envelope.
    api = call("/login", method="POST", headers=cookies, data=form)
    assert api.status_code == 400
    assert api.get_json()["error"] == "csrf_failed"


def test_a_name_the_form_does_not_have_is_not_named_back(call: Caller, analyst: Account) -> None:
    # A password typed with a raw `&` into a hand-made request: its tail became a field
    # name, which the 400 quoted back (message and details).
    nonce, token = login_form(call)
    body = f"csrf_token={token}&username={analyst.username}&password=hunter&2S3cr3tZ"
    for headers in (BROWSER, {"Accept": "application/json"}):
        answer = call(
            "/login",
            method="POST",
            headers={**headers, **cookie_header(**{CSRF: nonce})},
            data=body,
            content_type="application/x-www-form-urlencoded",
        )
        assert "2S3cr3tZ" not in answer.get_data(as_text=True), answer.get_data(as_text=True)
        assert SESSION not in set_cookies(answer)  # "hunter" is not the password


def test_wrong_password_rerenders_the_form(call: Caller, analyst: Account) -> None:
    nonce, token = login_form(call)
    response = call(
        "/login",
        method="POST",
        headers={**BROWSER, **cookie_header(**{CSRF: nonce})},
        data={"username": analyst.username, "password": "not it at all", "csrf_token": token},
    )
    assert response.status_code == 200  # the form again, for a browser
    assert "WWW-Authenticate" not in response.headers  # a 401's header, not a form's
    html = response.get_data(as_text=True)
    assert "Wrong username or password." in html
    assert "not it at all" not in html
    assert SESSION not in set_cookies(response)
    api = call(
        "/login",
        method="POST",
        headers=cookie_header(**{CSRF: nonce}),
        data={"username": analyst.username, "password": "not it at all", "csrf_token": token},
    )
    assert api.status_code == 401
    assert api.get_json()["error"] == "invalid_grant"


def test_dashboard_page_with_bearer_token(call: Caller, fn_settings: Settings) -> None:
    token = TokenService(fn_settings).issue(Principal("bob", "admin")).access_token
    response = call(
        "/",
        headers={**BROWSER, "Authorization": f"Bearer {token}"},
        query_string={"sale_month": "2023-10"},
    )
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    # Masked products (PII field), never in clear.
    for product in ("Halal Laptop", "Halal Mouse", "Halal Keyboard"):
        assert mask(product, PII_KEY) in html
        assert product not in html
    assert '<table id="summary">' in html
    assert "1,999.98" in html
    # The chart: inline SVG, one bar per month.
    assert '<svg id="monthly-chart"' in html
    assert html.count('class="bar"') == 1
    assert 'data-month="2023-10"' in html


def test_chart_has_a_bar_per_month(call: Caller, fn_settings: Settings) -> None:
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    html = call("/", headers={**BROWSER, "Authorization": f"Bearer {token}"}).get_data(as_text=True)
    assert "<h1>Sales Trends Dashboard</h1>" in html  # the design document's heading
    months = re.findall(r'data-month="([0-9-]+)"', html)
    assert months == ["2023-09", "2023-10", "2023-11", "2023-12"]
    # Each bar tells assistive technology its month and value, not only a hover title.
    labels = re.findall(r'role="img" aria-label="([0-9-]+): ([0-9,.]+)"', html)
    assert labels[1] == ("2023-10", "2,632.83")  # the month's total, as the table adds up
    assert [month for month, _ in labels] == months


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        ("398", ["0", "100", "200", "300", "400"]),  # was 0, 100, 199, 298, 398
        ("1999.98", ["0", "500", "1,000", "1,500", "2,000"]),
        ("101", ["0", "50", "100", "150"]),
        ("0.40", ["0", "1"]),
        ("0", ["0", "1"]),
        (
            "123456789012345678.90",
            ["0", "50,000,000,000,000,000", "100,000,000,000,000,000", "150,000,000,000,000,000"],
        ),
    ],
)
def test_the_charts_gridlines_sit_at_round_values(top: str, ticks: list[str]) -> None:
    from common.dashboard import build_chart

    chart = build_chart([(date(2023, 10, 1), Decimal(top)), (date(2023, 11, 1), Decimal(0))])
    assert [label for _, label in chart.ticks] == ticks
    tallest = chart.bars[0]
    plot = chart.axis_y - chart.ticks[-1][0]
    top_value = float(ticks[-1].replace(",", ""))
    # The bar stands as high against the gridlines as its value says.
    assert abs(tallest.height - plot * float(top) / top_value) < 0.01
    assert abs(tallest.y + tallest.height - chart.axis_y) < 0.01


def test_page_loads_nothing_external(call: Caller, fn_settings: Settings) -> None:
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    response = call("/", headers={**BROWSER, "Authorization": f"Bearer {token}"})
    html = response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "http" not in csp and "unsafe" not in csp
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<style nonce="{nonce.group(1)}">' in html


def test_invalid_bearer_is_401_not_a_redirect(call: Caller) -> None:
    response = call("/", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # A browser's 401 is a page, and the OpenAPI document says so (it said JSON only).
    page = call("/", headers={"Authorization": "Bearer nope", "Accept": "text/html"})
    assert (page.status_code, page.mimetype) == (401, "text/html")
    document = call("/openapi.json").get_json()
    documented = document["paths"]["/"]["get"]["responses"]["401"]["content"]
    assert {response.mimetype, page.mimetype} <= set(documented)
    login = document["paths"]["/login"]["get"]
    assert [parameter["name"] for parameter in login["parameters"]] == ["next"]


@pytest.mark.parametrize("subject", ["a\ud800b", "a\nb", "<b>x</b>", "x" * 65, ""])
def test_a_signed_token_for_a_name_no_user_can_have_is_401(
    call: Caller, fn_settings: Settings, subject: str
) -> None:
    """Signed with the key, but not a token this service issues (a lone surrogate in the
    page's "signed in as" was a 500)."""
    token = TokenService(fn_settings).issue(Principal(subject, "analyst")).access_token
    response = call("/", headers={**BROWSER, "Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.get_data(as_text=True)


def test_422_for_broken_parameters(call: Caller, fn_settings: Settings) -> None:
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    api = call("/", headers={"Authorization": f"Bearer {token}"}, query_string={"limit": "0"})
    assert api.status_code == 422
    assert api.get_json()["details"] == {"limit": [api.get_json()["details"]["limit"][0]]}
    page = call(
        "/",
        headers={**BROWSER, "Authorization": f"Bearer {token}"},
        query_string={"sale_month": "2023-13", "bogus": "1"},
    )
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "sale_month" in html and "bogus" in html


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"limit": "", "sale_month": "", "product_prefix": ""}, 200),  # untouched fields
        ({"limit": " "}, 422),
        ({"sale_month": "\t"}, 422),
        ({"product_prefix": "\u202f"}, 422),
    ],
)
def test_only_an_empty_field_is_absent_spaces_are_judged_as_the_apis_judge_them(
    call: Caller, fn_settings: Settings, query: dict[str, str], status: int
) -> None:
    """Before, a value of spaces was dropped too: the page showed the default rows where
    both APIs answer 422 for the same query."""
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    page = call("/", headers={**BROWSER, "Authorization": f"Bearer {token}"}, query_string=query)
    assert page.status_code == status, page.get_data(as_text=True)[:300]
    if status == 422:
        assert next(iter(query)) in page.get_data(as_text=True)


def test_logout_clears_the_session(call: Caller, analyst: Account) -> None:
    logged_in = log_in(call, analyst)
    session = set_cookies(logged_in)[SESSION][0]
    csrf_nonce = set_cookies(logged_in)[CSRF][0]
    page = call("/", headers={**BROWSER, **cookie_header(**{SESSION: session, CSRF: csrf_nonce})})
    token = csrf_from(page.get_data(as_text=True))
    refused = call(
        "/logout",
        method="POST",
        headers=cookie_header(**{SESSION: session}),
        data={"csrf_token": token},
    )
    assert refused.status_code == 400
    out = call(
        "/logout",
        method="POST",
        headers={**BROWSER, **cookie_header(**{SESSION: session, CSRF: csrf_nonce})},
        data={"csrf_token": token},
    )
    assert out.status_code == 303
    assert out.headers["Location"] == "/login"
    value, header = set_cookies(out)[SESSION]
    assert value == "" and ("Max-Age=0" in header or "expires=Thu, 01 Jan 1970" in header)
    assert "SameSite=Lax" in header and "Secure" in header and "HttpOnly" in header
    assert set_cookies(out)[CSRF][0] not in ("", csrf_nonce)  # a new nonce, as at login
    assert call("/logout", method="GET").status_code == 405

    # The session is over for good: a copy of the cookie (another tab, a stolen one) is
    # sent back to the login, though its token has not expired yet.
    replay = call("/", headers={**BROWSER, **cookie_header(**{SESSION: session})})
    assert replay.status_code == 303 and replay.headers["Location"] == "/login"
    # Logging out again with the ended session is harmless.
    again = call(
        "/logout",
        method="POST",
        headers={**BROWSER, **cookie_header(**{SESSION: session, CSRF: csrf_nonce})},
        data={"csrf_token": token},
    )
    assert again.status_code == 303


def test_a_session_cookie_is_not_an_api_token(
    call: Caller, analyst: Account, fn_settings: Settings
) -> None:
    """The cookie's token has an audience of its own: as a bearer token (here, or on the
    trends APIs) it is refused, so a copied cookie is no API key."""
    session = set_cookies(log_in(call, analyst))[SESSION][0]
    assert call("/", headers={**BROWSER, **cookie_header(**{SESSION: session})}).status_code == 200
    assert call("/", headers={"Authorization": f"Bearer {session}"}).status_code == 401
    with pytest.raises(InvalidToken):
        TokenService(fn_settings).verify(session)  # what trends_pg and trends_bq check
    # Nor is an API token a session cookie.
    api_token = TokenService(fn_settings).issue(Principal(analyst.username, "analyst"))
    cookie = cookie_header(**{SESSION: api_token.access_token})
    assert call("/", headers={**BROWSER, **cookie}).status_code == 303


def test_dev_cookies_are_not_secure(marts_dsn: str, flask_app: Any, analyst: Account) -> None:
    with pytest.MonkeyPatch.context() as patch:
        module = load_function(
            "dashboard", patch, SALESMART_DATABASE_URL=marts_dsn, SALESMART_ENV="dev"
        )
        call = caller(flask_app, module.dashboard)
        page = call("/login", headers=BROWSER)
        nonce = set_cookies(page)["salesmart-csrf"][0]
        response = call(
            "/login",
            method="POST",
            headers={**BROWSER, **cookie_header(**{"salesmart-csrf": nonce})},
            data={
                "username": analyst.username,
                "password": analyst.password,
                "csrf_token": csrf_from(page.get_data(as_text=True)),
            },
        )
        assert response.status_code == 303
        _, header = set_cookies(response)["salesmart-session"]
        assert "HttpOnly" in header and "SameSite=Lax" in header
        assert "Secure" not in header
        load_function("dashboard", patch, SALESMART_DATABASE_URL=marts_dsn)


@pytest.mark.parametrize(
    ("fields", "masked", "clear"),
    [
        ([], [], ["Halal Laptop", "1,999.98"]),
        (["product", "total_amount"], ["Halal Laptop", "1999.98"], ["999.99"]),
        # A month is masked as the API writes it (the first day), not as the page shows it.
        (["sale_month", "total_quantity"], ["2023-10-01"], ["Halal Laptop", "999.99"]),
        (["sale_month", "total_amount"], ["2023-10-01", "1999.98"], ["Halal Laptop"]),
    ],
)
def test_masked_fields_follow_the_config(
    marts_dsn: str,
    flask_app: Any,
    fn_settings: Settings,
    tmp_path: Path,
    fields: list[str],
    masked: list[str],
    clear: list[str],
) -> None:
    config = yaml.safe_load(Path(TEST_ENV["SALESMART_CONFIG"]).read_text())
    config["security"]["pii_fields"] = fields
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    with pytest.MonkeyPatch.context() as patch:
        module = load_function(
            "dashboard", patch, SALESMART_DATABASE_URL=marts_dsn, SALESMART_CONFIG=str(path)
        )
        call = caller(flask_app, module.dashboard)
        html = call(
            "/",
            headers={**BROWSER, "Authorization": f"Bearer {token}"},
            query_string={"limit": "1"},
        ).get_data(as_text=True)
        load_function("dashboard", patch, SALESMART_DATABASE_URL=marts_dsn)
    for value in masked:
        assert value not in html
        assert mask(value, PII_KEY) in html
    for value in clear:
        assert value in html
    # The chart shows months and totals in clear (an audit: one product and month filtered,
    # its bar was that row's): not drawn when either is masked.
    hidden = [name for name in ("sale_month", "total_amount") if name in fields]
    assert ('id="monthly-chart"' in html) == (not hidden)
    assert ('id="monthly-totals"' in html) == (not hidden)
    if hidden:
        assert f"it would show {' and '.join(hidden)} in clear" in html


def test_money_is_shown_exact_past_float_precision(
    pg_server: EmbeddedPostgres, flask_app: Any, tmp_path: Path
) -> None:
    """Amounts the loader accepts (15 digits before the point) are shown to the cent: a
    float on the way would print 100,000,000,000,000,000.00 and ...016.00."""
    dsn = create_database(pg_server)
    csv = tmp_path / "big.csv"
    csv.write_text(
        "transaction_id,product,price,quantity,date\n"
        "B1,Halal Big,999999999999999.99,100,2024-03-01\n"
        "B2,Halal Small,10.01,1,2024-03-02\n"
    )
    load_marts(dsn, tmp_path, [csv])
    token = TokenService(settings_for(dsn)).issue(Principal("bob", "analyst")).access_token
    with pytest.MonkeyPatch.context() as patch:
        module = load_function("dashboard", patch, SALESMART_DATABASE_URL=dsn)
        page = caller(flask_app, module.dashboard)(
            "/", headers={**BROWSER, "Authorization": f"Bearer {token}"}
        )
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "99,999,999,999,999,999.00" in html  # Halal Big's total_amount
    assert "999,999,999,999,999.99" in html  # its avg_price
    assert "100,000,000,000,000,009.01" in html  # March's bar: both rows
    assert "100,000,000,000,000,000.00" not in html
    assert "100,000,000,000,000,016" not in html


def test_compiled_templates_are_cached_and_rendered_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.dashboard as dashboard

    monkeypatch.setattr(dashboard, "TEMPLATE_CACHE", tmp_path / "cache")
    names = dashboard.compile_templates()
    assert sorted(names) == sorted(p.name for p in dashboard.TEMPLATES.glob("*.html"))
    cached = sorted((tmp_path / "cache").glob("__jinja2_*.cache"))
    assert len(cached) == len(names)
    # Readable by all, as .pyc files: the image compiles them as root and serves as another
    # user (Jinja writes them owner-only; the functions then compiled at every cold start).
    assert {path.stat().st_mode & 0o777 for path in cached} == {0o644}
    # A new environment (a new instance) loads the code instead of compiling the source.
    fresh = dashboard.template_environment()
    compiled: list[str] = []
    monkeypatch.setattr(fresh, "compile", lambda *a, **k: compiled.append("x"))
    template = fresh.get_template("error.html")
    assert compiled == []
    html = template.render(
        style_nonce="n",
        csrf_token="t",
        request_id="r",
        error={"status": 404, "code": "not_found", "message": "No such page.", "details": {}},
    )
    assert "No such page." in html


def test_an_unwritable_template_cache_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.dashboard as dashboard

    # Under a file: the folder cannot be made (even by root); templates compile in memory.
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(dashboard, "TEMPLATE_CACHE", blocker / "cache")
    assert dashboard.template_environment().bytecode_cache is None
    assert dashboard.compile_templates()
    # The folder vanishes after start (a read-only or cleaned volume): writes fail quietly.
    gone = tmp_path / "gone"
    monkeypatch.setattr(dashboard, "TEMPLATE_CACHE", gone)
    environment = dashboard.template_environment()
    assert environment.bytecode_cache is not None
    gone.rmdir()
    assert environment.get_template("login.html") is not None
    assert not gone.exists()


def _sent_as_documented(response: Any, documented: dict[str, Any]) -> None:
    """The response's media type and its meaningful headers are in its OpenAPI entry."""
    assert response.mimetype in documented["content"], (response.mimetype, documented)
    for header in ("WWW-Authenticate", "Retry-After", "Allow", "Location", "Accept-Encoding"):
        if header in response.headers:
            assert header in documented["headers"], (header, documented)


def test_its_openapi_document_says_an_empty_filter_counts_as_absent(call: Caller) -> None:
    """The filter form sends every field, filled or not, and the page takes ``x=`` as no
    filter; the document said such a request broke the parameters' rules."""
    parameters = call("/openapi.json").get_json()["paths"]["/"]["get"]["parameters"]
    assert {p["name"] for p in parameters} >= {"sale_month", "limit", "product_prefix"}
    for parameter in parameters:
        assert parameter["allowEmptyValue"] is True, parameter
        assert "Empty counts as absent." in parameter["description"], parameter


def test_what_the_dashboard_sends_is_what_its_openapi_document_says(
    call: Caller, analyst: Account, flask_app: Any, fn_settings: Settings, marts_dsn: str
) -> None:
    """A browser's 405 is a page, a wrong login's 401 for an API client names the scheme,
    and a 503 says when to retry: the document said JSON only, and neither header."""
    paths = call("/openapi.json").get_json()["paths"]
    put = call("/", method="PUT", headers=BROWSER)
    assert (put.status_code, put.mimetype) == (405, "text/html")
    _sent_as_documented(put, paths["/"]["get"]["responses"]["405"])
    api_put = call("/logout", method="PUT")
    assert (api_put.status_code, api_put.mimetype) == (405, "application/json")
    _sent_as_documented(api_put, paths["/logout"]["post"]["responses"]["405"])
    nonce, token = login_form(call)
    wrong = call(
        "/login",
        method="POST",
        headers=cookie_header(**{CSRF: nonce}),
        data={"username": analyst.username, "password": "not it", "csrf_token": token},
    )
    assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers
    _sent_as_documented(wrong, paths["/login"]["post"]["responses"]["401"])
    nonce, token = login_form(call)
    for path in ("/login", "/logout"):  # a coded form is refused, as documented
        for coding, status in (("Content-Encoding", 415), ("Transfer-Encoding", 501)):
            coded = call(
                path,
                method="POST",
                headers={**BROWSER, **cookie_header(**{CSRF: nonce}), coding: "gzip"},
                data={"username": "a", "password": "b", "csrf_token": token},
            )
            assert coded.status_code == status, (path, coding, coded.status_code)
            _sent_as_documented(coded, paths[path]["post"]["responses"][str(status)])

    bearer = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    session = (
        TokenService(fn_settings, audience=session_audience(fn_settings))
        .issue(Principal("bob", "analyst"))
        .access_token
    )
    try:
        _answers_of_an_unreachable_database(flask_app, paths, bearer, session)
    finally:  # the module is reloaded in place: the tests after this one use it again
        with pytest.MonkeyPatch.context() as patch:
            load_function("dashboard", patch, SALESMART_DATABASE_URL=marts_dsn)


def _answers_of_an_unreachable_database(
    flask_app: Any, paths: dict[str, Any], bearer: str, session: str
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        gone = load_function(
            "dashboard",
            patch,
            SALESMART_DATABASE_URL=f"postgresql://x:{'y' * 32}@127.0.0.1:{free_port()}/z",
        )
        unreachable = caller(flask_app, gone.dashboard)
        page = unreachable("/login", headers=BROWSER)
        nonce, token = set_cookies(page)[CSRF][0], csrf_from(page.get_data(as_text=True))
        cookies = cookie_header(**{CSRF: nonce, SESSION: session})
        for path, method, headers, form in [
            ("/", "get", {"Authorization": f"Bearer {bearer}"}, None),
            ("/login", "post", cookies, {"username": "a", "password": "b", "csrf_token": token}),
            ("/logout", "post", cookies, {"csrf_token": token}),
        ]:
            for accept in (BROWSER, {}):
                response = unreachable(
                    path, method=method.upper(), headers={**accept, **headers}, data=form
                )
                assert response.status_code == 503, (path, accept, response.status_code)
                _sent_as_documented(response, paths[path][method]["responses"]["503"])
                assert response.headers["Retry-After"]


# ---- what people meet on the page (a browser audit) -----------------------------------------


def test_months_without_sales_keep_their_place_in_the_chart() -> None:
    from common.dashboard import CHART_MAX_FILLED_MONTHS, build_chart

    chart = build_chart([(date(2024, 1, 1), Decimal(5)), (date(2023, 11, 1), Decimal(7))])
    # A gap of a month looked like none: every month from the first to the last is a slot.
    assert [bar.label for bar in chart.bars] == ["2023-11", "2023-12", "2024-01"]
    assert [bar.value for bar in chart.bars] == ["7.00", "0.00", "5.00"]
    assert chart.bars[1].height == 0
    slots = [b.x - a.x for a, b in zip(chart.bars, chart.bars[1:], strict=False)]
    assert max(slots) - min(slots) < 0.02  # evenly spaced
    # Up to ten years are filled; dates decades apart are not made hundreds of empty slots.
    decade = build_chart([(date(2014, 1, 1), Decimal(1)), (date(2023, 12, 1), Decimal(1))])
    assert len(decade.bars) == CHART_MAX_FILLED_MONTHS == 120
    far = build_chart([(date(2014, 1, 1), Decimal(1)), (date(2024, 1, 1), Decimal(1))])
    assert len(far.bars) == 2


def test_month_labels_never_overlap() -> None:
    # Labelled every month up to 17 months, 37 units apart for 56-unit labels at 17.
    from common.dashboard import CHART_LABEL_SPACING, build_chart

    for count in range(1, 121):
        monthly = [(date(2000 + n // 12, n % 12 + 1, 1), Decimal(n + 1)) for n in range(count)]
        shown = [bar.x for bar in build_chart(monthly).bars if bar.show_label]
        gaps = [b - a for a, b in itertools.pairwise(shown)]
        assert shown and min(gaps, default=CHART_LABEL_SPACING) >= CHART_LABEL_SPACING, count


@pytest.mark.parametrize("top", ["90", "900000", "10000000", "600000000", "123456789012345678"])
def test_the_value_labels_fit_left_of_the_plot(top: str) -> None:
    # "10,000,000" was drawn from x=-6: cut to ".0,000,000" by the SVG's edge.
    from common.dashboard import CHART_CHAR_WIDTH, build_chart

    chart = build_chart([(date(2023, 10, 1), Decimal(top))])
    widest = max(len(label) for _, label in chart.ticks)
    # Labels end 6 units left of the plot (text-anchor end).
    assert chart.left - 6 - widest * CHART_CHAR_WIDTH >= 0
    assert chart.bars[0].x >= chart.left and chart.right <= chart.width - 24


def test_broken_filters_come_back_on_the_page_with_the_forms_names(
    call: Caller, fn_settings: Settings
) -> None:
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    query = {"min_avg_price": "9", "max_avg_price": "2", "sale_month": "2023-13", "limit": "5"}
    page = call("/", headers={**BROWSER, "Authorization": f"Bearer {token}"}, query_string=query)
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    errors = html.split('id="filter-errors"')[1].split("</div>")[0]
    assert "<strong>Month</strong>" in errors and "<strong>Min avg price</strong>" in errors
    # The API's names stay out of the people's page, in the messages too.
    assert "sale_month" not in errors and "max_avg_price" not in errors
    assert "greater than max avg price" in errors
    # The form is there, with what was sent; no rows or chart of filters not applied.
    assert 'id="filters"' in html and 'name="sale_month" value="2023-13"' in html
    assert 'name="limit" value="5"' in html and 'name="max_avg_price" value="2"' in html
    assert 'id="summary"' not in html and 'id="monthly-chart"' not in html
    # API clients still get the JSON error.
    api = call("/", headers={"Authorization": f"Bearer {token}"}, query_string=query)
    assert api.status_code == 422 and set(api.get_json()["details"]) >= {"sale_month"}


def test_a_stale_logout_form_asks_again_with_a_working_one(call: Caller, analyst: Account) -> None:
    # A tab opened before the last login: its form names the old nonce. The 400 said
    # "reload and retry", and reloading sent the same old form: the user stayed signed in.
    first = log_in(call, analyst)
    old_nonce = set_cookies(first)[CSRF][0]
    old_page = call(
        "/",
        headers={
            **BROWSER,
            **cookie_header(**{SESSION: set_cookies(first)[SESSION][0], CSRF: old_nonce}),
        },
    )
    stale_token = csrf_from(old_page.get_data(as_text=True))
    second = log_in(call, analyst)  # another tab: a new session and a new nonce
    session, nonce = set_cookies(second)[SESSION][0], set_cookies(second)[CSRF][0]
    jar = cookie_header(**{SESSION: session, CSRF: nonce})
    asked = call(
        "/logout", method="POST", headers={**BROWSER, **jar}, data={"csrf_token": stale_token}
    )
    assert asked.status_code == 400
    html = asked.get_data(as_text=True)
    assert 'id="logout-again"' in html
    assert call("/", headers={**BROWSER, **jar}).status_code == 200  # not logged out by it
    out = call(
        "/logout", method="POST", headers={**BROWSER, **jar}, data={"csrf_token": csrf_from(html)}
    )
    assert (out.status_code, out.headers["Location"]) == (303, "/login")
    assert call("/", headers={**BROWSER, **jar}).status_code == 303
    # Scripts keep the JSON refusal.
    api = call("/logout", method="POST", headers=jar, data={"csrf_token": stale_token})
    assert (api.status_code, api.get_json()["error"]) == (400, "csrf_failed")


def test_the_login_form_after_a_refusal(call: Caller, analyst: Account) -> None:
    wrong = log_in(call, analyst, password="not the password")
    html = wrong.get_data(as_text=True)
    # The name is kept: the cursor goes to the password, the field to type again.
    assert re.search(r'id="password"[^>]* autofocus', html)
    assert not re.search(r'id="username"[^>]* autofocus', html)
    for _ in range(5):
        locked = log_in(call, analyst, password="not the password")
    assert locked.status_code == 429
    minutes = -(-int(locked.headers["Retry-After"]) // 60)
    message = re.search(r'id="login-error">([^<]*)<', locked.get_data(as_text=True))
    assert message and message.group(1).endswith(f"Try again in {minutes} minutes.")
    fresh = call("/login", headers=BROWSER).get_data(as_text=True)
    assert re.search(r'id="username"[^>]* autofocus', fresh)


def test_the_charts_totals_are_also_numbers_and_masking_is_explained(
    call: Caller, fn_settings: Settings
) -> None:
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    html = call("/", headers={**BROWSER, "Authorization": f"Bearer {token}"}).get_data(as_text=True)
    bars = re.findall(r'aria-label="(\d{4}-\d{2}): ([\d,.]+)"', html)
    listed = re.findall(
        r'<td class="month">(\d{4}-\d{2})</td><td class="num">([\d,.]+)</td>',
        html.split('id="monthly-totals"')[1],
    )
    assert bars and listed == bars  # the same months and totals as the chart's bars
    note = re.search(r'id="masked-note">([^<]*)<', html)
    assert note and "product" in note.group(1) and "filters match the real values" in note.group(1)


def test_an_unknown_parameters_name_is_shown_cut(call: Caller, fn_settings: Settings) -> None:
    # A 300-character name was printed whole: a phone's page grew to 3,347 px.
    token = TokenService(fn_settings).issue(Principal("bob", "analyst")).access_token
    name = "x" * 300
    page = call(
        "/", headers={**BROWSER, "Authorization": f"Bearer {token}"}, query_string={name: "1"}
    )
    assert page.status_code == 422
    errors = page.get_data(as_text=True).split('id="filter-errors"')[1].split("</div>")[0]
    assert f"<strong>{'x' * 64}</strong>" in errors and "x" * 65 not in errors


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "1 minute"),
        (300, "5 minutes"),
        (3599, "1 hour"),
        (3600, "1 hour"),
        (86399, "1 day"),
        (366 * 86400, "366 days"),
    ],
)
def test_a_lockouts_wait_is_told_in_its_largest_unit(seconds: int, shown: str) -> None:
    """A one-second lock said "1 minute", a window of a year "527040 minutes" (an audit)."""
    from common.dashboard import _duration

    assert _duration(seconds) == shown
