"""The `salesmart` command as a user runs it: exit codes, one-line messages, users, generate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import Settings
from common.pg import connect
from tests.conftest import SAMPLE_CSV


def run(
    settings: Settings,
    tmp_path: Path,
    *args: str,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SALESMART_DATABASE_URL": settings.database_url,
        "SALESMART_STATE_DIR": str(tmp_path / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def count(settings: Settings, table: str) -> int:
    conn = connect(settings.database_url)
    try:
        return int(conn.run(f"SELECT count(*) FROM {table}")[0][0])
    finally:
        conn.close()


def test_ingest_prints_counts_by_reason(settings: Settings, tmp_path: Path) -> None:
    result = run(settings, tmp_path, "ingest", str(SAMPLE_CSV))
    assert result.returncode == 0, result.stderr
    assert "read 5, loaded 3, rejected 2 (missing_product 1, product_prefix 1)" in result.stdout


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"transaction_id,product,price\nT1,Halal A,12\n", "missing required column"),
        (
            b"transaction_id,product,price,quantity,date\nT1,Halal \xc3\x28,12,1,2023-01-01\n",
            "not UTF-8",
        ),
        (bytes(range(256)) * 20, "binary data"),
        (b"", "empty file"),
    ],
)
def test_unusable_input_exits_2_with_one_line(
    settings: Settings, tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = run(settings, tmp_path, "ingest", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert count(settings, "raw.loads") == 0


def test_missing_file_exits_2(settings: Settings, tmp_path: Path) -> None:
    result = run(settings, tmp_path, "ingest", str(tmp_path / "nope.csv"))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_unreachable_database_exits_1_without_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SALESMART_DATABASE_URL": "postgresql://u:secretpw@127.0.0.1:1/db",
        "SALESMART_STATE_DIR": str(tmp_path / "state"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", str(SAMPLE_CSV)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "secretpw" not in result.stderr


def test_users_add_list_disable(settings: Settings, tmp_path: Path) -> None:
    added = run(
        settings,
        tmp_path,
        "users",
        "add",
        "alice",
        "--role",
        "analyst",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert added.returncode == 0, added.stderr
    again = run(
        settings,
        tmp_path,
        "users",
        "add",
        "alice",
        "--role",
        "admin",
        "--password-stdin",
        stdin="another password\n",
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    short = run(
        settings,
        tmp_path,
        "users",
        "add",
        "bob",
        "--role",
        "analyst",
        "--password-stdin",
        stdin="short\n",
    )
    assert short.returncode == 1 and "at least 8" in short.stderr
    assert run(settings, tmp_path, "users", "disable", "alice").returncode == 0
    listing = run(settings, tmp_path, "users", "list")
    assert listing.stdout.split("\t")[:3] == ["alice", "analyst", "disabled"]
    conn = connect(settings.database_url)
    try:
        stored = conn.run("SELECT password_hash FROM auth.users WHERE username = 'alice'")[0][0]
    finally:
        conn.close()
    assert stored.startswith("$2b$") and "horse" not in stored
    assert run(settings, tmp_path, "users", "disable", "nobody").returncode == 1


def test_generate_is_deterministic_and_includes_invalid_rows(
    settings: Settings, tmp_path: Path
) -> None:
    one, two = tmp_path / "a.csv", tmp_path / "b.csv"
    for out in (one, two):
        result = run(
            settings, tmp_path, "generate", "--rows", "5000", "--seed", "7", "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
    assert one.read_bytes() == two.read_bytes()
    assert len(one.read_text().splitlines()) == 5001
    ingest = run(settings, tmp_path, "ingest", "--json", str(one))
    import json

    summary = json.loads(ingest.stdout)
    assert summary["read"] == 5000
    assert 0 < summary["rejected"] < 250
    assert len(summary["rejected_by_reason"]) >= 8
