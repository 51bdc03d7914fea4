"""token: ``POST /token``, the OAuth2 password grant: a bearer JWT for a user of auth.users.

Serve: ``functions-framework --source functions/token/main.py --target token``.
"""

from __future__ import annotations

from flask import Request, Response

from common.api import function_app, route_with_root, token_handler
from common.auth import LoginService, TokenService
from common.config import Settings
from common.db import function_pool
from common.http import FunctionApp
from common.local_run import start_function

NAME = "token"


def create(settings: Settings) -> FunctionApp:
    settings.require_secrets()
    pool = function_pool(NAME, settings)
    app = function_app(NAME, settings)
    grant = token_handler(LoginService(pool, settings), TokenService(settings))
    route_with_root(app, POST=grant)
    return app


_app = start_function(NAME, create)
_app.install()


def token(request: Request) -> Response:
    return _app(request)
