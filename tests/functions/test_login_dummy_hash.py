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


@pytest.mark.parametrize(
    "kind", ["cost 4", "not bcrypt", "cost 32", "cost 10, no digest", "cost 10, bad digest"]
)
def test_a_refusal_against_a_cheaper_hash_costs_what_the_dummy_costs(kind: str) -> None:
    """A real account's hash made at a lower cost than the configured one (the cost was
    raised since, or `users add` ran with another) must not refuse a login sooner than a
    name that matches no account: that told which names exist (~6 ms against ~240 ms at
    cost 4 against 12). Nor may a stored text that is no bcrypt hash at all (a locked-out
    `!`, a cost bcrypt refuses), which was refused at once. Timed here; the bcrypt work
    itself is counted in test_token_unit."""
    dummy = LoginService(cast(Any, None), Settings(bcrypt_rounds=10))._dummy()
    cheaper = {
        "cost 4": bcrypt.hashpw(b"correct horse", bcrypt.gensalt(4)).decode(),
        "not bcrypt": "!",
        "cost 32": "$2b$32$" + "a" * 53,
        "cost 10, no digest": "$2b$10$disabled",
        "cost 10, bad digest": "$2b$10$" + "!" * 53,
    }[kind]

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
    [("$2b$12$" + "a" * 53, 12), ("$2a$04$" + "b" * 53, 4), ("", None), ("$2b$xx$abc", None)],
)
def test_bcrypt_cost_reads_the_cost_of_a_hash(stored: str, cost: int | None) -> None:
    assert bcrypt_cost(stored) == cost
