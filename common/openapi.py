"""Each function's OpenAPI 3 document (``GET /openapi.json``), built by apispec from the
marshmallow schemas that validate its requests. Built on first request, then kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# common.params first: it imports marshmallow with its import-time regexes deferred.
from common.params import LoginFormSchema, TokenFormSchema, TrendParamsSchema  # isort: skip
from marshmallow import Schema, fields, validate  # isort: skip
from common.functions import FUNCTION_PATHS  # isort: skip

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    request_id = fields.String(required=True)
    details = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages per field (validation errors only)."},
    )


class TrendRowSchema(Schema):
    product = fields.String(required=True)
    sale_month = fields.Date(required=True, metadata={"description": "First day: YYYY-MM-01."})
    total_amount = fields.Float(required=True, metadata={"description": "Rounded to cents."})
    total_quantity = fields.Integer(required=True)
    avg_price = fields.Float(required=True, metadata={"description": "Rounded to cents."})
    transaction_count = fields.Integer(required=True)


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, validate=validate.OneOf(["bearer"]))
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds."})


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))
    function = fields.String(required=True)


_STRING = {"schema": {"type": "string"}}
_REQUEST_ID = {
    "X-Request-ID": {"description": "This request's id (echoed or generated).", **_STRING}
}


def _json(schema: str | dict[str, Any], description: str, **headers: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {**_REQUEST_ID, **headers},
        "content": {"application/json": {"schema": schema}},
    }


def _error(
    description: str, *, html: bool = False, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = _json("Error", description, **(headers or {}))
    if html:
        response["content"]["text/html"] = _STRING
    return response


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _REQUEST_ID, "content": {"text/html": _STRING}}


def _redirect(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {**_REQUEST_ID, "Location": _STRING}}


def _form_body(schema: Any, *, required: bool = True) -> dict[str, Any]:
    """A form request body, in either encoding the functions read (``common.forms.FORM_TYPES``)."""
    from common.forms import FORM_TYPES

    return {"required": required, "content": {kind: {"schema": schema} for kind in FORM_TYPES}}


_UNAUTHORIZED = _error("Missing or invalid bearer token.", headers={"WWW-Authenticate": _STRING})
_METHOD_NOT_ALLOWED = _error(
    "Another method than this path's (OPTIONS too); Allow lists them.", headers={"Allow": _STRING}
)
_METHOD_NOT_ALLOWED_HTML = _error(
    "Another method than this path's (OPTIONS too); Allow lists them (a page for browsers).",
    html=True,
    headers={"Allow": _STRING},
)
_FORBIDDEN = _error(
    "The token's role may not use this function.", headers={"WWW-Authenticate": _STRING}
)
_UNAVAILABLE = _error(
    "The warehouse cannot be reached; retry later.", headers={"Retry-After": _STRING}
)
_UNAVAILABLE_HTML = _error(
    "The warehouse cannot be reached; retry later.", html=True, headers={"Retry-After": _STRING}
)
_TOO_MANY = _error("Too many failed logins for this username.", headers={"Retry-After": _STRING})


def _form_codings(*, html: bool = False) -> dict[str, Any]:
    """What a form post answers when its body is coded (``common.forms._require_plain_body``)."""
    return {
        "415": _error(
            "A compressed form (a Content-Encoding other than identity): it is not decompressed.",
            html=html,
            headers={"Accept-Encoding": _STRING},
        ),
        "501": _error("A transfer coding other than chunked.", html=html),
    }


_TOO_MANY_HTML = _error(
    "Too many failed logins for this username.", html=True, headers={"Retry-After": _STRING}
)


def _trends_operation(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"bearerAuth": []}],
        "parameters": [{"in": "query", "schema": TrendParamsSchema}],
        "responses": {
            "200": {
                **_json(
                    {"type": "array", "items": "TrendRow"},
                    "Summary rows, by total_amount descending then product.",
                    ETag=_STRING,
                    **{"Cache-Control": _STRING},
                ),
            },
            "304": {
                "description": "Not modified (If-None-Match).",
                "headers": {**_REQUEST_ID, "ETag": _STRING},
            },
            "401": _UNAUTHORIZED,
            "403": _FORBIDDEN,
            "412": _error("If-Match names no current version of this answer."),
            "422": _error("Unknown parameter or broken rule; details per field."),
            "503": _UNAVAILABLE,
        },
    }


def _with_root(path: str, operations: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``path`` and the function's root, which answers the same (``route_with_root``)."""
    return {path: operations, "/": operations}


def _token_paths() -> dict[str, dict[str, Any]]:
    return _with_root(
        FUNCTION_PATHS["token"],
        {
            "post": {
                "summary": "OAuth2 password grant: a bearer token for a user.",
                "requestBody": _form_body(TokenFormSchema),
                "responses": {
                    "200": _json("Token", "A bearer token (HS256 JWT)."),
                    "400": _error("Malformed request or unsupported grant type."),
                    "401": _error(
                        "Wrong username or password, or a disabled user.",
                        headers={"WWW-Authenticate": _STRING},
                    ),
                    "429": _TOO_MANY,
                    **_form_codings(),
                    "503": _UNAVAILABLE,
                },
            }
        },
    )


def _trends_paths(function: str, summary: str) -> dict[str, dict[str, Any]]:
    return _with_root(FUNCTION_PATHS[function], {"get": _trends_operation(summary)})


def _dashboard_page() -> dict[str, Any]:
    return {
        "get": {
            "summary": "The sales dashboard: table and monthly chart (HTML).",
            "security": [{"bearerAuth": []}, {"cookieAuth": []}],
            "parameters": [{"in": "query", "schema": TrendParamsSchema}],
            "responses": {
                "200": _html("The dashboard page."),
                "303": _redirect("Not logged in: to /login."),
                "401": _error(
                    "Invalid bearer token (a browser without one is sent to /login).",
                    html=True,
                    headers={"WWW-Authenticate": _STRING},
                ),
                "403": _error(
                    "The token's role may not use this function.",
                    html=True,
                    headers={"WWW-Authenticate": _STRING},
                ),
                "422": _error("Invalid parameters.", html=True),
                "503": _UNAVAILABLE_HTML,
            },
        }
    }


def _login() -> dict[str, Any]:
    return {
        "get": {
            "summary": "The login form.",
            "parameters": [
                {
                    "name": "next",
                    "in": "query",
                    "required": False,
                    "description": "Where to go once logged in: a path of this site"
                    " (anything else goes to /).",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {"200": _html("The form.")},
        },
        "post": {
            "summary": "Log in (CSRF-protected form); sets the session cookie.",
            "requestBody": _form_body(LoginFormSchema),
            "responses": {
                "303": _redirect("Logged in: to /."),
                "400": _error("Malformed form or failed CSRF check.", html=True),
                "200": _html("The form again, with an error (browsers)."),
                "401": _error(
                    "Wrong username or password (API clients).",
                    headers={"WWW-Authenticate": _STRING},
                ),
                "429": _TOO_MANY_HTML,
                **_form_codings(html=True),
                "503": _UNAVAILABLE_HTML,
            },
        },
    }


def _logout() -> dict[str, Any]:
    return {
        "post": {
            "summary": "Log out (CSRF-protected form): ends the session on the server"
            " and clears its cookie.",
            "requestBody": _form_body(
                {"type": "object", "properties": {"csrf_token": {"type": "string"}}},
                required=False,
            ),
            "responses": {
                "303": _redirect("Logged out: to /login."),
                "400": _error("Failed CSRF check.", html=True),
                **_form_codings(html=True),
                "503": _error(
                    "The session could not be ended (still signed in); retry.",
                    html=True,
                    headers={"Retry-After": _STRING},
                ),
            },
        }
    }


def _dashboard_paths() -> dict[str, dict[str, Any]]:
    return {
        FUNCTION_PATHS["dashboard"]: _dashboard_page(),
        "/login": _login(),
        "/logout": _logout(),
    }


# Each function's own paths (``/healthz`` and ``/openapi.json`` are added to every one).
_PATHS: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {
    "token": _token_paths,
    "trends_pg": functools.partial(_trends_paths, "trends_pg", "Sales trends (PostgreSQL marts)."),
    "trends_bq": functools.partial(_trends_paths, "trends_bq", "Sales trends (BigQuery marts)."),
    "dashboard": _dashboard_paths,
}


_COMMON = (
    " Every response carries X-Request-ID; errors are JSON {error, message, request_id}"
    " (plus details for validation), and a 5xx never contains exception text."
)
_TRENDS = (
    " Monthly sales per product, ordered by total_amount descending, then product; money"
    " rounded to 2 decimals half away from zero. Cacheable: ETag, If-None-Match gives 304."
    " 503 while the warehouse cannot be reached."
)
_DESCRIPTIONS = {
    "token": "OAuth2 password grant: a bearer token (HS256 JWT) for the other functions." + _COMMON,
    "trends_pg": "The PostgreSQL summary_sales mart." + _TRENDS + _COMMON,
    "trends_bq": "The BigQuery summary_sales mart." + _TRENDS + _COMMON,
    "dashboard": "The sales dashboard (HTML): a table of the summary rows and a chart of"
    " monthly totals; browsers log in at /login." + _COMMON,
}


def document(function: str, *, session_cookie: str = "salesmart-session") -> dict[str, Any]:
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    spec = APISpec(
        title=f"salesmart {function}",
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": _DESCRIPTIONS[function]},
    )
    spec.components.schema("Error", schema=ErrorSchema)
    if function in ("trends_pg", "trends_bq"):
        spec.components.schema("TrendRow", schema=TrendRowSchema)
    if function == "token":
        spec.components.schema("Token", schema=TokenSchema)
    spec.components.schema("Health", schema=HealthSchema)
    spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    if function == "dashboard":
        spec.components.security_scheme(
            "cookieAuth", {"type": "apiKey", "in": "cookie", "name": session_cookie}
        )
    paths = {
        **_PATHS[function](),
        "/healthz": {
            "get": {
                "summary": "Liveness: no auth, no warehouse.",
                "responses": {"200": _json("Health", "Alive.")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document.")},
            }
        },
    }
    # The dashboard answers a browser's wrong method with a page, like its other errors.
    not_allowed = _METHOD_NOT_ALLOWED_HTML if function == "dashboard" else _METHOD_NOT_ALLOWED
    for path, operations in paths.items():
        spec.path(
            path=path,
            operations={
                method: {
                    **operation,
                    "responses": {**operation["responses"], "405": not_allowed},
                }
                for method, operation in operations.items()
            },
        )
    result: dict[str, Any] = _plain(spec.to_dict())
    if function == "dashboard":
        # Its filter form sends every field, filled or not: an empty one counts as absent.
        for parameter in result["paths"]["/"]["get"]["parameters"]:
            parameter["allowEmptyValue"] = True
            parameter["description"] = (
                parameter.get("description", "") + " Empty counts as absent."
            ).strip()
    return result


def _plain(node: Any) -> Any:
    """apispec keeps ``Decimal`` bounds of decimal fields: make them JSON numbers."""
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    if isinstance(node, Decimal):
        return int(node) if node == node.to_integral_value() else float(node)
    return node
