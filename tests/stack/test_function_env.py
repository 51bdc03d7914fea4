"""The functions `up` and `serve` start read the settings the rest of the run used."""

from __future__ import annotations

import dataclasses
import os

import pytest

from common.config import build_settings
from pipeline.stack import function_env

SETTINGS_FROM_THE_ENVIRONMENT = {
    "SALESMART_PG_MART_SCHEMA": "analytics",
    "SALESMART_BQ_MART_DATASET": "sales_mart",
    "SALESMART_BQ_WAREHOUSE_DATASET": "sales_raw",
    "SALESMART_BQ_QUERY_TIMEOUT": "7",
    "SALESMART_BQ_MAX_BYTES_BILLED": "123456789",
    "SALESMART_TOKEN_TTL_SECONDS": "600",
    "SALESMART_BCRYPT_ROUNDS": "10",
    "SALESMART_HEADER_TIMEOUT_SECONDS": "4",
    "SALESMART_REQUEST_DEADLINE_SECONDS": "30",
}


def test_every_setting_reaches_the_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt built the marts where these said; the functions read them from elsewhere (a
    503 for a renamed mart schema) when only two of them were passed on."""
    for name, value in SETTINGS_FROM_THE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SALESMART_ENV", "prod")
    command = dataclasses.replace(
        build_settings(dict(os.environ)),
        database_url="postgresql://salesmart@127.0.0.1:5999/salesmart",
        jwt_secret="j" * 40,
        pii_key="p" * 40,
    )
    env = function_env(command)
    for name, value in SETTINGS_FROM_THE_ENVIRONMENT.items():
        assert env[name] == value, name
    seen = build_settings(env)  # what a function process builds
    assert seen.env == "dev"  # the local run, whatever the shell said
    assert (seen.mart_schema, seen.bigquery.mart_dataset) == ("analytics", "sales_mart")
    assert seen.bigquery.warehouse_dataset == "sales_raw"
    assert (seen.database_url, seen.jwt_secret, seen.pii_key) == (
        command.database_url,
        command.jwt_secret,
        command.pii_key,
    )
    assert seen.token_ttl_seconds == 600 and seen.bcrypt_rounds == 10
