"""Loading into real PostgreSQL: counts, rejects with reasons, idempotence, one transaction."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import Settings
from common.masking import mask
from common.pg import connect
from pipeline.generate import generate
from pipeline.ingest import IngestResult, ingest_postgres
from tests.conftest import SAMPLE_CSV, cli_env, eventually

HEADER = "transaction_id,product,price,quantity,date\n"


def load(settings: Settings, path: Path) -> IngestResult:
    return ingest_postgres(connect(settings.database_url), path, settings)


def query(settings: Settings, sql: str) -> list[list[object]]:
    conn = connect(settings.database_url)
    try:
        return list(conn.run(sql))
    finally:
        conn.close()


def test_sample_file(settings: Settings) -> None:
    result = load(settings, SAMPLE_CSV)
    assert (result.read, result.loaded, result.rejected) == (5, 3, 2)
    assert dict(result.rejected_by_reason) == {"missing_product": 1, "product_prefix": 1}
    loaded = query(
        settings,
        "SELECT transaction_id, masked_transaction_id, product, price::text,"
        " quantity, sale_date::text FROM raw.transactions ORDER BY 1",
    )
    assert loaded == [
        ["T001", mask("T001", settings.pii_key), "Halal Laptop", "999.99", 2, "2023-10-01"],
        ["T002", mask("T002", settings.pii_key), "Halal Mouse", "24.99", 10, "2023-10-02"],
        ["T003", mask("T003", settings.pii_key), "Halal Keyboard", "49.99", 5, "2023-10-03"],
    ]
    rejects = query(
        settings,
        "SELECT line_number, raw_text, reason, source_file"
        " FROM raw.rejected_transactions ORDER BY line_number",
    )
    assert rejects == [
        [5, "T004,,29.99,3,2023-10-04", "missing_product", str(SAMPLE_CSV)],
        [6, "T005,Monitor,199.99,2,2023-10-05", "product_prefix", str(SAMPLE_CSV)],
    ]


def test_reingest_loads_nothing_new_and_records_nothing_again(
    settings: Settings, tmp_path: Path
) -> None:
    first = load(settings, SAMPLE_CSV)
    state = "SELECT (SELECT count(*) FROM raw.transactions), (SELECT count(*) FROM raw.loads),"
    state += " (SELECT count(*) FROM raw.rejected_transactions)"
    before = query(settings, state)
    second = load(settings, SAMPLE_CSV)
    assert first.loaded == 3
    assert (second.read, second.loaded, second.rejected) == (5, 0, 5)
    assert dict(second.rejected_by_reason) == {
        "duplicate_transaction_id": 3,
        "missing_product": 1,
        "product_prefix": 1,
    }
    assert second.already_loaded and second.load_id == first.load_id
    assert second.summary().endswith(
        f"; already loaded (load {first.load_id}), nothing recorded again"
    )
    # Idempotent: the same state as after the first load, the rejects not kept twice.
    assert query(settings, state) == before == [[3, 1, 2]]
    loads = query(
        settings, "SELECT rows_read, rows_loaded, rows_rejected FROM raw.loads ORDER BY load_id"
    )
    assert loads == [[5, 3, 2]]
    # finished_at is when the load finished, not when its transaction began.
    assert query(settings, "SELECT bool_and(finished_at > started_at) FROM raw.loads") == [[True]]
    # The same content under another name is the same file; other content is a new load,
    # whose rows already loaded are rejected as duplicates (and kept).
    renamed = tmp_path / "renamed.csv"
    renamed.write_bytes(SAMPLE_CSV.read_bytes())
    assert load(settings, renamed).already_loaded
    extended = tmp_path / "extended.csv"
    extended.write_bytes(SAMPLE_CSV.read_bytes() + b"T006,Halal Dates,12.00,1,2023-10-06\n")
    third = load(settings, extended)
    assert (third.loaded, third.rejected, third.already_loaded) == (1, 5, False)
    assert query(settings, state) == [[4, 2, 7]]


def test_a_file_loaded_before_whose_rows_were_removed_loads_them_again(
    settings: Settings,
) -> None:
    # Not a no-op when the raw area lost rows since (an operator's clean-up): the rows the
    # file would add are loaded again, as a new load.
    load(settings, SAMPLE_CSV)
    conn = connect(settings.database_url)
    try:
        conn.run("DELETE FROM raw.transactions WHERE transaction_id = 'T002'")
    finally:
        conn.close()
    again = load(settings, SAMPLE_CSV)
    assert (again.loaded, again.rejected, again.already_loaded) == (1, 4, False)
    assert query(settings, "SELECT count(*) FROM raw.loads") == [[2]]


def test_every_reason_is_kept_and_read_equals_loaded_plus_rejected(
    settings: Settings, tmp_path: Path
) -> None:
    rows = {
        "T1,Halal A,12.50,1,2023-01-01": None,
        ",Halal A,12.50,1,2023-01-01": "missing_transaction_id",
        "T2,,12.50,1,2023-01-01": "missing_product",
        "T3,Halal A,,1,2023-01-01": "missing_price",
        "T4,Halal A,12.50,,2023-01-01": "missing_quantity",
        "T5,Halal A,12.50,1,": "missing_date",
        "T6,Monitor,12.50,1,2023-01-01": "product_prefix",
        "T7,Halal A,1e3,1,2023-01-01": "invalid_price",
        "T8,Halal A,12.505,1,2023-01-01": "too_many_decimals",
        "T9,Halal A,9.99,1,2023-01-01": "price_below_min",
        "T10,Halal A,12.50,x,2023-01-01": "invalid_quantity",
        "T11,Halal A,12.50,101,2023-01-01": "quantity_out_of_range",
        "T12,Halal A,12.50,1,2023-02-30": "invalid_date",
        "T1,Halal B,20.00,1,2023-01-02": "duplicate_transaction_id",
        "T13,Halal A,12.50": "malformed_row",
    }
    path = tmp_path / "reasons.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    result = load(settings, path)
    assert result.read == len(rows) == result.loaded + result.rejected
    stored = query(settings, "SELECT line_number, reason FROM raw.rejected_transactions")
    expected = {line: reason for line, reason in enumerate(rows.values(), start=2) if reason}
    assert dict((int(line), reason) for line, reason in stored) == expected  # type: ignore[call-overload]
    # the first occurrence of T1 wins; the later one is the duplicate
    assert query(settings, "SELECT product FROM raw.transactions WHERE transaction_id = 'T1'") == [
        ["Halal A"]
    ]


def test_duplicate_of_an_earlier_file(settings: Settings, tmp_path: Path) -> None:
    load(settings, SAMPLE_CSV)
    path = tmp_path / "later.csv"
    path.write_text(
        HEADER + "T002,Halal Mouse,24.99,1,2023-11-01\nT100,Halal Pen,10,1,2023-11-01\n"
    )
    result = load(settings, path)
    assert (result.loaded, dict(result.rejected_by_reason)) == (1, {"duplicate_transaction_id": 1})


def test_unusable_file_loads_nothing(settings: Settings, tmp_path: Path) -> None:
    from pipeline.csvsource import UnusableInputError

    path = tmp_path / "late-bad.csv"
    good = "".join(f"U{n},Halal A,12.00,1,2023-01-01\n" for n in range(20000))
    path.write_bytes((HEADER + good).encode() + b"U-bad,Halal \xff,12,1,2023-01-01\n")
    with pytest.raises(UnusableInputError, match="not UTF-8"):
        load(settings, path)
    assert query(
        settings,
        "SELECT (SELECT count(*) FROM raw.transactions),"
        " (SELECT count(*) FROM raw.loads),"
        " (SELECT count(*) FROM raw.rejected_transactions)",
    ) == [[0, 0, 0]]


def processes_reading(path: Path) -> list[int]:
    """The processes whose command line names ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile
                continue
            if str(path).encode() in command.split(b"\0"):
                found.append(int(entry.name))
    return found


def test_killed_loader_leaves_nothing_and_rerun_loads_all(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    generate(path, 200_000, seed=3)
    env = cli_env(settings, tmp_path)
    loader = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ingest", "--target", "postgres", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Kill it while the COPY is streaming, as seen by the server.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        active = query(
            settings, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY ingest_stage%'"
        )
        if active[0][0]:
            break
        assert loader.poll() is None, "the loader finished before it could be killed"
        time.sleep(0.02)
    else:
        pytest.fail("the loader never started its COPY")
    loader.send_signal(signal.SIGKILL)
    loader.wait()
    # Its worker processes go with it, and with them the last copy of its connection's
    # socket (a fork copies it): the server sees the client gone and ends the COPY.
    assert eventually(lambda: not processes_reading(path)), "orphaned ingest workers"
    assert eventually(
        lambda: (
            query(
                settings,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY ingest_stage%'",
            )
            == [[0]]
        )
    ), "the killed loader's session is still open"
    assert query(
        settings, "SELECT (SELECT count(*) FROM raw.transactions), (SELECT count(*) FROM raw.loads)"
    ) == [[0, 0]]
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "ingest",
            "--target",
            "postgres",
            "--json",
            str(path),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"read": 200000' in rerun.stdout
    loaded = query(settings, "SELECT rows_loaded, rows_rejected FROM raw.loads")[0]
    assert query(settings, "SELECT count(*) FROM raw.transactions") == [[loaded[0]]]
    assert int(loaded[0]) + int(loaded[1]) == 200_000  # type: ignore[call-overload]


def test_a_load_waiting_for_its_turn_says_so(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """Loads take turns on raw.transactions; one behind another load (or a long transaction
    of someone's) waited minutes without a word (a resilience audit)."""
    import threading

    holder = connect(settings.database_url)
    holder.run("BEGIN")
    holder.run("LOCK TABLE raw.transactions IN SHARE ROW EXCLUSIVE MODE")  # another load's turn
    results: list[IngestResult] = []
    loader = threading.Thread(target=lambda: results.append(load(settings, SAMPLE_CSV)))
    loader.start()
    try:
        said = "waiting for raw.transactions: another load"
        assert eventually(lambda: said in capfd.readouterr().err, 60)
        assert loader.is_alive()  # it waits for the turn, it does not fail
    finally:
        holder.run("COMMIT")
        holder.close()
    loader.join(60)
    assert results and results[0].loaded == 3  # then loads, in one transaction as ever
    assert query(settings, "SELECT count(*) FROM raw.transactions") == [[3]]
