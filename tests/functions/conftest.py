"""Fixtures for the four functions: a marts database built by real dbt, users, a caller for
unit tests (a Flask request, no server) and real ``functions-framework`` processes.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import flask
import pytest
import requests

from common.config import Settings, build_settings, get_settings
from common.pg import connect
from common.server import command as serve_command
from common.server import serve_arguments
from pipeline.ingest import ingest_postgres
from pipeline.netutil import free_port
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.transform import run_dbt
from pipeline.users import add_user
from tests.conftest import REPO_ROOT, SAMPLE_CSV, TEST_ENV, create_database, scratch_pg_server

FUNCTIONS = ("token", "trends_pg", "trends_bq", "dashboard")
PASSWORD = "correct horse battery"

# Rows beyond the sample file: several months, LIKE metacharacters in names, ties, and an
# average that rounds differently half-up (10.03) than half-even (10.02).
EXTRA_CSV = """transaction_id,product,price,quantity,date
X001,Halal Dates,12.50,4,2023-09-15
X002,Halal Dates,12.50,2,2023-10-15
X003,Halal Dates,13.00,1,2023-11-02
X004,Halal%Special,20.00,1,2023-10-05
X005,Halal_Tea,11.00,3,2023-10-06
X006,HalalXTea,11.00,5,2023-10-07
X007,Halal Honey,10.02,1,2023-11-10
X008,Halal Honey,10.03,1,2023-11-11
X009,Halal Aaa,50.00,2,2023-12-01
X010,Halal Bbb,25.00,4,2023-12-01
"""


def assert_error_envelope(body: dict[str, Any]) -> None:
    """The contract's error body: error, message, request_id, and details (validation)."""
    keys = set(body)
    assert (
        {"error", "message", "request_id"}
        <= keys
        <= {
            "error",
            "message",
            "request_id",
            "details",
        }
    ), body


def write_extra_csv(folder: Path) -> Path:
    path = folder / "extra.csv"
    path.write_text(EXTRA_CSV)
    return path


def settings_for(dsn: str, **env: str) -> Settings:
    return build_settings({**os.environ, **TEST_ENV, "SALESMART_DATABASE_URL": dsn, **env})


def load_marts(dsn: str, work: Path, csvs: Sequence[Path] = ()) -> None:
    """Ingest ``csvs`` (default: the sample and extra rows), then build the marts with dbt
    (the real project)."""
    settings = settings_for(dsn)
    for path in csvs or (SAMPLE_CSV, write_extra_csv(work)):
        conn = connect(dsn)
        try:
            ingest_postgres(conn, path, settings)
        finally:
            conn.close()
    # The models behind the trends (dbt's own tests run in tests/dbt): faster per worker.
    run_dbt(
        "postgres",
        settings,
        command="run",
        select="+summary_sales",
        work_dir=work / "dbt",
        timeout=300,
    )


@pytest.fixture(scope="session")
def marts_dsn(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database with raw rows and dbt-built marts, shared by the tests of one worker.

    Tests only read it, or write rows keyed by their own random usernames.
    """
    dsn = create_database(pg_server)
    load_marts(dsn, tmp_path_factory.mktemp("marts"))
    return dsn


@pytest.fixture
def fn_settings(marts_dsn: str) -> Settings:
    return settings_for(marts_dsn)


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    role: str


def make_user(
    dsn: str, role: str = "analyst", *, disabled: bool = False, password: str = PASSWORD
) -> Account:
    username = f"u{secrets.token_hex(5)}"
    conn = connect(dsn)
    try:
        add_user(conn, username, password, role, rounds=4)
        if disabled:
            conn.run("UPDATE auth.users SET disabled = true WHERE username = :u", u=username)
    finally:
        conn.close()
    return Account(username, password, role)


@pytest.fixture
def analyst(marts_dsn: str) -> Account:
    return make_user(marts_dsn, "analyst")


# -- unit tier: the target function called with a Flask request ------------------------------
Caller = Callable[..., flask.Response]


@pytest.fixture(scope="session")
def flask_app() -> flask.Flask:
    return flask.Flask("salesmart-unit-tests")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def analyst_token(settings: Settings) -> str:
    """A bearer token of the analyst ``alice``, signed with ``settings``' key."""
    from common.auth import Principal, TokenService

    return TokenService(settings).issue(Principal("alice", "analyst")).access_token


def caller(flask_app: flask.Flask, target: Callable[[flask.Request], flask.Response]) -> Caller:
    """``call(path, method=..., headers=..., data=..., query_string=...)`` -> Response."""

    def call(path: str, method: str = "GET", **kwargs: Any) -> flask.Response:
        with flask_app.test_request_context(path, method=method, **kwargs):
            return target(flask.request)

    return call


def load_function(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """``functions/<name>/main.py`` imported as the framework would, under ``env``."""
    for key, value in {**TEST_ENV, **env}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    module_name = f"functions.{name}.main"
    try:
        if module_name in sys.modules:
            return importlib.reload(sys.modules[module_name])
        return importlib.import_module(module_name)
    finally:
        get_settings.cache_clear()


# -- integration tier: real functions-framework processes ---------------------------------------
@dataclass
class Served:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"function exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"function at {url} not healthy after {timeout} s: {log.read_text()}")


def framework_command(name: str, port: int) -> list[str]:
    """The contract's own way to serve a function: the ``functions-framework`` command."""
    source = REPO_ROOT / "functions" / name / "main.py"
    script = Path(sys.executable).parent / "functions-framework"
    return [str(script), *serve_arguments(name, source, "127.0.0.1", port)]


def start_function(
    name: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    framework_cli: bool = False,
    wrapper: Sequence[str] = (),
) -> Served:
    """Start ``name`` as the stack and the image do (``salesmart-serve``), or with the bare
    ``functions-framework`` command (``framework_cli``); ``wrapper``: a command that runs it."""
    port = free_port()
    log = log_dir / f"{name}-{port}.log"
    handle = log.open("wb")
    source = REPO_ROOT / "functions" / name / "main.py"
    process = subprocess.Popen(
        [*wrapper]
        + (
            framework_command(name, port)
            if framework_cli
            else serve_command(name, source, "127.0.0.1", port)
        ),
        env={**os.environ, **TEST_ENV, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=str(log_dir),
    )
    handle.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
    except BaseException:
        stop_function(process)
        raise
    return Served(name, url, process, log)


def stop_function(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # A stuck master: its workers go too, or they would outlive the test run.
            import psutil

            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Served]]:
    """``serve(name, framework_cli=False, **env)`` starts a function process; all are
    stopped after the module."""
    started: list[Served] = []
    log_dir = tmp_path_factory.mktemp("functions")

    def start(name: str, framework_cli: bool = False, **env: str) -> Served:
        served = start_function(name, env, log_dir, framework_cli=framework_cli)
        started.append(served)
        return served

    yield start
    for served in started:
        stop_function(served.process)


@pytest.fixture
def own_pg_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of its own, for tests that stop and restart it."""
    with scratch_pg_server("salesmart-pg-own-") as server:
        yield server
