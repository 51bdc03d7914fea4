"""The stand-in's lifecycle, the start-or-not decision, and recovery after a restart."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import bigquery as bq
from common.config import Settings, build_settings
from pipeline.bq_emulator import (
    EmulatorError,
    EmulatorHandle,
    bigquery_for_command,
    bigquery_needs_emulator,
    emulator_command,
    emulator_executable,
    start_emulator,
)
from tests.bigquery.conftest import PROJECT
from tests.conftest import process_alive


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# -- start or not --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "needed"),
    [
        ({}, True),  # a fresh clone: the config's placeholder project, no credentials
        ({"SALESMART_BQ_ENDPOINT": "http://127.0.0.1:9050"}, False),  # one is given
        ({"SALESMART_BQ_PROJECT": "my-analytics-prod"}, False),  # real, through ADC
        ({"GOOGLE_CLOUD_PROJECT": "my-analytics-prod"}, False),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/bq/key.json"}, False),
        (
            {
                "SALESMART_BQ_PROJECT": "my-analytics-prod",
                "GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/bq/key.json",
            },
            False,
        ),
    ],
)
def test_the_stand_in_is_started_only_without_real_bigquery(
    env: dict[str, str], needed: bool
) -> None:
    assert bigquery_needs_emulator(build_settings(env)) is needed


def test_with_real_bigquery_a_command_starts_nothing(tmp_path: Path) -> None:
    settings = build_settings({"SALESMART_BQ_PROJECT": "my-analytics-prod"})
    with bigquery_for_command(settings, tmp_path / "bq") as used:
        assert used is settings
    assert not (tmp_path / "bq").exists()


# -- start failures ------------------------------------------------------------------------
def test_a_missing_installation_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmulatorError, match="make install"):
        start_emulator(tmp_path, PROJECT, executable=tmp_path / "no-such-bqemulator")


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = int(busy.getsockname()[1])
        with pytest.raises(EmulatorError, match=f"127.0.0.1:{port} is in use"):
            start_emulator(tmp_path, PROJECT, port=port)


def test_an_emulator_dying_at_start_is_reported_with_its_reason(tmp_path: Path) -> None:
    fake = tmp_path / "bqemulator"
    fake.write_text('#!/bin/sh\necho "Error: IO Error: disk on fire"\nexit 3\n')
    fake.chmod(0o755)
    with pytest.raises(EmulatorError) as caught:
        start_emulator(tmp_path / "state", PROJECT, executable=fake, ready_timeout=10)
    message = str(caught.value)
    assert "exited with code 3" in message
    assert "disk on fire" in message
    assert str(tmp_path / "state" / "bqemulator.log") in message


def test_an_emulator_never_ready_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "bqemulator"
    fake.write_text("#!/bin/sh\nsleep 30 &\nwait\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(EmulatorError, match="not ready within"):
        start_emulator(tmp_path / "state", PROJECT, executable=fake, ready_timeout=1)
    assert time.monotonic() - started < 8
    assert not (tmp_path / "state" / "bqemulator.pid").exists()


def test_a_second_emulator_on_the_same_data_is_refused(bq_emulator: EmulatorHandle) -> None:
    with pytest.raises(EmulatorError, match="already using"):
        start_emulator(bq_emulator.state_dir, PROJECT)


def test_an_orphaned_emulator_stops_by_itself(tmp_path: Path) -> None:
    """A parent killed without cleanup (SIGKILL) leaves no stand-in behind."""
    (tmp_path / "bq").mkdir()
    command = emulator_command(emulator_executable(), tmp_path / "bq", PROJECT, None)
    launcher = (
        "import os, subprocess, sys, time\n"
        "env = dict(os.environ, SALESMART_WATCHED_PARENT=str(os.getpid()))\n"
        "child = subprocess.Popen(sys.argv[1:], env=env, start_new_session=True,\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", launcher, *command], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while process_alive(child):
        if time.monotonic() > deadline:
            os.killpg(child, signal.SIGKILL)
            pytest.fail("the orphaned emulator kept running")
        time.sleep(0.1)


# -- a real restart ------------------------------------------------------------------------
def test_data_persists_and_callers_recover_after_a_restart(
    bq_emulator: EmulatorHandle, bq_settings: Settings
) -> None:
    """Stop the stand-in under a live client: unavailable at once, then recovery without
    restarting the caller, and the data is still there (persistent mode)."""
    settings = bq_settings.bigquery
    state = bq_emulator.state_dir
    assert (state / "bqemulator.duckdb").exists()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # rows in clear: owner only
    assert stat.S_IMODE(bq_emulator.log_path.stat().st_mode) == 0o600  # as the functions' logs
    assert (state / "bqemulator.pid").read_text().strip() == str(bq_emulator.pid)
    bq.ensure_datasets(settings)
    table = bq.table_ref(settings.warehouse_dataset, "kept", settings)
    bq.run_query(
        f"CREATE TABLE {table} AS SELECT 'still here' AS note", function="test", settings=settings
    )
    client = bq.get_client(settings)
    old_pid = bq_emulator.pid

    bq_emulator.stop()
    assert not bq_emulator.is_running()
    assert not group_alive(old_pid)
    assert not (state / "bqemulator.pid").exists()
    bq_emulator.stop()  # idempotent
    started = time.monotonic()
    with pytest.raises(bq.BigQueryUnavailable) as caught:
        bq.run_query(f"SELECT note FROM {table}", function="test", settings=settings)
    assert caught.value.reason == "unreachable"
    assert time.monotonic() - started < 3

    bq_emulator.restart()
    assert bq_emulator.pid != old_pid
    rows = bq.run_query(f"SELECT note FROM {table}", function="test", settings=settings)
    assert rows == [{"note": "still here"}]
    assert bq.get_client(settings) is client  # the same client recovered by itself


def test_its_log_is_kept_across_starts_and_can_be_emptied_while_it_writes(
    tmp_path: Path,
) -> None:
    """The log was opened anew at each start (the last run's lines lost) and without
    O_APPEND, so `up` could not empty it in place: it grew ~20 MB an hour under load."""
    from pipeline.stack import rotate_log

    state = tmp_path / "bq"
    with start_emulator(state, PROJECT, persistent=False) as first:
        pass
    first_log = first.log_path.read_bytes()
    assert first_log
    with start_emulator(state, PROJECT, persistent=False) as second:
        assert (state / "bqemulator.log.1").read_bytes() == first_log
        settings = build_settings({"SALESMART_BQ_ENDPOINT": second.endpoint}).bigquery
        rotate_log(second.log_path, max_bytes=1)
        assert second.log_path.stat().st_size == 0
        assert (state / "bqemulator.log.1").stat().st_size > 0  # the copy of this run's
        bq.run_query("SELECT 1 AS one", function="test", settings=settings)
        written = second.log_path.read_bytes()
        # Written at the new end: from its first byte, not after a hole of NULs.
        assert written and b"\0" not in written
    bq.reset_clients()


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (("pipeline.cli", "transform", "--target", "bigquery"), "salesmart"),
        # The DAG's dbt tasks: before, a frozen stand-in held one for its whole timeout.
        (("pipeline.dbt_wrapper", "build", "--target", "bigquery"), "salesmart-dbt"),
    ],
)
def test_dbt_is_not_started_on_a_bigquery_that_never_answers(
    tmp_path: Path, command: tuple[str, ...], name: str
) -> None:
    """A stand-in that accepts connections but never answers (frozen): dbt would wait on it
    without a limit; `salesmart transform` and `salesmart-dbt` say so within the query
    timeout instead."""
    with start_emulator(tmp_path / "bq", PROJECT, persistent=False) as frozen:
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", *command],
                env={
                    **os.environ,
                    "SALESMART_BQ_ENDPOINT": frozen.endpoint,
                    "SALESMART_BQ_QUERY_TIMEOUT": "2",
                    "SALESMART_STATE_DIR": str(tmp_path / "state"),
                },
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            waited = time.monotonic() - started
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{name}: BigQuery did not answer, dbt not started:")
    assert "(timeout" in line
    assert waited < 60
    assert not (tmp_path / "state" / "dbt").exists()  # dbt never ran


def test_transform_names_a_missing_key_file_without_calling_it_silence(tmp_path: Path) -> None:
    # Before: "BigQuery did not answer, dbt not started: ... (credentials)": nothing was asked.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESMART_", "GOOGLE_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "transform", "--target", "bigquery"],
        env={
            **env,
            "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"),
            "SALESMART_BQ_PROJECT": "my-project",
            "SALESMART_STATE_DIR": str(tmp_path / "state"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("salesmart: dbt not started: BigQuery unavailable (credentials"), line
    assert "missing.json" in line and "did not answer" not in line


def _post(url: str, body: dict[str, object], **headers: str) -> tuple[int, str]:
    import requests

    response = requests.post(url, json=body, headers=headers, timeout=30)
    return response.status_code, response.text


def test_the_stand_in_reaches_no_file_takes_no_browser_and_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its SQL is DuckDB's: before, any local user (or a web page's simple POST) could read
    and write any file as the user running `up` (`read_text('/etc/shadow')`, `COPY ... TO`),
    and it held the environment's secrets."""
    monkeypatch.setenv("SALESMART_JWT_SECRET", "a-secret-the-stand-in-must-not-hold-" + "x" * 8)
    monkeypatch.setenv("PGPASSWORD", "a-database-password-it-must-not-hold")  # libpq's
    secret = tmp_path / "secret.txt"
    secret.write_text("kept")
    written = tmp_path / "written.csv"
    with start_emulator(tmp_path / "bq", PROJECT, persistent=False) as running:
        url = f"{running.endpoint}/bigquery/v2/projects/{PROJECT}/queries"
        status, body = _post(url, {"query": f"SELECT content FROM read_text('{secret}')"})
        assert "kept" not in body and "Permission Error" in body, (status, body)
        _post(url, {"query": f"COPY (SELECT 'x' AS x) TO '{written}'"})
        assert not written.exists()
        status, body = _post(url, {"query": "SELECT 41 + 1 AS answer"})
        assert status == 200 and '"42"' in body, body  # an ordinary query still runs
        assert _post(url, {"query": "SELECT 1"}, Origin="https://evil.example")[0] == 403
        assert _post(url, {"query": "SELECT 1"}, Host="rebound.example")[0] == 403
        environ = Path(f"/proc/{running.pid}/environ").read_bytes()
        assert b"SALESMART_JWT_SECRET" not in environ and b"PGPASSWORD" not in environ
