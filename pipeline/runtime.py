"""Where local commands find their services and secrets.

Order for each service: the environment (``SALESMART_DATABASE_URL``,
``SALESMART_BQ_ENDPOINT`` or real BigQuery settings) wins; otherwise, while ``salesmart up``
runs in this folder, its ``.salesmart/endpoints.json``; otherwise a command that needs
PostgreSQL starts the embedded server for its own duration.
Local secrets (JWT key, PII key, admin password) are generated once under ``.salesmart/``
(mode 0600) unless the environment provides them. In a deployment (``SALESMART_ENV`` set to
other than ``dev``: the chart's Job, the Airflow workers) a command makes none of that up: a
missing PII key, database URL or BigQuery project is an error, not a local stand-in that
would load, mask and report success somewhere nobody looks. While ``up`` runs, a command
given no key in its environment uses ``up``'s (``up-keys.json``): ids it loads are masked as
``up``'s are, even when ``up`` was given its keys in the environment (``common.local_run``
reads what a live ``up`` shares; the functions of a local run use it too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import REPO_ROOT, ConfigError, Settings, get_settings, require_database
from common.local_run import (
    LOCAL_KEYS,
    UP_KEYS_FILE,
    ensure_state_dir,
    local_keys,
    running_stack,
    running_up_keys,
    state_dir,
    with_stack_services,
    write_private,
)

if TYPE_CHECKING:
    from pipeline.postgres_embedded import EmbeddedPostgres


def deployment() -> str:
    """``SALESMART_ENV`` when it is set to other than ``dev`` (a deployment), else ``""``.
    Unset is a local command; ``up`` is the local run whatever it says (``serve`` is unless
    it says otherwise)."""
    env = os.environ.get("SALESMART_ENV", "")
    return "" if env in ("", "dev") else env


def require_local(what: str, needed: str) -> None:
    """Refuse to start ``what`` for a deployment: it must be given ``needed``."""
    env = deployment()
    if env:
        raise ConfigError(
            f"{needed} is not set: with SALESMART_ENV={env} it must be given, no {what}"
            " is used instead (unset SALESMART_ENV for a local run)"
        )


def bigquery_state_dir(settings: Settings) -> Path:
    """Where the local BigQuery stand-in keeps its data (shared by `up` and commands)."""
    return ensure_state_dir(settings) / "bigquery"


def share_up_keys(settings: Settings) -> Path:
    """Written by ``up`` once its keys are settled; it removes the file when it stops."""
    path = ensure_state_dir(settings) / UP_KEYS_FILE
    keys = {key: getattr(settings, key) for key in LOCAL_KEYS}
    write_private(path, json.dumps(keys) + "\n")
    return path


_warned_configs: set[Path] = set()


def warn_about_config(settings: Settings) -> None:
    """One stderr line per config key nothing reads (a misspelt one changes nothing), once
    per process and file."""
    if not settings.config_warnings or settings.config_path in _warned_configs:
        return
    _warned_configs.add(settings.config_path)
    for warning in settings.config_warnings:
        print(f"salesmart: warning: {settings.config_path}: {warning}", file=sys.stderr)


def cli_settings(*, with_secrets: bool = True, local_run: bool = False) -> Settings:
    """Settings for local commands: running services and (``with_secrets``) local secrets
    filled in. Commands that need no secret (migrate, users, transform, check-marts)
    leave ``.salesmart`` alone, so
    they also run where it is not writable (a Kubernetes Job). In a deployment (``deployment()``;
    not for ``local_run``: up, serve) no local secret is made: a missing PII key is an error,
    and the JWT key, which these commands do not use, stays unset."""
    settings = get_settings()
    warn_about_config(settings)
    changes: dict[str, Any] = {}
    missing = [key for key in LOCAL_KEYS if with_secrets and not getattr(settings, key)]
    if with_secrets and not local_run and deployment():
        if "pii_key" in missing:
            require_local("local PII key", "SALESMART_PII_KEY")
        # Ids are masked with it for good: as strong a key as the functions demand.
        settings.require_secrets(jwt=False)
        missing = []
    up_keys = running_up_keys(settings) if missing else {}  # read only when needed
    if "pii_key" in missing and not up_keys.get("pii_key"):
        # Ids masked under this folder's key match no other folder's, in a shared warehouse
        # too (SALESMART_DATABASE_URL): said when another folder's keys may have been meant.
        say_if_new_local(
            settings, state_dir(settings) / "pii-key", "a new local PII key", doing="making"
        )
    changes.update(local_keys(settings, missing, up_keys))  # .salesmart/jwt-secret, pii-key
    # A deployment's command is given its services; it never falls back on the local run's.
    stack = running_stack(settings) if local_run or not deployment() else None
    if stack:
        changes.update(with_stack_services(settings, stack))
    return dataclasses.replace(settings, **changes) if changes else settings


def other_folders_state(settings: Settings, cwd: Path | None = None) -> Path | None:
    """The local state of another folder a command started here may have been meant for
    (``salesmart users list`` from ``data/`` while ``up`` runs one level up): a parent's
    ``.salesmart``, else the checkout's. None when the state folder was named
    (``SALESMART_STATE_DIR``) or none is found."""
    if os.environ.get("SALESMART_STATE_DIR"):
        return None
    here = (cwd or Path.cwd()).resolve()
    own = state_dir(settings).resolve()
    for folder in (*here.parents, REPO_ROOT):
        candidate = folder / ".salesmart"
        if candidate.resolve() != own and candidate.is_dir():
            return candidate
    return None


def require_deployment_database(settings: Settings) -> None:
    """For a deployment's command that uses PostgreSQL: the functions' rule on a given
    password, so the migration Job (or a DAG task) fails with their reason before a
    Revision that would not start. No password is accepted (``.pgpass``, IAM)."""
    if deployment() and settings.database_url:
        require_database(settings, password_required=False)


def enter_warehouses(
    stack: contextlib.ExitStack[Any], settings: Settings, targets: Sequence[str]
) -> Settings:
    """``settings`` naming a usable warehouse for each of ``targets`` until ``stack`` closes:
    the embedded PostgreSQL or BigQuery stand-in started when none is configured. Both are
    secured before anything loads: one that cannot be had stops a command with nothing done."""
    if "postgres" in targets:
        dsn = stack.enter_context(postgres_dsn(settings))
        settings = dataclasses.replace(settings, database_url=dsn)
    if "bigquery" in targets:
        from pipeline.bq_emulator import bigquery_for_command, bigquery_needs_emulator

        if bigquery_needs_emulator(settings) and not deployment():  # else refused, unsaid
            say_if_new_local(
                settings, bigquery_state_dir(settings), "a new, empty local BigQuery stand-in"
            )
        settings = stack.enter_context(bigquery_for_command(settings, bigquery_state_dir(settings)))
    return settings


class BigQueryNotAnswering(RuntimeError):
    """BigQuery, asked before a command's work on it, did not answer (or refused)."""


def require_bigquery_answers(settings: Settings, not_done: str = "dbt not started") -> None:
    """One ``SELECT 1`` within ``query_timeout_seconds`` before the work on BigQuery starts
    (``not_done`` says what did not): dbt waits without a limit on a BigQuery that accepts
    connections but never answers (a frozen stand-in kept ``transform`` silent for 15
    minutes, and a DAG task for its whole timeout), and ``ingest`` loaded PostgreSQL before
    finding BigQuery gone, leaving the two apart."""
    from common.bigquery import BigQueryUnavailable, ping

    try:
        ping(settings.bigquery)
    except BigQueryUnavailable as exc:
        # "did not answer" only for a silence: a missing key file or a refusal is a reason.
        silent = exc.reason in ("unreachable", "timeout")
        prefix = f"BigQuery did not answer, {not_done}" if silent else not_done
        raise BigQueryNotAnswering(f"{prefix}: {exc}") from None


def say_if_new_local(settings: Settings, data: Path, what: str, doing: str = "starting") -> None:
    """About to make ``data`` (a local warehouse, a key) in this folder's ``.salesmart``: say
    so when another folder's state is there to be meant instead (``other_folders_state``)."""
    if data.exists():
        return
    notice = other_folders_state(settings)
    if notice is not None:
        print(
            f"salesmart: {doing} {what} in {data.parent}: commands use the"
            f" .salesmart of the folder they start in, and {notice} is another folder's"
            f" (run from {notice.parent} to use it)",
            file=sys.stderr,
            flush=True,
        )


def _folders_embedded(settings: Settings) -> EmbeddedPostgres | None:
    """This folder's embedded server when ``settings.database_url`` names it (a running
    ``up``'s, from its endpoints), else None."""
    data = state_dir(settings) / "postgres"
    from pipeline.postgres_embedded import open_embedded

    try:
        if not data.is_dir():
            return None
        server = open_embedded(data)
    except (OSError, ValueError):  # the folder or its saved port unreadable: not ours to use
        return None
    return server if server.initialized and server.dsn == settings.database_url else None


@contextlib.contextmanager
def postgres_dsn(
    settings: Settings, *, local_run: bool = False, migrated: bool = True
) -> Iterator[str]:
    """A DSN for the command's duration, starting the embedded server when none is set
    (not for a deployment, unless ``local_run``: serve). A server started here is migrated
    first, unless ``migrated`` is False (``salesmart migrate``, which says what it applies)."""
    if settings.database_url:
        from pipeline.migrate import require_known_schema

        if not local_run:
            require_deployment_database(settings)
        shared = None if deployment() else _folders_embedded(settings)
        if shared is None:
            if migrated:  # `migrate` refuses it itself, saying what it would have applied
                require_known_schema(settings.database_url)
            yield settings.database_url
            return
        # `up`'s server (its endpoints.json names it): this command is one of its users, so
        # `up` stopping meanwhile leaves it running until the command ends. Before, `up`
        # stopped it under a load or dbt ("server closed the connection unexpectedly") and
        # under a `serve`, which then answered 503 for good.
        try:
            shared.join()  # starts it if it stopped: asked only then
            if migrated:
                require_known_schema(shared.dsn)
            yield shared.dsn
        finally:
            shared.leave()
        return
    if not local_run:
        require_local("embedded PostgreSQL", "SALESMART_DATABASE_URL")
    from pipeline.migrate import migrate_database
    from pipeline.postgres_embedded import open_embedded

    data = ensure_state_dir(settings) / "postgres"
    say_if_new_local(settings, data, "a new, empty local PostgreSQL")
    server = open_embedded(data)
    try:
        server.join()
        if migrated:
            migrate_database(server.dsn)
        yield server.dsn
    finally:
        server.leave()
