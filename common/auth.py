"""Who is calling: bcrypt logins against ``auth.users``, HS256 JWTs, roles, the 429 limiter.

- Passwords are checked with bcrypt; an unknown username costs one bcrypt check against
  a dummy hash too, so timing does not tell which users exist. Disabled users fail the
  same way as wrong passwords.
- Failed logins are counted per username (known or not) in ``auth.login_failures``, so
  the limit holds across function instances: after ``login_max_failures`` failures in
  ``login_window_seconds`` the username is locked for one window, and every attempt,
  right or wrong, answers 429 with ``Retry-After`` until then. A success clears it.
- Tokens are HS256 JWTs with ``sub``, ``role``, ``iat``, ``exp``, ``iss``, ``aud`` (and a
  ``jti``); verification pins the algorithm, requires every claim, and checks issuer,
  audience, expiry and the role allowed for the function.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.config import Settings
from common.errors import Forbidden, InvalidCredentials, InvalidToken, TooManyAttempts, Unauthorized

if TYPE_CHECKING:
    from flask import Request

    from common.db import PgPool

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "iss", "aud")
ROLES = ("analyst", "admin")
# Which roles may call which function (the token function serves everyone).
FUNCTION_ROLES: dict[str, frozenset[str]] = {
    "trends_pg": frozenset(ROLES),
    "trends_bq": frozenset(ROLES),
    "dashboard": frozenset(ROLES),
}
CLOCK_SKEW_SECONDS = 10
MAX_TOKEN_CHARS = 4096
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Principal:
    username: str
    role: str


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_secret.encode()
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.ttl_seconds = settings.token_ttl_seconds
        self._verified: dict[str, tuple[Principal, int]] = {}

    def issue(self, principal: Principal) -> IssuedToken:
        import jwt  # imported on first use: keeps cold starts short

        now = int(time.time())
        claims = {
            "sub": principal.username,
            "role": principal.role,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return IssuedToken(access_token=token, expires_in=self.ttl_seconds)

    def verify(self, token: str) -> Principal:
        """The token's principal, or ``InvalidToken`` (401) whatever is wrong with it.

        A token that passed every check is remembered until it expires (a bounded map,
        exact string match): repeated calls with it skip the decoding, never the expiry.
        Failures are never remembered.
        """
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if time.time() <= expires + CLOCK_SKEW_SECONDS:
                return principal
            self._verified.pop(token, None)
        principal, expires = self._decode(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, int]:
        import jwt

        if not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken()
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.PyJWTError:
            raise InvalidToken() from None
        subject, role, issued = claims.get("sub"), claims.get("role"), claims.get("iat")
        if not isinstance(subject, str) or not subject or not isinstance(role, str):
            raise InvalidToken()
        if not isinstance(issued, int) or issued > time.time() + CLOCK_SKEW_SECONDS:
            raise InvalidToken()
        return Principal(username=subject, role=role), int(claims["exp"])


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


def authenticate_request(request: Request, tokens: TokenService, function: str) -> Principal:
    """The caller of a bearer-protected function, or 401 (``WWW-Authenticate: Bearer``)."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized()
    return require_role(tokens.verify(token), function)


# -- logins -------------------------------------------------------------------------------------
_LOOKUP = """
SELECT u.password_hash, u.role, u.disabled, f.failures,
       CAST(ceil(extract(epoch FROM f.locked_until - now())) AS integer) AS retry_after
FROM (SELECT CAST(:username AS text) AS username) AS given
LEFT JOIN auth.users AS u ON u.username = given.username
LEFT JOIN auth.login_failures AS f ON f.username = given.username
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
    failures = CASE WHEN f.window_start < now() - (SELECT window_length FROM given)
                    THEN 1 ELSE f.failures + 1 END,
    window_start = CASE WHEN f.window_start < now() - (SELECT window_length FROM given)
                        THEN now() ELSE f.window_start END,
    locked_until = CASE
        WHEN f.window_start >= now() - (SELECT window_length FROM given)
             AND f.failures + 1 >= (SELECT max_failures FROM given)
        THEN now() + (SELECT window_length FROM given)
        WHEN (SELECT max_failures FROM given) <= 1
        THEN now() + (SELECT window_length FROM given)
        END
"""

_CLEAR_FAILURES = "DELETE FROM auth.login_failures WHERE username = CAST(:username AS text)"

# Old counters of usernames nobody tries any more (a random sample of calls tidies up).
_PRUNE = """
DELETE FROM auth.login_failures WHERE ctid IN (
    SELECT ctid FROM auth.login_failures
    WHERE window_start < now() - make_interval(secs => 2 * CAST(:window AS integer))
      AND (locked_until IS NULL OR locked_until < now())
    LIMIT 500)
"""


class LoginService:
    def __init__(self, pool: PgPool, settings: Settings) -> None:
        self._pool = pool
        self._rounds = settings.bcrypt_rounds
        self._max_failures = settings.login_max_failures
        self._window = settings.login_window_seconds
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def _dummy(self) -> str:
        with self._dummy_lock:
            if self._dummy_hash is None:
                import bcrypt

                self._dummy_hash = bcrypt.hashpw(
                    secrets.token_bytes(16), bcrypt.gensalt(self._rounds)
                ).decode()
            return self._dummy_hash

    def authenticate(self, username: str, password: str) -> Principal:
        """The user, or ``InvalidCredentials`` (401) / ``TooManyAttempts`` (429)."""
        from common.passwords import verify_password

        dummy = self._dummy()
        rows = self._pool.run(_LOOKUP, username=username)
        password_hash, role, disabled, failures, retry_after = rows[0]
        if retry_after is not None and retry_after > 0:
            raise TooManyAttempts(int(retry_after))
        # No connection is held during bcrypt: it is slow on purpose.
        ok = verify_password(password, password_hash or dummy)
        if not ok or password_hash is None or disabled or role not in ROLES:
            self._count_failure(username)
            raise InvalidCredentials()
        if failures is not None:
            self._pool.run(_CLEAR_FAILURES, username=username)
        return Principal(username=username, role=str(role))

    def _count_failure(self, username: str) -> None:
        self._pool.run(
            _COUNT_FAILURE,
            username=username,
            max_failures=self._max_failures,
            window=self._window,
        )
        if secrets.randbelow(50) == 0:
            self._pool.run(_PRUNE, window=self._window)
