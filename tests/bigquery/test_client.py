"""``common.bigquery``: one client per process, what every job carries, and error mapping.

Failures are produced for real: a missing mart on the stand-in, a closed port, a server
that never answers, a slow query, and a small HTTP server answering BigQuery-shaped errors.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from common import bigquery as bq
from common.config import Settings, build_settings
from common.errors import WarehouseUnavailable
from common.trends import TrendFilters
from pipeline.bq_emulator import EmulatorHandle, bigquery_needs_emulator
from pipeline.netutil import free_port
from tests.bigquery.conftest import settings_for


def expect_unavailable(reason: str, call: Any, within: float) -> bq.BigQueryUnavailable:
    started = time.monotonic()
    with pytest.raises(bq.BigQueryUnavailable) as caught:
        call()
    elapsed = time.monotonic() - started
    assert caught.value.reason == reason, str(caught.value)
    assert elapsed < within, f"took {elapsed:.1f} s"
    return caught.value


# -- the client ----------------------------------------------------------------------------
def test_one_client_per_settings_even_under_concurrent_first_use(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bq.reset_clients()
    created: list[object] = []
    real_new_client = bq._new_client

    def counting(settings: Any) -> Any:
        time.sleep(0.05)  # widen the race window
        client = real_new_client(settings)
        created.append(client)
        return client

    monkeypatch.setattr(bq, "_new_client", counting)
    seen: list[object] = []
    threads = [
        threading.Thread(target=lambda: seen.append(bq.get_client(bq_settings.bigquery)))
        for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1
    assert all(client is created[0] for client in seen)
    # After a fork the child builds its own (connection pools are not shared).
    monkeypatch.setattr(bq, "_clients_pid", -1)
    assert bq.get_client(bq_settings.bigquery) is not created[0]


def test_the_stand_in_client_is_anonymous_on_its_endpoint(bq_settings: Settings) -> None:
    from google.auth.credentials import AnonymousCredentials

    client = bq.get_client(bq_settings.bigquery)
    assert isinstance(client._credentials, AnonymousCredentials)
    assert bq_settings.bigquery.api_endpoint == client._connection.API_BASE_URL
    assert client.project == "salesmart-test"


@pytest.mark.filterwarnings("ignore:The load_credentials_from_file method is deprecated")
def test_real_bigquery_uses_the_credentials_file_and_google_endpoint(tmp_path: Path) -> None:
    """Configured for real BigQuery: no stand-in, the mounted credentials, Google's API."""
    from google.oauth2.credentials import Credentials

    creds = tmp_path / "adc.json"
    creds.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "test.apps.googleusercontent.com",
                "client_secret": "not-a-secret",
                "refresh_token": "not-a-token",
            }
        )
    )
    settings = build_settings(
        {
            "SALESMART_BQ_PROJECT": "my-analytics-prod",
            "SALESMART_BQ_LOCATION": "EU",
            "GOOGLE_APPLICATION_CREDENTIALS": str(creds),
        }
    )
    assert not bigquery_needs_emulator(settings)
    try:
        client = bq.get_client(settings.bigquery)
        assert client.project == "my-analytics-prod"
        assert client.location == "EU"
        assert isinstance(client._credentials, Credentials)
        assert client._connection.API_BASE_URL == "https://bigquery.googleapis.com"
    finally:
        bq.reset_clients()


def test_a_missing_credentials_file_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    settings = build_settings(
        {
            "SALESMART_BQ_PROJECT": "my-analytics-prod",
            "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"),
        }
    )
    error = expect_unavailable("credentials", lambda: bq.get_client(settings.bigquery), within=5.0)
    assert "missing.json" in str(error)


def test_a_real_project_without_credentials_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration copied from elsewhere (the design document's names ``hijra-project``)
    wants real BigQuery; Google's own error named no setting of ours."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no `gcloud auth` credentials
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on Google Cloud: no metadata server
    settings = build_settings({"SALESMART_BQ_PROJECT": "hijra-project"})
    try:
        error = expect_unavailable(
            "credentials", lambda: bq.get_client(settings.bigquery), within=10.0
        )
    finally:
        bq.reset_clients()
    assert str(error) == (
        "BigQuery unavailable (credentials): no Google credentials were found for the BigQuery"
        " project hijra-project (GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth"
        " application-default login`); the local stand-in is used for the project"
        " salesmart-local (data_warehouse.project_id, SALESMART_BQ_PROJECT)"
    )


# -- what each job carries -----------------------------------------------------------------
def test_job_config_carries_byte_cap_timeout_labels_and_typed_parameters(
    bq_emulator: EmulatorHandle,
) -> None:
    settings = settings_for(
        bq_emulator.endpoint,
        SALESMART_BQ_MAX_BYTES_BILLED="12345",
        SALESMART_BQ_QUERY_TIMEOUT="2.5",
    )
    config = bq.query_job_config(
        {"prefix": "Halal", "month": date(2023, 10, 1), "amount": Decimal("1.5"), "n": 3},
        function="trends_bq",
        user="Alice.Smith@Example.COM",
        settings=settings.bigquery,
    )
    assert config.maximum_bytes_billed == 12345
    assert int(config.job_timeout_ms) == 2500
    assert config.use_legacy_sql is False
    assert config.labels == {
        "app": "salesmart",
        "function": "trends_bq",
        "user": "alice_smith_example_com",
    }
    types = {p.name: p.type_ for p in config.query_parameters}
    assert types == {"prefix": "STRING", "month": "DATE", "amount": "NUMERIC", "n": "INT64"}


def test_run_query_sends_that_config(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = bq.get_client(bq_settings.bigquery)
    sent: list[Any] = []
    real_query = client.query

    def spy(sql: str, **kwargs: Any) -> Any:
        sent.append(kwargs["job_config"])
        return real_query(sql, **kwargs)

    monkeypatch.setattr(client, "query", spy)
    rows = bq.run_query(
        "SELECT @x AS x", {"x": 7}, function="trends_bq", user="bob", settings=bq_settings.bigquery
    )
    assert rows == [{"x": 7}]
    [config] = sent
    assert config.labels["user"] == "bob"
    assert config.maximum_bytes_billed == bq_settings.bigquery.maximum_bytes_billed
    assert int(config.job_timeout_ms) == int(bq_settings.bigquery.query_timeout_seconds * 1000)


def test_the_real_bigquery_path_uses_jobs_query_with_the_same_config(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real BigQuery goes through ``query_and_wait`` (one round trip); run it here too."""
    client = bq.get_client(bq_settings.bigquery)
    monkeypatch.setattr(type(bq_settings.bigquery), "is_emulated", property(lambda _: False))
    sent: list[dict[str, Any]] = []
    real = client.query_and_wait

    def spy(sql: str, **kwargs: Any) -> Any:
        sent.append(kwargs)
        return real(sql, **kwargs)

    monkeypatch.setattr(client, "query_and_wait", spy)
    monkeypatch.setattr(client, "query", None)  # must not be used on this path
    rows = bq.run_query(
        "SELECT @x AS x, @d AS d",
        {"x": "Halal", "d": date(2023, 10, 1)},
        function="trends_bq",
        user="carol",
        settings=bq_settings.bigquery,
    )
    assert rows == [{"x": "Halal", "d": date(2023, 10, 1)}]
    [kwargs] = sent
    assert kwargs["job_retry"] is None
    assert kwargs["wait_timeout"] == kwargs["api_timeout"] == 10.0
    assert kwargs["job_config"].labels["user"] == "carol"


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("Alice@Example.COM", "alice_example_com"),
        ("  ütf user ", "tf_user"),
        ("a" * 80, "a" * 63),
        ("svc-account_1", "svc-account_1"),
        ("@@@", ""),
    ],
)
def test_label_values_follow_bigquery_rules(raw: str, label: str) -> None:
    assert bq.label_value(raw) == label
    assert bq.job_labels("x", raw).get("user", "") in (label, "unknown")


def test_parameters_round_trip_with_their_types(bq_settings: Settings) -> None:
    values: dict[str, bq.ParamValue] = {
        "s": 'O\'Brien "quoted" ; DROP TABLE x; --',
        "i": 2**40,
        "n": Decimal("12345678901234567890.123456789"),
        "d": date(2024, 2, 29),
        "b": True,
        "z": bq.Param("INT64", None),
    }
    [row] = bq.run_query(
        "SELECT @s AS s, @i AS i, @n AS n, @d AS d, @b AS b, @z AS z",
        values,
        function="test",
        settings=bq_settings.bigquery,
    )
    assert row == {**values, "z": None}


# -- failures: the stand-in ----------------------------------------------------------------
def test_a_mart_that_was_never_built_is_unavailable(bq_settings: Settings) -> None:
    s = bq_settings.bigquery
    # No dataset at all (the stand-in answers 403 "... or perhaps it does not exist").
    error = expect_unavailable(
        "not_built", lambda: bq.query_summary(TrendFilters(), settings=s), within=5.0
    )
    assert isinstance(error, WarehouseUnavailable)
    assert error.status == 503
    assert error.message == WarehouseUnavailable.default_message  # nothing leaks to clients
    assert s.mart_dataset in str(error)  # but the log says what is missing
    # The dataset exists, the table does not (404).
    bq.ensure_datasets(s)
    expect_unavailable(
        "not_built", lambda: bq.query_summary(TrendFilters(), settings=s), within=5.0
    )


def test_a_query_past_the_timeout_is_cancelled_as_unavailable(bq_settings: Settings) -> None:
    # 256M joined pairs: ~1.4 s in DuckDB alone on a fast 2-core machine, far past the 0.2 s
    # deadline on any machine (16M pairs once finished within it: DuckDB is quick).
    slow = (
        "SELECT COUNT(*) AS n FROM UNNEST(GENERATE_ARRAY(1, 16000)) AS a "
        "CROSS JOIN UNNEST(GENERATE_ARRAY(1, 16000)) AS b WHERE MOD(a + b, 7) = 0"
    )
    expect_unavailable(
        "timeout",
        lambda: bq.run_query(slow, function="test", settings=bq_settings.bigquery, timeout=0.2),
        within=4.0,
    )


def test_programming_errors_are_not_disguised(bq_settings: Settings) -> None:
    from google.api_core.exceptions import BadRequest

    with pytest.raises(BadRequest):
        bq.run_query("SELEC 1", function="test", settings=bq_settings.bigquery)


# -- failures: no server, a silent server, a failing server -------------------------------
def test_an_unreachable_endpoint_fails_fast() -> None:
    settings = settings_for(f"http://127.0.0.1:{free_port()}")
    try:
        expect_unavailable(
            "unreachable",
            lambda: bq.query_summary(TrendFilters(), settings=settings.bigquery),
            within=3.0,
        )
    finally:
        bq.reset_clients()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield int(server.getsockname()[1])
    server.close()


def test_a_server_that_never_answers_times_out(silent_server: int) -> None:
    settings = settings_for(f"http://127.0.0.1:{silent_server}", SALESMART_BQ_QUERY_TIMEOUT="1")
    try:
        expect_unavailable(
            "timeout",
            lambda: bq.query_summary(TrendFilters(), settings=settings.bigquery),
            within=4.5,
        )
    finally:
        bq.reset_clients()


def test_an_interrupted_scripts_wait_for_its_end_keeps_its_deadline(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole wait (the cancel included) within STOPPED_SCRIPT_WAIT_SECONDS when BigQuery
    does not answer; none at all when nothing listens (a review measured 13 s and 10 s)."""
    monkeypatch.setattr(bq, "STOPPED_SCRIPT_WAIT_SECONDS", 1.5)
    silent = settings_for(f"http://127.0.0.1:{silent_server}")
    nothing = settings_for(f"http://127.0.0.1:{free_port()}")
    try:
        for settings, longest in ((silent, 1.8), (nothing, 0.5)):
            client = bq.get_client(settings.bigquery)
            started = time.monotonic()
            assert bq._stop_script(client, "salesmart_ingest_x", "US") is None
            assert time.monotonic() - started < longest
    finally:
        bq.reset_clients()


class _ErrorServer(ThreadingHTTPServer):
    status = 500
    reason = "backendError"


class _ErrorHandler(BaseHTTPRequestHandler):
    server: _ErrorServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {
                "error": {
                    "code": self.server.status,
                    "message": f"simulated {self.server.reason}",
                    "errors": [{"reason": self.server.reason, "message": "simulated"}],
                }
            }
        ).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def error_server() -> Iterator[_ErrorServer]:
    server = _ErrorServer(("127.0.0.1", 0), _ErrorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (500, "backendError", "server_error"),
        (503, "backendError", "server_error"),
        (429, "rateLimitExceeded", "quota"),
        (403, "quotaExceeded", "quota"),
        (403, "accessDenied", "access_denied"),
        (401, "authError", "credentials"),
        (404, "notFound", "not_built"),
        (400, "bytesBilledLimitExceeded", "bytes_billed_limit"),
    ],
)
def test_bigquery_errors_map_to_unavailable(
    error_server: _ErrorServer, status: int, reason: str, expected: str
) -> None:
    error_server.status = status
    error_server.reason = reason
    port = error_server.server_address[1]
    settings = settings_for(f"http://127.0.0.1:{port}", SALESMART_BQ_QUERY_TIMEOUT="1")
    try:
        error = expect_unavailable(
            expected,
            lambda: bq.query_summary(TrendFilters(), user="u", settings=settings.bigquery),
            within=4.0,
        )
        assert error.message == WarehouseUnavailable.default_message
    finally:
        bq.reset_clients()


def test_an_invalid_query_answer_is_a_bug_not_unavailability(error_server: _ErrorServer) -> None:
    from google.api_core.exceptions import BadRequest

    error_server.status = 400
    error_server.reason = "invalidQuery"
    settings = settings_for(f"http://127.0.0.1:{error_server.server_address[1]}")
    try:
        with pytest.raises(BadRequest):
            bq.query_summary(TrendFilters(), settings=settings.bigquery)
    finally:
        bq.reset_clients()
