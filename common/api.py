"""Handlers shared by the JSON functions: ``POST /token`` and the two trends endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from flask import Response

from common.auth import LoginService, TokenService, authenticate_request
from common.config import Settings
from common.errors import UnsupportedGrantType
from common.forms import form_fields, read_form
from common.functions import FUNCTION_PATHS
from common.http import Call, FunctionApp, Handler, cacheable_body, json_response
from common.trends import CENT, MONEY_CONTEXT, TrendFilters

SummaryQuery = Callable[[TrendFilters, str], list[dict[str, Any]]]
# (row count, the JSON array of the rows): for a warehouse that can build the body itself.
SummaryBodyQuery = Callable[[TrendFilters, str], tuple[int, bytes]]


def cents(value: Any) -> Decimal:
    """Rounded to cents, half away from zero (PostgreSQL's ``round(numeric, 2)``)."""
    exact = value if isinstance(value, Decimal) else Decimal(str(value))
    return exact.quantize(CENT, rounding=ROUND_HALF_UP, context=MONEY_CONTEXT)


def month_text(month: date) -> str:
    """A summary row's ``sale_month`` as responses show it: ``YYYY-MM-01``."""
    return month.replace(day=1).isoformat()


def api_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A summary row's values as the trends APIs write them: month text, money rounded to
    its two decimals (``Decimal``), counts as ints (the dashboard masks these)."""
    return {
        "product": str(row["product"]),
        "sale_month": month_text(row["sale_month"]),
        "total_amount": cents(row["total_amount"]),
        "total_quantity": int(row["total_quantity"]),
        "avg_price": cents(row["avg_price"]),
        "transaction_count": int(row["transaction_count"]),
    }


def summary_body(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The contract's JSON array of summary rows, byte for byte as trends_pg's PostgreSQL
    builds it (``common.trends_pg``): compact, keys in order, money with its two decimals
    (``249.90``). Same bytes from both warehouses, so the same ``ETag``."""
    objects = [
        f'{{"product":{json.dumps(values["product"], ensure_ascii=False)},'
        f'"sale_month":"{values["sale_month"]}",'
        f'"total_amount":{values["total_amount"]},'
        f'"total_quantity":{values["total_quantity"]},'
        f'"avg_price":{values["avg_price"]},'
        f'"transaction_count":{values["transaction_count"]}}}'
        for values in map(api_values, rows)
    ]
    return f"[{','.join(objects)}]".encode()


def presented(query: SummaryQuery) -> SummaryBodyQuery:
    """A row query as a body query (``summary_body`` of its rows)."""

    def body(filters: TrendFilters, user: str) -> tuple[int, bytes]:
        rows = query(filters, user)
        return len(rows), summary_body(rows)

    return body


def trends_handler(function: str, tokens: TokenService, query: SummaryBodyQuery) -> Handler:
    """``GET`` trends: bearer auth (401/403), parameters (422), rows (200/304), 503."""

    def handle(call: Call) -> Response:
        from common.params import parse_trend_params  # marshmallow: on first use only

        principal = authenticate_request(call.request, tokens, function)
        call.user = principal.username
        filters = parse_trend_params(call.request.args)
        call.rows, body = query(filters, principal.username)
        return cacheable_body(call, body)

    return handle


def token_handler(logins: LoginService, tokens: TokenService) -> Handler:
    """``POST /token``: the OAuth2 password grant."""

    def handle(call: Call) -> Response:
        from common.params import TOKEN_FORM  # marshmallow: on first use only

        # RFC 6749 3.1: a parameter sent without a value is treated as omitted. One given
        # twice is refused by form_fields whatever its values.
        grant_types = read_form(call).getlist("grant_type")
        if len(grant_types) == 1 and (grant_types[0] or "password") != "password":
            raise UnsupportedGrantType()
        form = form_fields(call, TOKEN_FORM)
        principal = logins.sign_in(call, form["username"], form["password"])
        issued = tokens.issue(principal)
        response = json_response(
            {
                "access_token": issued.access_token,
                "token_type": "bearer",  # nosec B105 - the OAuth2 token type, not a password
                "expires_in": issued.expires_in,
            }
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    return handle


def function_app(name: str, settings: Settings) -> FunctionApp:
    """A JSON function: HSTS outside dev, its ``/openapi.json`` built on first request."""

    def openapi() -> dict[str, Any]:
        from common.openapi import document

        return document(name)

    return FunctionApp(name, secure_transport=not settings.is_dev, openapi=openapi)


def route_with_root(app: FunctionApp, **handlers: Handler) -> None:
    """Serve the function's path (``FUNCTION_PATHS``), and the same at ``/``: each function
    has its own URL (a Knative Service), whose root answers as its one resource."""
    app.route(FUNCTION_PATHS[app.name], **handlers)
    app.route("/", **handlers)


def trends_app(name: str, settings: Settings, query: SummaryBodyQuery) -> FunctionApp:
    """A trends function (``GET`` its path) over one warehouse's ``query``."""
    app = function_app(name, settings)
    route_with_root(app, GET=trends_handler(name, TokenService(settings), query))
    return app
