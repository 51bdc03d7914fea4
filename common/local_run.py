"""What a live ``salesmart up`` shares with what runs beside it in the same folder.

``up`` writes ``.salesmart/endpoints.json`` (its services) and ``up-keys.json`` (its JWT and
PII keys, 0600) and holds ``up.lock`` while it lives. The ``salesmart`` commands
(``pipeline.runtime.cli_settings``) and the functions of a local run
(:func:`serving_settings`: ``SALESMART_ENV=dev functions-framework ...`` started by hand)
fill what their environment does not give from there, so their tokens, masks and data
agree with ``up``'s. A deployment never looks: its functions are given everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from common.config import ConfigError, Settings, get_settings

if TYPE_CHECKING:
    from common.http import FunctionApp

App = TypeVar("App", bound="FunctionApp")
EX_CONFIG = 78  # sysexits.h: a setting is missing or wrong

ENDPOINTS_FILE = "endpoints.json"
UP_PID_FILE = "up.pid"
UP_LOCK_FILE = "up.lock"  # held by a live `up` (flock), from its first step
UP_KEYS_FILE = "up-keys.json"  # a live `up`'s JWT and PII keys (0600), for the commands beside it
#: The keys a local run makes for itself when not given them, by Settings field.
LOCAL_KEYS = ("jwt_secret", "pii_key")


def state_dir(settings: Settings) -> Path:
    return settings.state_dir.resolve()


#: Files only a salesmart state folder holds.
_OWN_FILES = ("jwt-secret", "pii-key", "admin-password", "endpoints.json")


def ensure_state_dir(settings: Settings) -> Path:
    """The state folder, owner-only (0700) when made: keys, logs and data live in it. One
    an older release made 0755 is closed to other users (0751: their search bit stays, which
    a run as root gives it for the embedded server's user; a group's access is left as set)."""
    path = state_dir(settings)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # a file by that name: "File exists" named no folder
        raise ConfigError(f"{path}: not a folder (the state folder, SALESMART_STATE_DIR)") from None
    info = require_own_state_dir(path)
    if info is not None:
        ours = path.name == ".salesmart" or any((path / name).exists() for name in _OWN_FILES)
        if ours and info.st_mode & 0o006:
            with contextlib.suppress(OSError):
                path.chmod(stat.S_IMODE(info.st_mode) & ~0o006)
    return path


def require_own_state_dir(path: Path) -> os.stat_result | None:
    """``path``'s status (None when it does not exist), if it is a state folder this user may
    trust: its own and not a shared one (sticky, as /tmp). Keys, endpoints and logs are
    read and written there: another user's ``.salesmart`` (in a shared or world-writable
    checkout) would hand this one their JWT key (tokens they can sign), their endpoints
    (this user's rows loaded into their server) and symlinks to write through."""
    try:
        info = path.stat()
    except OSError:
        return None
    if info.st_uid != os.geteuid():  # whose files this process makes
        raise ConfigError(
            f"{path}: the state folder belongs to another user ({_user_name(info.st_uid)}):"
            " its keys and endpoints are not to be trusted; run in a folder of your own, or"
            " set SALESMART_STATE_DIR to one"
        )
    if info.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"{path}: a shared folder (sticky, as /tmp) cannot be the state folder; set"
            " SALESMART_STATE_DIR to a folder of your own"
        )
    return info


def _trusted(folder: Path) -> bool:
    """Whether what a live ``up`` shares in ``folder`` may be read: not from a folder of
    another user's (their endpoints and keys), which is passed over, not refused (a command
    given everything in its environment never needed it)."""
    try:
        require_own_state_dir(folder)
    except ConfigError:
        return False
    return True


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def open_private(path: Path) -> IO[bytes]:
    """``path`` opened for appending, readable by its owner only (0600): also a file made
    before with other modes (an older release's log)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with contextlib.suppress(OSError):  # another's file (root's): left as it is
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only: a new 0600 file beside it, renamed over it
    once whole. Never rewritten in place: a reader that opened an older, looser file would
    read the new secret through it (and a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover of a killed run may be looser
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def local_secret(settings: Settings, name: str, nbytes: int = 32) -> str:
    """A secret kept in ``.salesmart/<name>``, generated on first use.

    Commands started at the same moment in a fresh folder must agree on it (two PII keys
    would mask the same ids differently): the file appears whole or not at all (written
    aside, then linked into place, which fails if another got there first), and whoever
    loses reads the winner's."""
    path = ensure_state_dir(settings) / name
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
        path.unlink(missing_ok=True)  # left empty by an older version: make it again
    value = secrets.token_urlsafe(nbytes)
    aside = path.with_name(f".{name}.{secrets.token_hex(4)}")
    write_private(aside, value + "\n")
    try:
        os.link(aside, path)
    except FileExistsError:
        value = path.read_text(encoding="utf-8").strip()
    finally:
        aside.unlink(missing_ok=True)
    return value


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
    if not _trusted(folder):
        return None
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
    if not _trusted(folder):
        return {}
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


def start_function(name: str, create: Callable[[Settings], App]) -> App:
    """``create(serving_settings())``, a function module's app. A setting it refuses (a
    missing or short secret outside dev) ends the process with one JSON line and exit 78,
    under ``salesmart-serve`` and a bare ``functions-framework`` alike (no traceback)."""
    import logging

    from common.logging import log_event

    try:
        settings = serving_settings()
        if settings.config_warnings:  # a misspelt key changes nothing: say so once
            log_event(
                "config keys not read",
                level=logging.WARNING,
                function=name,
                config=str(settings.config_path),
                warnings=list(settings.config_warnings),
            )
        return create(settings)
    except ConfigError as exc:
        log_event("refused to start", level=logging.ERROR, function=name, reason=str(exc))
        raise SystemExit(EX_CONFIG) from None


def serving_settings(settings: Settings | None = None) -> Settings:
    """The settings a function serves with: the environment's. A local function
    (``SALESMART_ENV=dev``) not given a database, a BigQuery stand-in or a key takes the live
    ``up``'s of its folder; a key neither gives is the folder's own (``.salesmart/jwt-secret``,
    ``pii-key``, as the commands use), never none: an empty key signs tokens anyone can forge."""
    settings = settings or get_settings()
    missing_keys = [key for key in LOCAL_KEYS if not getattr(settings, key)]
    wanting = missing_keys or not settings.database_url or settings.bigquery.needs_stand_in
    if not settings.is_dev or not wanting:
        return settings  # a deployment's function, or one given everything: nothing is read
    stack = running_stack(settings)
    changes = with_stack_services(settings, stack) if stack is not None else {}
    up_keys = running_up_keys(settings) if missing_keys and stack is not None else {}
    changes.update(local_keys(settings, missing_keys, up_keys))
    return dataclasses.replace(settings, **changes) if changes else settings


def local_keys(
    settings: Settings, missing: Iterable[str], up_keys: Mapping[str, str]
) -> dict[str, str]:
    """The ``LOCAL_KEYS`` fields ``missing``: the running ``up``'s (``up_keys``), else the
    folder's own."""
    return {key: up_keys.get(key) or folder_key(settings, key) for key in missing}


def folder_key(settings: Settings, key: str) -> str:
    """The folder's own local key for a ``LOCAL_KEYS`` field (``.salesmart/jwt-secret``,
    ``pii-key``), made on first use."""
    try:
        return local_secret(settings, key.replace("_", "-"), 48)
    except OSError as exc:
        variable = f"SALESMART_{key.upper()}"
        raise ConfigError(
            f"{variable} is not set and no local key can be kept in {state_dir(settings)}"
            f" ({exc.strerror or exc}); set {variable} or run from a writable folder"
        ) from None
