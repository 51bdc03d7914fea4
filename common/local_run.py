"""What a live ``salesmart up`` shares with what runs beside it in the same folder.

``up`` writes ``.salesmart/endpoints.json`` (its services) and ``up-keys.json`` (its JWT and
PII keys, 0600) and holds ``up.lock`` while it lives. The ``salesmart`` commands
(``pipeline.runtime.cli_settings``) and the functions of a local run
(:func:`serving_settings`: ``SALESMART_ENV=dev functions-framework ...`` started by hand)
fill what their environment does not give from there, so their tokens, masks and data
agree with ``up``'s. A deployment never looks: its functions are given everything.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from common.config import Settings, get_settings

ENDPOINTS_FILE = "endpoints.json"
UP_PID_FILE = "up.pid"
UP_LOCK_FILE = "up.lock"  # held by a live `up` (flock), from its first step
UP_KEYS_FILE = "up-keys.json"  # a live `up`'s JWT and PII keys (0600), for the commands beside it
#: The keys a local run makes for itself when not given them, by Settings field.
LOCAL_KEYS = ("jwt_secret", "pii_key")


def state_dir(settings: Settings) -> Path:
    return settings.state_dir.resolve()


def up_lock_held(folder: Path) -> bool:
    """Whether a live ``salesmart up`` holds ``folder``'s lock. The kernel releases it however
    ``up`` ends (``kill -9`` too), so, unlike a pid that a later process may be given, it
    does not outlive ``up``. Asked by taking it shared for a moment (``up`` retries its own
    exclusive take over such a moment)."""
    import fcntl

    try:
        handle = (folder / UP_LOCK_FILE).open("rb")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def running_stack(settings: Settings) -> dict[str, Any] | None:
    """The endpoints of a live ``salesmart up`` in this folder, or None (also when what it
    left after being killed says otherwise)."""
    folder = state_dir(settings)
    try:
        endpoints = json.loads((folder / ENDPOINTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(endpoints, dict) or not up_lock_held(folder):
        return None
    return endpoints


def running_up_keys(settings: Settings) -> dict[str, str]:
    """The keys of a live ``up`` in this folder ({} when none runs, or a killed one left the
    file)."""
    folder = state_dir(settings)
    try:
        keys = json.loads((folder / UP_KEYS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(keys, dict) or not up_lock_held(folder):
        return {}
    return {name: value for name, value in keys.items() if isinstance(value, str) and value}


def with_stack_services(settings: Settings, stack: dict[str, Any]) -> dict[str, Any]:
    """The settings changes that point ``settings`` at ``stack``'s services where it names
    none: its PostgreSQL, and its BigQuery stand-in unless real BigQuery is configured."""
    changes: dict[str, Any] = {}
    if not settings.database_url and stack.get("postgres"):
        changes["database_url"] = str(stack["postgres"])
    endpoint = str(stack.get("bigquery") or "")
    if settings.bigquery.needs_stand_in and endpoint.startswith("http://"):
        changes["bigquery"] = dataclasses.replace(settings.bigquery, api_endpoint=endpoint)
    return changes


def serving_settings(settings: Settings | None = None) -> Settings:
    """The settings a function serves with: the environment's. A local function
    (``SALESMART_ENV=dev``) not given a database, a BigQuery stand-in or a key takes the live
    ``up``'s of its folder; with no ``up`` running it stays as it was given."""
    settings = settings or get_settings()
    missing_keys = [key for key in LOCAL_KEYS if not getattr(settings, key)]
    wanting = missing_keys or not settings.database_url or settings.bigquery.needs_stand_in
    if not settings.is_dev or not wanting:
        return settings  # a deployment's function, or one given everything: nothing is read
    stack = running_stack(settings)
    if stack is None:
        return settings
    changes = with_stack_services(settings, stack)
    up_keys = running_up_keys(settings) if missing_keys else {}
    changes.update({key: up_keys[key] for key in missing_keys if key in up_keys})
    return dataclasses.replace(settings, **changes) if changes else settings
