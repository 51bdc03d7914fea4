"""Commands run against an operator's own services and settings: their `admin` account is
theirs, settings that would go wrong later are refused first with one line, and a command
told it runs for a deployment (SALESMART_ENV other than dev) behaves as one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from common.bigquery import BigQueryUnavailable, get_client, reset_clients
from common.config import ConfigError, Settings, build_settings
from common.http import FunctionApp
from common.passwords import verify_password
from common.pg import connect, parse_dsn
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.stack import ADMIN_USER, AdminLogin, _announcement, provision_admin
from pipeline.users import add_user, disable_user
from tests.conftest import (
    TEST_ENV,
    create_database,
    eventually,
    free_port_base,
    run_cli,
    scalar,
)


def _admin_row(settings: Settings) -> tuple[str, bool]:
    conn = connect(settings.database_url)
    try:
        rows = conn.run(
            "SELECT password_hash, disabled FROM auth.users WHERE username = :u", u=ADMIN_USER
        )
    finally:
        conn.close()
    return str(rows[0][0]), bool(rows[0][1])


def sessions_since(settings: Settings) -> object:
    """When the demo admin's sessions were last ended (None: never)."""
    conn = connect(settings.database_url)
    try:
        (row,) = conn.run(
            "SELECT CASE WHEN sessions_since > '-infinity' THEN sessions_since END"
            " FROM auth.users WHERE username = :u",
            u=ADMIN_USER,
        )
    finally:
        conn.close()
    return row[0]


def _provision(settings: Settings, *, external_database: bool) -> AdminLogin:
    conn = connect(settings.database_url)
    try:
        return provision_admin(conn, settings, external_database=external_database)
    finally:
        conn.close()


def _add_account(
    settings: Settings, username: str, password: str, *, disabled: bool = False
) -> None:
    conn = connect(settings.database_url)
    try:
        add_user(conn, username, password, "admin", 4)
        if disabled:
            disable_user(conn, username)
    finally:
        conn.close()


@pytest.fixture
def local_state(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("SALESMART_ADMIN_PASSWORD", raising=False)
    return build_settings(
        {
            **os.environ,
            "SALESMART_DATABASE_URL": settings.database_url,
            "SALESMART_STATE_DIR": str(tmp_path / ".salesmart"),
        }
    )


def test_an_operators_admin_account_is_left_as_it_is(local_state: Settings) -> None:
    _add_account(local_state, ADMIN_USER, "operators-own-password", disabled=True)
    before = _admin_row(local_state)

    login = _provision(local_state, external_database=True)

    assert login.password is None
    assert _admin_row(local_state) == before  # same hash, still disabled
    assert before[1] is True
    assert verify_password("operators-own-password", before[0])


@pytest.mark.parametrize("source", ["file", "environment"])
def test_an_operators_admin_is_announced_with_a_password_only_if_it_logs_in(
    local_state: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """One folder, two databases: the kept password was the other database's, and `up`
    said only "left unchanged" beside a file whose password got 401."""
    _add_account(local_state, ADMIN_USER, "this-databases-password")
    state = tmp_path / ".salesmart"
    state.mkdir(mode=0o700, exist_ok=True)

    def announced(password: str) -> tuple[AdminLogin, str]:
        if source == "file":
            (state / "admin-password").write_text(password + "\n")
            where = str(state / "admin-password")
        else:
            monkeypatch.setenv("SALESMART_ADMIN_PASSWORD", password)
            where = "SALESMART_ADMIN_PASSWORD"
        login = _provision(local_state, external_database=True)
        said = "\n".join(_announcement(local_state, state, {}, "", login))
        assert f"the password in {where}" in said, said
        return login, said

    login, said = announced("another-databases-password")
    assert login.password is None and "does not log it in" in said, said
    assert "salesmart users password admin" in said
    login, said = announced("this-databases-password")
    assert login.password == "this-databases-password" and "does not log it in" not in said
    assert "left unchanged" not in said
    password_hash, _ = _admin_row(local_state)
    assert verify_password("this-databases-password", password_hash)  # never reset


def test_a_disabled_operators_admin_is_announced_as_disabled(
    local_state: Settings, tmp_path: Path
) -> None:
    """A disabled `admin` was said to refuse the kept password, with advice to set another
    one, which leaves the account disabled."""
    _add_account(local_state, ADMIN_USER, "the-kept-password-1", disabled=True)
    state = tmp_path / ".salesmart"
    state.mkdir(mode=0o700, exist_ok=True)
    (state / "admin-password").write_text("the-kept-password-1\n")
    login = _provision(local_state, external_database=True)
    said = "\n".join(_announcement(local_state, state, {}, "", login))
    assert (login.password, login.disabled) == (None, True)
    assert "salesmart users enable admin" in said and "users password" not in said, said


def test_a_password_kept_unshown_is_shown_for_an_operators_admin_it_logs_in(
    local_state: Settings, tmp_path: Path
) -> None:
    # An earlier `up` made `admin` with a generated password and stopped before serving:
    # the next one, finding that account, shows the password once.
    state = tmp_path / ".salesmart"
    first = _provision(local_state, external_database=True)
    assert first.password and first.unshown
    again = _provision(local_state, external_database=True)
    assert (again.password, again.unshown) == (first.password, True)
    said = "\n".join(_announcement(local_state, state, {}, "", again))
    assert f"admin / {first.password}   (shown once" in said, said
    assert _provision(local_state, external_database=True).unshown is False


def test_a_missing_admin_is_created_in_an_operators_database(local_state: Settings) -> None:
    login = _provision(local_state, external_database=True)
    password = login.password
    assert password
    password_hash, disabled = _admin_row(local_state)
    assert verify_password(password, password_hash) and not disabled


def test_ups_own_server_resets_its_demo_admin(local_state: Settings, tmp_path: Path) -> None:
    _add_account(local_state, ADMIN_USER, "an-older-password-1", disabled=True)
    disabled_at = sessions_since(local_state)
    login = _provision(local_state, external_database=False)
    password_hash, disabled = _admin_row(local_state)
    assert login.password is not None
    assert verify_password(login.password, password_hash)
    assert not disabled
    # Said, not silent: an operator's `users disable` / `users password` was undone.
    said = "\n".join(_announcement(local_state, tmp_path / ".salesmart", {}, "", login))
    assert "(enabled again and its password set back: up resets its demo account" in said
    # As `users password` does: cookies of the old password end (an audit found them kept).
    reset_at = sessions_since(local_state)
    assert isinstance(reset_at, datetime) and isinstance(disabled_at, datetime)
    assert reset_at > disabled_at
    login = _provision(local_state, external_database=False)  # nothing to undo this time
    assert login.undone == ()
    assert sessions_since(local_state) == reset_at  # the same password: sessions kept
    # A password asked for in SALESMART_ADMIN_PASSWORD is not "set back".
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALESMART_ADMIN_PASSWORD", "a-password-asked-for-1")
        assert _provision(local_state, external_database=False).undone == ()
    said = "\n".join(_announcement(local_state, tmp_path / ".salesmart", {}, "", login))
    assert "resets its demo account" not in said


def test_ups_own_admin_as_up_left_it_is_not_hashed_again(local_state: Settings) -> None:
    """One bcrypt hash less per `up` (~0.25 s at cost 12): the account is kept as it is,
    and only what a reset would still change is done (its lockout by failed logins ends)."""
    first = _provision(local_state, external_database=False)
    assert first.password
    password_hash, _ = _admin_row(local_state)
    conn = connect(local_state.database_url)
    try:
        conn.run(
            "INSERT INTO auth.login_failures (username, failures, locked_until)"
            " VALUES (:u, 5, now() + interval '5 minutes')",
            u=ADMIN_USER,
        )
        again = provision_admin(conn, local_state, external_database=False)
        lockouts = conn.run(
            "SELECT count(*) FROM auth.login_failures WHERE username = :u", u=ADMIN_USER
        )
    finally:
        conn.close()
    assert (again.password, again.undone) == (first.password, ())
    assert _admin_row(local_state) == (password_hash, False)  # the very same hash
    assert lockouts == [[0]]


@pytest.mark.parametrize("external_database", [True, False])
def test_no_admin_is_made_beside_an_account_differing_only_in_case(
    local_state: Settings, external_database: bool, tmp_path: Path
) -> None:
    """`up` made `admin` beside an existing `Admin` in its own server (its reset skipped
    the look-alike check), and in an operator's database said an `admin` was there."""
    _add_account(local_state, "Admin", "operators-own-password")

    login = _provision(local_state, external_database=external_database)

    assert (login.password, login.look_alike) == (None, "Admin")
    said = "\n".join(_announcement(local_state, tmp_path, {}, "", login))
    assert "admin: not made, beside the account Admin" in said, said
    assert scalar(local_state, "SELECT count(*) FROM auth.users WHERE username <> 'Admin'") == 0


def test_ups_admin_beside_a_look_alike_made_before_is_still_reset(local_state: Settings) -> None:
    # `admin` and `Admin` both there (made before the check covered the reset): `admin`
    # is reset as before, not announced as "not made".
    conn = connect(local_state.database_url)
    try:
        conn.run(
            "INSERT INTO auth.users (username, password_hash, role) VALUES"
            " ('Admin', 'x', 'analyst'), ('admin', 'x', 'admin')"
        )
    finally:
        conn.close()
    login = _provision(local_state, external_database=False)
    assert login.look_alike is None and login.password is not None
    assert verify_password(login.password, _admin_row(local_state)[0])


@pytest.mark.parametrize("external_database", [True, False])
def test_up_stops_when_another_session_holds_the_users_lock(
    local_state: Settings, external_database: bool
) -> None:
    """A lock wait given up on made no admin: `up` said one was there ("left unchanged")."""
    from unittest import mock

    from pipeline import users

    holder = connect(local_state.database_url)
    try:
        holder.run("BEGIN")
        holder.run("SELECT pg_advisory_xact_lock(:key)", key=users._ADD_LOCK_KEY)
        with (
            mock.patch.object(users, "_ADD_LOCK_WAIT", "200ms"),  # the wait, shortened
            pytest.raises(users.AddLockTimeout),
        ):
            _provision(local_state, external_database=external_database)
    finally:
        holder.close()
    assert scalar(local_state, "SELECT count(*) FROM auth.users") == 0


def test_up_checks_bigquery_before_writing_to_the_operators_database(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = create_database(pg_server, migrated=False)
    settings = build_settings({**os.environ, "SALESMART_DATABASE_URL": dsn})
    done = run_cli(
        settings,
        tmp_path,
        "up",
        "--port-base",
        str(free_port_base()),
        SALESMART_BQ_PROJECT="acme-dw",
        GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing-key.json"),
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("salesmart: BigQuery unavailable (credentials)"), done.stderr
    assert "missing-key.json is not a readable file" in last
    assert "Traceback" not in done.stderr
    # Nothing was written: not even the migrations' own bookkeeping.
    assert scalar(settings, "SELECT count(*) FROM pg_namespace WHERE nspname = 'auth'") == 0


def test_a_credentials_file_without_a_project_is_refused_by_name(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("{}")
    settings = build_settings(
        {**TEST_ENV, "GOOGLE_APPLICATION_CREDENTIALS": str(key), "SALESMART_ENV": "dev"}
    )
    try:
        with pytest.raises(BigQueryUnavailable) as refused:
            get_client(settings.bigquery)
    finally:
        reset_clients()
    assert refused.value.reason == "credentials"
    assert "no BigQuery project is set: set SALESMART_BQ_PROJECT" in str(refused.value)


def test_ingest_for_a_deployment_refuses_a_short_pii_key(
    settings: Settings, tmp_path: Path
) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("transaction_id,product,price,quantity,date\nT1,Halal Tea,12.00,1,2024-01-02\n")
    done = run_cli(
        settings,
        tmp_path,
        "ingest",
        str(csv),
        "--target",
        "postgres",
        SALESMART_ENV="prod",
        SALESMART_PII_KEY="short",
        SALESMART_BQ_PROJECT="acme-dw",
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "salesmart: SALESMART_PII_KEY is only 5 bytes; at least 32 bytes are required"
        " outside SALESMART_ENV=dev"
    )
    assert scalar(settings, "SELECT count(*) FROM raw.transactions") == 0


def _serve_dashboard_for_a_deployment(settings: Settings, tmp_path: Path, **env: str) -> str:
    """`salesmart serve --function dashboard` with SALESMART_ENV=prod: its last stderr line."""
    done = run_cli(
        settings,
        tmp_path,
        "serve",
        "--function",
        "dashboard",
        "--port-base",
        str(free_port_base()),
        SALESMART_ENV="prod",
        **env,
    )
    assert done.returncode == 1
    return done.stderr.strip().splitlines()[-1]


def test_a_deployment_refuses_one_key_for_tokens_and_masking() -> None:
    key = "k" * 40
    with pytest.raises(
        ConfigError, match="SALESMART_JWT_SECRET and SALESMART_PII_KEY are the same"
    ):
        Settings(env="prod", jwt_secret=key, pii_key=key).require_secrets()
    Settings(env="prod", jwt_secret=key, pii_key=key).require_secrets(jwt=False)  # ingest's
    Settings(env="prod", jwt_secret=key, pii_key="p" * 40).require_secrets()
    Settings(env="dev", jwt_secret=key, pii_key=key).require_secrets()  # a local run's choice


def test_a_secret_is_its_bytes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    """A Secret made from a file (``--from-file``) keeps its line end in a variable, and a
    NAME_FILE dropped it: one Secret gave two masking keys (an audit). A file's final line
    end is dropped; white space around a key anywhere else is refused, not trimmed."""
    key = "k" * 40
    jwt = "j" * 40
    for ending in ("\n", "\r\n", ""):
        (tmp_path / "pii").write_text(key + ending, newline="")
        settings = build_settings(
            {"SALESMART_PII_KEY_FILE": str(tmp_path / "pii"), "SALESMART_JWT_SECRET": jwt}
        )
        assert settings.pii_key == key
        settings.require_secrets()
    for given in (key + "\n", " " + key, " " * 34):
        settings = Settings(env="prod", jwt_secret=jwt, pii_key=given)
        with pytest.raises(
            ConfigError,
            match=r"^SALESMART_PII_KEY starts or ends with white space \(a file's line end\?\):"
            r" give it without",
        ):
            settings.require_secrets()
    (tmp_path / "pii").write_text(key + "\n\n")  # the line end left is the key's
    settings = build_settings(
        {"SALESMART_PII_KEY_FILE": str(tmp_path / "pii"), "SALESMART_JWT_SECRET": jwt}
    )
    with pytest.raises(ConfigError, match="SALESMART_PII_KEY starts or ends with white space"):
        settings.require_secrets()
    # Every problem at once: a pod refused once per missing key took a revision each.
    with pytest.raises(
        ConfigError,
        match=r"^SALESMART_JWT_SECRET is missing; at least 32 bytes are required outside"
        r" SALESMART_ENV=dev; SALESMART_PII_KEY is only 5 bytes; at least 32 bytes",
    ):
        Settings(env="prod", jwt_secret="", pii_key="short").require_secrets()


def test_serve_for_a_deployment_needs_its_secrets(settings: Settings, tmp_path: Path) -> None:
    refused = _serve_dashboard_for_a_deployment(settings, tmp_path, SALESMART_JWT_SECRET="")
    assert refused.startswith(
        "salesmart: SALESMART_JWT_SECRET is missing; at least 32 bytes are required"
    ), refused
    key = "same-key-for-both-" + "k" * 32
    refused = _serve_dashboard_for_a_deployment(
        settings, tmp_path, SALESMART_JWT_SECRET=key, SALESMART_PII_KEY=key
    )
    assert refused.startswith("salesmart: SALESMART_JWT_SECRET and SALESMART_PII_KEY are the"), (
        refused
    )
    assert not (tmp_path / "state" / "jwt-secret").exists()  # no local key was made
    # A database URL without a password: the functions' own reason, in one line, before any
    # function starts (it used to be only "function dashboard exited (code 78)").
    bare = "postgresql://someone@" + settings.database_url.split("@", 1)[1]
    refused = _serve_dashboard_for_a_deployment(settings, tmp_path, SALESMART_DATABASE_URL=bare)
    assert refused.startswith(
        "salesmart: SALESMART_DATABASE_URL has no password; at least 32 bytes"
    ), refused


def test_serve_for_a_deployment_serves_as_one(settings: Settings, tmp_path: Path) -> None:
    port_base = free_port_base()
    output = (tmp_path / "serve.out").open("wb")  # kept: says where a stop hung
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "serve",
            "--function",
            "dashboard",
            "--port-base",
            str(port_base),
        ],
        env={
            **os.environ,
            **TEST_ENV,
            "SALESMART_DATABASE_URL": settings.database_url,
            "SALESMART_STATE_DIR": str(tmp_path / "state"),
            "SALESMART_ENV": "prod",
            "PYTHONFAULTHANDLER": "1",  # SIGABRT writes every thread's stack to the output
        },
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port_base + 3}/login"
    answers: list[requests.Response] = []

    def login_page() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            answers.append(requests.get(url, headers={"Accept": "text/html"}, timeout=2))
        return bool(answers) or process.poll() is not None

    try:
        assert eventually(login_page), "serve never answered"
        assert answers and answers[0].status_code == 200
        # Production cookies: Secure (and so the __Host- name), not the local run's.
        assert "Secure" in answers[0].headers["Set-Cookie"]
        assert answers[0].headers["Set-Cookie"].startswith("__Host-")
        # Its log apart from `up`'s, which one folder may run beside it.
        logs = tmp_path / "state" / "logs"
        assert (logs / "serve" / "dashboard.log").is_file()
        assert not (logs / "dashboard.log").exists()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # its stacks, then it ends
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            process.kill()
            process.wait()
            pytest.fail(
                "serve still ran 30 s after SIGTERM:\n" + (tmp_path / "serve.out").read_text()
            )
        finally:
            output.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SALESMART_PG_MART_SCHEMA": "Marts"},
            "^SALESMART_PG_MART_SCHEMA must be a lower-case PostgreSQL name",
        ),
        (
            {"SALESMART_PG_MART_SCHEMA": "x; drop table raw.loads"},
            "must be a lower-case PostgreSQL name",
        ),
    ],
)
def test_schema_names_every_tool_reads_alike(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings({**TEST_ENV, **env})


def test_the_raw_schema_is_the_one_the_migrations_create(tmp_path: Path) -> None:
    config = tmp_path / "pipeline_config.yaml"
    config.write_text("data_warehouse:\n  postgres:\n    raw_schema: landing_raw\n")
    with pytest.raises(ConfigError, match="raw_schema must be raw"):
        build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # A value from the environment is blamed on the variable, not on the file's key.
        ({"SALESMART_TOKEN_TTL_SECONDS": "abc"}, "SALESMART_TOKEN_TTL_SECONDS must be an integer"),
        ({"SALESMART_TOKEN_TTL_SECONDS": "90000"}, "SALESMART_TOKEN_TTL_SECONDS must be at most"),
        (
            {"SALESMART_BQ_QUERY_TIMEOUT": "abc"},
            "SALESMART_BQ_QUERY_TIMEOUT must be a number of seconds, found 'abc'",
        ),
        ({"SALESMART_BQ_QUERY_TIMEOUT": "0"}, "SALESMART_BQ_QUERY_TIMEOUT must be a positive"),
        ({"SALESMART_BQ_QUERY_TIMEOUT": "-5"}, "SALESMART_BQ_QUERY_TIMEOUT must be a positive"),
        ({"SALESMART_BQ_QUERY_TIMEOUT": "nan"}, "SALESMART_BQ_QUERY_TIMEOUT must be a positive"),
        ({"SALESMART_BQ_MAX_BYTES_BILLED": "0"}, "SALESMART_BQ_MAX_BYTES_BILLED must be >= 1"),
        ({"SALESMART_BCRYPT_ROUNDS": "17"}, "SALESMART_BCRYPT_ROUNDS must be <= 16"),
        # Checked when read: found at the first query, trends_bq went Ready and failed
        # every request with a 500 naming nothing.
        (
            {"SALESMART_BQ_MART_DATASET": "transactions-mart"},
            "SALESMART_BQ_MART_DATASET must be a valid BigQuery dataset name .*"
            "found 'transactions-mart'",
        ),
        (
            {"SALESMART_BQ_WAREHOUSE_DATASET": "raw`; drop"},
            "SALESMART_BQ_WAREHOUSE_DATASET must be a valid BigQuery dataset name",
        ),
        ({"SALESMART_BQ_PROJECT": "My Project"}, "SALESMART_BQ_PROJECT must be a valid BigQuery"),
        ({"GOOGLE_CLOUD_PROJECT": "-x"}, "GOOGLE_CLOUD_PROJECT must be a valid BigQuery project"),
    ],
)
def test_an_overriding_variable_is_named_in_its_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings({**TEST_ENV, **env})


@pytest.mark.parametrize(
    "schema", ["raw", "staging", "auth", "salesmart_meta", "information_schema"]
)
def test_the_marts_are_never_put_beside_raw_rows_or_accounts(schema: str, tmp_path: Path) -> None:
    """The functions' role is granted the whole mart schema (README, least privilege): a
    mart schema of raw or auth handed them clear ids or the accounts; transform built
    there without a word (found by a configuration audit)."""
    with pytest.raises(
        ConfigError,
        match=rf"^SALESMART_PG_MART_SCHEMA must name a schema of its own, not '{schema}'",
    ):
        build_settings({**TEST_ENV, "SALESMART_PG_MART_SCHEMA": schema})
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(f"data_warehouse:\n  postgres:\n    mart_schema: {schema}\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{config}: data_warehouse\.postgres\.mart_schema must name a schema of its own",
    ):
        build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})


def test_the_mart_dataset_is_never_the_warehouse_dataset(tmp_path: Path) -> None:
    config = tmp_path / "pipeline_config.yaml"
    config.write_text("data_warehouse:\n  dataset: sales\ndata_mart:\n  dataset: sales\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{config}: data_mart\.dataset must name a dataset of its own, not the same as"
        r" data_warehouse\.dataset \('sales', 'sales'\): raw and rejected rows never live in",
    ):
        build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})
    # Blamed on the variable that made them equal, each side named as it was given.
    with pytest.raises(
        ConfigError,
        match=r"^SALESMART_BQ_MART_DATASET must name a dataset of its own, not the same as"
        r" data_warehouse\.dataset \('transactions_warehouse', 'transactions_warehouse'\)",
    ):
        build_settings({**TEST_ENV, "SALESMART_BQ_MART_DATASET": "transactions_warehouse"})
    with pytest.raises(
        ConfigError,
        match=r"^SALESMART_BQ_WAREHOUSE_DATASET must name a dataset of its own, not the same"
        r" as data_mart\.dataset",
    ):
        build_settings({**TEST_ENV, "SALESMART_BQ_WAREHOUSE_DATASET": "transactions_mart"})
    # In any case: the local stand-in takes Transactions_Warehouse for transactions_warehouse.
    with pytest.raises(ConfigError, match="'Transactions_Warehouse', 'transactions_warehouse'"):
        build_settings({**TEST_ENV, "SALESMART_BQ_MART_DATASET": "Transactions_Warehouse"})
    settings = build_settings({**TEST_ENV, "SALESMART_BQ_MART_DATASET": "sales_marts"})
    assert settings.bigquery.mart_dataset == "sales_marts"


def test_a_bad_file_value_is_blamed_on_its_key(tmp_path: Path) -> None:
    config = tmp_path / "pipeline_config.yaml"
    env = {**TEST_ENV, "SALESMART_CONFIG": str(config)}
    del env["SALESMART_BCRYPT_ROUNDS"]  # the tests' cheap cost would win over the file
    config.write_text("bigquery:\n  query_timeout_seconds: soon\n")
    with pytest.raises(ConfigError, match=r"bigquery\.query_timeout_seconds must be a number"):
        build_settings(env)
    config.write_text("api:\n  bcrypt_rounds: 3\n")
    with pytest.raises(ConfigError, match=r"api\.bcrypt_rounds must be >= 4"):
        build_settings(env)
    config.write_text("data_mart:\n  dataset: sales-mart\n")
    with pytest.raises(ConfigError, match=r"data_mart\.dataset must be a valid BigQuery dataset"):
        build_settings(env)
    # A key given twice: PyYAML kept the last, and a second section replaced the first
    # one's thresholds with the defaults without a word (found by a configuration audit).
    config.write_text("ingestion:\n  validation:\n    min_price: 50\n    min_price: 5\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{config}: not valid YAML \(the key 'min_price' is given twice,"
        r" line 4, column 5\)$",
    ):
        build_settings(env)
    config.write_text("ingestion:\n  validation:\n    min_price: 50\ningestion:\n  x: 1\n")
    with pytest.raises(ConfigError, match="the key 'ingestion' is given twice, line 4, column 1"):
        build_settings(env)
    # A merge key's values may be overridden: that is no key given twice.
    config.write_text(
        "a: &base\n  min_price: 50\ningestion:\n  validation:\n    <<: *base\n    min_price: 60\n"
    )
    assert build_settings(env).validation.min_price == 60
    # Nor is a merged mapping's own override, used twice through its anchor (PyYAML applies
    # merges in place: a check after that saw the key twice).
    config.write_text(
        "a: {<<: &mid {<<: {min_price: 1}, min_price: 2}}\nb: *mid\n"
        "ingestion:\n  validation:\n    max_quantity: 7\n"
    )
    assert build_settings(env).validation.max_quantity == 7
    # Keys of other types are other keys (1 and '1').
    config.write_text("a: {1: x, '1': y}\n")
    build_settings(env)
    # A file that is not text is named (a bare codec message said nothing of which file).
    config.write_bytes(b"api:\n  issuer: caf\xe9\n")
    # Where a reader finds it: line 2, the 14th byte of "  issuer: caf\xe9".
    where = r"\(line 2, byte 14 of the line\)"
    with pytest.raises(ConfigError, match=rf"^{config}: not UTF-8 text {where}$"):
        build_settings(env)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        # Refused when read: each was found only by a load that had filled one warehouse
        # (BigQuery's NUMERIC keeps 9 decimals; raw.transactions.quantity is an integer).
        (
            "ingestion:\n  validation:\n    max_decimals: 12\n",
            r"ingestion\.validation\.max_decimals must be <= 9, found 12",
        ),
        (
            "ingestion:\n  validation:\n    max_quantity: 10000000000\n",
            r"ingestion\.validation\.max_quantity must be <= 2147483647",
        ),
        # Taken as their Python spellings before: "None", "['Halal']", 1, 2.
        (
            "ingestion:\n  validation:\n    product_prefix:\n",
            r"ingestion\.validation\.product_prefix must be a non-empty string, found None",
        ),
        (
            "ingestion:\n  validation:\n    product_prefix: [Halal]\n",
            r"product_prefix must be a non-empty string, found \['Halal'\]",
        ),
        (
            "ingestion:\n  validation:\n    product_prefix: ' Halal'\n",
            r"product_prefix must not start with a space",
        ),
        (
            "ingestion:\n  validation:\n    max_quantity: true\n",
            r"ingestion\.validation\.max_quantity must be an integer, found True",
        ),
        (
            "ingestion:\n  validation:\n    max_decimals: 2.9\n",
            r"ingestion\.validation\.max_decimals must be an integer, found 2\.9",
        ),
        ("api:\n  jwt_issuer: ''\n", r"api\.jwt_issuer must be a non-empty string, found ''"),
        ("api:\n  jwt_audience:\n", r"api\.jwt_audience must be a non-empty string"),
        ("data_lake:\n  landing:\n", r"data_lake\.landing must be a non-empty string"),
        ("data_warehouse:\n  location: [US]\n", r"data_warehouse\.location must be a non-empty"),
        ("data_warehouse:\n  dataset:\n", r"data_warehouse\.dataset must be a valid BigQuery"),
        ("data_mart:\n  dataset: true\n", r"data_mart\.dataset must be a valid BigQuery .*True"),
        (
            "bigquery:\n  query_timeout_seconds: true\n",
            r"bigquery\.query_timeout_seconds must be a number of seconds, found True",
        ),
        ("api:\n  login_window_seconds: 4294967296\n", r"api\.login_window_seconds must be <="),
        ("api:\n  login_max_failures: 4294967296\n", r"api\.login_max_failures must be <="),
        (
            "ingestion:\n  validation:\n    min_price: 1e15\n",
            r"ingestion\.validation\.min_price must be below 10\^15 .*found 1000000000000000",
        ),
        (
            "ingestion:\n  validation:\n    required_fields: [transaction_id, '']\n",
            r"ingestion\.validation\.required_fields must be a list of column names",
        ),
        (
            "ingestion:\n  validation:\n    required_fields: [transaction_id, ' store']\n",
            r"ingestion\.validation\.required_fields must be a list of column names",
        ),
        # Rounded up to the decimals allowed, the minimum would have 16 digits.
        (
            "ingestion:\n  validation:\n    min_price: '999999999999999.995'\n",
            r"ingestion\.validation\.min_price must be below 10\^15",
        ),
        (
            "ingestion:\n  validation:\n    product_prefix: " + "H" * 501 + "\n",
            r"product_prefix must be at most 500 characters, found 501",
        ),
        # Taken before, unusable after (an audit of the documented extremes): rows no API
        # could name, a query timeout of 0 whole seconds for dbt or one overflowing the
        # client's deadline, a bcrypt cost of days, tokens past the functions' own cap, a
        # schema PostgreSQL keeps for itself.
        (
            "ingestion:\n  validation:\n    product_prefix: '(Halal) '\n",
            r"product_prefix must start with a letter, a digit or a hyphen",
        ),
        (
            "bigquery:\n  query_timeout_seconds: 0.001\n",
            r"bigquery\.query_timeout_seconds must be from 1 to 86400 seconds, found 0\.001",
        ),
        (
            "bigquery:\n  query_timeout_seconds: 1.0e+10\n",
            r"bigquery\.query_timeout_seconds must be from 1 to 86400 seconds",
        ),
        (
            "api:\n  jwt_audience: " + "a" * 257 + "\n",
            r"api\.jwt_audience must be at most 256 characters as a token carries it",
        ),
        (  # 50 characters, 300 in a token (a review: 256 of them made 4,401-byte tokens)
            "api:\n  jwt_issuer: " + "認" * 50 + "\n",
            r"api\.jwt_issuer must be at most 256 characters as a token carries it.*300",
        ),
        (
            "ingestion:\n  validation:\n    min_price: 1.0e+400\n",
            r"min_price must be below 10\^15",
        ),
        (
            "data_warehouse:\n  postgres:\n    mart_schema: pg_marts\n",
            r"mart_schema must not start with pg_",
        ),
        # A misspelt field showed it in clear, unsaid.
        (
            "security:\n  pii_fields: [transaction_id, Product]\n",
            r"security\.pii_fields: 'Product' is not a field; the fields are transaction_id,"
            r" product, ",
        ),
        # Where the file breaks (the error's name alone before).
        (
            "api:\n  jwt_issuer: a\n bcrypt_rounds: 12\n",
            r"not valid YAML \(.*, line 3, column 2\)$",
        ),
    ],
)
def test_a_file_value_of_the_wrong_kind_is_refused_by_its_key(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})


def test_an_unquoted_minimum_price_is_the_number_written(tmp_path: Path) -> None:
    """YAML reads 100000000000000.01 as a float, ...02: a price at the minimum was refused
    as below it (an audit), and 999999999999999.99 refused as "1000000000000000.0"."""
    config = tmp_path / "pipeline_config.yaml"
    for written in ("100000000000000.01", "999999999999999.99", "1_000.25", "10.5"):
        config.write_text(f"ingestion:\n  validation:\n    min_price: {written}\n")
        settings = build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})
        assert settings.validation.min_price == Decimal(written.replace("_", "")), written


def test_values_a_user_writes_that_the_checks_still_take(tmp_path: Path) -> None:
    """What the checks of wrong kinds must not refuse (a review of them found these):
    a masked column added to required_fields, the facts' own columns, unquoted numbers
    where text is meant."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(
        "ingestion:\n  validation:\n    product_prefix: 2024\n"
        "    required_fields: [transaction_id, product, price, quantity, date, customer_id]\n"
        "security:\n  pii_fields: [transaction_id, product, customer_id, sale_date, amount]\n"
        "data_warehouse:\n  project_id: 123456789012\napi:\n  jwt_audience: 12345\n"
    )
    env = {**TEST_ENV, "SALESMART_CONFIG": str(config)}
    env.pop("SALESMART_BQ_PROJECT", None)
    settings = build_settings(env)
    assert settings.validation.product_prefix == "2024"
    assert settings.pii_fields == (
        "transaction_id",
        "product",
        "customer_id",
        "sale_date",
        "amount",
    )
    assert settings.bigquery.project == "123456789012"
    assert settings.jwt_audience == "12345"


def test_a_deployment_command_refuses_the_password_the_functions_refuse(
    settings: Settings, tmp_path: Path
) -> None:
    """The chart's migration hook runs `salesmart migrate` before any Revision: a database
    password the functions would refuse at start fails it there, with their reason."""
    url = "postgresql://someone:abc@" + settings.database_url.split("@", 1)[1]
    done = run_cli(settings, tmp_path, "migrate", SALESMART_ENV="prod", SALESMART_DATABASE_URL=url)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "salesmart: SALESMART_DATABASE_URL has a password of only 3 bytes; at least 32 bytes"
        " are required outside SALESMART_ENV=dev (or a client certificate: sslcert=)"
    )
    # The local command (SALESMART_ENV unset) keeps working with the same URL's server.
    assert run_cli(settings, tmp_path, "migrate").returncode == 0
    # No password in the URL is not a short one: libpq may read it from a .pgpass file.
    given = parse_dsn(settings.database_url)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:{given.user}:{given.password}\n")
    pgpass.chmod(0o600)
    bare = f"postgresql://{given.user}@{given.host}:{given.port}/{given.database}"
    done = run_cli(
        settings,
        tmp_path,
        "migrate",
        SALESMART_ENV="prod",
        SALESMART_DATABASE_URL=bare,
        PGPASSFILE=str(pgpass),
    )
    assert done.returncode == 0, done.stderr
    # A command that does not use PostgreSQL does not judge its URL.
    done = run_cli(
        settings,
        tmp_path,
        "check-marts",
        "--target",
        "bigquery",
        SALESMART_ENV="prod",
        SALESMART_DATABASE_URL=url,
        SALESMART_BQ_ENDPOINT="http://127.0.0.1:9",
        SALESMART_BQ_PROJECT="acme-dw",
    )
    assert "SALESMART_DATABASE_URL" not in done.stderr, done.stderr


MISSPELT_CONFIG = (
    "ingestion:\n  validation:\n    max_decimal: 3\n    min_price: 5\n"
    "data_warehouse:\n  postgres:\n    host: db.internal\n    password: hunter2\n"
    "    mart_shema: marts\n    password hunter3: x\n"
    "security:\n  jwt_secret: abc\n  pii_fields: [product]\n"
    'api:\n  token_ttl: 60\n  "two\\nlines": 1\n  partition_key: x\n'
    "reporting: {}\n"
)


def test_keys_nothing_reads_are_named_with_a_hint(tmp_path: Path) -> None:
    """A misspelt key changed nothing, unsaid; so did a database host or a secret written
    into the file as the original design's configuration had them."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(MISSPELT_CONFIG)
    settings = build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})
    assert settings.validation.min_price == 5  # the keys it knows are read as before
    secret = "is not read: secrets come from the environment or mounted files only"
    assert settings.config_warnings == (
        "ingestion.validation.max_decimal is not a setting;"
        " did you mean ingestion.validation.max_decimals?",
        "data_warehouse.postgres.host is not read: the database is SALESMART_DATABASE_URL",
        f"data_warehouse.postgres.password {secret}",
        "data_warehouse.postgres.mart_shema is not a setting;"
        " did you mean data_warehouse.postgres.mart_schema?",
        f"data_warehouse.postgres.<a key not shown> {secret}",
        f"security.jwt_secret {secret}",
        "api.token_ttl is not a setting; did you mean api.token_ttl_seconds?",
        "api.'two\\nlines' is not a setting",
        "api.partition_key is not a setting",
        "reporting is not a setting",
    )
    # No secret is repeated, whether a value or typed into a key.
    assert not any("hunter" in warning for warning in settings.config_warnings)


@pytest.mark.parametrize(
    ("yaml_text", "section"),
    [
        ("ingestion:\n- validation:\n    product_prefix: Foo\n", "ingestion"),
        ("ingestion:\n  validation: 5\n", "ingestion.validation"),
        ("orchestration: daily\n", "orchestration"),  # the DAG's, checked here too
        ("data_warehouse:\n  postgres: [raw]\n", "data_warehouse.postgres"),
    ],
)
def test_a_section_that_is_no_mapping_is_refused(
    tmp_path: Path, yaml_text: str, section: str
) -> None:
    """A stray `-` made the validation rules the defaults, unsaid (a review found it)."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as refused:
        build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})
    assert str(refused.value) == f"{config}: {section} must be a mapping (a section of keys)"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("api:\n  login_max_failures: 0\n", "api.login_max_failures must be >= 1, found 0"),
        (
            "ingestion:\n  validation:\n    max_decimals: 30\n",
            "ingestion.validation.max_decimals must be <= 9, found 30",
        ),
        ("data_warehouse:\n  location: [1]\n", "data_warehouse.location must be"),
        (
            "data_warehouse:\n  postgres:\n    mart_schema: Marts\n",
            "data_warehouse.postgres.mart_schema must be a lower-case PostgreSQL name",
        ),
        # The DAG's keys: a command took `retries: banana`, and only Airflow's import
        # refused it (an audit; the README said every command refuses it).
        ("orchestration:\n  retries: banana\n", "orchestration.retries must be an integer"),
        ("orchestration:\n  retries: 101\n", "orchestration.retries must be <= 100"),
        (
            "orchestration:\n  retry_delay_seconds: 0\n",
            "orchestration.retry_delay_seconds must be >= 1",
        ),
        ("orchestration:\n  schedule: 5\n", "orchestration.schedule must be a cron expression"),
        ("orchestration:\n  schedule: ''\n", "orchestration.schedule must be a cron expression"),
    ],
)
def test_a_bad_value_in_the_file_names_the_file(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    """As its warnings do: "api.login_max_failures must be >= 1" named no file, and the one
    at fault may be another than the user thinks (SALESMART_CONFIG)."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as refused:
        build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})
    assert str(refused.value).startswith(f"{config}: {message}")


def test_a_bad_environment_value_names_the_variable_not_the_file(tmp_path: Path) -> None:
    config = tmp_path / "pipeline_config.yaml"
    config.write_text("api:\n  token_ttl_seconds: 60\n")
    with pytest.raises(ConfigError) as refused:
        build_settings(
            {**TEST_ENV, "SALESMART_CONFIG": str(config), "SALESMART_TOKEN_TTL_SECONDS": "0"}
        )
    assert str(refused.value) == "SALESMART_TOKEN_TTL_SECONDS must be >= 1, found 0"


def test_the_shipped_config_has_no_key_nothing_reads() -> None:
    assert build_settings(dict(TEST_ENV)).config_warnings == ()
    chart_copy = Path(__file__).resolve().parents[2] / "helm/salesmart/files/pipeline_config.yaml"
    env = {**TEST_ENV, "SALESMART_CONFIG": str(chart_copy)}
    assert build_settings(env).config_warnings == ()


def test_a_command_warns_of_keys_nothing_reads_once(tmp_path: Path) -> None:
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(MISSPELT_CONFIG)
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", "--rows", "5", "--out", str(out)],
        env={**os.environ, **TEST_ENV, "SALESMART_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 10, result.stderr
    assert warnings[0] == (
        f"salesmart: warning: {config}: ingestion.validation.max_decimal is not a setting;"
        " did you mean ingestion.validation.max_decimals?"
    )


def test_a_function_logs_keys_nothing_reads_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from common.config import get_settings
    from common.local_run import start_function

    config = tmp_path / "pipeline_config.yaml"
    config.write_text(MISSPELT_CONFIG)
    monkeypatch.setenv("SALESMART_CONFIG", str(config))
    served: list[Settings] = []

    def create(settings: Settings) -> FunctionApp:
        served.append(settings)
        return FunctionApp("token", secure_transport=False, openapi=dict)

    get_settings.cache_clear()
    try:
        start_function("token", create)
    finally:
        get_settings.cache_clear()
    (settings,) = served
    assert len(settings.config_warnings) == 10
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["message"] == "config keys not read"
    assert line["severity"] == "WARNING"
    assert line["function"] == "token"
    assert line["warnings"] == list(settings.config_warnings)


def test_a_secret_typed_into_a_key_is_not_repeated(tmp_path: Path) -> None:
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(
        "SALESMART_PII_KEY: x\n"
        "security:\n  jwt_key=fedcba9876543210fedcba: 1\n  SALESMART_PII_KEY=0123456789abcdef: 1\n"
        "api:\n  signing_key: x\n  hmac_secret: x\n"
    )
    settings = build_settings({**TEST_ENV, "SALESMART_CONFIG": str(config)})
    secret = "is not read: secrets come from the environment or mounted files only"
    assert settings.config_warnings == (
        f"SALESMART_PII_KEY {secret}",
        f"security.<a key not shown> {secret}",
        f"security.<a key not shown> {secret}",
        f"api.signing_key {secret}",
        f"api.hmac_secret {secret}",
    )


def test_dbt_gets_the_credentials_path_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It runs in a folder of its own: a relative path was no file there (a review)."""
    import dataclasses

    from pipeline.transform import dbt_environment

    monkeypatch.chdir(tmp_path)
    settings = build_settings(
        {
            **TEST_ENV,
            "SALESMART_BQ_PROJECT": "my-analytics-prod",
            "GOOGLE_APPLICATION_CREDENTIALS": "keys/bq.json",
        }
    )
    settings = dataclasses.replace(settings, state_dir=tmp_path / "state")
    env, _ = dbt_environment("bigquery", settings)
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == str(tmp_path / "keys" / "bq.json")
