"""Who is calling: bcrypt logins against ``auth.users``, HS256 JWTs, roles, the 429 limiter.

- Passwords are checked with bcrypt; an unknown username costs one bcrypt check against
  a dummy hash too, so timing does not tell which users exist. Disabled users fail the
  same way as wrong passwords.
- Failed logins are counted per username (known or not; a name that matches no account
  under its HMAC, ``failure_key``) in ``auth.login_failures``, so
  the limit holds across function instances: after ``login_max_failures`` failures in
  ``login_window_seconds`` the username is locked for one window, and every attempt,
  right or wrong, answers 429 with ``Retry-After`` until then. A success clears it.
- Tokens are HS256 JWTs with ``sub``, ``role``, ``iat``, ``exp``, ``iss``, ``aud`` (and a
  ``jti``); verification pins the algorithm, requires every claim, and checks issuer,
  audience, expiry and the role allowed for the function. Tokens are standard compact
  JWS (``common.jws``): any JWT library verifies them with the secret (the tests use PyJWT
  for that).
- Dashboard sessions (:class:`Sessions`): the cookie holds a token of its own audience
  (``<jwt_audience>/dashboard-session``), which the APIs refuse as a bearer token; logout
  ends it for good (its ``jti`` in ``auth.ended_sessions``), not only in that browser.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.config import MAX_TOKEN_TTL_SECONDS, Settings
from common.errors import (
    Forbidden,
    InvalidCredentials,
    InvalidToken,
    LoginRefused,
    TooManyAttempts,
    Unauthorized,
)
from common.jws import decode_hs256, encode_hs256
from common.roles import ROLES

if TYPE_CHECKING:
    from flask import Request

    from common.db import PgPool
    from common.http import Call

REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "iss", "aud")
#: What a username may be (``salesmart users add`` refuses others); a token's ``sub`` too.
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# Which roles may call which function (the token function serves everyone).
FUNCTION_ROLES: dict[str, frozenset[str]] = {
    "trends_pg": frozenset(ROLES),
    "trends_bq": frozenset(ROLES),
    "dashboard": frozenset(ROLES),
}
CLOCK_SKEW_SECONDS = 10
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    #: A login's: the account's ``sessions_since`` as read with the password hash it was
    #: checked against (``_LOOKUP``); a dashboard session started from it keeps it.
    sessions_since: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    token_id: str  # the jti ("" when the token has none)
    expires: int
    issued: int = 0
    sessions_since: str | None = None  # a dashboard session's (SESSIONS_SINCE_CLAIM)


class TokenService:
    def __init__(self, settings: Settings, *, audience: str | None = None) -> None:
        self._key = settings.jwt_secret.encode()
        self._issuer = settings.jwt_issuer
        self._audience = audience or settings.jwt_audience
        self.ttl_seconds = settings.token_ttl_seconds
        self._verified: dict[str, VerifiedToken] = {}

    def issue(self, principal: Principal, **extra: str) -> IssuedToken:
        now = int(time.time())
        claims: dict[str, object] = {
            **extra,
            "sub": principal.username,
            "role": principal.role,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": secrets.token_hex(8),
        }
        return IssuedToken(
            access_token=encode_hs256(claims, self._key), expires_in=self.ttl_seconds
        )

    def verify(self, token: str) -> Principal:
        """The token's principal, or ``InvalidToken`` (401) whatever is wrong with it."""
        return self.verified(token).principal

    def verified(self, token: str) -> VerifiedToken:
        """``verify``, with the token's id and expiry.

        A token that passed every check is remembered until it expires (a bounded map,
        exact string match): repeated calls with it skip the decoding, never the expiry.
        Failures are never remembered.
        """
        known = self._verified.get(token)
        if known is not None:
            if time.time() <= known.expires + CLOCK_SKEW_SECONDS:
                return known
            self._verified.pop(token, None)
        verified = self._decode(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = verified
        return verified

    def _decode(self, token: str) -> VerifiedToken:
        claims = decode_hs256(token, self._key)
        now = time.time()
        if any(name not in claims for name in REQUIRED_CLAIMS):
            raise InvalidToken()
        subject, role = claims["sub"], claims["role"]
        issued, expires = claims["iat"], claims["exp"]
        if not isinstance(subject, str) or not USERNAME.fullmatch(subject):
            raise InvalidToken()  # no user has that name: not a token this service issued
        if not isinstance(role, str):
            raise InvalidToken()
        if not _is_number(issued) or issued > now + CLOCK_SKEW_SECONDS:
            raise InvalidToken()
        if not _is_number(expires) or expires <= now - CLOCK_SKEW_SECONDS:
            raise InvalidToken()  # expired
        if expires - issued > MAX_TOKEN_TTL_SECONDS:
            raise InvalidToken()  # longer-lived than any token this service issues
        not_before = claims.get("nbf")
        if not_before is not None and (
            not _is_number(not_before) or not_before > now + CLOCK_SKEW_SECONDS
        ):
            raise InvalidToken()
        if claims["iss"] != self._issuer or claims["aud"] != self._audience:
            raise InvalidToken()  # a string audience, exactly ours
        token_id = claims.get("jti", "")
        sessions_since = claims.get(SESSIONS_SINCE_CLAIM)
        if not isinstance(token_id, str) or not isinstance(sessions_since, str | None):
            raise InvalidToken()
        return VerifiedToken(
            Principal(username=subject, role=role),
            token_id,
            int(expires),
            int(issued),
            sessions_since,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer ...``; None without the header; 401 if malformed."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized()
    return token


def require_role(principal: Principal, function: str) -> Principal:
    if principal.role not in FUNCTION_ROLES.get(function, frozenset()):
        raise Forbidden()
    return principal


def bearer_principal(request: Request, tokens: TokenService, function: str) -> Principal | None:
    """The caller named by the request's bearer token; None without one. A bad token is a
    401, a role the function does not serve a 403."""
    token = bearer_token(request)
    return None if token is None else require_role(tokens.verify(token), function)


def authenticate_request(request: Request, tokens: TokenService, function: str) -> Principal:
    """The caller of a bearer-protected function, or 401 (``WWW-Authenticate: Bearer``)."""
    principal = bearer_principal(request, tokens, function)
    if principal is None:
        raise Unauthorized()
    return principal


# -- dashboard sessions -------------------------------------------------------------------------
# A session ends at logout, and with its user: disabled (or removed) users lose the
# dashboard at once, not when their cookie's token expires; so do sessions started before
# the account's last password change, disabling or enabling (``sessions_since``, set by
# ``salesmart users``). A session holds the ``sessions_since`` its login read with the
# password hash, and lives while the account's is the same: exact, where comparing it with
# the token's ``iat`` (whole seconds, another machine's clock) ended a login made in the
# second after a change and kept one made in the second before it. A session token without
# it (issued before this rule) is held to its ``iat``.
# The value compared is the text of its epoch (microseconds; '-Infinity' for none), as
# _LOOKUP reads it.
SESSIONS_SINCE_CLAIM = "sessions_since"
_SESSION_ENDED = """
SELECT EXISTS (SELECT 1 FROM auth.ended_sessions WHERE jti = :jti)
    OR NOT EXISTS (
        SELECT 1 FROM auth.users
        WHERE username = :username AND NOT disabled
          AND CASE WHEN CAST(:since AS text) IS NULL
                   THEN sessions_since <= to_timestamp(CAST(:issued AS bigint))
                   ELSE CAST(extract(epoch FROM sessions_since) AS text) = CAST(:since AS text)
              END
    )
"""
_END_SESSION = """
WITH expired AS (DELETE FROM auth.ended_sessions WHERE expires_at < now() - interval '1 hour')
INSERT INTO auth.ended_sessions (jti, expires_at)
VALUES (:jti, to_timestamp(CAST(:expires AS bigint)))
ON CONFLICT (jti) DO NOTHING
"""


def session_audience(settings: Settings) -> str:
    """The audience of dashboard session tokens: not one the APIs accept."""
    return f"{settings.jwt_audience}/dashboard-session"


class Sessions:
    """Browser sessions of the dashboard: started at login, ended at logout for good."""

    def __init__(self, pool: PgPool, settings: Settings) -> None:
        self._pool = pool
        self._tokens = TokenService(settings, audience=session_audience(settings))

    def start(self, principal: Principal) -> IssuedToken:
        """A session for a login (``LoginService.authenticate``'s principal)."""
        if principal.sessions_since is None:
            raise ValueError("a session starts from a login, which read the account's state")
        return self._tokens.issue(principal, **{SESSIONS_SINCE_CLAIM: principal.sessions_since})

    def principal(self, token: str) -> Principal:
        """The session's user; ``InvalidToken`` when the token is bad, expired or ended."""
        verified = self._tokens.verified(token)
        if not verified.token_id:
            raise InvalidToken()
        [[ended]] = self._pool.run(
            _SESSION_ENDED,
            jti=verified.token_id,
            username=verified.principal.username,
            issued=verified.issued,
            since=verified.sessions_since,
        )
        if ended:
            raise InvalidToken()
        return verified.principal

    def end(self, token: str) -> None:
        """Logout: the session's token is refused from now on, by every instance."""
        try:
            verified = self._tokens.verified(token)
        except InvalidToken:
            return  # nothing left to end
        if verified.token_id:
            self._pool.run(_END_SESSION, jti=verified.token_id, expires=verified.expires)


# -- logins -------------------------------------------------------------------------------------
_LOOKUP = """
SELECT u.password_hash, u.role, u.disabled,
       CAST(ceil(extract(epoch FROM f.locked_until - now())) AS integer) AS retry_after,
       CAST(extract(epoch FROM u.sessions_since) AS text) AS sessions_since
FROM (SELECT CAST(:username AS text) AS username) AS given
LEFT JOIN auth.users AS u ON u.username = given.username
LEFT JOIN auth.login_failures AS f
    ON f.username = CASE WHEN u.username IS NULL THEN CAST(:unknown_key AS text)
                         ELSE given.username END
"""

_COUNT_FAILURE = """
WITH given AS (
    SELECT CAST(:username AS text) AS username,
           make_interval(secs => CAST(:window AS integer)) AS window_length,
           CAST(:max_failures AS integer) AS max_failures
)
INSERT INTO auth.login_failures AS f (username, failures, window_start, locked_until)
SELECT username, 1, now(),
       CASE WHEN max_failures <= 1 THEN now() + window_length END
FROM given
ON CONFLICT (username) DO UPDATE SET
    failures = CASE WHEN f.locked_until > now()  -- over the limit, whatever it is now
                    THEN greatest(f.failures, (SELECT max_failures FROM given)) + 1
                    WHEN f.window_start < now() - (SELECT window_length FROM given)
                    THEN 1 ELSE f.failures + 1 END,
    window_start = CASE WHEN f.locked_until > now()
                        THEN f.window_start
                        WHEN f.window_start < now() - (SELECT window_length FROM given)
                        THEN now() ELSE f.window_start END,
    locked_until = CASE
        -- A lock in force is left as it is: a guess checked while it was set (in flight)
        -- neither ends it early (by starting a new window) nor moves its end, so a right
        -- one and a wrong one are told the same seconds (no oracle in Retry-After).
        WHEN f.locked_until > now() THEN f.locked_until
        WHEN f.window_start >= now() - (SELECT window_length FROM given)
             AND f.failures + 1 >= (SELECT max_failures FROM given)
        THEN now() + (SELECT window_length FROM given)
        WHEN (SELECT max_failures FROM given) <= 1
        THEN now() + (SELECT window_length FROM given)
        END
RETURNING f.failures, CAST(ceil(extract(epoch FROM f.locked_until - now())) AS integer)
"""

# After a right password: the counter goes, unless failures checked meanwhile (in parallel)
# locked the name; then the seconds the lock has left, so the success is not revealed.
_SUCCEEDED = """
WITH cleared AS (
    DELETE FROM auth.login_failures
    WHERE username = CAST(:username AS text)
      AND (locked_until IS NULL OR locked_until <= now())
)
SELECT CAST(ceil(extract(epoch FROM max(locked_until) - now())) AS integer)
FROM auth.login_failures
WHERE username = CAST(:username AS text) AND locked_until > now()
"""

_REHASHED = """
UPDATE auth.users SET password_hash = CAST(:new AS text)
WHERE username = CAST(:username AS text) AND password_hash = CAST(:old AS text)
"""

#: A rehash that no retry will make, by SQLSTATE, and what the log says of it.
_REHASH_REFUSED_FOR_GOOD = {
    "42501": " (the functions' role needs UPDATE (password_hash) ON auth.users)",
    "25006": " (the database is read-only; not tried again by this instance)",
}

# Old counters of usernames nobody tries any more (a random sample of calls tidies up).
_PRUNE = """
DELETE FROM auth.login_failures WHERE ctid IN (
    SELECT ctid FROM auth.login_failures
    WHERE window_start < now() - make_interval(secs => 2 * CAST(:window AS integer))
      AND (locked_until IS NULL OR locked_until < now())
    LIMIT 500)
"""


_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def derived_key(secret: str, purpose: bytes) -> bytes:
    """A key of its own for ``purpose``, from the JWT key. Never HMAC anything a caller
    chooses with the JWT key itself: that is how tokens are signed, and the MAC of a
    chosen "header.payload" would be a token's signature."""
    return hmac.new(secret.encode(), purpose, hashlib.sha256).digest()


def failure_mac_key(jwt_secret: str) -> bytes:
    """The key ``failure_key`` hashes unknown names with, derived from the JWT key."""
    return derived_key(jwt_secret, b"salesmart login-failures v1")


def failure_key(username: str, *, known: bool, mac_key: bytes) -> str:
    """What ``auth.login_failures`` counts a login's failures under: an account's name, and
    for a name that matches none (a password typed in the wrong field, perhaps) its
    HMAC-SHA256 under ``mac_key`` (``failure_mac_key``), so the table and its backups never
    hold it in clear. ``#`` is in no username: the two kinds never meet."""
    if known:
        return username
    return "#" + hmac.new(mac_key, username.encode(), hashlib.sha256).hexdigest()


class LoginService:
    def __init__(self, pool: PgPool, settings: Settings) -> None:
        self._pool = pool
        self._rounds = settings.bcrypt_rounds
        self._max_failures = settings.login_max_failures
        self._window = settings.login_window_seconds
        self._failure_mac_key = failure_mac_key(settings.jwt_secret)  # once, not per login
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()
        #: False once the database refused a rehash for good (a role without UPDATE on
        #: auth.users, a read-only replica): the bcrypt work is not spent again per login.
        self._may_rehash = True

    def _dummy(self) -> str:
        """A well-formed bcrypt hash at the configured cost that no password matches, so
        checking against it costs what a real check costs. Made without hashing (a salt
        and a random digest): an instance's first login pays one bcrypt, not two."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                import bcrypt

                digest = "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31))
                self._dummy_hash = bcrypt.gensalt(self._rounds).decode() + digest
            return self._dummy_hash

    def sign_in(self, call: Call, username: str, password: str) -> Principal:
        """``authenticate`` for a request: its log line names the account when the login
        succeeds, and when it is refused for an account that exists (watching who is
        locked out needs it); a name that matches no account stays out of the log."""
        try:
            principal = self.authenticate(username, password)
        except LoginRefused as refused:
            call.user = refused.account
            raise
        call.user = principal.username
        return principal

    def authenticate(self, username: str, password: str) -> Principal:
        """The user, or ``InvalidCredentials`` (401) / ``TooManyAttempts`` (429), whose
        ``account`` is ``username`` when that names an account."""
        found = self._pool.run(
            _LOOKUP,
            username=username,
            unknown_key=failure_key(username, known=False, mac_key=self._failure_mac_key),
        )[0]
        try:
            return self._check(username, password, *found)
        except LoginRefused as refused:
            refused.account = username if found[0] is not None else None
            raise

    def _check(
        self,
        username: str,
        password: str,
        password_hash: str | None,
        role: str | None,
        disabled: bool | None,
        retry_after: int | None,
        sessions_since: str | None,
    ) -> Principal:
        from common.passwords import pad_refusal, verify_password

        dummy = self._dummy()
        if retry_after is not None and retry_after > 0:
            raise TooManyAttempts(int(retry_after))
        # No connection is held during bcrypt: it is slow on purpose.
        checked = password_hash or dummy
        ok = verify_password(password, checked)
        # Guesses sent in parallel all pass the check above before the first one fails,
        # so the lock is asked again after bcrypt: a guess that ends over the limit, or
        # a right one once the name is locked, is a 429, whatever its password was. At
        # most the limit's worth of guesses can learn anything; parallel right logins
        # (one account, many clients) are not slowed down.
        if not ok or password_hash is None or disabled or role not in ROLES:
            # Counted (and the lock's seconds read) before the padding, as a right guess
            # reads them before its own: the two are told the same seconds.
            failures, locked_for = self._count_failure(
                failure_key(
                    username, known=password_hash is not None, mac_key=self._failure_mac_key
                )
            )
            pad_refusal(password, checked, self._rounds)
            if failures > self._max_failures:
                raise TooManyAttempts(max(1, locked_for or self._window))
            raise InvalidCredentials()
        locked_for = self._pool.run(_SUCCEEDED, username=username)[0][0]
        if locked_for is not None and locked_for > 0:
            pad_refusal(password, checked, self._rounds)
            raise TooManyAttempts(int(locked_for))
        self._rehash(username, password, password_hash)
        return Principal(username=username, role=str(role), sessions_since=sessions_since)

    def _rehash(self, username: str, password: str, password_hash: str) -> None:
        """A hash at another cost than the configured one is replaced by one at it, once
        its password is known to be right (see ``common.passwords.needs_rehash``)."""
        from common.passwords import bcrypt_hash, needs_rehash

        if not (self._may_rehash and needs_rehash(password_hash, self._rounds)):
            return
        try:
            # Only if unchanged meanwhile: a password set by `users` since the check stays.
            self._pool.run(
                _REHASHED,
                username=username,
                old=password_hash,
                new=bcrypt_hash(password, self._rounds),
            )
        except Exception as exc:
            # Best effort: the password was right, and the old hash still verifies it.
            from common.logging import log_failure, sqlstate

            why = _REHASH_REFUSED_FOR_GOOD.get(sqlstate(exc) or "")
            if why is not None:
                self._may_rehash = False
            log_failure(f"password hash not moved to the configured bcrypt cost{why or ''}", exc)

    def _count_failure(self, counted_as: str) -> tuple[int, int | None]:
        """Failures within the window, this one included, and the lock's seconds left, of
        the counter ``counted_as`` (``failure_key``)."""
        rows = self._pool.run(
            _COUNT_FAILURE,
            username=counted_as,
            max_failures=self._max_failures,
            window=self._window,
        )
        if secrets.randbelow(50) == 0:
            self._pool.run(_PRUNE, window=self._window)
        attempts, locked_for = rows[0]
        return int(attempts), None if locked_for is None else int(locked_for)
