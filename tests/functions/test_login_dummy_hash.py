"""The dummy hash an unknown username is checked against: same cost as a real hash, matches
nothing, and made without running bcrypt (an instance's first login pays one bcrypt)."""

from __future__ import annotations

import time
from typing import Any, cast

import bcrypt
import pytest

from common.auth import LoginService
from common.config import Settings
from common.passwords import verify_password


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
