"""``salesmart users``: accounts for the HTTP functions, stored in ``auth.users``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.auth import USERNAME
from common.passwords import hash_password
from common.roles import ROLES


class UserError(ValueError):
    pass


class AddLockTimeout(UserError):
    """Another session held the users' lock (or a row) longer than ``_ADD_LOCK_WAIT``."""

    def __init__(self) -> None:
        super().__init__(
            f"another session has been changing the users for over {_ADD_LOCK_WAIT}; try again"
        )


class LookAlikeError(UserError):
    """A name that differs from an existing account's only in case."""

    def __init__(self, existing: str) -> None:
        super().__init__(
            f"user {existing} already exists; a name that differs from it only in case is refused"
        )
        self.existing = existing


#: The advisory lock id that makes adding a user one step (``add_user``); arbitrary, constant.
_ADD_LOCK_KEY = 7_310_071
_ADD_LOCK_WAIT = "30s"  # a literal: SET takes no parameters

_INSERT_NEW = """
INSERT INTO auth.users (username, password_hash, role) VALUES (:u, :h, :r)
ON CONFLICT (username) DO NOTHING RETURNING username
"""
#: up's own admin: (re)set, re-enabled.
_INSERT_OR_RESET = """
INSERT INTO auth.users (username, password_hash, role) VALUES (:u, :h, :r)
ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash,
    role = EXCLUDED.role, disabled = false, updated_at = now()
RETURNING username
"""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    disabled: bool
    created_at: datetime


def check_name(username: str, role: str | None = None) -> None:
    """The name (and role) an account may have, refused in one line otherwise."""
    if not USERNAME.fullmatch(username):
        raise UserError("username must be 1-64 characters: ASCII letters and digits, _ . @ -")
    if role is not None and role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")


def add_user(
    conn: Any, username: str, password: str, role: str, rounds: int, *, replace: bool = False
) -> None:
    check_name(username, role)
    password_hash = hash_password(password, rounds)
    # The look-alike check and the write as one step: two `users add` of `alice` and
    # `Alice` at once both passed the check before either had inserted.
    conn.run("BEGIN")
    try:
        _take_add_lock(conn)
        if not (replace and has_user(conn, username)):  # a new name, not a reset
            _refuse_look_alike(conn, username)
        rows = conn.run(
            _INSERT_OR_RESET if replace else _INSERT_NEW, u=username, h=password_hash, r=role
        )
        if not rows:
            raise UserError(f"user {username} already exists")
        if replace:  # a reset, as `users password` (and `users enable`) ends a lockout
            end_lockout(conn, username)
    except BaseException as exc:
        # A lost connection fails the ROLLBACK too: the first error is the one to report.
        with contextlib.suppress(Exception):
            conn.run("ROLLBACK")
        if _lock_timed_out(exc):  # the lock wait covers the whole step, the row's too
            raise AddLockTimeout from None
        raise
    conn.run("COMMIT")


def _take_add_lock(conn: Any) -> None:
    """The lock is held for milliseconds; a wait beyond ``_ADD_LOCK_WAIT`` (for it, or
    for a row another session holds) is a stuck session of someone else's, said so
    (``AddLockTimeout``) rather than waited on for ever."""
    conn.run(f"SET LOCAL lock_timeout = '{_ADD_LOCK_WAIT}'")
    conn.run("SELECT pg_advisory_xact_lock(:key)", key=_ADD_LOCK_KEY)


def _lock_timed_out(exc: BaseException) -> bool:
    from common.logging import sqlstate

    return sqlstate(exc) == "55P03"  # lock_not_available


def check_password_target(conn: Any, username: str, role: str | None, *, new: bool) -> None:
    """Refuse, before a password is asked for, what ``add_user`` (``new``) or
    ``set_password`` would refuse after it: a bad name or role, a taken or unknown name."""
    check_name(username, role)
    if has_user(conn, username) == new:
        raise UserError(f"user {username} already exists" if new else f"no user named {username}")
    if new:
        _refuse_look_alike(conn, username)


def _refuse_look_alike(conn: Any, username: str) -> None:
    """``Alice`` beside ``alice``: two accounts that read as one in a list or a log line.
    (Logins stay exact: a name is the account's, case and all.)"""
    rows = conn.run(
        "SELECT username FROM auth.users WHERE lower(username) = lower(:u) AND username <> :u"
        " ORDER BY username LIMIT 1",
        u=username,
    )
    if rows:
        raise LookAlikeError(rows[0][0])


def has_user(conn: Any, username: str) -> bool:
    return bool(conn.run("SELECT 1 FROM auth.users WHERE username = :u", u=username))


def list_users(conn: Any) -> list[User]:
    rows = conn.run("SELECT username, role, disabled, created_at FROM auth.users ORDER BY username")
    return [User(*row) for row in rows]


def disable_user(conn: Any, username: str) -> None:
    """Refuses the account's logins and ends its dashboard sessions for good: enabling it
    again does not bring back a cookie issued before (a suspected theft is why accounts get
    disabled)."""
    _update(conn, username, "disabled = true, sessions_since = clock_timestamp()")


def enable_user(conn: Any, username: str) -> None:
    """Allows logins again, from now: a lockout by failed logins ends too. Sessions ended
    by ``disable_user`` stay ended."""
    _update(conn, username, "disabled = false")
    end_lockout(conn, username)


def set_password(conn: Any, username: str, password: str, rounds: int) -> None:
    """A new password (the policy of ``users add``); it ends the account's dashboard
    sessions started before it and its lockout by failed logins (the operator's way to let
    a locked-out user in at once), and leaves the account's state otherwise unchanged."""
    _update(
        conn,
        username,
        "password_hash = :h, sessions_since = clock_timestamp()",
        h=hash_password(password, rounds),
    )
    end_lockout(conn, username)


def end_sessions(conn: Any, username: str) -> None:
    """Ends the account's dashboard sessions started before now (its password changed)."""
    _update(conn, username, "sessions_since = clock_timestamp()")


def end_lockout(conn: Any, username: str) -> None:
    """Ends the account's lockout by failed logins."""
    conn.run("DELETE FROM auth.login_failures WHERE username = :u", u=username)


def _update(conn: Any, username: str, assignment: str, **params: Any) -> None:
    check_name(username)
    rows = conn.run(
        f"UPDATE auth.users SET {assignment}, updated_at = now() WHERE username = :u"  # nosec B608 - assignment is one of this module's constants; values are bound
        " RETURNING username",
        u=username,
        **params,
    )
    if not rows:
        raise UserError(f"no user named {username}")
