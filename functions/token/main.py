"""token: ``POST /token``, the OAuth2 password grant: a bearer JWT for a user of auth.users.

Serve: ``functions-framework --source functions/token/main.py --target token``.
"""

from __future__ import annotations

from flask import Request, Response

from common.api import require_database, token_handler
from common.auth import LoginService, TokenService
from common.config import Settings, get_settings
from common.db import PgPool
from common.http import FunctionApp

NAME = "token"


def create(settings: Settings) -> FunctionApp:
    settings.require_secrets()
    require_database(settings)
    pool = PgPool(settings.database_url, application_name=f"salesmart-{NAME}")
    app = FunctionApp(NAME, secure_transport=not settings.is_dev, openapi=_openapi)
    grant = token_handler(LoginService(pool, settings), TokenService(settings))
    app.route("/token", POST=grant)
    # Each function has its own URL (a Knative Service): its root answers the same.
    app.route("/", POST=grant)
    return app


def _openapi() -> dict[str, object]:
    from common.openapi import document

    return document(NAME)


_app = create(get_settings())
_app.install()


def token(request: Request) -> Response:
    return _app(request)
