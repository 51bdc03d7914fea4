"""trends_bq: ``GET /sales/trends``, the BigQuery ``summary_sales`` mart, for bearer tokens.

Serve: ``functions-framework --source functions/trends_bq/main.py --target trends_bq``.
The BigQuery client library is imported, and its client created, on the first query only.
"""

from __future__ import annotations

from typing import Any

from flask import Request, Response

from common.api import presented, trends_app
from common.config import Settings, require_bigquery_credentials
from common.http import FunctionApp
from common.local_run import start_function
from common.trends import TrendFilters

NAME = "trends_bq"


def create(settings: Settings) -> FunctionApp:
    settings.require_secrets()
    require_bigquery_credentials(settings.bigquery)

    def query(filters: TrendFilters, user: str) -> list[dict[str, Any]]:
        from common.bigquery import query_summary

        return query_summary(filters, user=user, function=NAME, settings=settings.bigquery)

    return trends_app(NAME, settings, presented(query))


_app = start_function(NAME, create)
_app.install()


def trends_bq(request: Request) -> Response:
    return _app(request)
