"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright).

Redirect to the login form, log in through it, see the table with masked products and
the chart, filter, log out; no console error, no request leaving loopback. A screenshot
is kept at ``tests/artifacts/dashboard.png``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from common.masking import mask
from tests.conftest import REPO_ROOT, TEST_ENV
from tests.functions.conftest import Account, Served, make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True, scope="module")
def _chromium_installed() -> None:
    # A missing browser fails these tests (never skips them): `make test` installs it.
    assert Path(CHROMIUM).exists(), "chromium is not installed (make browser)"


class Browser:
    """One fresh Chromium profile; records console errors and every request's URL."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.blocked: list[str] = []
        context.on("request", lambda request: self.urls.append(request.url))
        context.route("**/*", self._only_loopback)
        self.page = context.new_page()
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _only_loopback(self, route: Any) -> None:
        url = route.request.url
        if url.startswith("data:") or urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[], Browser]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        contexts: list[Any] = []

        def open_browser() -> Browser:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / f"profile-{len(contexts)}"),
                executable_path=CHROMIUM,
                args=LAUNCH_ARGS,
                headless=True,
                viewport={"width": 1100, "height": 900},
            )
            contexts.append(context)
            return Browser(context)

        yield open_browser
        for context in contexts:
            context.close()


def log_in(page: Any, base: str, account: Account) -> None:
    page.goto(f"{base}/")
    assert page.url == f"{base}/login"
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    with page.expect_navigation():
        page.click("button[type=submit]")


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_dashboard_in_chromium(
    env: str, serve: Callable[..., Served], marts_dsn: str, browser: Callable[[], Browser]
) -> None:
    account = make_user(marts_dsn, "analyst")
    extra = {"SALESMART_ENV": "dev"} if env == "dev" else {}
    served = serve("dashboard", SALESMART_DATABASE_URL=marts_dsn, **extra)
    session = browser()
    page = session.page

    # Wrong password first: the form comes back with a message, no session.
    page.goto(f"{served.url}/login")
    page.fill("#username", account.username)
    page.fill("#password", "wrong password")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "Wrong username or password." in page.inner_text("#login-error")

    log_in(page, served.url, account)
    assert page.url == f"{served.url}/"
    assert page.inner_text("#user") == account.username

    # The table: masked products, never in clear.
    cells = page.locator("#summary tbody tr td:first-child").all_inner_texts()
    assert len(cells) == 12
    key = TEST_ENV["SALESMART_PII_KEY"]
    assert mask("Halal Laptop", key) == cells[0]
    assert all(len(cell) == 12 and int(cell, 16) >= 0 for cell in cells)
    assert "Halal Laptop" not in page.content()
    first_row = page.locator("#summary tbody tr").first.inner_text()
    assert "1,999.98" in first_row and "2023-10" in first_row

    # The chart: an inline SVG with one bar per month, actually drawn.
    bars = page.locator("#monthly-chart rect.bar")
    assert bars.count() == 4
    box = bars.nth(1).bounding_box()
    assert box is not None and box["height"] > 50  # October, the largest month
    assert page.locator("style").count() == 1
    colour = page.eval_on_selector("#monthly-chart rect.bar", "e => getComputedStyle(e).fill")
    assert colour == "rgb(31, 122, 77)"  # the nonce'd stylesheet applied (CSP allowed it)

    if env == "dev":
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Filtering through the form.
    page.fill("#sale_month", "2023-11")
    with page.expect_navigation():
        page.click("#filters button[type=submit]")
    assert page.locator("#monthly-chart rect.bar").count() == 1
    assert page.locator("#summary tbody tr").count() == 2  # Dates and Honey

    # Log out: back to the form, and the dashboard asks to log in again.
    with page.expect_navigation():
        page.click("header button[type=submit]")
    assert page.url == f"{served.url}/login"
    page.goto(f"{served.url}/")
    assert page.url == f"{served.url}/login"

    assert session.errors == []
    assert session.blocked == []
    assert session.urls and all(
        url.startswith("data:") or urlsplit(url).hostname in LOOPBACK for url in session.urls
    )


def test_a_long_product_name_wraps_inside_the_page(
    serve: Callable[..., Served], marts_dsn: str, browser: Callable[[], Browser]
) -> None:
    """A product the loader accepts (up to 500 characters, perhaps without a space) shown
    unmasked wraps in its cell: before, the table grew to ~7,800 px and pushed the numbers
    off screen. The name is put into the rendered table, so the page's own CSS lays it out."""
    account = make_user(marts_dsn, "analyst")
    served = serve("dashboard", SALESMART_DATABASE_URL=marts_dsn, SALESMART_ENV="dev")
    page = browser().page
    page.set_viewport_size({"width": 1100, "height": 800})
    log_in(page, served.url, account)
    page.eval_on_selector(
        "#summary tbody tr td:first-child",
        # As an unmasked product's cell (pii_fields without product): no "mask" class.
        "cell => { cell.classList.remove('mask'); cell.textContent = 'Halal' + 'W'.repeat(495) }",
    )
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1100
    last = page.locator("#summary tbody tr").first.locator("td").last.bounding_box()
    assert last is not None and last["x"] + last["width"] <= 1100  # the numbers stay in view


@pytest.mark.parametrize("width", [375, 1024])
def test_the_page_fits_a_phone_and_its_chart_labels_are_whole(
    width: int, serve: Callable[..., Served], marts_dsn: str, browser: Callable[[], Browser]
) -> None:
    """At 375 px the page was 597 px wide (the table spilled out of its card), the filter
    form four columns of 55 px, and the chart's value labels were cut at the SVG's edge."""
    account = make_user(marts_dsn, "analyst")
    served = serve("dashboard", SALESMART_DATABASE_URL=marts_dsn, SALESMART_ENV="dev")
    page = browser().page
    page.set_viewport_size({"width": width, "height": 800})
    log_in(page, served.url, account)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    inputs = page.locator("#filters input")
    assert min(inputs.nth(n).bounding_box()["width"] for n in range(inputs.count())) >= 120
    chart = page.locator("#monthly-chart").bounding_box()
    assert chart is not None
    for label in page.locator("#monthly-chart text").all():
        box = label.bounding_box()
        assert box is not None
        assert chart["x"] <= box["x"] and box["x"] + box["width"] <= chart["x"] + chart["width"]
        assert box["height"] >= 8  # drawn readable, not shrunk to the page's width
    # The summary scrolls inside its card; its month column is never split.
    lines = page.eval_on_selector_all(
        "#summary td.month",
        """cells => cells.map(cell => {
            const range = document.createRange();
            range.selectNodeContents(cell);
            return range.getClientRects().length;
        })""",
    )
    assert lines and set(lines) == {1}, lines
