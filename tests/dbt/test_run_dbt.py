"""run_dbt's contract with a stand-in dbt executable (fast, no warehouse): the command line,
the child's environment, counts, one-line failures, secrets never shown, timeouts; and the
dbt project's own conventions (read from its files)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from common.config import REPO_ROOT, Settings, ValidationRules, build_settings
from common.process import stopped_by_signals
from pipeline import expand_targets, transform
from pipeline.transform import (
    PROJECT_DIR,
    TransformError,
    dbt_environment,
    run_dbt,
)
from tests.conftest import SAMPLE_CSV, eventually, process_alive

PASSWORD = "pw-Zq8-not-for-logs"
DSN = f"postgresql://salesmart:{PASSWORD}@127.0.0.1:5999/warehouse?sslmode=require"

# A stand-in for `dbt`: records its arguments and environment, prints a few lines (one
# with the password, as a careless driver might), writes run_results.json, exits.
FAKE_DBT = r"""
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
target = Path(args[args.index("--target-path") + 1])
target.mkdir(parents=True, exist_ok=True)
Path(os.environ["FAKE_DBT_CAPTURE"]).write_text(json.dumps({"args": args, "env": dict(os.environ)}))
mode = os.environ.get("FAKE_DBT_MODE", "ok")
print("00:00:01  Running with dbt=1.11.0", flush=True)
print("00:00:02  connecting with " + os.environ.get("DBT_ENV_SECRET_PG_PASSWORD", "-"), flush=True)
if mode == "hang-with-child":  # a child of its own that shrugs off Ctrl-C, output closed
    import signal, subprocess
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT,"
         " signal.SIG_IGN); time.sleep(60)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    Path(os.environ["FAKE_DBT_CAPTURE"] + ".child").write_text(str(child.pid))
    mode = "hang"
if mode == "hang":
    try:
        time.sleep(60)
    except KeyboardInterrupt:  # asked to stop as by Ctrl-C: dbt cancels its queries
        Path(os.environ["FAKE_DBT_CAPTURE"] + ".stopped").write_text("SIGINT")
        sys.exit(130)
if mode == "crash":
    print("00:00:03  Encountered an error:", flush=True)
    if os.environ.get("FAKE_DBT_ECHO") == "careless":  # a driver quoting it every which way
        from urllib.parse import quote, quote_plus
        pw = os.environ.get("DBT_ENV_SECRET_PG_PASSWORD", "")
        print(f"00:00:03  Database Error: tried {pw}. then {pw}-replica, url {quote(pw, safe='')}"
              f" plus {quote_plus(pw)} lower {quote(pw, safe='').replace('%2F', '%2f')}",
              flush=True)
    print("00:00:03  Database Error: connection to server at \"127.0.0.1\", port 5999"
          " failed: password authentication failed (password="
          + os.environ.get("DBT_ENV_SECRET_PG_PASSWORD", "") + ")", flush=True)
    sys.exit(2)
def r(uid, status, failures=None):
    return {"unique_id": uid, "status": status, "failures": failures}
results = [
    r("model.salesmart.stg_transactions", "success"),
    r("model.salesmart.pg_sales", "success"),
    r("model.salesmart.summary_sales", "success" if mode == "ok" else "skipped"),
    r("test.salesmart.unique_pg_sales_transaction_id.0a1b2c3d4e", "pass", 0),
    r("test.salesmart.not_null_pg_sales_amount.1b2c3d4e5f", "warn" if mode == "ok" else "fail", 2),
    r("unit_test.salesmart.summary_sales.summary_sales_sample_october", "pass"),
]
if mode == "fail":
    results.append(r("model.salesmart.other_model", "error"))
(target / "run_results.json").write_text(json.dumps({"results": results}))
sys.exit(0 if mode == "ok" else 1)
"""


@pytest.fixture
def fake_dbt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    exe = tmp_path / "fake-dbt"
    exe.write_text(f"#!{sys.executable}\n{FAKE_DBT}")
    exe.chmod(0o755)
    capture = tmp_path / "capture.json"
    monkeypatch.setenv("SALESMART_DBT", str(exe))
    monkeypatch.setenv("FAKE_DBT_CAPTURE", str(capture))
    yield capture


@pytest.fixture
def pg_settings(tmp_path: Path) -> Settings:
    return build_settings(
        {
            **os.environ,
            "SALESMART_DATABASE_URL": DSN,
            "SALESMART_STATE_DIR": str(tmp_path / "state"),
            "SALESMART_PG_MART_SCHEMA": "analytics",
        }
    )


def captured(capture: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(capture.read_text())
    return data


def test_command_line_environment_and_counts(
    fake_dbt: Path, pg_settings: Settings, tmp_path: Path
) -> None:
    lines: list[str] = []
    result = run_dbt(
        "postgres", pg_settings, select=["pg_sales", "summary_sales"], on_line=lines.append
    )
    seen = captured(fake_dbt)
    work = (tmp_path / "state" / "dbt" / "postgres").resolve()
    args = seen["args"]
    assert args[0] == "build"
    assert args[args.index("--project-dir") + 1] == str(PROJECT_DIR)
    assert args[args.index("--profiles-dir") + 1] == str(PROJECT_DIR)
    assert args[args.index("--target") + 1] == "postgres"
    assert args[args.index("--target-path") + 1] == str(work / "target")
    assert args[args.index("--log-path") + 1] == str(work / "logs")
    assert args[args.index("--select") + 1 :][:2] == ["pg_sales", "summary_sales"]

    env = seen["env"]
    assert env["SALESMART_PG_HOST"] == "127.0.0.1"
    assert env["SALESMART_PG_PORT"] == "5999"
    assert env["SALESMART_PG_USER"] == "salesmart"
    assert env["SALESMART_PG_DBNAME"] == "warehouse"
    assert env["SALESMART_PG_SSLMODE"] == "require"
    assert env["SALESMART_PG_MART_SCHEMA"] == "analytics"
    assert env["SALESMART_PG_RAW_SCHEMA"] == "raw"
    assert env["DBT_ENV_SECRET_PG_PASSWORD"] == PASSWORD
    assert env["DO_NOT_TRACK"] == "1"
    # dbt gets what its profile reads, and no other secret: not the DSN, keys or tokens.
    for withheld in ("SALESMART_DATABASE_URL", "SALESMART_PII_KEY", "SALESMART_JWT_SECRET"):
        assert withheld not in env
    assert not any(PASSWORD in v for k, v in env.items() if k != "DBT_ENV_SECRET_PG_PASSWORD")

    assert result.success
    assert (result.models, result.data_tests, result.unit_tests) == (3, 2, 1)
    assert result.warnings == 1
    assert result.tests == 3
    assert result.summary().startswith("3 models, 2 data tests, 1 unit tests in ")
    # Progress lines come without dbt's timestamps and without the password.
    assert "Running with dbt=1.11.0" in lines
    assert not any(PASSWORD in line for line in lines)


def test_failure_is_one_line_naming_the_failing_nodes(
    fake_dbt: Path, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DBT_MODE", "fail")
    with pytest.raises(TransformError) as caught:
        run_dbt("postgres", pg_settings)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("dbt build on postgres 2 of 7 nodes failed: ")
    assert "test not_null_pg_sales_amount (fail, 2 rows)" in message
    assert "model other_model (error)" in message
    assert "dbt.log" in message

    result = run_dbt("postgres", pg_settings, check=False)
    assert not result.success
    assert result.skipped == 1
    assert result.failed == (
        "test not_null_pg_sales_amount (fail, 2 rows)",
        "model other_model (error)",
    )


def test_a_crash_gives_dbt_reason_without_the_password(
    fake_dbt: Path, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DBT_MODE", "crash")
    with pytest.raises(TransformError) as caught:
        run_dbt("postgres", pg_settings)
    message = str(caught.value)
    assert "exited with code 2" in message
    assert "password authentication failed" in message
    assert PASSWORD not in message
    assert "\n" not in message


def test_a_password_that_is_also_a_word_hides_only_what_dbt_printed(
    fake_dbt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password ``postgres`` is also the target's name: before, the one-line reason read
    "dbt build on ***** exited ..." and the log's path was starred out too."""
    monkeypatch.setenv("FAKE_DBT_MODE", "crash")
    settings = build_settings(
        {
            **os.environ,
            "SALESMART_DATABASE_URL": "postgresql://salesmart:postgres@127.0.0.1:5999/warehouse",
            "SALESMART_STATE_DIR": str(tmp_path / "state"),
        }
    )
    with pytest.raises(TransformError) as caught:
        run_dbt("postgres", settings, work_dir=tmp_path / "work")
    message = str(caught.value)
    assert message.startswith("dbt build on postgres exited with code 2: "), message
    assert message.endswith(f"(log: {tmp_path / 'work' / 'logs' / 'dbt.log'})"), message
    assert "(password=*****)" in message  # what dbt printed stays hidden


def test_a_long_password_is_hidden_wherever_dbt_prints_it(
    fake_dbt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before a sentence's full stop, before ``-replica``, URL-encoded: never in clear."""
    password = "p@ss/Word 32-bytes-long-enough.x"
    monkeypatch.setenv("FAKE_DBT_MODE", "crash")
    monkeypatch.setenv("FAKE_DBT_ECHO", "careless")
    settings = build_settings(
        {
            **os.environ,
            "SALESMART_DATABASE_URL": f"postgresql://salesmart:{quote(password, safe='')}"
            "@127.0.0.1:5999/w",
            "SALESMART_STATE_DIR": str(tmp_path / "state"),
        }
    )
    seen: list[str] = []
    with pytest.raises(TransformError) as caught:
        run_dbt("postgres", settings, work_dir=tmp_path / "work", on_line=seen.append)
    shown = "\n".join([str(caught.value), *seen])
    assert "tried *****. then *****-replica, url ***** plus ***** lower *****" in shown, shown
    assert password not in shown and quote(password, safe="") not in shown


@pytest.mark.parametrize("password", ["1", "p", "0.0"])
def test_a_short_password_is_hidden_without_garbling_the_reason(
    password: str, fake_dbt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the password where it stands alone is starred: before, the password ``1`` made
    the host ``*****27.0.0.*****`` and ``p`` made ``*****ort 5999``."""
    monkeypatch.setenv("FAKE_DBT_MODE", "crash")
    settings = build_settings(
        {
            **os.environ,
            "SALESMART_DATABASE_URL": f"postgresql://salesmart:{password}@127.0.0.1:5999/w",
            "SALESMART_STATE_DIR": str(tmp_path / "state"),
        }
    )
    with pytest.raises(TransformError) as caught:
        run_dbt("postgres", settings, work_dir=tmp_path / "work")
    message = str(caught.value)
    assert 'connection to server at "127.0.0.1", port 5999 failed' in message, message
    assert "(password=*****)" in message


def test_a_hanging_dbt_is_stopped(
    fake_dbt: Path, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of time, dbt is asked to stop as by Ctrl-C, which lets it cancel its warehouse
    queries (it was killed outright, leaving them to run on, holding their locks)."""
    monkeypatch.setenv("FAKE_DBT_MODE", "hang")
    with pytest.raises(TransformError, match="did not finish within 1 s"):
        run_dbt("postgres", pg_settings, timeout=1)
    assert Path(f"{fake_dbt}.stopped").read_text() == "SIGINT"


def test_a_dbt_out_of_time_is_gone_with_its_children_when_the_call_returns(
    fake_dbt: Path, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that outlasts Ctrl-C is killed before run_dbt returns: the kill came from
    the timer's thread, which the command did not wait for, so a command ending right
    after left the child running on."""
    monkeypatch.setenv("FAKE_DBT_MODE", "hang-with-child")
    monkeypatch.setattr(transform, "DBT_STOP_GRACE_SECONDS", 2.0)
    with pytest.raises(TransformError, match="did not finish within 1 s"):
        run_dbt("postgres", pg_settings, timeout=1)
    child = int(Path(f"{fake_dbt}.child").read_text())
    assert not process_alive(child), "dbt's child outlived the call"


def test_a_dbt_out_of_time_interrupted_while_its_children_stop_leaves_none(
    fake_dbt: Path, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the children of a dbt out of time have the rest of their grace: the
    call ends at once and takes them along (the timer's thread, which would have killed
    them, dies with the command)."""
    monkeypatch.setenv("FAKE_DBT_MODE", "hang-with-child")
    monkeypatch.setattr(transform, "DBT_STOP_GRACE_SECONDS", 30.0)
    child_file = Path(f"{fake_dbt}.child")
    interrupt = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), stopped_by_signals():
        interrupt.start()
        run_dbt("postgres", pg_settings, timeout=1)
    interrupt.join()
    assert time.monotonic() - started < 20, "the call waited out the grace"
    assert eventually(lambda: not process_alive(int(child_file.read_text())), 5)


def test_a_dbt_whose_starter_is_killed_outright_stops(
    fake_dbt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of `up` or `transform` runs none of their cleanup: a watch in dbt's own
    interpreter asks it to stop as by Ctrl-C once its starter is gone. Before, dbt built on
    for as long as the build took, beside the next run's."""
    monkeypatch.setenv("FAKE_DBT_MODE", "hang")  # would sleep for a minute
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os; from common.config import build_settings;"
            " from pipeline.transform import run_dbt;"
            " run_dbt('postgres', build_settings(dict(os.environ)))",
        ],
        env={**os.environ, "SALESMART_DATABASE_URL": DSN, "SALESMART_STATE_DIR": str(tmp_path)},
        cwd=REPO_ROOT,
    )
    try:
        assert eventually(fake_dbt.exists, 30), "the fake dbt did not start"
        exe = str(tmp_path / "fake-dbt").encode()
        (dbt,) = [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and exe in _cmdline(entry)
        ]
        starter.kill()
        starter.wait()
        assert eventually(lambda: not process_alive(dbt), 10), "dbt outlived its starter"
    finally:
        starter.kill()


def _cmdline(entry: Path) -> list[bytes]:
    try:
        return (entry / "cmdline").read_bytes().split(b"\0")
    except OSError:  # gone meanwhile
        return []


def test_one_run_at_a_time_per_work_directory(
    fake_dbt: Path, pg_settings: Settings, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with (work / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TransformError, match="another dbt run on postgres"):
            run_dbt("postgres", pg_settings, work_dir=work)
    assert run_dbt("postgres", pg_settings, work_dir=work).success


def test_unusable_setups_are_one_line_errors(
    pg_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESMART_DBT", str(tmp_path / "no-such-dbt"))
    with pytest.raises(TransformError, match=r"dbt is not installed .* run 'make install'"):
        run_dbt("postgres", pg_settings)
    empty = tmp_path / "empty.yaml"  # a configuration that names no database
    empty.write_text("{}\n")
    with pytest.raises(TransformError, match="SALESMART_DATABASE_URL"):
        dbt_environment("postgres", build_settings({"SALESMART_CONFIG": str(empty)}))
    with pytest.raises(TransformError, match="unknown dbt target"):
        dbt_environment("snowflake", pg_settings)
    assert expand_targets("all") == ("postgres", "bigquery")
    assert expand_targets("bigquery") == ("bigquery",)
    with pytest.raises(ValueError, match="unknown target 'mysql'"):
        expand_targets("mysql")


@pytest.mark.parametrize(
    ("written", "plain"),
    # Rounded up to max_decimals (2 here): the lowest price a row may have.
    [("1e2", "100.00"), ("0.0000001", "0.01"), ("12.50", "12.50"), ("-0.0", "0.00")],
)
def test_the_minimum_price_reaches_dbt_as_a_plain_decimal(
    tmp_path: Path, written: str, plain: str
) -> None:
    """dbt's rule test takes a plain decimal: YAML's 1e2 (Decimal 1E+2) broke every
    transform after the loads had used it."""
    config = tmp_path / "pipeline_config.yaml"
    config.write_text(f"ingestion:\n  validation:\n    min_price: {written}\n")
    settings = build_settings(
        {"SALESMART_CONFIG": str(config), "SALESMART_BQ_ENDPOINT": "http://127.0.0.1:9050"}
    )
    env, _ = dbt_environment("bigquery", settings)
    assert env["SALESMART_RULE_LOWEST_PRICE"] == plain


def test_bigquery_environment_stand_in_and_real() -> None:
    local = build_settings({"SALESMART_BQ_ENDPOINT": "http://127.0.0.1:9050"})
    env, secrets = dbt_environment("bigquery", local)
    assert env["SALESMART_DBT_BQ_METHOD"] == "oauth-secrets"
    assert env["DBT_ENV_SECRET_BQ_TOKEN"] == "fake-token"
    assert env["SALESMART_BQ_ENDPOINT"] == "http://127.0.0.1:9050"
    assert env["SALESMART_BQ_PROJECT"] == "salesmart-local"
    assert env["SALESMART_BQ_WAREHOUSE_DATASET"] == "transactions_warehouse"
    assert env["SALESMART_BQ_MART_DATASET"] == "transactions_mart"
    assert secrets == []

    real = build_settings(
        {
            "SALESMART_BQ_PROJECT": "acme-analytics",
            "SALESMART_BQ_LOCATION": "EU",
            "GOOGLE_APPLICATION_CREDENTIALS": "/var/run/secrets/bq/key.json",
        }
    )
    env, _ = dbt_environment("bigquery", real)
    assert env["SALESMART_DBT_BQ_METHOD"] == "oauth"  # ADC, which reads the key file
    assert env["SALESMART_BQ_ENDPOINT"] == ""
    assert env["DBT_ENV_SECRET_BQ_TOKEN"] == ""
    assert env["SALESMART_BQ_PROJECT"] == "acme-analytics"
    assert env["SALESMART_BQ_LOCATION"] == "EU"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/bq/key.json"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/c.pem&sslkey=/k.pem",
            {
                "SALESMART_PG_SSLMODE": "verify-full",
                "PGSSLROOTCERT": "/etc/ca.pem",
                "PGSSLCERT": "/c.pem",
                "PGSSLKEY": "/k.pem",
            },
        ),
        ("sslmode=verify-full", {"SALESMART_PG_SSLMODE": "verify-full", "PGSSLROOTCERT": "system"}),
        (
            "sslmode=require&sslcrl=/crl.pem",
            {"SALESMART_PG_SSLMODE": "require", "PGSSLCRL": "/crl.pem"},
        ),
    ],
)
def test_dbt_connects_with_the_same_tls_options_as_everything_else(
    query: str, expected: dict[str, str]
) -> None:
    """The DSN's certificate files reach dbt too (found by a review: only sslmode did, so
    ``verify-full`` with a CA file failed in ``transform`` alone)."""
    dsn = f"postgresql://u:p@db.internal:5432/sales?{query}"
    env, _ = dbt_environment("postgres", build_settings({"SALESMART_DATABASE_URL": dsn}))
    tls = {k: v for k, v in env.items() if k.startswith("PGSSL") or k == "SALESMART_PG_SSLMODE"}
    assert tls == expected


# -- the dbt project's conventions ---------------------------------------------------------
def test_the_fact_table_is_one_model_under_two_names() -> None:
    for name in ("pg_sales", "fact_sales"):
        text = (PROJECT_DIR / "models" / "marts" / f"{name}.sql").read_text()
        assert text.rstrip().endswith("{{ sales_fact() }}")
    assert (
        "enabled=target.type == 'postgres'"
        in (PROJECT_DIR / "models" / "marts" / "pg_sales.sql").read_text()
    )
    assert (
        "enabled=target.type == 'bigquery'"
        in (PROJECT_DIR / "models" / "marts" / "fact_sales.sql").read_text()
    )
    # Their description and tests too: one spec, given to both (a YAML anchor).
    models = _model_specs()
    assert models["pg_sales"] == {**models["fact_sales"], "name": "pg_sales"}
    unit_tests = [u for u in _unit_tests() if u["model"] in ("pg_sales", "fact_sales")]
    assert len(unit_tests) == 2
    assert unit_tests[0]["given"] == unit_tests[1]["given"]
    assert unit_tests[0]["expect"] == unit_tests[1]["expect"]


def _specs() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in (PROJECT_DIR / "models").rglob("*.yml")]


def _model_specs() -> dict[str, dict[str, Any]]:
    return {model["name"]: model for spec in _specs() for model in spec.get("models", [])}


def _unit_tests() -> list[dict[str, Any]]:
    return [unit for spec in _specs() for unit in spec.get("unit_tests", [])]


def test_each_model_states_its_grain_tests_its_key_and_has_unit_tests() -> None:
    models = sorted(p.stem for p in (PROJECT_DIR / "models").rglob("*.sql"))
    assert models == ["fact_sales", "pg_sales", "stg_transactions", "summary_sales"]
    specs = _model_specs()
    assert sorted(specs) == models  # each documented, once
    for name, model in specs.items():
        assert model["description"].startswith("One row per "), name
        unit_tests = [u for u in _unit_tests() if u["model"] == name]
        assert unit_tests and all(u["given"] and u["expect"]["rows"] for u in unit_tests), name
        key_tests: list[Any] = []
        for column in model["columns"]:
            if column["name"] == "transaction_id":  # "unique", or {"unique": {"config": ...}}
                key_tests = [
                    t if isinstance(t, str) else next(iter(t)) for t in column["data_tests"]
                ]
        if name == "summary_sales":
            key_tests = [t.get("test_name") for t in model["data_tests"] if isinstance(t, dict)]
            assert "unique_combination_of_columns" in key_tests
        else:
            assert "unique" in key_tests and "not_null" in key_tests, name


def test_the_loading_rules_default_to_the_settings_defaults() -> None:
    """A dbt run by hand checks the rows against the same thresholds as `transform`, whose
    values come from the settings (``ValidationRules``)."""
    macro = (PROJECT_DIR / "macros" / "loading_rules.sql").read_text()
    defaults = dict(re.findall(r"env_var\('SALESMART_RULE_(\w+)', '([^']*)'\)", macro))
    rules = ValidationRules()
    assert defaults == {
        "PRODUCT_PREFIX": rules.product_prefix,
        "LOWEST_PRICE": format(rules.lowest_price, "f"),
        "MAX_DECIMALS": str(rules.max_decimals),
        "MAX_QUANTITY": str(rules.max_quantity),
    }


def test_connection_values_come_from_the_environment() -> None:
    profile = yaml.safe_load((PROJECT_DIR / "profiles.yml").read_text())["salesmart"]
    assert set(profile["outputs"]) == {"postgres", "bigquery"}
    fixed = {
        "type",
        "connect_timeout",
        "retries",
        "job_execution_timeout_seconds",
        "job_retries",
        "priority",
    }
    for name, output in profile["outputs"].items():
        for key, value in output.items():
            if key not in fixed:
                assert "env_var(" in str(value), f"{name}.{key} is not from the environment"
    project = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["flags"]["send_anonymous_usage_stats"] is False
    assert not (PROJECT_DIR / "packages.yml").exists()  # nothing is downloaded at run time


def test_dbt_is_stopped_when_its_bigquery_stand_in_goes_away(tmp_path: Path) -> None:
    """`up`'s stand-in ends with `up`: a transform beside it retried its jobs for their
    whole timeout (600 s, twice) and then blamed two tests (an audit). Now dbt is stopped
    once the stand-in has refused connections for STAND_IN_GONE_SECONDS, and says why."""
    from pipeline.ingest_bigquery import ingest_bigquery
    from tests.bigquery.conftest import running_stand_in, settings_for

    with running_stand_in() as stand_in:
        settings = settings_for(stand_in.endpoint)
        ingest_bigquery(SAMPLE_CSV, settings)
        outcome: list[object] = []
        first_line = threading.Event()

        def on_line(line: str) -> None:
            if " START " in line:  # its first node running: dbt's jobs wait on the stand-in
                first_line.set()

        def build() -> None:
            try:
                outcome.append(
                    run_dbt(
                        "bigquery",
                        settings,
                        work_dir=tmp_path / "work",
                        on_line=on_line,
                    )
                )
            except BaseException as exc:
                outcome.append(exc)

        builder = threading.Thread(target=build)
        builder.start()
        assert first_line.wait(120), "dbt printed nothing"
        stand_in.process.kill()  # as `up`'s ends with it
        started = time.monotonic()
        builder.join(
            timeout=transform.STAND_IN_GONE_SECONDS + transform.DBT_STOP_GRACE_SECONDS + 60
        )
        assert not builder.is_alive(), "dbt still waits for the stand-in"
    (error,) = outcome
    assert isinstance(error, TransformError), error
    assert f"the BigQuery stand-in at {stand_in.endpoint} stopped answering" in str(error)
    assert time.monotonic() - started < 120


def test_dbt_failing_on_its_own_while_the_stand_in_refuses_says_so(tmp_path: Path) -> None:
    """A stand-in `up` restarted under a build: dbt gave up before the watch's 10 s, and its
    last lines, urllib3's, cut mid-URL, were the whole reason (a resilience audit). Fault
    injected: a stand-in for dbt that fails as dbt did (the real one recovers or waits,
    depending on the moment), beside an endpoint nothing listens on."""
    import collections

    from pipeline.netutil import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    fails_like_dbt = [
        sys.executable,
        "-c",
        'import time; time.sleep(2.5); print("Database Error | HTTPConnectionPool(host="); '
        "raise SystemExit(2)",
    ]
    tail: collections.deque[str] = collections.deque(maxlen=20)
    returncode, stopped, reason = transform._run(
        fails_like_dbt, dict(os.environ), tmp_path, [], tail, None, 60, endpoint
    )
    assert (returncode, stopped) == (2, "")  # not stopped: run_dbt says it after any node's
    assert reason.startswith(
        f"failed: the BigQuery stand-in at {endpoint} refused connections meanwhile"
    ), reason
    # Without a stand-in's refusal, the reason stays dbt's own (run_dbt shows its lines).
    assert transform._run(fails_like_dbt, dict(os.environ), tmp_path, [], tail, None, 60) == (
        2,
        "",
        "",
    )
