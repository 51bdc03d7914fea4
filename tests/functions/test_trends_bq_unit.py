"""trends_bq called directly with a Flask request (no server), against a mart on the real
BigQuery stand-in: the function's glue (auth, parameters, the body, caching, 503)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from common import bigquery as bq
from common.auth import Principal, TokenService
from common.config import Settings
from pipeline.bq_emulator import EmulatorHandle
from pipeline.netutil import free_port
from tests.bigquery.conftest import running_stand_in, settings_for
from tests.bigquery.marts import make_summary
from tests.conftest import TEST_ENV
from tests.functions.conftest import Caller, analyst_token, caller, load_function
from tests.functions.conftest import bearer as auth

PATH = "/sales/trends"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_stand_in() as handle:
        yield handle


@pytest.fixture(scope="module")
def mart(emulator: EmulatorHandle) -> Settings:
    settings = settings_for(emulator.endpoint)
    make_summary(settings)
    return settings


def _bigquery_env(settings: Settings) -> dict[str, str]:
    return {
        "SALESMART_ENV": "dev",
        "SALESMART_BQ_ENDPOINT": settings.bigquery.api_endpoint,
        "SALESMART_BQ_PROJECT": settings.bigquery.project,
        "SALESMART_BQ_MART_DATASET": settings.bigquery.mart_dataset,
    }


@pytest.fixture(scope="module")
def module(mart: Settings) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        yield load_function("trends_bq", patch, **_bigquery_env(mart))
    bq.reset_clients()


@pytest.fixture
def call(module: ModuleType, flask_app: Any) -> Caller:
    return caller(flask_app, module.trends_bq)


@pytest.fixture
def token(mart: Settings) -> str:
    return analyst_token(mart)


def test_a_months_rows_in_the_contracts_order_and_shape(call: Caller, token: str) -> None:
    response = call(PATH, headers=auth(token), query_string={"sale_month": "2023-10"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    # The prefix is literal and case-sensitive: Halal_Tea is kept, "halal lower" and Other
    # Pork are not; money has its two decimals, months are their first day.
    assert response.get_data(as_text=True) == (
        '[{"product":"Halal Laptop","sale_month":"2023-10-01","total_amount":1999.98,'
        '"total_quantity":2,"avg_price":999.99,"transaction_count":1},'
        '{"product":"Halal Keyboard","sale_month":"2023-10-01","total_amount":249.95,'
        '"total_quantity":5,"avg_price":49.99,"transaction_count":1},'
        '{"product":"Halal Mouse","sale_month":"2023-10-01","total_amount":249.90,'
        '"total_quantity":10,"avg_price":24.99,"transaction_count":1},'
        '{"product":"Halal_Tea","sale_month":"2023-10-01","total_amount":0.30,'
        '"total_quantity":3,"avg_price":0.10,"transaction_count":3}]'
    )


def test_filters_and_pages_reach_bigquery(call: Caller, token: str) -> None:
    def products(**params: str) -> list[str]:
        response = call(PATH, headers=auth(token), query_string=params)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [row["product"] for row in json.loads(response.get_data())]

    assert products(min_amount="249.95", max_quantity="5") == [
        "Halal Laptop",
        "Halal Keyboard",
        "Halal Laptop",
    ]
    assert products(min_avg_price="24.99", max_avg_price="24.99") == ["Halal Mouse", "Halal Mouse"]
    assert products(product_prefix="Halal L") == ["Halal Laptop", "Halal Laptop"]
    assert products(limit="2", offset="1") == ["Halal Keyboard", "Halal Laptop"]


def test_a_second_request_with_the_etag_is_a_304(call: Caller, token: str) -> None:
    first = call(PATH, headers=auth(token))
    assert first.status_code == 200 and first.headers["ETag"]
    again = call(PATH, headers={**auth(token), "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not.a.token"}, 401),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, 401),
    ],
)
def test_a_request_without_a_valid_bearer_token_is_refused(
    call: Caller, headers: dict[str, str], status: int
) -> None:
    response = call(PATH, headers=headers)
    assert response.status_code == status
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"]


def test_a_dashboard_session_token_is_no_bearer_token(call: Caller, mart: Settings) -> None:
    from common.auth import session_audience

    sessions = TokenService(mart, audience=session_audience(mart))
    cookie = sessions.issue(Principal("alice", "analyst")).access_token
    assert call(PATH, headers=auth(cookie)).status_code == 401


def test_broken_parameters_are_a_422_naming_each(call: Caller, token: str) -> None:
    response = call(
        PATH,
        headers=auth(token),
        query_string={
            "limit": "0",
            "sale_month": "2023-13",
            "min_avg_price": "9",
            "max_avg_price": "1",
        },
    )
    assert response.status_code == 422
    details = response.get_json()["details"]
    assert set(details) == {"limit", "sale_month", "min_avg_price"}


def test_bigquery_not_answering_is_a_503_without_its_error_text(
    mart: Settings, flask_app: Any, token: str
) -> None:
    env = {**_bigquery_env(mart), "SALESMART_BQ_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    env["SALESMART_BQ_QUERY_TIMEOUT"] = "2"
    with pytest.MonkeyPatch.context() as patch:
        module = load_function("trends_bq", patch, **env)
        response = caller(flask_app, module.trends_bq)(PATH, headers=auth(token))
    bq.reset_clients()
    assert response.status_code == 503
    body = response.get_data(as_text=True)
    assert "127.0.0.1" not in body and "Traceback" not in body and "SELECT" not in body
    assert response.get_json()["error"]
    assert TEST_ENV["SALESMART_JWT_SECRET"] not in body
