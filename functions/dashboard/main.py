"""dashboard: the sales dashboard (``GET /``), its login form (``GET/POST /login``), logout.

Serve: ``functions-framework --source functions/dashboard/main.py --target dashboard``.
"""

from __future__ import annotations

from flask import Request, Response

from common.auth import LoginService, Sessions, TokenService
from common.config import Settings
from common.dashboard import Dashboard
from common.db import function_pool
from common.functions import FUNCTION_PATHS
from common.http import FunctionApp
from common.local_run import start_function
from common.trends_pg import PgTrends

NAME = "dashboard"


def create(settings: Settings) -> FunctionApp:
    settings.require_secrets()
    pool = function_pool(NAME, settings)
    board = Dashboard(
        settings,
        PgTrends(pool, settings.mart_schema),
        LoginService(pool, settings),
        TokenService(settings),
        Sessions(pool, settings),
    )

    def openapi() -> dict[str, object]:
        from common.openapi import document

        return document(NAME, session_cookie=board.session_cookie)

    app = FunctionApp(
        NAME,
        secure_transport=not settings.is_dev,
        openapi=openapi,
        error_renderer=board.render_error,
    )
    app.route(FUNCTION_PATHS[NAME], GET=board.index)
    app.route("/login", GET=board.login_form, POST=board.login)
    app.route("/logout", POST=board.logout)
    return app


_app = start_function(NAME, create)
_app.install()


def dashboard(request: Request) -> Response:
    return _app(request)
