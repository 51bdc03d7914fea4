"""The demo admin's password (`salesmart up`): generated once and shown once — by the first
`up` that gets to serve — or given in SALESMART_ADMIN_PASSWORD; the file always holds the one
that logs in."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common.config import Settings, build_settings
from pipeline.stack import ADMIN_PASSWORD_FILE, admin_password, admin_password_shown


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("SALESMART_ADMIN_PASSWORD", raising=False)
    return build_settings({**os.environ, "SALESMART_STATE_DIR": str(tmp_path / ".salesmart")})


def _kept(settings: Settings) -> str:
    path = settings.state_dir / ADMIN_PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def test_a_generated_password_is_shown_by_the_first_up_that_serves(local: Settings) -> None:
    password, unshown = admin_password(local)
    assert unshown and len(password) >= 20 and _kept(local) == password
    # That up was stopped before serving: the next one still shows it.
    assert admin_password(local) == (password, True)
    admin_password_shown(local)  # this one served and printed it
    assert admin_password(local) == (password, False)


def test_a_given_password_is_the_one_kept(local: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    generated, _ = admin_password(local)
    monkeypatch.setenv("SALESMART_ADMIN_PASSWORD", "given-password-42")
    assert admin_password(local) == ("given-password-42", False)
    assert _kept(local) == "given-password-42" != generated  # the file logs in, not a stale one
    monkeypatch.delenv("SALESMART_ADMIN_PASSWORD")
    assert admin_password(local) == ("given-password-42", False)  # kept, not switched back
