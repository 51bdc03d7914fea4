"""common.local_run's private files: owner only, and never rewritten in place."""

from __future__ import annotations

import stat
from pathlib import Path

from common.local_run import write_private


def test_a_secret_rewritten_is_not_read_through_an_older_files_handle(tmp_path: Path) -> None:
    """Rewritten in place, the new secret was readable through a handle opened while the
    older file was looser (found by a review)."""
    path = tmp_path / "admin-password"
    path.write_text("OLD-SECRET\n")
    path.chmod(0o644)
    with path.open() as opened_before:
        write_private(path, "NEW-SECRET\n")
        assert opened_before.read() == "OLD-SECRET\n"
    assert path.read_text() == "NEW-SECRET\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin-password"]  # nothing left
