"""``salesmart-serve`` refuses bad settings with one line and a non-zero exit, before serving."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from common.config import REPO_ROOT
from common.server import command, launcher


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("SALESMART_HEADER_TIMEOUT_SECONDS", "soon", "must be a number of seconds"),
        ("SALESMART_REQUEST_DEADLINE_SECONDS", "0", "must be positive"),
        ("SALESMART_HEADER_TIMEOUT_SECONDS", "-3", "must be positive"),
    ],
)
def test_bad_deadlines_are_refused(variable: str, value: str, needle: str) -> None:
    result = _run(command("trends_pg", "functions/trends_pg/main.py", port=1), **{variable: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and variable in lines[0], result.stderr


def test_missing_target_or_source_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FUNCTION_TARGET", "FUNCTION_SOURCE")}
    no_target = subprocess.run(
        launcher(), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert no_target.returncode == 2
    assert "FUNCTION_TARGET" in no_target.stderr.strip()
    no_source = _run(command("trends_pg", tmp_path / "missing.py"))
    assert no_source.returncode == 2
    assert (
        no_source.stderr.strip()
        == f"salesmart-serve: no function source at {tmp_path / 'missing.py'}"
    )
