"""trends_pg: ``GET /sales/pg-trends``, the PostgreSQL ``summary_sales`` mart, for bearer tokens.

Serve: ``functions-framework --source functions/trends_pg/main.py --target trends_pg``.
"""

from __future__ import annotations

from flask import Request, Response

from common.api import trends_app
from common.config import Settings
from common.db import function_pool
from common.http import FunctionApp
from common.local_run import start_function
from common.trends_pg import PgTrends

NAME = "trends_pg"


def create(settings: Settings) -> FunctionApp:
    settings.require_secrets()
    pool = function_pool(NAME, settings)
    trends = PgTrends(pool, settings.mart_schema)
    return trends_app(NAME, settings, lambda filters, _user: trends.summary_json(filters))


_app = start_function(NAME, create)
_app.install()


def trends_pg(request: Request) -> Response:
    return _app(request)
