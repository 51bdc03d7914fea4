"""The dummy hash an unknown username is checked against: same cost as a real hash, matches
nothing, and made without running bcrypt (an instance's first login pays one bcrypt)."""

from __future__ import annotations

import time
from typing import Any, cast

import bcrypt
import pytest

from common.auth import LoginService
from common.config import Settings
from common.passwords import bcrypt_cost, pad_refusal, verify_password


def test_dummy_hash_costs_like_a_real_one_and_matches_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_hashing(*args: object) -> bytes:
        raise AssertionError("the dummy hash must not run bcrypt")

    monkeypatch.setattr(bcrypt, "hashpw", no_hashing)
    dummy = LoginService(cast(Any, None), Settings(bcrypt_rounds=10))._dummy()
    assert dummy.startswith("$2b$10$") and len(dummy) == 60
    monkeypatch.undo()
    real = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(10)).decode()
    for password in ("", "correct horse", "x" * 72):
        assert verify_password(password, dummy) is False

    def seconds(hashed: str) -> float:
        started = time.perf_counter()
        verify_password("wrong password", hashed)
        return time.perf_counter() - started

    # Taken in turns, so a busy moment of the machine weighs on both alike.
    dummy_costs, real_costs = [], []
    for _ in range(5):
        dummy_costs.append(seconds(dummy))
        real_costs.append(seconds(real))
    assert 0.5 < min(dummy_costs) / min(real_costs) < 2.0


_COST_4 = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(4)).decode()
_COST_10 = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(10)).decode()
#: Stored texts, each against the dummy's cost 10: hashes bcrypt checks (at their own
#: cost) and texts it refuses without any work.
_STORED = {
    "cost 4": _COST_4,
    "cost 4, $2x$": "$2x$" + _COST_4[4:],
    "cost 10 and a newline": _COST_10 + "\n",  # checked at cost 10 all the same
    "not bcrypt": "!",
    "cost 32": "$2b$32$" + _COST_4[7:],
    "cost 10, no digest": "$2b$10$disabled",
    "cost 10, bad digest": "$2b$10$" + "!" * 53,
    "cost 10, a salt bcrypt refuses": "$2b$10$" + "x" * 53,  # its last salt character
    "cost 10 in other digits": "$2b$\u0661\u0660$" + _COST_4[7:],
    "variant $2$": "$2$10$" + _COST_4[7:],
}


@pytest.mark.parametrize("kind", list(_STORED))
def test_a_refusal_against_a_cheaper_hash_costs_what_the_dummy_costs(kind: str) -> None:
    """A real account's hash made at a lower cost than the configured one (the cost was
    raised since, or `users add` ran with another) must not refuse a login sooner than a
    name that matches no account: that told which names exist (~6 ms against ~240 ms at
    cost 4 against 12). Nor may a stored text that bcrypt refuses without hashing (a
    locked-out `!`, a mangled hash), which was refused at once; nor may a text it does
    check be padded on top. Timed here; the bcrypt work itself is counted in
    test_token_unit."""
    dummy = LoginService(cast(Any, None), Settings(bcrypt_rounds=10))._dummy()
    cheaper = _STORED[kind]

    def seconds(hashed: str) -> float:
        started = time.perf_counter()
        verify_password("wrong password", hashed)
        pad_refusal("wrong password", hashed, 10)
        return time.perf_counter() - started

    dummy_costs, cheaper_costs = [], []
    for _ in range(5):
        dummy_costs.append(seconds(dummy))
        cheaper_costs.append(seconds(cheaper))
    # Unpadded, the cheaper hash answers 64 times sooner.
    assert 0.5 < min(cheaper_costs) / min(dummy_costs) < 2.0


@pytest.mark.parametrize(
    ("stored", "cost"),
    [
        ("$2b$12$" + "a" * 21 + "e" + "a" * 31, 12),
        ("$2a$04$" + "b" * 21 + "O" + "b" * 31, 4),
        ("$2y$31$" + "b" * 21 + "." + "b" * 31, 31),
        ("$2b$12$" + "a" * 53, None),  # a salt bcrypt refuses
        ("$2b$03$" + "a" * 21 + "e" + "a" * 31, None),
        ("", None),
        ("$2b$xx$abc", None),
    ],
)
def test_bcrypt_cost_reads_the_cost_of_a_hash(stored: str, cost: int | None) -> None:
    assert bcrypt_cost(stored) == cost
