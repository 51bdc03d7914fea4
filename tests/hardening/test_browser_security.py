"""Login rate limit, cookie flags, CSRF and CSP against a real Chromium session (prod mode:
``Secure`` ``__Host-`` cookies; Chromium treats loopback as a secure context).

Reuses the function tests' Chromium fixture; what they already cover (login, table, chart,
logout, no external request) is not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.functions.conftest import Served, make_user
from tests.functions.test_dashboard_browser import CHROMIUM, Browser, browser, log_in

__all__ = ["browser"]


@pytest.fixture(autouse=True, scope="module")
def _chromium_installed() -> None:
    # A missing browser fails these tests (never skips them): `make test` installs it.
    assert __import__("pathlib").Path(CHROMIUM).exists(), "chromium is not installed"


def submit_login(page: Any, username: str, password: str) -> int:
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    return int(navigation.value.status)


def test_cookies_csrf_csp_and_rate_limit_in_chromium(
    serve: Callable[..., Served], marts_dsn: str, browser: Callable[[], Browser]
) -> None:
    served = serve("dashboard", SALESMART_DATABASE_URL=marts_dsn)  # prod: Secure cookies
    account = make_user(marts_dsn, "analyst")
    session = browser()
    page = session.page

    # Cookie flags after a real login.
    log_in(page, served.url, account)
    assert page.url == f"{served.url}/"
    cookies = {c["name"]: c for c in session.context.cookies()}
    session_cookie = cookies["__Host-salesmart-session"]
    csrf_cookie = cookies["__Host-salesmart-csrf"]
    assert session_cookie["httpOnly"] and session_cookie["secure"]
    assert session_cookie["sameSite"] == "Lax" and session_cookie["path"] == "/"
    assert session_cookie["expires"] > 0  # a bounded session, not a forever cookie
    assert csrf_cookie["httpOnly"] and csrf_cookie["secure"] and csrf_cookie["sameSite"] == "Lax"
    assert page.evaluate("() => document.cookie") == ""  # scripts see neither

    # CSP: an injected inline script and an external image are refused by the browser.
    violations = page.evaluate(
        """() => new Promise(resolve => {
            const seen = [];
            document.addEventListener('securitypolicyviolation',
                e => seen.push(e.effectiveDirective));
            const s = document.createElement('script');
            s.textContent = 'window.pwned = 1';
            document.body.appendChild(s);
            const img = document.createElement('img');
            img.src = 'http://127.0.0.2:9/x.png';
            document.body.appendChild(img);
            setTimeout(() => resolve(seen), 1500);
        })"""
    )
    assert "script-src-elem" in violations or "script-src" in violations, violations
    assert any(v.startswith("img-src") for v in violations), violations
    assert page.evaluate("() => window.pwned") is None
    session.errors.clear()  # the refusals above are logged as console errors

    # CSRF: logout with a tampered token is refused and the session survives.
    page.evaluate(
        "() => document.querySelector('header form input[name=csrf_token]').value = 'x.1.y'"
    )
    with page.expect_navigation() as navigation:
        page.click("header button[type=submit]")
    assert navigation.value.status == 400
    page.goto(f"{served.url}/")
    assert page.url == f"{served.url}/"  # still logged in

    # CSRF: a login form whose nonce cookie was dropped is refused (400), no session set.
    fresh = browser()
    fresh.page.goto(f"{served.url}/login")
    fresh.context.clear_cookies()
    assert submit_login(fresh.page, account.username, account.password) == 400
    assert not any("session" in c["name"] for c in fresh.context.cookies())

    # The login rate limit, through the form: five failures, then 429 even when right.
    victim = make_user(marts_dsn, "analyst")
    limited = browser().page
    limited.goto(f"{served.url}/login")
    statuses = [submit_login(limited, victim.username, f"guess {n}") for n in range(5)]
    statuses.append(submit_login(limited, victim.username, victim.password))
    assert statuses == [200] * 5 + [429], statuses
    assert limited.url == f"{served.url}/login"
    assert "Too many failed logins" in limited.inner_text("#login-error")
    # The only console error left: the refused logout's 400.
    assert all("status of 400" in error for error in session.errors), session.errors


def test_a_link_from_another_site_leaves_open_forms_working(
    serve: Callable[..., Served], marts_dsn: str, browser: Callable[[], Browser]
) -> None:
    """Following a link to the dashboard from another site must not replace the CSRF nonce
    under the forms of tabs already open. With a ``SameSite=Strict`` nonce cookie, the
    browser left it out of that navigation, the page set a new one, and Log out in the
    first tab then failed (400) with the user still signed in: any site could do it."""
    served = serve("dashboard", SALESMART_DATABASE_URL=marts_dsn)
    account = make_user(marts_dsn, "analyst")
    session = browser()
    first = session.page
    log_in(first, served.url, account)

    # Another site (another host name, so a cross-site navigation) links to the dashboard;
    # its page is served by the browser itself.
    elsewhere = served.url.replace("127.0.0.1", "localhost") + "/elsewhere"
    assert elsewhere.startswith("http://localhost:")
    second = session.context.new_page()
    second.route(
        elsewhere,
        lambda route: route.fulfill(
            content_type="text/html", body=f'<a id="go" href="{served.url}/">dashboard</a>'
        ),
    )
    second.goto(elsewhere)
    with second.expect_navigation() as followed:
        second.click("#go")
    assert followed.value.status == 200 and second.url == f"{served.url}/"

    with first.expect_navigation() as logged_out:
        first.click("header button[type=submit]")
    assert logged_out.value.status == 200 and first.url == f"{served.url}/login"
    second.goto(f"{served.url}/")
    assert second.url == f"{served.url}/login"  # the session ended
