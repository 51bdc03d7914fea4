"""The `salesmart` command as a user runs it: exit codes, one-line messages, users, generate."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import pytest

from common.config import Settings, build_settings
from common.passwords import verify_password
from common.pg import connect
from pipeline.cli import build_parser
from pipeline.csvsource import TransactionReader
from pipeline.ingest import PROGRESS_MIN_BYTES, FileProgress, track_rows
from pipeline.netutil import free_port
from tests.conftest import SAMPLE_CSV, cli_env, eventually, run_cli, salesmart, scalar


def run(
    settings: Settings, tmp_path: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, tmp_path, *args, stdin=stdin)


def add_user(
    settings: Settings, tmp_path: Path, name: str, role: str, password: str
) -> subprocess.CompletedProcess[str]:
    """`salesmart users add NAME --role ROLE --password-stdin`."""
    return run(
        settings, tmp_path, "users", "add", name, "--role", role, "--password-stdin", stdin=password
    )


def count(settings: Settings, table: str) -> int:
    return scalar(settings, f"SELECT count(*) FROM {table}")


def test_ingest_prints_counts_by_reason_for_both_warehouses(
    settings: Settings, tmp_path: Path
) -> None:
    # By default both warehouses, as `transform` builds both (here: PostgreSQL and a
    # BigQuery stand-in the command starts for itself).
    result = run(settings, tmp_path, "ingest", str(SAMPLE_CSV))
    assert result.returncode == 0, result.stderr
    counts = "read 5, loaded 3, rejected 2 (missing_product 1, product_prefix 1)"
    assert result.stdout.splitlines() == [
        f"{SAMPLE_CSV} -> postgres: {counts}",
        f"{SAMPLE_CSV} -> bigquery: {counts}",
    ]


def test_a_file_gone_after_others_loaded_is_exit_1_not_nothing_loaded(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import pipeline.ingest
    from common.config import get_settings
    from pipeline.cli import main

    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    for n, path in enumerate((first, second)):
        path.write_text(
            f"transaction_id,product,price,quantity,date\nGONE{n},Halal Tea,12.50,1,2024-01-01\n"
        )
    real = pipeline.ingest.ingest_postgres

    def then_the_second_goes(*args: Any, **kwargs: Any) -> Any:
        # Fault injected (a real deletion at a moment timing cannot hit reliably): the
        # second file goes away once the first is loaded. Exit 2 means nothing was loaded.
        result = real(*args, **kwargs)
        second.unlink(missing_ok=True)
        return result

    monkeypatch.setattr(pipeline.ingest, "ingest_postgres", then_the_second_goes)
    for key, value in cli_env(settings, tmp_path).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        code = main(["ingest", "--target", "postgres", str(first), str(second)])
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith(f"{first} -> postgres: read 1, loaded 1")
    assert err == (
        f"salesmart: {second}: no such file (found after 1 load(s), printed above, had"
        " finished; the others were not made)\n"
    )


def test_a_reader_leaving_stdout_stops_neither_the_loads_nor_the_exit_code(
    settings: Settings, tmp_path: Path
) -> None:
    # `salesmart ingest a.csv b.csv | head -1`: the reader leaves early. Before, the command
    # stopped at its first write ("cannot reach a service: Broken pipe", exit 1) between
    # the warehouses: PostgreSQL had loaded, BigQuery had not.
    files = []
    for n in (1, 2):
        path = tmp_path / f"pipe{n}.csv"
        path.write_text(
            f"transaction_id,product,price,quantity,date\nPIPE{n},Halal Tea,12.50,1,2024-01-0{n}\n"
        )
        files.append(str(path))
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line
    try:
        left = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "ingest", *files],
            env=cli_env(settings, tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (left.returncode, left.stderr) == (0, "")
    # Every file reached both warehouses: ingesting them again adds nothing anywhere.
    again = run(settings, tmp_path, "ingest", *files)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == 4, lines
    assert all("read 1, loaded 0" in line and "already loaded" in line for line in lines), lines


def test_ingest_into_both_loads_nothing_when_bigquery_cannot_be_had(
    settings: Settings, tmp_path: Path
) -> None:
    """The folder's BigQuery stand-in is taken (by another command, or an ``up`` still
    starting): refused before PostgreSQL loads anything. It used to load PostgreSQL first,
    leaving the file in one warehouse only."""
    from pipeline.bq_emulator import start_emulator

    with start_emulator(tmp_path / "state" / "bigquery", settings.bigquery.project):
        result = run(settings, tmp_path, "ingest", str(SAMPLE_CSV))
    assert result.returncode == 1, result.stderr
    assert "already using" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert count(settings, "raw.transactions") == 0


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


def test_an_unusable_file_among_several_loads_none_of_them(
    settings: Settings, tmp_path: Path
) -> None:
    good = tmp_path / "good.csv"
    good.write_text("transaction_id,product,price,quantity,date\nG1,Halal A,12,1,2023-01-01\n")
    late = tmp_path / "late.csv"  # a byte that is not UTF-8, far into the file
    lines = [f"L{n},Halal A,12,1,2023-01-01" for n in range(50_000)]
    lines[40_000] = "L40000,Halal \udcff,12,1,2023-01-01"
    late.write_bytes(
        ("transaction_id,product,price,quantity,date\n" + "\n".join(lines) + "\n").encode(
            "utf-8", "surrogateescape"
        )
    )
    # The database cannot be reached either: the files are checked before it is needed.
    unreachable = "postgresql://u:p@127.0.0.1:1/db"
    for database in (settings.database_url, unreachable):
        result = run_cli(
            settings, tmp_path, "ingest", str(good), str(late), SALESMART_DATABASE_URL=database
        )
        assert result.returncode == 2, result.stderr
        # Where a reader finds it: line 40002 (the header is line 1), after "L40000,Halal ".
        where = "line 40002, byte 14 of the line"
        assert result.stderr == f"salesmart: {late}: not UTF-8 text ({where})\n"
    assert count(settings, "raw.loads") == 0


def test_a_file_name_that_is_not_utf8_is_loaded_under_an_escaped_name(
    settings: Settings, tmp_path: Path
) -> None:
    # A POSIX name may hold any bytes; neither database stores a lone surrogate, and the
    # load failed with a codec error that named no file.
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / os.fsdecode(b"sales-\xff-\xc3.csv")
    path.write_bytes(SAMPLE_CSV.read_bytes())
    result = run(settings, tmp_path, "ingest", str(path))
    assert result.returncode == 0, result.stderr
    recorded = str(landing) + "/sales-\\xff-\\xc3.csv"
    counts = "read 5, loaded 3, rejected 2 (missing_product 1, product_prefix 1)"
    assert result.stdout.splitlines() == [
        f"{recorded} -> postgres: {counts}",
        f"{recorded} -> bigquery: {counts}",
    ]
    conn = connect(settings.database_url)
    try:
        names = conn.run(
            "SELECT source_file FROM raw.loads"
            " UNION ALL SELECT source_file FROM raw.rejected_transactions"
        )
    finally:
        conn.close()
    assert [name for (name,) in names] == [recorded] * 3
    again = run(settings, tmp_path, "ingest", str(path), "--target", "postgres")
    assert again.returncode == 0 and "loaded 0" in again.stdout, again.stdout
    # The DAG's command names it as the load does (it printed "\udcff" there).
    landed = run(settings, tmp_path, "ingest-landing", "--landing", str(landing))
    assert landed.returncode == 0, landed.stderr
    assert f"\n{recorded} -> postgres: already loaded" in landed.stdout, landed.stdout


def test_missing_file_exits_2(settings: Settings, tmp_path: Path) -> None:
    result = run(settings, tmp_path, "ingest", str(tmp_path / "nope.csv"))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_an_empty_file_name_exits_2_naming_it(settings: Settings, tmp_path: Path) -> None:
    # Before: "salesmart: .: not a regular file", a folder the user never named.
    for args in (("ingest", ""), ("ingest", str(SAMPLE_CSV), ""), ("up", "--data", "")):
        result = run(settings, tmp_path, *args)
        assert (result.returncode, result.stderr) == (
            2,
            "salesmart: an empty file name was given\n",
        ), args
    assert count(settings, "raw.loads") == 0


def test_unreachable_database_exits_1_without_traceback(settings: Settings, tmp_path: Path) -> None:
    unreachable = "postgresql://u:secretpw@127.0.0.1:1/db"
    result = run_cli(
        settings, tmp_path, "ingest", str(SAMPLE_CSV), SALESMART_DATABASE_URL=unreachable
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "secretpw" not in result.stderr


def test_unreachable_bigquery_exits_1_with_one_line(settings: Settings, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    args = ("ingest", str(SAMPLE_CSV), "--target", "bigquery")
    result = run_cli(settings, tmp_path, *args, SALESMART_BQ_ENDPOINT=endpoint)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    # Which step could not reach it: the first, making sure the datasets exist.
    expected = "BigQuery unavailable (unreachable, create dataset): ConnectionError"
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_names_that_differ_only_in_case_added_at_once_leave_one_account(
    settings: Settings,
) -> None:
    """The look-alike check and the insert are one step: `users add alice` and `users add
    Alice` run at the same moment both passed the check, leaving two accounts (4 times in
    9 tries of two processes)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.users import UserError
    from pipeline.users import add_user as add_account

    variants = ["race", "Race", "RACE", "rAce", "raCe", "racE"]
    start = threading.Barrier(len(variants))

    def add(name: str) -> bool:
        conn = connect(settings.database_url)
        try:
            start.wait()
            add_account(conn, name, "correct horse battery", "analyst", rounds=4)
            return True
        except UserError:
            return False
        finally:
            conn.close()

    for round_ in range(15):
        names = [f"{name}{round_}" for name in variants]
        with ThreadPoolExecutor(len(names)) as pool:
            added = list(pool.map(add, names))
        rows = scalar(
            settings, f"SELECT count(*) FROM auth.users WHERE lower(username) = 'race{round_}'"
        )
        assert (sum(added), rows) == (1, 1), (round_, added)


def test_a_users_add_behind_a_stuck_session_is_told_so_not_left_waiting(
    settings: Settings,
) -> None:
    """Another session holding the add lock (a stuck transaction) made `users add` wait
    for ever; it now waits the lock timeout and says why it gave up."""
    from pipeline import users

    holder = connect(settings.database_url)
    waiter = connect(settings.database_url)
    try:
        holder.run("BEGIN")
        holder.run("SELECT pg_advisory_xact_lock(:key)", key=users._ADD_LOCK_KEY)
        with (
            mock.patch.object(users, "_ADD_LOCK_WAIT", "200ms"),
            pytest.raises(users.AddLockTimeout, match="changing the users for over 200ms"),
        ):
            users.add_user(waiter, "stuck-behind", "correct horse battery", "analyst", 4)
        # The refused add left no transaction open and nothing written.
        left = waiter.run("SELECT count(*) FROM auth.users WHERE username = 'stuck-behind'")
        assert left[0][0] == 0
    finally:
        holder.close()
        waiter.close()


def test_users_add_list_disable(settings: Settings, tmp_path: Path) -> None:
    added = add_user(settings, tmp_path, "alice", "analyst", "correct horse battery\n")
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
    look_alike = run(
        settings,
        tmp_path,
        "users",
        "add",
        "Alice",
        "--role",
        "admin",
        "--password-stdin",
        stdin="another password\n",
    )
    assert (look_alike.returncode, look_alike.stderr) == (
        1,
        "salesmart: user alice already exists; a name that differs from it only in case"
        " is refused\n",
    )
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
    # On a terminal the columns are named; piped (above), every line is an account.
    controller, end = pty.openpty()
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "users", "list"],
            env=cli_env(settings, tmp_path),
            stdout=end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
        os.close(end)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the writer is gone and all is read
            while chunk := os.read(controller, 4096):
                drawn += chunk
    finally:
        os.close(controller)
    assert shown.returncode == 0, shown.stderr
    lines = drawn.decode().splitlines()
    assert lines[0] == "name\trole\tstate\tadded"
    assert lines[1].split("\t")[:3] == ["alice", "analyst", "disabled"]


def test_users_list_gives_the_day_in_utc(settings: Settings, tmp_path: Path) -> None:
    """Not in the database session's zone: 03:00 UTC is the day before at UTC-12."""
    added = add_user(settings, tmp_path, "dora", "admin", "a long enough password\n")
    assert added.returncode == 0, added.stderr
    conn = connect(settings.database_url)
    try:
        conn.run(
            "UPDATE auth.users SET created_at = '2026-01-02 03:00:00+00' WHERE username = 'dora'"
        )
    finally:
        conn.close()
    listed = run_cli(settings, tmp_path, "users", "list", PGTZ="Etc/GMT+12")
    (line,) = [row for row in listed.stdout.splitlines() if row.startswith("dora\t")]
    assert line == "dora\tadmin\tactive\t2026-01-02"


def test_a_password_that_is_not_utf8_is_refused_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    """Before: "'utf-8' codec can't encode characters in position 3-4: surrogates not
    allowed", the codec's words."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "users", "add", "latin", "--role", "analyst"],
        env=cli_env(settings, tmp_path),
        input=b"abc\xff\xfedefgh-long-enough\n",
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        1,
        b"salesmart: the password is not UTF-8 text\n",
    )
    listed = run(settings, tmp_path, "users", "list")
    assert "latin" not in listed.stdout


def test_users_enable_and_password(settings: Settings, tmp_path: Path) -> None:
    def stored() -> tuple[str, bool]:
        conn = connect(settings.database_url)
        try:
            row = conn.run(
                "SELECT password_hash, disabled FROM auth.users WHERE username = 'carol'"
            )[0]
        finally:
            conn.close()
        return str(row[0]), bool(row[1])

    add = ("users", "add", "carol", "--role", "analyst", "--password-stdin")
    assert run(settings, tmp_path, *add, stdin="first password\n").returncode == 0
    assert run(settings, tmp_path, "users", "disable", "carol").returncode == 0
    first_hash, disabled = stored()
    assert disabled and verify_password("first password", first_hash)

    changed = run(
        settings,
        tmp_path,
        *("users", "password", "carol", "--password-stdin"),
        stdin="second password\n",
    )
    assert (changed.returncode, changed.stdout) == (0, "password of carol changed\n")
    second_hash, still_disabled = stored()
    assert verify_password("second password", second_hash)
    assert not verify_password("first password", second_hash)
    assert still_disabled  # a new password does not re-enable the account

    enabled = run(settings, tmp_path, "users", "enable", "carol")
    assert (enabled.returncode, enabled.stdout) == (0, "user carol enabled\n")
    assert stored() == (second_hash, False)

    short = run(
        settings, tmp_path, *("users", "password", "carol", "--password-stdin"), stdin="short\n"
    )
    assert short.returncode == 1 and "at least 8" in short.stderr
    assert stored()[0] == second_hash
    for action in (("enable", "nobody"), ("password", "nobody", "--password-stdin")):
        missing = run(settings, tmp_path, "users", *action, stdin="long enough pw\n")
        assert missing.returncode == 1
        assert missing.stderr.strip() == "salesmart: no user named nobody"


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
    ingest = run(settings, tmp_path, "ingest", "--target", "postgres", "--json", str(one))
    import json

    summary = json.loads(ingest.stdout)
    assert summary["read"] == 5000
    assert 0 < summary["rejected"] < 250
    assert len(summary["rejected_by_reason"]) >= 8
    # In name order, as the text line has them: two runs' JSON diff cleanly.
    assert list(summary["rejected_by_reason"]) == sorted(summary["rejected_by_reason"])
    # Loaded again: nothing new, and which load holds it (the text line says so too).
    again = json.loads(
        run(settings, tmp_path, "ingest", "--target", "postgres", "--json", str(two)).stdout
    )
    assert summary["already_loaded"] is False and isinstance(summary["load_id"], int)
    assert (again["already_loaded"], again["load_id"]) == (True, summary["load_id"])


def test_an_interrupted_generate_leaves_no_half_file(tmp_path: Path) -> None:
    """Ctrl-C half-way (raised here where the progress is reported): nothing at ``--out``,
    and an earlier complete file there is kept. ``up --rows N`` generates its file once and
    used to load a half one from then on."""
    from pipeline.generate import generate

    def interrupt_half_way(written: int) -> None:
        if written >= 100_000:
            raise KeyboardInterrupt

    out = tmp_path / "generated.csv"
    with pytest.raises(KeyboardInterrupt):
        generate(out, 300_000, on_progress=interrupt_half_way)
    assert list(tmp_path.iterdir()) == []
    generate(out, 10)
    complete = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        generate(out, 300_000, on_progress=interrupt_half_way)
    assert list(tmp_path.iterdir()) == [out]
    assert out.read_bytes() == complete


SHARE_RANGE = "--invalid-share must be between 0 and 1"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--rows", "-5"], "salesmart: --rows must be >= 0"),
        (["--rows", "5", "--invalid-share", "2"], f"salesmart: {SHARE_RANGE}"),
        (["--rows", "5", "--invalid-share", "-0.1"], f"salesmart: {SHARE_RANGE}"),
    ],
)
def test_generate_refuses_impossible_options(
    settings: Settings, tmp_path: Path, options: list[str], reason: str
) -> None:
    out = tmp_path / "never.csv"
    result = run(settings, tmp_path, "generate", *options, "--out", str(out))
    assert (result.returncode, result.stderr.strip()) == (1, reason)  # 2: unusable input only
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ["ingest", "x.csv", "--target", "foo"],
            "salesmart ingest: argument --target: invalid choice: 'foo'",
        ),
        ([], "salesmart: the following arguments are required: COMMAND"),
        (["users", "add", "bob", "--role", "root"], "salesmart users add: argument --role"),
        (["generate", "--rows", "abc", "--out", "x.csv"], "salesmart generate: argument --rows"),
        (["transform", "--bogus"], "salesmart transform: unrecognized arguments: --bogus"),
        # An unknown option is named, not hidden behind the missing command.
        (["--bogus"], "salesmart: unrecognized arguments: --bogus"),
        (["users"], "salesmart users: the following arguments are required: ACTION"),
        (["users", "list", "--all"], "salesmart users list: unrecognized arguments: --all"),
        (["ingest", "--bogus"], "salesmart ingest: unrecognized arguments: --bogus"),
        # An option is its whole name: an abbreviation a script relied on would change
        # meaning once a later option shared its start.
        (["ingest", "x.csv", "--tar", "all"], "salesmart ingest: unrecognized arguments: --tar"),
        (["users", "add", "bob", "--rol", "admin"], "salesmart users add: unrecognized arg"),
        # ... while a negative number is a value, not an unknown option.
        (["generate", "--rows", "-5"], "salesmart generate: the following arguments are required"),
    ],
)
def test_a_wrong_option_is_one_line_and_exit_1(
    settings: Settings, tmp_path: Path, args: list[str], reason: str
) -> None:
    result = run(settings, tmp_path, *args)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(reason), result.stderr
    command = reason.split(":", 1)[0]  # the help of the command that was given
    assert result.stderr.rstrip().endswith(f"(see {command} --help)"), result.stderr


def test_generate_to_stdout_keeps_its_summary_out_of_the_csv(
    settings: Settings, tmp_path: Path
) -> None:
    # `salesmart generate --out /dev/stdout > f.csv` (or `| next-step`): before, the summary
    # line was written into the CSV (over its header, or as a last "row").
    result = run(settings, tmp_path, "generate", "--rows", "3", "--out", "/dev/stdout")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "transaction_id,product,price,quantity,date" and len(lines) == 4, lines
    assert result.stderr == "wrote 3 transactions to /dev/stdout\n"
    to_file = run(settings, tmp_path, "generate", "--rows", "3", "--out", str(tmp_path / "g.csv"))
    assert to_file.stdout == f"wrote 3 transactions to {tmp_path / 'g.csv'}\n"


def test_generate_to_dash_writes_standard_output(settings: Settings, tmp_path: Path) -> None:
    result = run(settings, tmp_path, "generate", "--rows", "3", "--out", "-")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4, result.stdout
    assert result.stderr == "wrote 3 transactions to standard output\n"
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("out", ["-", "/dev/stdout"])
def test_generate_to_stdout_appends_where_the_shell_points_it(
    settings: Settings, tmp_path: Path, out: str
) -> None:
    # `generate --out - >> log`: before, the command reopened /dev/stdout, which emptied
    # the log and wrote from its start.
    log = tmp_path / "log.txt"
    log.write_text("kept line 1\nkept line 2\n")
    with log.open("a") as appended:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "generate", "--rows", "3", "--out", out],
            env=cli_env(settings, tmp_path),
            stdout=appended,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[:3] == ["kept line 1", "kept line 2", "transaction_id,product,price,quantity,date"]
    assert len(lines) == 6, lines


def test_generate_stops_quietly_when_its_reader_leaves(settings: Settings, tmp_path: Path) -> None:
    # `generate --out - | head -2`: before, exit 1 and "salesmart: /dev/stdout: Broken pipe".
    generating = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "generate", "--rows", "5000000", "--out", "-"],
        env=cli_env(settings, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert generating.stdout is not None and generating.stderr is not None
    first = [generating.stdout.readline() for _ in range(2)]
    generating.stdout.close()  # the reader leaves
    returncode = generating.wait(timeout=120)  # long before five million rows
    stderr = generating.stderr.read().decode()
    assert first[0] == b"transaction_id,product,price,quantity,date\n"
    assert returncode == 0, stderr
    assert "Broken pipe" not in stderr, stderr
    # Not "wrote N" for what the reader never took: how far it got, and why it stopped.
    stopped = re.fullmatch(
        r"stopped after (\d+) of 5000000 transactions: the reader of standard output left\n",
        stderr,
    )
    assert stopped and int(stopped[1]) < 5_000_000, stderr


def test_generate_does_not_say_it_wrote_what_a_gone_reader_never_took(
    settings: Settings, tmp_path: Path
) -> None:
    # The reader is checked every 1000 rows: a run of 999 whose reader left after the
    # first line (`| head -1`) said "wrote 999 transactions".
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # full long before 999 rows (~50 KB)
    generating = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "generate", "--rows", "999", "--out", "-"],
        env=cli_env(settings, tmp_path),
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    assert generating.stderr is not None
    with os.fdopen(read_end, "rb") as reader:
        assert reader.readline() == b"transaction_id,product,price,quantity,date\n"
    returncode = generating.wait(timeout=120)  # the reader left, the child blocked writing
    stderr = generating.stderr.read().decode()
    assert returncode == 0, stderr
    assert stderr == (
        "wrote 999 transactions to standard output, but its reader left before the end\n"
    ), stderr


def test_generate_makes_the_folder_it_is_asked_to_write_into(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "folder" / "x.csv"
    result = run(settings, tmp_path, "generate", "--rows", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 4


def test_a_seed_starts_the_same_whatever_the_length_and_seeds_do_not_share_ids(
    tmp_path: Path,
) -> None:
    """The first rows of a longer file are a shorter one's rows (past the first block of
    products too), so one id never names two different rows; another seed, other ids."""
    from pipeline.generate import PRODUCT_BLOCK, generate

    short, long, other = tmp_path / "short.csv", tmp_path / "long.csv", tmp_path / "other.csv"
    generate(short, PRODUCT_BLOCK + 10, seed=7)
    generate(long, PRODUCT_BLOCK + 500, seed=7)
    generate(other, 500, seed=8)
    short_lines = short.read_text().splitlines()
    long_lines = long.read_text().splitlines()
    assert long_lines[: len(short_lines)] == short_lines
    assert len(long_lines) == PRODUCT_BLOCK + 501

    def ids(lines: list[str]) -> set[str]:
        return {line.split(",", 1)[0] for line in lines[1:]} - {""}

    assert not ids(long_lines) & ids(other.read_text().splitlines())


def test_a_long_generate_shows_progress_on_a_terminal(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "long.csv"
    code, stdout, bar = on_terminal(
        settings, tmp_path, "generate", "--rows", "300000", "--out", str(out)
    )
    assert code == 0, bar[-500:]
    assert stdout == f"wrote 300000 transactions to {out}\n"
    assert max(percentages(bar, "long.csv"), default=0) == 100, bar[-500:]
    assert "rows/s" in bar, bar[-500:]
    quiet = run(settings, tmp_path, "generate", "--rows", "300000", "--out", str(out))
    assert (quiet.returncode, quiet.stderr) == (0, "")


@pytest.mark.parametrize(
    ("args", "highest"),
    [
        (("up", "--port-base", "65533"), 65532),
        # A function keeps its slot served alone: dashboard's port is the base + 3.
        (("serve", "--function", "dashboard", "--port-base", "70000"), 65532),
        (("serve", "--function", "trends_pg", "--port-base", "65534"), 65533),
        (("serve", "--function", "token", "--port-base", "65536"), 65535),
        (
            ("serve", "--function", "token", "--function", "dashboard", "--port-base", "65535"),
            65532,
        ),
        (("serve", "--port-base", "-5"), 65532),
    ],
)
def test_port_bases_without_room_are_refused_in_one_line(
    settings: Settings, tmp_path: Path, args: tuple[str, ...], highest: int
) -> None:
    # serve said only "bind(): port must be 0-65535." (gunicorn's words, no option named).
    result = run(settings, tmp_path, *args)
    assert (result.returncode, result.stderr) == (
        1,
        f"salesmart: --port-base must be between 1024 and {highest}\n",
    )


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("THREADS", "0", "THREADS must be >= 1, found 0"),
        ("WORKERS", "two", "WORKERS must be an integer, found 'two'"),
        ("CLOUD_RUN_TIMEOUT_SECONDS", "-1", "CLOUD_RUN_TIMEOUT_SECONDS must be >= 0, found -1"),
        (
            "SALESMART_HEADER_TIMEOUT_SECONDS",
            "0",
            "SALESMART_HEADER_TIMEOUT_SECONDS must be a positive number of seconds, found '0'",
        ),
    ],
)
def test_a_bad_server_variable_stops_up_and_serve_before_they_start_anything(
    settings: Settings, tmp_path: Path, variable: str, value: str, reason: str
) -> None:
    # up loaded the data and built both warehouses' marts (33 s), then said only "function
    # token exited (code 1)", the reason left in that function's log.
    port_base = free_port()
    for command in ("up", "serve"):
        result = run_cli(
            settings, tmp_path, command, "--port-base", str(port_base), **{variable: value}
        )
        assert (result.returncode, result.stderr) == (1, f"salesmart: {reason}\n"), command
    assert count(settings, "raw.loads") == 0  # up loads its data first
    assert not (tmp_path / "state" / "logs").exists()  # no function was started


def test_local_file_errors_name_the_file_not_a_service(settings: Settings, tmp_path: Path) -> None:
    result = run(settings, tmp_path, "generate", "--rows", "5", "--out", str(tmp_path))
    assert (result.returncode, result.stderr) == (1, f"salesmart: {tmp_path}: Is a directory\n")
    # An empty name is the current folder to Path(): ".: Is a directory", a name not given.
    result = run(settings, tmp_path, "generate", "--rows", "5", "--out", "")
    assert (result.returncode, result.stderr) == (
        1,
        "salesmart: --out: an empty file name was given\n",
    )
    one = tmp_path / "one.csv"
    result = run(settings, tmp_path, "generate", "--rows", "1", "--out", str(one))
    assert (result.returncode, result.stdout) == (0, f"wrote 1 transaction to {one}\n")
    # A state folder that is a file is named as such ("File exists" said neither).
    state_file = tmp_path / "state-file"
    state_file.write_text("")
    result = run_cli(
        settings, tmp_path, "ingest", str(SAMPLE_CSV), SALESMART_STATE_DIR=str(state_file)
    )
    assert (result.returncode, result.stderr) == (
        1,
        f"salesmart: {state_file}: not a folder (the state folder, SALESMART_STATE_DIR)\n",
    )
    nowhere = "/proc/salesmart-never.csv"  # not even root creates files there
    result = run(settings, tmp_path, "generate", "--rows", "5", "--out", nowhere)
    assert (result.returncode, result.stderr) == (
        1,
        f"salesmart: {nowhere}: No such file or directory\n",  # not its temporary name
    )
    # A write that fails (a full disk) names the file too; it said "cannot reach a service".
    result = run(settings, tmp_path, "generate", "--rows", "5", "--out", "/dev/full")
    assert (result.returncode, result.stderr) == (
        1,
        "salesmart: /dev/full: No space left on device\n",
    )
    typo = tmp_path / "typo.yaml"
    result = run_cli(settings, tmp_path, "users", "list", SALESMART_CONFIG=str(typo))
    assert (result.returncode, result.stderr) == (
        1,
        f"salesmart: SALESMART_CONFIG={typo}: no such file\n",
    )


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_adds_a_traceback_and_keeps_the_exit_code(
    settings: Settings, tmp_path: Path, where: str
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    args = ["ingest", str(empty)]
    result = run(
        settings, tmp_path, *(["--debug", *args] if where == "before" else [*args, "--debug"])
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr
    # Where the reader found it, not only where the command turned it into its message.
    assert "pipeline/csvsource.py" in result.stderr
    assert "UnusableInputError" in result.stderr
    assert result.stderr.splitlines()[-1] == f"salesmart: {empty}: empty file (no CSV header)"


@contextlib.contextmanager
def terminal(*, sized: bool = True) -> Iterator[tuple[int, bytearray]]:
    """A pseudo-terminal of 100 columns (or, not ``sized``, one that reports 0 x 0, as a
    job runner's may): the descriptor of its terminal end, and what is written to it, read
    while it is being written (a full terminal blocks its writer)."""
    controller, end = pty.openpty()
    if sized:
        fcntl.ioctl(end, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: every writer closed its end
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield end, shown
    finally:
        with contextlib.suppress(OSError):
            os.close(end)
        reader.join(timeout=10)
        os.close(controller)


@pytest.mark.parametrize(
    ("lines", "message"),
    [([b"\x04"], "no password given"), ([b"one\n", b"two\n"], "the passwords do not match")],
)
def test_the_password_prompt_on_a_terminal(
    settings: Settings, tmp_path: Path, lines: list[bytes], message: str
) -> None:
    """Typed at the prompt (no --password-stdin): Ctrl-D is a one-line reason too (it was
    'salesmart: EOFError'), as is a repeat that differs."""
    controller, end = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "users", "add", "gina", "--role", "analyst"],
        env=cli_env(settings, tmp_path),
        stdin=end,  # no controlling terminal (a session of its own): getpass reads this one
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(end)
    assert process.stderr is not None
    try:
        for line in lines:  # each once its prompt is out (getpass flushes earlier input)
            prompt = b""
            while not prompt.endswith(b": "):
                chunk = os.read(process.stderr.fileno(), 1)
                assert chunk, prompt
                prompt += chunk
            os.write(controller, line)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        os.close(controller)
    assert process.returncode == 1, err
    assert err.decode().splitlines()[-1] == f"salesmart: {message}"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("add", "hana", "--role", "analyst"), "user hana already exists"),
        (("password", "ivan"), "no user named ivan"),
        (("add", "bad name", "--role", "analyst"), "username must be 1-64 characters"),
        (
            ("add", "José", "--role", "analyst"),
            "username must be 1-64 characters: ASCII letters and digits, _ . @ -",
        ),
    ],
)
def test_a_name_that_cannot_take_a_password_is_refused_before_the_prompt(
    settings: Settings, tmp_path: Path, command: tuple[str, ...], message: str
) -> None:
    # Before, the password was asked for (twice) and only then refused.
    added = run(
        settings,
        tmp_path,
        "users",
        "add",
        "hana",
        "--role",
        "analyst",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    controller, end = pty.openpty()
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "users", *command],
            env=cli_env(settings, tmp_path),
            stdin=end,  # a terminal: getpass would prompt on it
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            start_new_session=True,
        )
    finally:
        os.close(end)
        os.close(controller)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"salesmart: {message}"), refused.stderr  # no prompt first
    assert len(refused.stderr.splitlines()) == 1


def on_terminal(
    settings: Settings, tmp_path: Path, *args: str, sized: bool = True
) -> tuple[int, str, str]:
    """`salesmart ARGS` with its stderr on a terminal: exit code, stdout, what it drew."""
    with terminal(sized=sized) as (end, shown):
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=cli_env(settings, tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=end,
            text=True,
        )
        os.close(end)
        out, _ = process.communicate(timeout=300)
    return process.returncode, out, shown.decode(errors="replace")


LOADING_LINE = "big.csv: loading the new rows..."


def percentages(shown: str, name: str = "big.csv") -> list[int]:
    """The percentages of the file's progress bar, as drawn one after another."""
    return [int(found) for found in re.findall(rf"{re.escape(name)}:\s+(\d+)%\|", shown)]


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file large enough for a progress bar (generated; the database is not needed)."""
    folder = tmp_path_factory.mktemp("big")
    path = folder / "big.csv"
    made = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", "--rows", "250000", "--out", str(path)],
        env={**os.environ, "SALESMART_STATE_DIR": str(folder / "state")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert path.stat().st_size > PROGRESS_MIN_BYTES
    return path


def test_a_long_ingest_shows_progress_on_a_terminal_and_not_in_a_pipe(
    settings: Settings, tmp_path: Path, big_csv: Path
) -> None:
    """The contract's "long work shows progress": a bar on a terminal's stderr while a large
    file loads, and nothing of it when stderr is a pipe or a file (logs, CI)."""
    code, out, bar = on_terminal(settings, tmp_path, "ingest", "--target", "postgres", str(big_csv))
    assert code == 0, bar[-500:]
    assert "read 250000" in out
    assert max(percentages(bar), default=0) == 100, bar[-500:]  # drawn finished, however fast
    assert "MB/s" in bar, bar[-500:]
    assert LOADING_LINE in bar, bar[-500:]

    # The same file again through pipes: the summary, and no bar.
    again = run(settings, tmp_path, "ingest", "--target", "postgres", str(big_csv))
    assert again.returncode == 0, again.stderr
    assert "loaded 0" in again.stdout
    assert "%|" not in again.stderr


def test_a_terminal_that_reports_no_size_still_shows_progress(
    settings: Settings, tmp_path: Path, big_csv: Path
) -> None:
    """A pseudo-terminal never given a size (0 x 0) is still a terminal: before, tqdm drew
    nothing on it and the status lines were skipped, so a long load looked stuck."""
    code, out, bar = on_terminal(
        settings, tmp_path, "ingest", "--target", "postgres", str(big_csv), sized=False
    )
    assert code == 0, bar[-500:]
    assert "read 250000" in out
    assert max(percentages(bar), default=0) == 100, bar[-500:]
    assert LOADING_LINE in bar, bar[-500:]
    code, out, text = on_terminal(
        settings, tmp_path, "transform", "--target", "postgres", sized=False
    )
    assert code == 0, text[-500:]
    assert re.search(r"dbt postgres: \d+ of \d+ ", text), text[-500:]


def test_transform_shows_dbts_steps_on_a_terminal_and_not_in_a_pipe(
    settings: Settings, tmp_path: Path
) -> None:
    """Long work shows progress: a dbt build says which step it is at, on one line."""
    # A work folder made by an older version (0755) is closed too.
    (tmp_path / "state" / "dbt" / "postgres").mkdir(parents=True, mode=0o755)
    code, out, text = on_terminal(settings, tmp_path, "transform", "--target", "postgres")
    assert code == 0, text[-500:]
    assert "dbt build on postgres: ok" in out
    steps = [(int(n), int(of)) for n, of in re.findall(r"dbt postgres: (\d+) of (\d+) ", text)]
    # dbt runs nodes in parallel threads: steps end in any order, but all of them show. (Its
    # "of M" counts the unit tests twice once a data test also reads the raw source: the
    # nodes run are those the summary line counts.)
    assert len({total for _, total in steps}) == 1, text[-500:]
    ran = sum(int(n) for n in re.findall(r"(\d+) (?:models?|data tests?|unit tests?)\b", out))
    assert {n for n, _ in steps} == set(range(1, ran + 1)), (ran, text[-500:])
    assert "\n" not in text and text.endswith(" \r"), text[-300:]  # one line, erased at the end
    piped = run(settings, tmp_path, "transform", "--target", "postgres")
    assert piped.returncode == 0, piped.stderr
    assert "dbt postgres:" not in piped.stderr
    # What dbt wrote (compiled SQL, its log) is the owner's only, as the rest of the state.
    work = tmp_path / "state" / "dbt" / "postgres"
    readable = [
        f"{path} {path.stat().st_mode & 0o777:o}"
        for path in [work, *work.rglob("*")]
        if path.stat().st_mode & 0o077
    ]
    assert readable == [] and (work / "logs" / "dbt.log").is_file(), readable[:5]


def test_the_row_by_row_reader_shows_progress_on_a_terminal(
    big_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BigQuery load reads rows one by one (not the PostgreSQL loader's blocks); its bar
    follows the reader through the file to the end."""
    settings = build_settings({**os.environ, "SALESMART_ENV": "dev"})
    with terminal() as (end, shown):
        with open(os.dup(end), "w", encoding="utf-8") as stderr:
            monkeypatch.setattr(sys, "stderr", stderr)
            reader = TransactionReader(big_csv, settings.validation, "k" * 32)
            with FileProgress(big_csv, show=True) as progress:
                rows = sum(1 for _ in track_rows(reader, progress))
                stderr.flush()
                deadline = time.monotonic() + 10  # the terminal is read by another thread
                while LOADING_LINE.encode() not in shown and time.monotonic() < deadline:
                    time.sleep(0.05)
                shown_while_loading = bytes(shown)
        monkeypatch.undo()
    bar = shown.decode(errors="replace")
    assert rows == 250000
    assert max(percentages(bar), default=0) == 100, bar[-500:]  # drawn finished, however fast
    # Once read, the line saying what is still being done; erased at the end.
    assert shown_while_loading.endswith(f"{LOADING_LINE}\r".encode()), bar[-300:]
    assert bar.endswith(" " * len(LOADING_LINE) + "\r"), bar[-300:]


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:  # argparse keeps its subcommands here only
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_and_argument_says_what_it_is() -> None:
    """``salesmart COMMAND --help`` (and ``salesmart-serve --help``, the image's command)
    explains each argument, not just its name."""
    from common.server import _parser as serve_parser

    unexplained = [
        f"{prog} {action.dest}"
        for top in (build_parser(), serve_parser({}))
        for prog, parser in _parsers(top)
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and not action.help
    ]
    assert unexplained == []


@pytest.mark.parametrize("phase", ["creating the server", "loading"])
def test_sigterm_stops_what_ingest_started_and_loads_nothing(
    big_csv: Path, tmp_path: Path, phase: str
) -> None:
    """``salesmart ingest`` outside ``up`` creates (first time) and starts an embedded
    PostgreSQL for the load. SIGTERM (``timeout``, a process manager) while it is created or
    mid-load: exit 130, the server stopped, nothing of the file loaded, and the next run
    works. Before, SIGTERM killed the command at once, left the server running, and one
    during ``initdb`` left a half cluster that every later command failed on."""
    state = tmp_path / "state"
    env = {**os.environ, "SALESMART_STATE_DIR": str(state)}  # no database URL: embedded
    command = [sys.executable, "-m", "pipeline.cli", "ingest", "--target", "postgres", str(big_csv)]
    loader = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def command_lines() -> Iterator[list[str]]:
        for child in psutil.Process(loader.pid).children():
            with contextlib.suppress(psutil.Error):  # ended (or a zombie) meanwhile
                yield child.cmdline()

    def reached() -> bool:
        if phase == "loading":  # the forked workers that parse the file
            return any(line == loader.args for line in command_lines())
        return any("initdb" in " ".join(line) for line in command_lines())

    try:
        assert eventually(reached, seconds=120), phase
        loader.send_signal(signal.SIGTERM)
        _, stderr = loader.communicate(timeout=60)
    finally:
        if loader.poll() is None:
            loader.kill()
    assert loader.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "salesmart: interrupted"
    assert "Traceback" not in stderr

    def server_gone() -> bool:
        return not any(
            str(state) in " ".join(p.info["cmdline"] or [])
            for p in psutil.process_iter(["cmdline"])
        )

    assert eventually(server_gone, seconds=30)
    again = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr
    loaded = re.search(r"read 250000, loaded (\d+),", again.stdout)
    # ~2% of generated rows are invalid; had the first load committed, none would be new.
    assert loaded and int(loaded[1]) > 240_000, again.stdout


@pytest.mark.parametrize(
    ("given", "args", "needed"),
    [
        ({}, ["ingest", str(SAMPLE_CSV), "--target", "postgres"], "SALESMART_PII_KEY"),
        ({"SALESMART_PII_KEY": "k" * 40}, ["users", "list"], "SALESMART_DATABASE_URL"),
        ({"SALESMART_PII_KEY": "k" * 40}, ["ingest", str(SAMPLE_CSV)], "SALESMART_DATABASE_URL"),
        (
            {"SALESMART_PII_KEY": "k" * 40, "SALESMART_DATABASE_URL": "use the test's"},
            ["ingest", str(SAMPLE_CSV), "--target", "bigquery"],
            "SALESMART_BQ_PROJECT",
        ),
    ],
)
def test_a_deployment_is_given_its_key_database_and_project(
    settings: Settings, tmp_path: Path, given: dict[str, str], args: list[str], needed: str
) -> None:
    """With SALESMART_ENV set to other than dev (the chart's Job, the Airflow workers),
    nothing local stands in for what a deployment must give. Before, a worker missing its
    PII key masked ids with a random local one, and one missing its database URL loaded
    into an embedded server, both reporting success."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESMART_")}
    env |= {
        "SALESMART_ENV": "prod",
        "SALESMART_STATE_DIR": str(tmp_path / "state"),
        "SALESMART_CONFIG": os.environ["SALESMART_CONFIG"],
        **given,
    }
    if "SALESMART_DATABASE_URL" in given:
        env["SALESMART_DATABASE_URL"] = settings.database_url
    result = salesmart(*args, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"salesmart: {needed} is not set: with SALESMART_ENV=prod"), line
    assert not any((tmp_path / "state" / name).exists() for name in ("pii-key", "postgres"))
    assert not (tmp_path / "state" / "bigquery").exists()
    assert count(settings, "raw.transactions") == 0  # nothing loaded anywhere


@dataclasses.dataclass(frozen=True)
class Subfolder:
    """A project whose `.salesmart` (up's) is one level above the folder a command runs in."""

    project: Path
    here: Path
    env: dict[str, str]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            env={**self.env, **env},
            cwd=self.here,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def assert_says_it_starts_a_new(
        self, what: str, result: subprocess.CompletedProcess[str], doing: str = "starting"
    ) -> None:
        assert result.returncode == 0, result.stderr
        start = f"salesmart: {doing} {what} in {self.here / '.salesmart'}:"
        notices = [line for line in result.stderr.splitlines() if line.startswith(start)]
        assert len(notices) == 1, result.stderr
        (notice,) = notices
        assert (
            f"{self.project / '.salesmart'} is another folder's (run from {self.project}" in notice
        )


@pytest.fixture
def subfolder(tmp_path: Path) -> Subfolder:
    project = tmp_path / "project"
    (project / ".salesmart").mkdir(parents=True)
    here = project / "data"
    here.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESMART_")}
    env["SALESMART_CONFIG"] = os.environ["SALESMART_CONFIG"]
    return Subfolder(project, here, env)


def test_a_command_in_a_subfolder_says_it_starts_a_new_local_warehouse(
    subfolder: Subfolder,
) -> None:
    # `salesmart users list` from data/ while `up` runs one level up: before, a new empty
    # cluster was made in data/.salesmart without a word ("no users yet").
    subfolder.assert_says_it_starts_a_new(
        "a new, empty local PostgreSQL", subfolder.run("users", "list")
    )
    again = subfolder.run("users", "list")
    assert "starting a new" not in again.stderr  # said once, when it is made


def test_a_bigquery_command_in_a_subfolder_says_it_starts_a_new_stand_in(
    subfolder: Subfolder,
) -> None:
    # The same for the BigQuery stand-in: `ingest --target bigquery` from data/ loaded into
    # a new, empty stand-in in data/.salesmart without a word.
    command = ["ingest", str(SAMPLE_CSV), "--target", "bigquery"]
    subfolder.assert_says_it_starts_a_new(
        "a new, empty local BigQuery stand-in", subfolder.run(*command)
    )
    again = subfolder.run(*command)
    assert again.returncode == 0, again.stderr
    assert "starting a new" not in again.stderr  # said once, when it is made
    # A deployment's command starts no stand-in: it is refused, and nothing else is said.
    (subfolder.here / ".salesmart" / "bigquery").rename(subfolder.here / "made before")
    deployed = subfolder.run(*command, SALESMART_ENV="prod", SALESMART_PII_KEY="k" * 40)
    assert deployed.returncode == 1, deployed.stderr
    assert "starting a new" not in deployed.stderr, deployed.stderr
    assert "SALESMART_BQ_PROJECT" in deployed.stderr, deployed.stderr


def test_a_load_in_a_subfolder_says_it_masks_with_a_new_key(
    subfolder: Subfolder, fresh_dsn: str
) -> None:
    # Into a shared warehouse (the URL given), from data/: ids were masked under a key made
    # in data/.salesmart without a word, and matched no other folder's (an audit).
    command = ["ingest", str(SAMPLE_CSV), "--target", "postgres"]
    done = subfolder.run(*command, SALESMART_DATABASE_URL=fresh_dsn)
    subfolder.assert_says_it_starts_a_new("a new local PII key", done, doing="making")
    assert (subfolder.here / ".salesmart" / "pii-key").exists()
    again = subfolder.run(*command, SALESMART_DATABASE_URL=fresh_dsn)
    assert again.returncode == 0, again.stderr
    assert "starting a new" not in again.stderr  # said once, when it is made


def test_commands_that_use_no_key_make_none(subfolder: Subfolder, fresh_dsn: str) -> None:
    """transform and check-marts mask nothing (ids come masked): they made .salesmart's
    keys in any folder they ran in, and a deployment's refused to run without a PII key."""
    for env in ({}, {"SALESMART_ENV": "prod"}):
        done = subfolder.run(
            "check-marts", "--target", "postgres", SALESMART_DATABASE_URL=fresh_dsn, **env
        )
        assert "SALESMART_PII_KEY" not in done.stderr, done.stderr
        assert "marts" in done.stdout + done.stderr  # it ran: no marts built in this database
    assert not (subfolder.here / ".salesmart" / "pii-key").exists()
    assert not (subfolder.here / ".salesmart" / "jwt-secret").exists()


@pytest.mark.parametrize("finished", [True, False, None])
def test_an_interrupted_load_says_what_it_left(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], finished: bool | None
) -> None:
    import pipeline.cli as cli
    from pipeline.ingest_bigquery import interrupted_load

    def interrupted(_args: argparse.Namespace) -> int:
        raise KeyboardInterrupt(interrupted_load(42, finished))

    monkeypatch.setattr(cli, "cmd_ingest", interrupted)
    assert cli.main(["ingest", str(SAMPLE_CSV), "--target", "bigquery"]) == 130
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"salesmart: interrupted: {interrupted_load(42, finished)}"
    assert ("load 42" in line) is bool(finished)


def test_ingest_into_both_finds_bigquery_gone_before_loading_postgresql(
    settings: Settings, tmp_path: Path
) -> None:
    """PostgreSQL was loaded, then BigQuery found unreachable: the warehouses stayed apart
    until the file was loaded again (an audit). Now nothing is loaded, and it says why."""
    dead = f"http://127.0.0.1:{free_port()}"
    done = run_cli(settings, tmp_path, "ingest", str(SAMPLE_CSV), SALESMART_BQ_ENDPOINT=dead)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "salesmart: BigQuery did not answer, nothing loaded: BigQuery unavailable (unreachable"
    ), line
    assert "-> postgres" not in done.stdout
    assert count(settings, "raw.loads") == 0


def test_a_name_no_account_may_have_is_refused_before_any_server_starts(
    subfolder: Subfolder,
) -> None:
    # It started (and on first use made) the embedded PostgreSQL first (an audit).
    done = subfolder.run("users", "add", "bad name!", "--role", "admin", "--password-stdin")
    assert done.returncode == 1
    assert done.stderr == (
        "salesmart: username must be 1-64 characters: ASCII letters and digits, _ . @ -\n"
    )
    assert not (subfolder.here / ".salesmart" / "postgres").exists()
