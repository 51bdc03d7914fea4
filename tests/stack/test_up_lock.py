"""Whether ``salesmart up`` runs in a folder: its lock decides, not what it wrote (``up.pid``
and ``endpoints.json`` stay behind when it is killed outright, and the pid may be given to
another process: after a container restart, pids start over)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import ConfigError, build_settings, get_settings
from common.local_run import (
    ENDPOINTS_FILE,
    UP_LOCK_FILE,
    UP_PID_FILE,
    running_stack,
    serving_settings,
)
from pipeline.runtime import cli_settings, share_up_keys
from pipeline.stack import _hold_up_lock

ENDPOINTS = {"postgres": "postgresql://salesmart@127.0.0.1:1/salesmart", "token": "http://x"}


def _left_behind(folder: Path) -> None:
    """What a killed ``up`` leaves, its pid now a live process's (this one's)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ENDPOINTS_FILE).write_text(json.dumps(ENDPOINTS))
    (folder / UP_PID_FILE).write_text(f"{os.getpid()}\n")
    (folder / UP_LOCK_FILE).touch()


def test_files_a_killed_up_left_do_not_count_as_a_running_stack(tmp_path: Path) -> None:
    state = tmp_path / ".salesmart"
    _left_behind(state)
    settings = build_settings({**os.environ, "SALESMART_STATE_DIR": str(state)})
    assert running_stack(settings) is None
    with (state / UP_LOCK_FILE).open("rb") as held:  # as a live up holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert running_stack(settings) == ENDPOINTS


def test_up_takes_its_lock_over_a_command_asking_at_that_moment(tmp_path: Path) -> None:
    """``running_stack`` takes the lock shared for a moment; an ``up`` starting just then
    must not be told another ``up`` is starting."""
    (tmp_path / UP_LOCK_FILE).touch()
    asking = (tmp_path / UP_LOCK_FILE).open("rb")
    fcntl.flock(asking, fcntl.LOCK_SH | fcntl.LOCK_NB)
    done_asking = threading.Timer(0.1, asking.close)  # closing releases it
    done_asking.start()
    try:
        handle = _hold_up_lock(tmp_path)
        handle.close()
    finally:
        done_asking.join()


@contextlib.contextmanager
def _held_as_a_live_up(state: Path) -> Iterator[None]:
    """``state``'s up lock, held as a live `up` holds it."""
    (state / UP_LOCK_FILE).touch()
    with (state / UP_LOCK_FILE).open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def test_commands_beside_a_live_up_use_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` given its keys in the environment; a command run beside it without them masks
    ids with up's PII key, not with the folder's own local one."""
    state = tmp_path / ".salesmart"
    for name in ("SALESMART_PII_KEY", "SALESMART_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SALESMART_STATE_DIR", str(state))
    up_settings = build_settings(
        {**os.environ, "SALESMART_PII_KEY": "p" * 40, "SALESMART_JWT_SECRET": "j" * 40}
    )
    keys_file = share_up_keys(up_settings)
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    get_settings.cache_clear()
    try:
        with _held_as_a_live_up(state):
            beside = cli_settings()
            assert (beside.pii_key, beside.jwt_secret) == ("p" * 40, "j" * 40)
        # The up is gone (killed: its file stayed): the folder's own keys again.
        alone = cli_settings()
        assert alone.pii_key == (state / "pii-key").read_text().strip() != "p" * 40
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "uses_postgres", "uses_bigquery"),
    [
        ({}, True, True),
        ({"SALESMART_BQ_PROJECT": "my-project"}, True, False),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "/secrets/key.json"}, True, False),
        ({"SALESMART_ENV": "prod", "SALESMART_PII_KEY": "p" * 40}, False, False),
    ],
    ids=["local", "real-bigquery-project", "real-bigquery-key-file", "deployment"],
)
def test_what_commands_beside_a_live_up_take_from_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    uses_postgres: bool,
    uses_bigquery: bool,
) -> None:
    """Beside a live `up`, a command uses its services unless told otherwise: a real
    BigQuery configured in the command's environment wins over up's stand-in, and a
    deployment's command (SALESMART_ENV) never falls back on the local run's services."""
    state = tmp_path / ".salesmart"
    state.mkdir()
    for name in (
        "SALESMART_DATABASE_URL",
        "SALESMART_BQ_ENDPOINT",
        "SALESMART_BQ_PROJECT",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SALESMART_ENV",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SALESMART_STATE_DIR", str(state))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stand_in = "http://127.0.0.1:9050"
    (state / ENDPOINTS_FILE).write_text(json.dumps({**ENDPOINTS, "bigquery": stand_in}))
    get_settings.cache_clear()
    try:
        with _held_as_a_live_up(state):
            beside = cli_settings()
    finally:
        get_settings.cache_clear()
    assert (beside.database_url == ENDPOINTS["postgres"]) is uses_postgres
    assert (beside.bigquery.api_endpoint == stand_in) is uses_bigquery
    if not uses_postgres:
        assert beside.database_url == ""


@pytest.mark.parametrize(
    ("env", "takes_from_up"),
    [
        ({"SALESMART_ENV": "dev"}, True),
        ({}, False),  # unset: a deployment's function, given everything or refusing to start
        ({"SALESMART_ENV": "prod"}, False),
    ],
    ids=["local-run", "unset", "deployment"],
)
def test_what_a_local_function_beside_a_live_up_takes_from_it(
    tmp_path: Path, env: dict[str, str], takes_from_up: bool
) -> None:
    """A function started by hand (``SALESMART_ENV=dev functions-framework ...``) in the
    folder of a live `up` serves its data with its keys; a deployment's never looks."""
    state = tmp_path / ".salesmart"
    state.mkdir()
    stand_in = "http://127.0.0.1:9050"
    (state / ENDPOINTS_FILE).write_text(json.dumps({**ENDPOINTS, "bigquery": stand_in}))
    up_keys = {"SALESMART_PII_KEY": "p" * 40, "SALESMART_JWT_SECRET": "j" * 40}
    share_up_keys(build_settings({**up_keys, "SALESMART_STATE_DIR": str(state)}))
    settings = build_settings({**env, "SALESMART_STATE_DIR": str(state)})
    with _held_as_a_live_up(state):
        serving = serving_settings(settings)
    taken = (serving.database_url, serving.bigquery.api_endpoint, serving.jwt_secret)
    if takes_from_up:
        assert taken == (ENDPOINTS["postgres"], stand_in, "j" * 40)
        assert serving.pii_key == "p" * 40
    else:
        assert serving is settings
    # What its environment gives wins; with no live up, nothing is taken.
    given = build_settings(
        {**env, "SALESMART_STATE_DIR": str(state), "SALESMART_JWT_SECRET": "g" * 40}
    )
    with _held_as_a_live_up(state):
        assert serving_settings(given).jwt_secret == "g" * 40
    alone = serving_settings(settings)  # no live up: nothing of its is taken
    if takes_from_up:
        assert alone.database_url == "" and alone.bigquery.api_endpoint != stand_in
        # ... but its keys are never none: the folder's own, as the commands use them.
        assert alone.jwt_secret == (state / "jwt-secret").read_text().strip() != "j" * 40
        assert alone.pii_key == (state / "pii-key").read_text().strip() != "p" * 40
        assert len(alone.jwt_secret) >= 32
        assert serving_settings(settings).jwt_secret == alone.jwt_secret  # kept, not remade
    else:
        assert alone is settings


def test_a_local_function_with_no_key_and_no_folder_to_keep_one_refuses_to_start(
    tmp_path: Path,
) -> None:
    """Before, it served with empty keys: tokens signed with b"" that anyone can forge."""
    blocked = tmp_path / "file"
    blocked.write_text("")  # a state "folder" that cannot be made
    settings = build_settings({"SALESMART_ENV": "dev", "SALESMART_STATE_DIR": str(blocked / "s")})
    with pytest.raises(ConfigError, match="SALESMART_JWT_SECRET is not set and no local key"):
        serving_settings(settings)
    with pytest.raises(ConfigError, match="SALESMART_JWT_SECRET is empty"):
        settings.require_secrets()  # and no path with an empty key gets past the start
    build_settings(
        {"SALESMART_ENV": "dev", "SALESMART_JWT_SECRET": "short", "SALESMART_PII_KEY": "k"}
    ).require_secrets()  # any length locally
