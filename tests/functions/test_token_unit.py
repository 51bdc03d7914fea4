"""token called directly with a Flask request, against real PostgreSQL (auth.users)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import jwt
import pytest

from common.auth import LoginService, failure_key, failure_mac_key
from common.config import Settings
from common.db import PgPool
from common.errors import InvalidCredentials, InvalidToken, TooManyAttempts
from common.pg import connect
from tests.conftest import TEST_ENV
from tests.functions.conftest import (
    Account,
    Caller,
    assert_error_envelope,
    caller,
    load_function,
    make_user,
)

SECRET = TEST_ENV["SALESMART_JWT_SECRET"]


@pytest.fixture(scope="module")
def module(marts_dsn: str) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        yield load_function("token", patch, SALESMART_DATABASE_URL=marts_dsn)


@pytest.fixture
def call(module: ModuleType, flask_app: Any) -> Caller:
    return caller(flask_app, module.token)


def post(call: Caller, **form: str) -> Any:
    return call("/token", method="POST", data=form)


def unknown_name_key(username: str) -> str:
    """The counter of a name that matches no account, as the functions key it."""
    return failure_key(
        username, known=False, mac_key=failure_mac_key(TEST_ENV["SALESMART_JWT_SECRET"])
    )


def failures(dsn: str, username: str) -> int | None:
    conn = connect(dsn)
    try:
        rows = conn.run("SELECT failures FROM auth.login_failures WHERE username = :u", u=username)
    finally:
        conn.close()
    return int(rows[0][0]) if rows else None


def test_issues_a_bearer_token(call: Caller, analyst: Account) -> None:
    response = post(call, username=analyst.username, password=analyst.password)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 1800
    assert response.headers["Cache-Control"] == "no-store"
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    claims = jwt.decode(
        body["access_token"],
        SECRET,
        algorithms=["HS256"],
        audience="salesmart-api",
        issuer="salesmart",
    )
    assert claims["sub"] == analyst.username
    assert claims["role"] == "analyst"
    assert claims["exp"] - claims["iat"] == 1800
    assert abs(claims["iat"] - time.time()) < 60


def test_grant_type_absent_or_password(call: Caller, analyst: Account) -> None:
    ok = post(call, username=analyst.username, password=analyst.password, grant_type="password")
    assert ok.status_code == 200
    # RFC 6749 3.1: sent without a value is the same as absent.
    empty = post(call, username=analyst.username, password=analyst.password, grant_type="")
    assert empty.status_code == 200, empty.get_json()
    other = post(
        call, username=analyst.username, password=analyst.password, grant_type="client_credentials"
    )
    assert other.status_code == 400
    assert other.get_json()["error"] == "unsupported_grant_type"
    # Given twice: the same refusal whichever value comes first.
    for first, second in (("password", "client_credentials"), ("client_credentials", "password")):
        twice = call(
            "/token",
            method="POST",
            data=f"username={analyst.username}&password={analyst.password}"
            f"&grant_type={first}&grant_type={second}",
            content_type="application/x-www-form-urlencoded",
        )
        assert twice.status_code == 400
        assert twice.get_json()["error"] == "invalid_request"
        assert twice.get_json()["details"] == {"grant_type": ["Given more than once."]}


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/X-WWW-Form-Urlencoded",
        "APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8",
        "Multipart/Form-Data; boundary=AbC",
    ],
)
def test_the_form_type_is_matched_whatever_its_case(
    call: Caller, analyst: Account, content_type: str
) -> None:
    """Media types are case-insensitive (RFC 9110 8.3.1); a boundary keeps its case."""
    fields = {"username": analyst.username, "password": analyst.password}
    if content_type.startswith("Multipart"):
        body = "".join(
            f'--AbC\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        data = body + "--AbC--\r\n"
    else:
        data = "&".join(f"{name}={value}" for name, value in fields.items())
    response = call("/token", method="POST", data=data, content_type=content_type)
    assert response.status_code == 200, response.get_json()


def test_admin_role_in_token(call: Caller, marts_dsn: str) -> None:
    admin = make_user(marts_dsn, "admin")
    body = post(call, username=admin.username, password=admin.password).get_json()
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["role"] == "admin"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"username": "someone"}},
        {"data": {"password": "something"}},
        {"data": {"username": "", "password": "x"}},
        {"data": {}},
        {"json": {"username": "a", "password": "b"}},
        {"data": "username=a&password=b", "content_type": "text/plain"},
        {"data": {"username": "u" * 300, "password": "x"}},
        {"data": {"username": "nul\x00byte", "password": "x"}},
        {"data": {"username": "line\nbreak", "password": "x"}},
        {
            "data": "username=a&username=b&password=x",
            "content_type": "application/x-www-form-urlencoded",
        },
        {"data": {"username": "a", "password": "b"}, "query_string": {"x": "1"}},
    ],
)
def test_400_on_malformed_requests(call: Caller, kwargs: dict[str, Any]) -> None:
    response = call("/token", method="POST", **kwargs)
    assert response.status_code == 400
    body = response.get_json()
    assert_error_envelope(body)
    # A broken field is named in "details", its value never quoted.
    for value in ("u" * 300, "nul", "line", "something"):
        assert value not in json.dumps(body.get("details", {})), body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"password=%FF%FE", "The value of password is not valid UTF-8."),
        (b"password=\xff\xfe", "The value of password is not valid UTF-8."),
        (b"password=caf%C3", "The value of password is not valid UTF-8."),
        (b"Pass%FFword=x", "A form field's name is not valid UTF-8."),
        (b"Weird-Name=%FF", "The value of a form field is not valid UTF-8."),
    ],
)
def test_a_field_that_is_not_utf8_is_a_400_not_a_failed_login(
    call: Caller, analyst: Account, marts_dsn: str, body: bytes, message: str
) -> None:
    """RFC 6749 Appendix B: form fields are UTF-8. ``%FF`` was kept as text, a wrong
    password counted towards the account's lock; raw bytes gave a 400 blaming the username."""
    sent = b"username=" + analyst.username.encode() + b"&" + body
    for _ in range(6):  # more than the lock allows, were they failed logins
        response = call(
            "/token", method="POST", data=sent, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["message"] == message
        # A named field is in "details", as the form's other field errors are.
        named = message.startswith("The value of password")
        expected_details = {"password": ["Not valid UTF-8."]} if named else None
        assert response.get_json().get("details") == expected_details
    assert failures(marts_dsn, analyst.username) is None
    ok = post(call, username=analyst.username, password=analyst.password)
    assert ok.status_code == 200


def _multipart(*parts: tuple[str, bytes, str]) -> bytes:
    """A multipart/form-data body (boundary ``b0``) of (name, value, part content type)."""
    body = b""
    for name, value, content_type in parts:
        body += f'--b0\r\nContent-Disposition: form-data; name="{name}"\r\n'.encode()
        body += f"Content-Type: {content_type}\r\n".encode() if content_type else b""
        body += b"\r\n" + value + b"\r\n"
    return body + b"--b0--\r\n"


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (("password", b"\xff\xfe", ""), "The value of password is not valid UTF-8."),
        (("password", b"caf\xc3", "text/plain; charset=utf-8"), "The value of password is not"),
        (("Weird-Name", b"\xff", ""), "The value of a form field is not valid UTF-8."),
        # Its own charset is named: this is UTF-8 but not ASCII.
        (("password", "café".encode(), "text/plain; charset=US-ASCII"), "is not valid US-ASCII."),
    ],
)
def test_a_multipart_field_that_is_not_utf8_is_a_400_not_a_failed_login(
    call: Caller, analyst: Account, marts_dsn: str, part: tuple[str, bytes, str], message: str
) -> None:
    """werkzeug reads a bad byte in a multipart field as U+FFFD: another password than the
    one sent, a failed login counted towards the account's lock."""
    sent = _multipart(("username", analyst.username.encode(), ""), part)
    for _ in range(6):  # more than the lock allows, were they failed logins
        response = call(
            "/token", method="POST", data=sent, content_type="multipart/form-data; boundary=b0"
        )
        assert response.status_code == 400, response.get_json()
        assert message in response.get_json()["message"]
    assert failures(marts_dsn, analyst.username) is None


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        # A part without a name whose value is not UTF-8: was a 500 (a None name).
        (
            b"--b0\r\nContent-Disposition: form-data\r\n\r\n\xff\r\n--b0--\r\n",
            "multipart/form-data; boundary=b0",
        ),
        # A boundary werkzeug cannot use (not ASCII, RFC 2231): was a 500 too.
        (_multipart(("username", b"x", "")), "multipart/form-data; boundary*=UTF-8''%E2%82%AC"),
        (_multipart(("username", b"x", "")), "multipart/form-data"),
    ],
)
def test_an_odd_multipart_body_is_a_400(call: Caller, body: bytes, content_type: str) -> None:
    response = call("/token", method="POST", data=body, content_type=content_type)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_request"


def test_multipart_fields_log_in_in_their_declared_charset(call: Caller, marts_dsn: str) -> None:
    """A part's charset (UTF-8 by default, ISO-8859-1 when it says so) is honoured, and a
    real U+FFFD in a password is a character like any other."""
    for password, encoded, content_type in [
        (
            "caf\u00e9-latin-one-pw",
            "caf\u00e9-latin-one-pw".encode("latin-1"),
            "text/plain; charset=ISO-8859-1",
        ),
        ("repl\ufffdacement-pw", "repl\ufffdacement-pw".encode(), ""),
    ]:
        account = make_user(marts_dsn, "analyst", password=password)
        sent = _multipart(
            ("username", account.username.encode(), ""), ("password", encoded, content_type)
        )
        response = call(
            "/token", method="POST", data=sent, content_type="multipart/form-data; boundary=b0"
        )
        assert response.status_code == 200, response.get_json()


def test_utf8_fields_raw_or_percent_encoded_log_in(call: Caller, marts_dsn: str) -> None:
    account = make_user(marts_dsn, "analyst", password="Kaffee-mit-Milch-ümlaut-é")
    for password in (account.password.encode(), quote(account.password).encode()):
        response = call(
            "/token",
            method="POST",
            data=b"username=" + account.username.encode() + b"&password=" + password,
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 200, response.get_json()


def test_a_repeated_field_does_not_hide_the_others_problems(call: Caller) -> None:
    response = call(
        "/token",
        method="POST",
        data="username=a&username=b",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["message"] == "Missing or invalid form fields: password, username."
    # Per field, as the contract's validation errors are ("details"), no value quoted.
    assert set(body["details"]) == {"password", "username"}
    assert all(isinstance(m, str) for ms in body["details"].values() for m in ms), body
    assert "a" not in body["details"]["username"] and "b" not in body["details"]["username"]


def test_401_for_wrong_password_unknown_and_disabled_users(
    call: Caller, analyst: Account, marts_dsn: str
) -> None:
    disabled = make_user(marts_dsn, disabled=True)
    answers = [
        post(call, username=analyst.username, password="wrong password"),
        post(call, username="nobody-" + analyst.username, password="whatever it is"),
        post(call, username=disabled.username, password=disabled.password),
    ]
    for response in answers:
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # The answers never reveal which users exist: same code, same message.
    assert len({(r.get_json()["error"], r.get_json()["message"]) for r in answers}) == 1


def test_unknown_users_cost_a_bcrypt_check_too(
    call: Caller, analyst: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.passwords

    checked: list[str] = []
    real = common.passwords.verify_password

    def spy(password: str, password_hash: str) -> bool:
        checked.append(password_hash[:4])
        return real(password, password_hash)

    monkeypatch.setattr(common.passwords, "verify_password", spy)
    post(call, username=analyst.username, password="wrong password")
    post(call, username="ghost-" + analyst.username, password="wrong password")
    assert checked == ["$2b$", "$2b$"]


def logged(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The JSON log lines written since the last call."""
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_429_after_repeated_failures_for_a_known_user(
    call: Caller, analyst: Account, marts_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for attempt in range(1, 6):
        response = post(call, username=analyst.username, password=f"wrong {attempt}")
        assert response.status_code == 401, attempt
    assert failures(marts_dsn, analyst.username) == 5
    locked = post(call, username=analyst.username, password="wrong again")
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 300
    assert locked.get_json()["error"] == "too_many_attempts"
    # The log says which account is locked out (the answer does not say it exists).
    assert [(r["status"], r.get("user")) for r in logged(capsys)][-2:] == [
        (401, analyst.username),
        (429, analyst.username),
    ]
    # Locked means locked: the right password waits too.
    right = post(call, username=analyst.username, password=analyst.password)
    assert right.status_code == 429


@pytest.mark.parametrize("operator_action", ["users password", "users enable"])
def test_an_operator_ends_a_lockout_with_users_password_or_enable(
    call: Caller, analyst: Account, marts_dsn: str, operator_action: str
) -> None:
    """Nothing but the window's end let a locked-out user in (the README said anyone
    knowing a name can lock it): the on-call operator's levers are these two commands."""
    from pipeline.users import enable_user, set_password

    for attempt in range(6):
        post(call, username=analyst.username, password=f"wrong {attempt}")
    assert post(call, username=analyst.username, password=analyst.password).status_code == 429
    conn = connect(marts_dsn)
    try:
        if operator_action == "users password":
            set_password(conn, analyst.username, analyst.password, 4)
        else:
            enable_user(conn, analyst.username)
    finally:
        conn.close()
    assert failures(marts_dsn, analyst.username) is None  # its row is gone
    assert post(call, username=analyst.username, password=analyst.password).status_code == 200


def test_429_for_unknown_usernames_too(
    call: Caller, marts_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = "ghost-user-429"
    counted_as = unknown_name_key(ghost)
    conn = connect(marts_dsn)
    conn.run("DELETE FROM auth.login_failures WHERE username = :u", u=counted_as)
    conn.close()
    statuses = [post(call, username=ghost, password="guess").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    # A name that matches no account (a pasted password, perhaps) never reaches the log,
    # nor the table (and so the backups): it is counted under its HMAC.
    lines = logged(capsys)
    assert [r["status"] for r in lines][-6:] == statuses
    assert ghost not in json.dumps(lines)
    assert failures(marts_dsn, ghost) is None
    assert failures(marts_dsn, counted_as) == 5  # the sixth was refused unchecked


def test_the_counter_of_an_unknown_name_is_no_token_signature(call: Caller, marts_dsn: str) -> None:
    """Keyed with the JWT key itself, the counter of a name shaped as a token's signing
    input ("header.payload") was that token's signature: anyone reading
    auth.login_failures (a backup) could sign an admin token (found by a review)."""
    from common.auth import TokenService

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    signing_input = (
        b64({"alg": "HS256", "typ": "JWT"})
        + "."
        + b64(
            {
                "sub": "admin",
                "role": "admin",
                "iat": now,
                "exp": now + 600,
                "iss": "salesmart",
                "aud": "salesmart-api",
            }
        )
    )
    assert post(call, username=signing_input, password="whatever it is").status_code == 401
    counted_as = unknown_name_key(signing_input)
    assert failures(marts_dsn, counted_as) == 1
    forged_signature = base64.urlsafe_b64encode(bytes.fromhex(counted_as[1:])).rstrip(b"=")
    tokens = TokenService(Settings(jwt_secret=TEST_ENV["SALESMART_JWT_SECRET"]))
    with pytest.raises(InvalidToken):
        tokens.verify(signing_input + "." + forged_signature.decode())


def locked_in_flight(dsn: str, username: str, *, lock_left: int, window_ended: bool) -> None:
    """A name locked ``lock_left`` seconds more, as guesses still being checked (bcrypt)
    find it when they end; its window over or not."""
    conn = connect(dsn)
    try:
        conn.run("DELETE FROM auth.login_failures WHERE username = :u", u=username)
        conn.run(
            "INSERT INTO auth.login_failures (username, failures, window_start, locked_until)"
            " VALUES (:u, 5, now() - make_interval(secs => :age), now() + make_interval(secs"
            " => :left))",
            u=username,
            age=400 if window_ended else 10,
            left=lock_left,
        )
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("window_ended", "slow_padding"), [(True, False), (False, False), (False, True)]
)
def test_a_guess_ending_while_the_name_is_locked_leaves_the_lock_as_it_is(
    analyst: Account,
    marts_dsn: str,
    window_ended: bool,
    slow_padding: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counted after its window ended, a guess in flight started a new one and cleared the
    lock (one more lock-free window per window); counted within it, it moved the lock's end,
    so wrong guesses were told the whole window and a right one the seconds left: an
    oracle in Retry-After (both found by an audit). With a slow padding (a hash of a lower
    cost than the configured one; here a sleep stands in for it, as no real hash is slow on
    demand), a wrong guess read the seconds after it and a right one before."""
    if slow_padding:
        import common.passwords

        monkeypatch.setattr(common.passwords, "pad_refusal", lambda *_: time.sleep(1.5))

    def found_before_the_lock() -> list[Any]:
        """The account's row as a lookup read it before the lock: a guess in flight."""
        conn = connect(marts_dsn)
        try:
            (found,) = conn.run(
                "SELECT password_hash, role, disabled, NULL, NULL"
                " FROM auth.users WHERE username = :u",
                u=analyst.username,
            )
        finally:
            conn.close()
        return list(found)

    pool = PgPool(marts_dsn, max_size=1)
    logins = LoginService(pool, Settings(bcrypt_rounds=4))
    try:
        locked_in_flight(marts_dsn, analyst.username, lock_left=30, window_ended=window_ended)
        with pytest.raises(TooManyAttempts) as wrong:  # in flight: its row read unlocked
            logins._check(analyst.username, "a wrong password", *found_before_the_lock())
        wrong_told = wrong.value.retry_after_seconds
        assert 29 <= wrong_told <= 30
        locked_in_flight(marts_dsn, analyst.username, lock_left=30, window_ended=window_ended)
        with pytest.raises(TooManyAttempts) as right:
            logins._check(analyst.username, analyst.password, *found_before_the_lock())
        assert right.value.retry_after_seconds == wrong_told
    finally:
        pool.close()


def test_parallel_guesses_cannot_outrun_the_limit(call: Caller, marts_dsn: str) -> None:
    """Guesses sent at once for one username: no more than the limit are answered as
    checked (401), however many were in flight before the first one failed (found by a
    review: 12 of 30 got a 401 when the lock was asked only before each bcrypt check)."""
    victim = "parallel-guesses"
    conn = connect(marts_dsn)
    conn.run("DELETE FROM auth.login_failures WHERE username = :u", u=unknown_name_key(victim))
    conn.close()
    start = threading.Barrier(16)

    def guess(number: int) -> int:
        start.wait()
        return int(post(call, username=victim, password=f"guess {number}").status_code)

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(guess, range(16)))
    assert statuses.count(401) <= 5, statuses
    assert set(statuses) == {401, 429}, statuses


def test_parallel_right_logins_for_one_account_all_succeed(
    call: Caller, analyst: Account, marts_dsn: str
) -> None:
    """Many clients of one account logging in at once are not mistaken for guessing (CI
    showed 429s under load when attempts were counted before the check)."""
    start = threading.Barrier(16)

    def login(_: int) -> int:
        start.wait()
        return int(post(call, username=analyst.username, password=analyst.password).status_code)

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(login, range(16))) == {200}
    assert failures(marts_dsn, analyst.username) is None


def test_a_right_password_checked_while_the_name_got_locked_is_a_429(
    call: Caller, analyst: Account, marts_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a real client cannot time on demand, so injected: wrong guesses sent in
    parallel lock the name while a right one is still in its bcrypt check. The right one
    must not reveal itself then."""
    import common.passwords

    real_verify = common.passwords.verify_password

    def verify_while_locked_elsewhere(password: str, password_hash: str) -> bool:
        monkeypatch.setattr(common.passwords, "verify_password", real_verify)  # once
        for attempt in range(5):  # the parallel guesses, finishing first
            assert post(call, username=analyst.username, password=f"x{attempt}").status_code
        return real_verify(password, password_hash)

    monkeypatch.setattr(common.passwords, "verify_password", verify_while_locked_elsewhere)
    right = post(call, username=analyst.username, password=analyst.password)
    assert right.status_code == 429, right.get_json()
    assert 1 <= int(right.headers["Retry-After"]) <= 300
    assert failures(marts_dsn, analyst.username) == 5  # the lock stays


def test_success_clears_the_counter(call: Caller, analyst: Account, marts_dsn: str) -> None:
    for _ in range(3):
        assert post(call, username=analyst.username, password="nope nope").status_code == 401
    assert failures(marts_dsn, analyst.username) == 3
    assert post(call, username=analyst.username, password=analyst.password).status_code == 200
    assert failures(marts_dsn, analyst.username) is None


def test_every_refusal_costs_one_check_at_the_configured_cost(
    marts_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password, a right one for a disabled account, and a name that matches none
    all cost the same bcrypt work, 2^rounds, whatever the cost the account's hash was made
    at (`make_user` hashes at 4): timing tells neither which names exist nor whether a
    disabled account's password was right. And in a few calls: 255 calls at cost 4 to
    make up cost 12 overshot by ~4.5% (~10 ms), their fixed cost adding up."""
    import bcrypt

    work: list[int] = []
    real_check, real_hash = bcrypt.checkpw, bcrypt.hashpw

    def cost_of(hashed: bytes) -> int:
        return int(hashed.split(b"$")[2])

    def check(password: bytes, hashed: bytes) -> bool:
        work.append(cost_of(hashed))
        return real_check(password, hashed)

    def hashing(password: bytes, salt: bytes) -> bytes:
        work.append(cost_of(salt))
        return real_hash(password, salt)

    account = make_user(marts_dsn)
    disabled = make_user(marts_dsn, disabled=True)
    pool = PgPool(marts_dsn, max_size=1)
    logins = LoginService(pool, Settings(bcrypt_rounds=8))
    logins._dummy()  # made without hashing; made here so the spy sees only the logins
    monkeypatch.setattr(bcrypt, "checkpw", check)
    monkeypatch.setattr(bcrypt, "hashpw", hashing)
    try:
        for username, password in [
            (account.username, "wrong password"),
            (disabled.username, disabled.password),
            (disabled.username, "wrong password"),
            ("ghost-" + account.username, "wrong password"),
        ]:
            work.clear()
            with pytest.raises(InvalidCredentials):
                logins.authenticate(username, password)
            assert sum(2**cost for cost in work) == 2**8, (username, work)
            assert len(work) <= 8 - 4 + 1, (username, work)
    finally:
        pool.close()


def stored_hash(dsn: str, username: str) -> str:
    conn = connect(dsn)
    try:
        rows = conn.run("SELECT password_hash FROM auth.users WHERE username = :u", u=username)
    finally:
        conn.close()
    return str(rows[0][0])


@pytest.mark.parametrize("rounds", [5, 4])
def test_a_login_moves_its_hash_to_the_configured_cost(
    marts_dsn: str, analyst: Account, rounds: int
) -> None:
    """Raising ``bcrypt_rounds`` reaches the accounts already there: a right login at
    another cost stores a hash at the configured one (a wrong one changes nothing); a
    hash at the configured cost is left as it is."""
    made = stored_hash(marts_dsn, analyst.username)  # make_user hashes at cost 4
    pool = PgPool(marts_dsn, max_size=1)
    logins = LoginService(pool, Settings(bcrypt_rounds=rounds))
    try:
        with pytest.raises(InvalidCredentials):
            logins.authenticate(analyst.username, "wrong password")
        assert stored_hash(marts_dsn, analyst.username) == made
        assert logins.authenticate(analyst.username, analyst.password).role == "analyst"
        now = stored_hash(marts_dsn, analyst.username)
        assert now.startswith(f"$2b$0{rounds}$")
        assert (now == made) is (rounds == 4)
        assert logins.authenticate(analyst.username, analyst.password).role == "analyst"
    finally:
        pool.close()


def test_window_expiry_unlocks(call: Caller, analyst: Account, marts_dsn: str) -> None:
    for _ in range(5):
        post(call, username=analyst.username, password="nope nope")
    assert post(call, username=analyst.username, password=analyst.password).status_code == 429
    conn = connect(marts_dsn)  # time travel: the window and the lock are over
    conn.run(
        "UPDATE auth.login_failures SET window_start = now() - interval '1 hour',"
        " locked_until = now() - interval '1 second' WHERE username = :u",
        u=analyst.username,
    )
    conn.close()
    assert post(call, username=analyst.username, password="nope nope").status_code == 401
    assert failures(marts_dsn, analyst.username) == 1
    assert post(call, username=analyst.username, password=analyst.password).status_code == 200


def test_a_coded_form_is_refused_as_its_openapi_document_says(call: Caller) -> None:
    responses = call("/openapi.json").get_json()["paths"]["/token"]["post"]["responses"]
    for coding, status in (("Content-Encoding", 415), ("Transfer-Encoding", 501)):
        form = {"username": "someone", "password": "whatever it is"}
        answer = call("/token", method="POST", headers={coding: "gzip"}, data=form)
        assert answer.status_code == status
        documented = responses[str(status)]
        assert answer.mimetype in documented["content"]
        assert answer.get_json()["error"].startswith("unsupported_")
        for header in ("Accept-Encoding",):
            assert (header in answer.headers) is (header in documented["headers"])


def test_405_and_404(call: Caller) -> None:
    response = call("/token", method="GET")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert call("/tokens", method="POST").status_code == 404


def test_no_secret_in_any_answer(call: Caller, analyst: Account, marts_dsn: str) -> None:
    bodies = [
        post(call, username=analyst.username, password="wrong password").get_data(as_text=True),
        call("/token", method="POST", json={}).get_data(as_text=True),
    ]
    for text in bodies:
        assert "wrong password" not in text
        assert SECRET not in text
        assert marts_dsn.split("@")[0].split(":")[-1] not in text  # the database password


def test_a_role_without_update_on_users_still_logs_in_after_a_cost_change(
    marts_dsn: str,
    analyst: Account,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's least-privilege role (SELECT on auth.users) cannot move a hash to the
    configured cost: a right login answered 500, every time. The rehash is best effort: the
    login succeeds, the refusal is logged once with the grant it needs, and the instance
    stops spending a bcrypt hash per login on a rehash the database refuses."""
    import bcrypt

    role = f"fn_{secrets.token_hex(4)}"
    owner = connect(marts_dsn)
    owner.run(f"CREATE ROLE {role} LOGIN PASSWORD 'functions-role-password'")
    for grant in (
        "USAGE ON SCHEMA auth",
        "SELECT ON auth.users",
        "SELECT, INSERT, UPDATE, DELETE ON auth.login_failures, auth.ended_sessions",
    ):
        owner.run(f"GRANT {grant} TO {role}")
    parts = urlsplit(marts_dsn)
    restricted = urlunsplit(
        parts._replace(netloc=f"{role}:functions-role-password@{parts.hostname}:{parts.port}")
    )
    made = stored_hash(marts_dsn, analyst.username)  # cost 4
    hashed: list[bytes] = []
    real_hash = bcrypt.hashpw

    def hashing(password: bytes, salt: bytes) -> bytes:
        hashed.append(salt)
        return real_hash(password, salt)

    pool = PgPool(restricted, max_size=1)
    logins = LoginService(pool, Settings(bcrypt_rounds=5))
    monkeypatch.setattr(bcrypt, "hashpw", hashing)  # a spy: counts, does not change
    try:
        for _ in range(3):
            assert logins.authenticate(analyst.username, analyst.password).role == "analyst"
        assert len(hashed) == 1  # the first login's rehash, refused; none after it
        assert stored_hash(marts_dsn, analyst.username) == made
        refusals = [line for line in logged(capsys) if "bcrypt cost" in line.get("message", "")]
        assert len(refusals) == 1, refusals
        assert refusals[0]["sqlstate"] == "42501"
        assert "UPDATE (password_hash) ON auth.users" in refusals[0]["message"]
    finally:
        pool.close()
        owner.run(f"DROP OWNED BY {role}")
        owner.run(f"DROP ROLE {role}")
        owner.close()
