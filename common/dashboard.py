"""The dashboard: a login form with CSRF protection, a cookie session, and the HTML page.

- Session: the cookie holds an HS256 JWT of the session audience (``common.auth.Sessions``:
  the APIs refuse it, logout ends it in every instance) (HttpOnly, ``SameSite=Lax``,
  ``Secure`` and the ``__Host-`` prefix unless ``SALESMART_ENV=dev``); ``Authorization:
  Bearer`` with an API token works too. Without either, browsers go to ``/login`` (303).
- CSRF: signed double submit. A random nonce lives in a ``SameSite=Lax`` HttpOnly
  cookie; each form carries ``nonce.issued.HMAC(key, nonce.issued)`` with a key derived
  from the JWT secret. A POST passes only if the form token is authentic, recent, and
  names the cookie's nonce; another site can neither read nor set that cookie, and its
  POSTs arrive without it. (``Strict`` would leave it out of a link followed from another
  site too: the page would set a new nonce under the forms of tabs already open.)
- The page: Jinja2 (autoescaped), a CSP that allows nothing external (styles by nonce,
  the chart is inline SVG), fields listed in ``security.pii_fields`` shown masked.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, Decimal
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2  # already imported by Flask: free here
from flask import Request, Response

from common.api import api_values, cents
from common.auth import (
    LoginService,
    Principal,
    Sessions,
    TokenService,
    bearer_principal,
    derived_key,
    require_role,
)
from common.config import Settings
from common.errors import (
    ApiError,
    CsrfFailed,
    InvalidCredentials,
    InvalidToken,
    TooManyAttempts,
    ValidationFailed,
    WarehouseUnavailable,
)
from common.http import Call, error_json
from common.masking import Masker
from common.trends import PARAMETERS, SUMMARY_COLUMNS, TrendFilters
from common.trends_pg import PgTrends
from common.wording import how_many

FUNCTION = "dashboard"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# Compiled templates, kept like Python's bytecode: written beside the sources when the folder
# is writable (the image writes it at build time), otherwise compiled in memory per instance.
TEMPLATE_CACHE = TEMPLATES / "__pycache__"
CSRF_MAX_AGE_SECONDS = 12 * 3600
CHART_WIDTH, CHART_HEIGHT = 720, 260
CHART_BOTTOM, CHART_TOP = 36, 12
# The right margin holds half of the last month's label; the left one the widest value label
# (12-unit text: under 8 units a digit or comma), so "10,000,000" is not cut at the SVG's edge.
CHART_RIGHT, CHART_MIN_LEFT, CHART_CHAR_WIDTH = 30, 40, 8
# Months without sales between the first and the last are drawn as empty slots (a gap of a
# year looked like one month); a span longer than ten years is not filled (dates decades
# apart would make hundreds of empty slots, each under a unit wide).
CHART_MAX_FILLED_MONTHS = 120
# A month's label ("2023-10", 12-unit text) and a gap: labels are spaced at least this much.
CHART_LABEL_SPACING = 56


@dataclass(frozen=True)
class FormField:
    """One input of the filter form; its label also names the parameter in messages."""

    name: str
    label: str
    hint: str = ""
    placeholder: str = ""
    inputmode: str = ""
    maxlength: int | None = None


FORM_FIELDS = (
    FormField("product_prefix", "Product prefix", placeholder="Halal", maxlength=64),
    FormField("sale_month", "Month", hint="YYYY-MM", placeholder="all months"),
    FormField("min_amount", "Min total amount", placeholder="0", inputmode="decimal"),
    FormField("max_quantity", "Max total quantity", inputmode="numeric"),
    FormField("min_avg_price", "Min avg price", inputmode="decimal"),
    FormField("max_avg_price", "Max avg price", inputmode="decimal"),
    FormField("limit", "Rows", placeholder="100", inputmode="numeric"),
)
# offset comes from the page links, not the form.
FIELD_LABELS = {field.name: field.label for field in FORM_FIELDS} | {"offset": "Offset"}
# How much of a parameter's name a message shows (an unknown one may be any length).
SHOWN_NAME_CHARS = 64
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Where a login may send the browser back to: this page, with its filters. Never another
# site ("//host", "/\\host", "https:"): not an open redirect.
_RETURN_TO = re.compile(r"/(?:\?[^\\\s]{0,2000})?")


def wants_html(request: Request) -> bool:
    """True for browsers (``text/html`` preferred); API clients (``*/*``) get JSON."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


class Csrf:
    def __init__(self, secret: str) -> None:
        self._key = derived_key(secret, b"salesmart csrf v1")

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(18)

    def _mac(self, nonce: str, issued: str) -> str:
        return hmac.new(self._key, f"{nonce}.{issued}".encode(), hashlib.sha256).hexdigest()

    def token_for(self, nonce: str) -> str:
        issued = str(int(time.time()))
        return f"{nonce}.{issued}.{self._mac(nonce, issued)}"

    def valid(self, cookie_nonce: str | None, token: str | None) -> bool:
        if not cookie_nonce or not token or len(token) > 512:
            return False
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return False
        nonce, issued, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(nonce, issued).encode()):
            return False
        if not hmac.compare_digest(nonce.encode(), cookie_nonce.encode()):
            return False
        return 0 <= time.time() - int(issued) <= CSRF_MAX_AGE_SECONDS


@dataclass(slots=True)
class ShownRow:
    """One summary row as the page shows it: money with thousands separators, the month as
    ``YYYY-MM``, and each field of ``security.pii_fields`` as the keyed hash of its API text.
    An object, not a dict: Jinja reads ``row.product`` as an attribute first, and on a dict
    that first try raises (a third of the page's rendering time, measured)."""

    product: str
    sale_month: str
    total_amount: str
    total_quantity: int | str
    avg_price: str
    transaction_count: int | str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    show_label: bool


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    axis_y: float
    left: int
    right: int  # where the plot ends


def _month_number(month: date) -> int:
    return month.year * 12 + month.month - 1


def every_month(monthly: list[tuple[date, Decimal]]) -> list[tuple[date, Decimal]]:
    """``monthly`` in month order, with the months between its first and last that have no
    sales as zero (unless they span more than ``CHART_MAX_FILLED_MONTHS``)."""
    totals = dict(monthly)
    months = sorted(totals)
    if months and _month_number(months[-1]) - _month_number(months[0]) < CHART_MAX_FILLED_MONTHS:
        numbers = range(_month_number(months[0]), _month_number(months[-1]) + 1)
        months = [date(number // 12, number % 12 + 1, 1) for number in numbers]
    return [(month, totals.get(month, Decimal(0))) for month in months]


def build_chart(monthly: list[tuple[date, Decimal]]) -> Chart:
    """Bars of monthly totals (every month from the first to the last), in SVG user units."""
    monthly = every_month(monthly)
    plot_height = CHART_HEIGHT - CHART_BOTTOM - CHART_TOP
    axis_y = CHART_TOP + plot_height
    top = max((total for _, total in monthly), default=Decimal(0))
    # Gridlines at round values (1, 2 or 5 times a power of ten), the tallest bar below the
    # top one; the bars are drawn against the same scale.
    step = _nice_step(top / 4 if top > 0 else Decimal(1))
    lines = max(1, int(((top or 1) / step).to_integral_value(rounding=ROUND_CEILING)))
    labels = [f"{step * index:,.0f}" for index in range(lines + 1)]
    left = max(CHART_MIN_LEFT, 14 + CHART_CHAR_WIDTH * max(len(label) for label in labels))
    right = CHART_WIDTH - CHART_RIGHT
    plot_width = right - left
    scale = float(step * lines)  # for drawing only: the texts use the Decimals
    slot = plot_width / max(len(monthly), 1)
    every = max(1, math.ceil(len(monthly) * CHART_LABEL_SPACING / plot_width))
    bars = []
    for index, (month, total) in enumerate(monthly):
        height = plot_height * float(total) / scale
        bars.append(
            Bar(
                x=round(left + index * slot + slot * 0.15, 2),
                y=round(axis_y - height, 2),
                width=round(slot * 0.7, 2),
                height=round(height, 2),
                label=month.isoformat()[:7],
                value=f"{cents(total):,.2f}",  # Decimal: a float loses cents past 2**53
                show_label=index % every == 0,
            )
        )
    ticks = [
        (round(axis_y - plot_height * index / lines, 2), label)
        for index, label in enumerate(labels)
    ]
    return Chart(CHART_WIDTH, CHART_HEIGHT, bars, ticks, axis_y, left, right)


def _duration(seconds: int) -> str:
    """A wait for people, rounded up, in the largest unit it fills: 1 second (not "1
    minute"), 5 minutes, 1 hour (for 3599 s too), 366 days (not "527040 minutes")."""
    count, unit = max(seconds, 1), "second"
    for larger, size in (("minute", 60), ("hour", 60), ("day", 24)):
        if count < size:
            break
        count, unit = -(-count // size), larger
    return how_many(count, unit)


def _nice_step(rough: Decimal) -> Decimal:
    """The smallest of 1, 2, 5 times a power of ten (at least 1) not below ``rough``."""
    power = Decimal(10) ** max(rough.adjusted(), 0)
    for factor in (1, 2, 5):
        if power * factor >= rough:
            return power * factor
    return power * 10


class BestEffortBytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's file cache, silent when it cannot write (a read-only image), as .pyc writes are."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def template_environment() -> jinja2.Environment:
    """The dashboard's templates; a template's cached code is keyed by its source's checksum."""
    cache = None
    with contextlib.suppress(OSError):  # read-only and never written: compile in memory
        TEMPLATE_CACHE.mkdir(exist_ok=True)
        cache = BestEffortBytecodeCache(str(TEMPLATE_CACHE))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=cache,
        auto_reload=False,  # the templates never change under a running instance: no stat per page
    )


def compile_templates() -> list[str]:
    """Fill the template cache (the image runs this at build time); the names compiled."""
    environment = template_environment()
    names = environment.list_templates(extensions=["html"])
    for name in names:
        environment.get_template(name)
    # Readable by all, as .pyc files are: Jinja writes them owner-only, and the image's
    # build-time cache (written as root) was unreadable by the user the functions run as,
    # so every cold start compiled the templates again.
    if TEMPLATE_CACHE.is_dir():
        for cached in TEMPLATE_CACHE.glob("__jinja2_*.cache"):
            with contextlib.suppress(OSError):  # another user's: theirs to share
                cached.chmod(0o644)
    return names


class Dashboard:
    def __init__(
        self,
        settings: Settings,
        trends: PgTrends,
        logins: LoginService,
        tokens: TokenService,
        sessions: Sessions,
    ) -> None:
        self._trends = trends
        self._logins = logins
        self._tokens = tokens
        self._sessions = sessions
        self._csrf = Csrf(settings.jwt_secret)
        self._secure = not settings.is_dev
        prefix = "__Host-" if self._secure else ""
        self.session_cookie = f"{prefix}salesmart-session"
        self.csrf_cookie = f"{prefix}salesmart-csrf"
        self._masked_columns = tuple(
            name for name in SUMMARY_COLUMNS if name in settings.pii_fields
        )
        self._mask = Masker(settings.pii_key)
        #: The masked columns the monthly chart would show in clear (its months, its totals
        #: summed from the rows): then it is not drawn. One product and month filtered,
        #: its bar was that row's masked values.
        self._chart_would_show = tuple(
            name for name in ("sale_month", "total_amount") if name in self._masked_columns
        )

    @cached_property
    def _templates(self) -> jinja2.Environment:
        return template_environment()

    # -- rendering ----------------------------------------------------------------------------
    def _page(
        self, call: Call, template: str, status: int = 200, **context: Any
    ) -> tuple[Response, str]:
        """The page and the CSRF nonce its forms are bound to (set as cookie if new)."""
        nonce = call.request.cookies.get(self.csrf_cookie, "")
        fresh = _NONCE.fullmatch(nonce) is None
        if fresh:
            nonce = self._csrf.new_nonce()
        style_nonce = secrets.token_urlsafe(16)
        html = self._templates.get_template(template).render(
            style_nonce=style_nonce,
            csrf_token=self._csrf.token_for(nonce),
            request_id=call.request_id,
            **context,
        )
        response = Response(html, status=status, mimetype="text/html")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{style_nonce}'; img-src data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["Cache-Control"] = "no-store"
        if fresh:
            self._set_cookie(response, self.csrf_cookie, nonce, None, samesite="Lax")
        return response, nonce

    def _set_cookie(
        self, response: Response, name: str, value: str, max_age: int | None, *, samesite: str
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite=samesite,
        )

    def render_error(self, call: Call, error: ApiError) -> Response:
        if not wants_html(call.request):
            return error_json(call, error)
        response, _ = self._page(call, "error.html", error.status, error=error)
        for name, value in error.headers.items():
            response.headers[name] = value
        return response

    @staticmethod
    def _redirect(location: str) -> Response:
        return Response(status=303, headers={"Location": location})

    def _clear_session(self, response: Response) -> None:
        response.delete_cookie(
            self.session_cookie, path="/", secure=self._secure, httponly=True, samesite="Lax"
        )

    # -- who is calling -------------------------------------------------------------------------
    def _principal(self, call: Call) -> Principal | None:
        principal = bearer_principal(call.request, self._tokens, FUNCTION)
        if principal is not None:  # an API client: a bad token is a 401, not a redirect
            return principal
        cookie = call.request.cookies.get(self.session_cookie)
        if not cookie:
            return None
        try:
            return require_role(self._sessions.principal(cookie), FUNCTION)
        except InvalidToken:
            return None

    # -- views ----------------------------------------------------------------------------------
    def index(self, call: Call) -> Response:
        from common.params import parse_trend_params

        principal = self._principal(call)
        if principal is None:
            query = call.request.query_string.decode("latin-1")
            response = self._redirect(
                "/login?" + urlencode({"next": f"/?{query}"}) if query else "/login"
            )
            if call.request.cookies.get(self.session_cookie):
                self._clear_session(response)
            return response
        call.user = principal.username
        try:
            filters = parse_trend_params(call.request.args, drop_empty=True)
        except ValidationFailed as error:
            if not wants_html(call.request):
                raise
            # The page again, its form as sent and the messages above it, named as the form
            # names its fields (a separate error page had no form and dropped the filters).
            return self._dashboard(call, principal, 422, problems=_problems(error))
        return self._dashboard(call, principal, 200, filters=filters)

    def _dashboard(
        self,
        call: Call,
        principal: Principal,
        status: int,
        *,
        filters: TrendFilters | None = None,
        problems: list[tuple[str, str]] | None = None,
    ) -> Response:
        """The page: the rows, chart and pages of ``filters``, or only the form and the
        ``problems`` that kept it from being read."""
        context: dict[str, Any] = {"problems": problems or []}
        if filters is not None:
            # One snapshot: a dbt build swapping the mart between the two statements showed
            # one build's rows beside the next one's totals.
            page, monthly, matching = self._trends.page_and_monthly_totals(filters)
            rows = [self._shown(row) for row in page]
            call.rows = len(rows)
            args = call.request.args
            context.update(
                rows=rows,
                chart=None if self._chart_would_show else build_chart(monthly),
                chart_would_show=self._chart_would_show,
                pages=_pages(args, filters.offset, filters.limit, len(rows), matching),
            )
        response, _ = self._page(
            call,
            "dashboard.html",
            status,
            user=principal.username,
            fields=FORM_FIELDS,
            params=_form_values(call.request.args),
            masked=self._masked_columns,
            **context,
        )
        response.headers["Vary"] = "Authorization, Cookie"
        return response

    def _shown(self, row: Mapping[str, Any]) -> ShownRow:
        # The values as the trends APIs write them (money with its two decimals): what a
        # masked field hashes, so the page's digests match the ones computed from the API.
        api = api_values(row)
        shown: dict[str, Any] = {
            **api,
            "sale_month": api["sale_month"][:7],
            "total_amount": f"{api['total_amount']:,.2f}",
            "avg_price": f"{api['avg_price']:,.2f}",
        }
        for name in self._masked_columns:
            shown[name] = self._mask(str(api[name]))
        return ShownRow(**shown)

    def login_form(self, call: Call) -> Response:
        next_url = _return_to(call.request.args.get("next"))
        response, _ = self._page(call, "login.html", error=None, username="", next=next_url)
        return response

    def login(self, call: Call) -> Response:
        from common.forms import form_fields, read_form
        from common.params import LOGIN_FORM

        form = read_form(call)
        try:
            if not self._csrf.valid(
                call.request.cookies.get(self.csrf_cookie), form.get("csrf_token")
            ):
                raise CsrfFailed()
            values = form_fields(call, LOGIN_FORM)
            principal = self._logins.sign_in(call, values["username"], values["password"])
        except ApiError as error:
            if not wants_html(call.request):
                raise
            # Browsers get the form again; a mistyped password is not an HTTP failure for
            # them (200, as form frameworks do), refusals (CSRF, 429, 503) keep their code.
            status = 200 if isinstance(error, InvalidCredentials) else error.status
            message = error.message
            if isinstance(error, TooManyAttempts):  # the answer's Retry-After, for people
                message += f" Try again in {_duration(error.retry_after_seconds)}."
            response, _ = self._page(
                call,
                "login.html",
                status,
                error=message,
                username=str(form.get("username", ""))[:256],
                next=_return_to(form.get("next")),
            )
            if status == error.status:  # Retry-After of a 429; no WWW-Authenticate on a 200
                for name, value in error.headers.items():
                    response.headers[name] = value
            return response
        issued = self._sessions.start(principal)
        response = self._redirect(_return_to(form.get("next")))
        self._set_cookie(
            response, self.session_cookie, issued.access_token, issued.expires_in, samesite="Lax"
        )
        # A new CSRF nonce for the logged-in session.
        self._set_cookie(response, self.csrf_cookie, self._csrf.new_nonce(), None, samesite="Lax")
        return response

    def logout(self, call: Call) -> Response:
        from common.forms import read_form

        if not self._csrf.valid(
            call.request.cookies.get(self.csrf_cookie), read_form(call).get("csrf_token")
        ):
            if not wants_html(call.request):
                raise CsrfFailed()
            # A tab opened before a later login holds a form of the old nonce: asking again
            # with a current form lets the user log out (reloading sent the old one again).
            response, _ = self._page(call, "logout.html", CsrfFailed.status)
            return response
        cookie = call.request.cookies.get(self.session_cookie)
        if cookie:
            try:
                self._sessions.end(cookie)  # also a copy of the cookie stops working
            except WarehouseUnavailable:  # the cookie stays: say so, not "logged out"
                raise WarehouseUnavailable(
                    "Logging out failed: you are still signed in. Try again shortly."
                ) from None
        response = self._redirect("/login")
        self._clear_session(response)
        # A new nonce, as at login: a form of the ended session no longer logs in (a
        # security audit).
        self._set_cookie(response, self.csrf_cookie, self._csrf.new_nonce(), None, samesite="Lax")
        return response


def _problems(error: ValidationFailed) -> list[tuple[str, str]]:
    """``(field as the form labels it, its messages)`` for each broken parameter, the
    other fields a message names ("greater than max_avg_price") labelled too."""
    problems = []
    for name, messages in (error.details or {}).items():
        text = " ".join(messages)
        for other, label in FIELD_LABELS.items():
            text = text.replace(other, label.lower())
        problems.append((FIELD_LABELS.get(name, name[:SHOWN_NAME_CHARS]), text))
    return problems


def _form_values(args: Mapping[str, str]) -> dict[str, str]:
    return {name: str(args.get(name, ""))[:64] for name in PARAMETERS}


def _return_to(value: str | None) -> str:
    """The page a login returns to: the dashboard with its filters, else ``/``."""
    return value if value is not None and _RETURN_TO.fullmatch(value) else "/"


@dataclass(frozen=True)
class Pages:
    first: int  # 1-based number of the first row shown (0: none)
    last: int
    total: int  # rows matching the filters, all pages
    previous: str | None  # links to the neighbouring pages, same filters
    next: str | None
    last_page: str | None  # from past the end: back to the rows


def _pages(args: Mapping[str, str], offset: int, limit: int, shown: int, total: int) -> Pages:
    kept = {name: str(args[name]) for name in PARAMETERS if args.get(name) and name != "offset"}

    def link(to: int) -> str:
        return "/?" + urlencode({**kept, **({"offset": str(to)} if to else {})})

    beyond = shown == 0 and offset > 0 and total > 0
    return Pages(
        first=offset + 1 if shown else 0,
        last=offset + shown,
        total=total,
        previous=link(max(0, offset - limit)) if offset > 0 and not beyond else None,
        next=link(offset + limit) if offset + shown < total and shown else None,
        last_page=link((total - 1) // limit * limit) if beyond else None,
    )
