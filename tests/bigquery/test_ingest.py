"""``salesmart ingest --target bigquery`` against the real stand-in: counts, rejects,
idempotence, all-or-nothing, and the same result as the PostgreSQL loader."""

from __future__ import annotations

import json
import os
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.ingest_bigquery as ib
from common import bigquery as bq
from common.config import ConfigError, Settings, ValidationRules
from common.masking import mask
from common.pg import connect
from common.trends import TrendFilters
from pipeline.csvsource import CheckedRow, UnusableInputError
from pipeline.generate import generate
from pipeline.ingest import IngestResult, ingest_postgres
from tests.conftest import SAMPLE_CSV, create_database


def rows_of(settings: Settings, table: str, order: str) -> list[dict[str, Any]]:
    s = settings.bigquery
    return bq.run_query(
        f"SELECT * FROM {bq.table_ref(s.warehouse_dataset, table, s)} ORDER BY {order}",
        function="test",
        settings=s,
    )


def stage_tables(settings: Settings) -> list[str]:
    s = settings.bigquery
    return [name for name, _ in bq.list_tables(s.warehouse_dataset, ib.STAGE_PREFIX, s)]


def snapshot(settings: Settings) -> tuple[list[Any], ...]:
    return (
        rows_of(settings, ib.RAW_TABLE, "transaction_id"),
        rows_of(settings, ib.REJECTED_TABLE, "load_id, line_number"),
        rows_of(settings, ib.LOADS_TABLE, "load_id"),
    )


def test_the_sample_file_loads_with_its_rejects_and_a_loads_row(bq_settings: Settings) -> None:
    result = ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert (result.read, result.loaded, result.rejected) == (5, 3, 2)
    assert dict(result.rejected_by_reason) == {"missing_product": 1, "product_prefix": 1}
    assert result.target == "bigquery"

    raw = rows_of(bq_settings, ib.RAW_TABLE, "transaction_id")
    assert [(r["transaction_id"], r["product"], r["price"], r["quantity"]) for r in raw] == [
        ("T001", "Halal Laptop", Decimal("999.99"), 2),
        ("T002", "Halal Mouse", Decimal("24.99"), 10),
        ("T003", "Halal Keyboard", Decimal("49.99"), 5),
    ]
    assert raw[0]["sale_date"] == date(2023, 10, 1)
    assert raw[0]["source_line"] == 2
    assert raw[0]["load_id"] == result.load_id
    assert raw[0]["masked_transaction_id"] == mask("T001", bq_settings.pii_key)

    rejected = rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")
    assert [(r["line_number"], r["raw_text"], r["reason"]) for r in rejected] == [
        (5, "T004,,29.99,3,2023-10-04", "missing_product"),
        (6, "T005,Monitor,199.99,2,2023-10-05", "product_prefix"),
    ]
    assert {r["source_file"] for r in rejected} == {str(SAMPLE_CSV)}

    [load] = rows_of(bq_settings, ib.LOADS_TABLE, "load_id")
    assert load["load_id"] == result.load_id
    assert (load["rows_read"], load["rows_loaded"], load["rows_rejected"]) == (5, 3, 2)
    assert load["source_file"] == str(SAMPLE_CSV)
    assert len(load["file_sha256"]) == 64
    assert load["finished_at"] >= load["started_at"]
    assert stage_tables(bq_settings) == []


def test_a_file_can_be_named_other_than_its_local_path(bq_settings: Settings) -> None:
    """A downloaded landing object is named by its URI in the load and the rejects."""
    name = "gs://bucket/drop/sample.csv"
    result = ib.ingest_bigquery(SAMPLE_CSV, bq_settings, source_name=name)
    assert result.source_file == name
    rejected = rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")
    assert {r["source_file"] for r in rejected} == {name}
    assert [load["source_file"] for load in rows_of(bq_settings, ib.LOADS_TABLE, "load_id")] == [
        name
    ]


def test_loading_the_same_file_again_loads_nothing_new(bq_settings: Settings) -> None:
    ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    again = ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert (again.read, again.loaded, again.rejected) == (5, 0, 5)
    assert dict(again.rejected_by_reason) == {
        "duplicate_transaction_id": 3,
        "missing_product": 1,
        "product_prefix": 1,
    }
    assert again.already_loaded and again.load_id is not None
    # Idempotent: no second load, the rejects not kept twice.
    assert len(rows_of(bq_settings, ib.RAW_TABLE, "transaction_id")) == 3
    assert len(rows_of(bq_settings, ib.LOADS_TABLE, "load_id")) == 1
    assert len(rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")) == 2


def test_two_loads_of_one_file_into_the_stand_in_at_once_record_it_once(
    bq_settings: Settings, tmp_path: Path
) -> None:
    """The stand-in aborts neither of two transactions at once: both loaded the file, the
    second as a load of duplicate rejects (an audit). Loads into it take turns."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "both.csv"
    generate(path, 2000, seed=11)
    start = threading.Barrier(2)

    def load() -> IngestResult:
        start.wait()
        return ib.ingest_bigquery(path, bq_settings)

    with ThreadPoolExecutor(max_workers=2) as workers:
        loads = [workers.submit(load) for _ in range(2)]
        results = [future.result(timeout=300) for future in loads]
    assert sorted(result.already_loaded for result in results) == [False, True]
    assert len(rows_of(bq_settings, ib.LOADS_TABLE, "load_id")) == 1
    first = next(result for result in results if not result.already_loaded)
    assert len(rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")) == first.rejected


def test_loads_into_two_stand_ins_do_not_wait_for_each_other(bq_settings: Settings) -> None:
    """Turns were taken by dataset alone: a load into one folder's stand-in waited without
    end behind another folder's frozen stand-in (a resilience audit)."""
    import dataclasses
    import threading

    other = dataclasses.replace(
        bq_settings,
        bigquery=dataclasses.replace(bq_settings.bigquery, api_endpoint="http://127.0.0.1:9"),
    )
    holding, release, entered = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with ib._stand_in_turn(bq_settings):
            holding.set()
            release.wait(60)

    def enter(settings: Settings) -> None:
        with ib._stand_in_turn(settings):
            entered.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(30)
    try:
        elsewhere = threading.Thread(target=enter, args=(other,))
        elsewhere.start()
        elsewhere.join(10)
        assert entered.is_set()  # another stand-in's load goes on at once
        entered.clear()
        same = threading.Thread(target=enter, args=(bq_settings,))
        same.start()
        same.join(1)
        assert not entered.is_set()  # a load into the same one waits its turn
    finally:
        release.set()
        holder.join(30)
    same.join(30)
    assert entered.is_set()


def test_an_apply_aborted_by_a_load_of_the_same_file_checks_again(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injected (the stand-in never aborts a transaction): real BigQuery aborts one of
    # two transactions writing the same table, here because the same file was loaded at
    # that moment by another ingest. The retry finds that load and records nothing.
    real_run_script = bq.run_script
    raced: list[IngestResult] = []

    def aborted_by_a_concurrent_load(sql: str, **kwargs: Any) -> None:
        if not raced:
            monkeypatch.setattr(bq, "run_script", real_run_script)
            raced.append(ib.ingest_bigquery(SAMPLE_CSV, bq_settings))  # commits first
            monkeypatch.setattr(bq, "run_script", aborted_by_a_concurrent_load)
            raise RuntimeError("Transaction is aborted due to concurrent update against table")
        real_run_script(sql, **kwargs)

    monkeypatch.setattr(bq, "run_script", aborted_by_a_concurrent_load)
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)
    mine = ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert not raced[0].already_loaded and raced[0].loaded == 3
    assert mine.already_loaded and mine.load_id == raced[0].load_id
    assert (mine.read, mine.loaded, mine.rejected) == (5, 0, 5)
    assert len(rows_of(bq_settings, ib.LOADS_TABLE, "load_id")) == 1
    assert len(rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")) == 2


def test_first_occurrence_wins_and_raw_text_survives_exactly(
    bq_settings: Settings, tmp_path: Path
) -> None:
    ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    csv_text = (
        "transaction_id,product,price,quantity,date\r\n"
        "N1,Halal Dates,12.50,3,2024-02-29\r\n"
        'N2,"Halal ""Tea"", green",10,1,2024-03-01\r\n'
        "N1,Halal Dates again,99.00,1,2024-03-02\r\n"
        "T001,Halal Laptop,999.99,2,2023-10-01\r\n"  # loaded by the earlier file
        'N3,"Halal Rice\nwith a newline",11.00,2,2024-03-03\r\n'
        "N4,Halal Café ☕ \\ tab\there,10.00,1,2024-03-04\r\n"
        "N5,Halal Figs,10.001,1,2024-03-05\r\n"
        " N6 , Halal Oil ,  10.5 , 2 , 2024-03-06 \r\n"
    )
    path = tmp_path / "tricky.csv"
    path.write_bytes(csv_text.encode())
    result = ib.ingest_bigquery(path, bq_settings)
    assert result.read == result.loaded + result.rejected == 8
    assert result.loaded == 5
    assert dict(result.rejected_by_reason) == {
        "duplicate_transaction_id": 2,
        "too_many_decimals": 1,
    }
    raw = {r["transaction_id"]: r for r in rows_of(bq_settings, ib.RAW_TABLE, "transaction_id")}
    assert raw["N1"]["product"] == "Halal Dates"  # line 2, not line 4
    assert raw["N1"]["price"] == Decimal("12.50")
    assert raw["N2"]["product"] == 'Halal "Tea", green'
    assert raw["N3"]["product"] == "Halal Rice\nwith a newline"
    assert raw["N4"]["product"] == "Halal Café ☕ \\ tab\there"
    assert raw["N6"]["product"] == "Halal Oil"  # trimmed
    rejected = [
        r
        for r in rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")
        if r["load_id"] == result.load_id
    ]
    assert [(r["line_number"], r["reason"]) for r in rejected] == [
        (4, "duplicate_transaction_id"),
        (5, "duplicate_transaction_id"),
        (9, "too_many_decimals"),  # N3 spans two physical lines
    ]
    assert rejected[0]["raw_text"] == "N1,Halal Dates again,99.00,1,2024-03-02"


def test_a_failure_inside_the_transaction_leaves_nothing(
    bq_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    before = snapshot(bq_settings)
    path = tmp_path / "more.csv"
    generate(path, 300, seed=3, id_prefix="X")
    # Fail after both INSERTs ran, before COMMIT: the stand-in must roll them back.
    monkeypatch.setattr(
        ib,
        "_APPLY",
        ib._APPLY.replace("COMMIT TRANSACTION;", "SELECT ERROR('simulated crash');"),
    )
    with pytest.raises(Exception, match="simulated crash"):
        ib.ingest_bigquery(path, bq_settings)
    assert snapshot(bq_settings) == before
    assert stage_tables(bq_settings) == []


def test_an_unusable_file_found_mid_way_loads_nothing(
    bq_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "broken.csv"
    good = "".join(f"B{i},Halal Bread,10.00,1,2024-01-01\n" for i in range(2000))
    path.write_bytes(b"transaction_id,product,price,quantity,date\n" + good.encode() + b"\xff\n")
    with pytest.raises(UnusableInputError):
        ib.ingest_bigquery(path, bq_settings)
    assert rows_of(bq_settings, ib.RAW_TABLE, "transaction_id") == []
    assert rows_of(bq_settings, ib.LOADS_TABLE, "load_id") == []
    assert stage_tables(bq_settings) == []


def test_large_files_are_staged_in_several_load_jobs(
    bq_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "many.csv"
    generate(path, 1500, seed=5)
    monkeypatch.setattr(ib, "CHUNK_BYTES", 64 * 1024)
    jobs: list[int] = []
    real_load = bq.load_file

    def counting(*args: Any, **kwargs: Any) -> None:
        jobs.append(1)
        real_load(*args, **kwargs)

    monkeypatch.setattr(bq, "load_file", counting)
    result = ib.ingest_bigquery(path, bq_settings)
    assert len(jobs) >= 3
    assert result.read == 1500 == result.loaded + result.rejected
    assert len(rows_of(bq_settings, ib.RAW_TABLE, "transaction_id")) == result.loaded


def test_stale_staging_tables_are_swept(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = bq_settings.bigquery
    ib.ensure_warehouse_tables(bq_settings)
    bq.create_table(s.warehouse_dataset, "_ingest_1_rows", ib.STAGE_COLUMNS, settings=s)
    monkeypatch.setattr(ib, "STALE_STAGE_AGE", timedelta(0))
    ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert stage_tables(bq_settings) == []


def test_more_decimals_than_numeric_holds_is_refused(bq_settings: Settings) -> None:
    import dataclasses

    settings = dataclasses.replace(bq_settings, validation=ValidationRules(max_decimals=10))
    with pytest.raises(ConfigError, match="max_decimals"):
        ib.ingest_bigquery(SAMPLE_CSV, settings)


def test_bigquery_and_postgres_load_the_same_rows(
    bq_settings: Settings, pg_server: Any, tmp_path: Path
) -> None:
    """One validator, two loaders: the same file gives the same counts and the same rows."""
    path = tmp_path / "mixed.csv"
    generate(path, 3000, seed=11)
    dsn = create_database(pg_server)
    conn = connect(dsn)
    try:
        pg = ingest_postgres(conn, path, bq_settings)
        pg_ids = {r[0] for r in conn.run("SELECT transaction_id FROM raw.transactions")}
        pg_rejects = {
            (r[0], r[1])
            for r in conn.run("SELECT line_number, reason FROM raw.rejected_transactions")
        }
    finally:
        conn.close()
    big = ib.ingest_bigquery(path, bq_settings)
    assert (big.read, big.loaded, big.rejected) == (pg.read, pg.loaded, pg.rejected)
    assert big.rejected_by_reason == pg.rejected_by_reason
    assert big.rejected_by_reason["duplicate_transaction_id"] > 0
    assert {r["transaction_id"] for r in rows_of(bq_settings, ib.RAW_TABLE, "1")} == pg_ids
    assert {
        (r["line_number"], r["reason"])
        for r in rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")
    } == pg_rejects


def test_a_line_of_40_mib_is_rejected_in_both_warehouses_with_its_head_kept(
    bq_settings: Settings, pg_server: Any, tmp_path: Path
) -> None:
    # Before, the stand-in refused the whole load (its JSON reader gives up past 32 MiB) after
    # PostgreSQL had committed the file: exit 1 on every retry, the warehouses out of step.
    huge = "Halal " + "x" * (40 * 1024 * 1024)
    path = tmp_path / "huge.csv"
    path.write_text(
        "transaction_id,product,price,quantity,date\n"
        f"H1,{huge},12.00,1,2024-01-01\n"
        "H2,Halal Tea,12.00,1,2024-01-02\n"
    )
    line = f"H1,{huge},12.00,1,2024-01-01"
    kept = line[:65_536] + f"... [{len(line) - 65_536} more characters not kept]"
    big = ib.ingest_bigquery(path, bq_settings)
    assert (big.read, big.loaded, dict(big.rejected_by_reason)) == (2, 1, {"product_too_long": 1})
    (rejected,) = [
        r
        for r in rows_of(bq_settings, ib.REJECTED_TABLE, "line_number")
        if r["load_id"] == big.load_id
    ]
    assert (rejected["line_number"], rejected["raw_text"]) == (2, kept)
    conn = connect(create_database(pg_server))
    try:
        pg = ingest_postgres(conn, path, bq_settings)
        stored = conn.run("SELECT line_number, raw_text FROM raw.rejected_transactions")
    finally:
        conn.close()
    assert (pg.read, pg.loaded, dict(pg.rejected_by_reason)) == (2, 1, {"product_too_long": 1})
    assert [tuple(row) for row in stored] == [(2, kept)]


def test_a_landing_file_gone_after_its_postgres_load_says_where_it_is_missing(
    bq_settings: Settings, pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from pipeline import ingest, landing

    path = tmp_path / "gone.csv"
    path.write_text("transaction_id,product,price,quantity,date\nG1,Halal Tea,12.00,1,2024-01-01\n")
    settings = dataclasses.replace(bq_settings, database_url=create_database(pg_server))
    real = ingest.ingest_into

    def then_the_file_goes(target: str, file: Path, *args: Any, **kwargs: Any) -> IngestResult:
        # Fault injected (a real deletion, at a moment no timing can hit reliably): the
        # file goes away between its two warehouses.
        result = real(target, file, *args, **kwargs)
        if target == "postgres":
            file.unlink()
        return result

    monkeypatch.setattr(ingest, "ingest_into", then_the_file_goes)
    said: list[str] = []
    with pytest.raises(landing.UnusableLandingFiles):
        landing.ingest_files(
            [landing.LandingFile(path, "gone.csv")],
            settings,
            ["postgres", "bigquery"],
            say=said.append,
        )
    # It said "unusable, not loaded", though PostgreSQL had loaded it.
    assert said[0].startswith("gone.csv -> postgres: read 1, loaded 1")
    assert said[1].startswith("gone.csv: unusable, not loaded into bigquery: "), said


def test_a_killed_loads_chunks_are_swept_by_the_next_load(bq_settings: Settings) -> None:
    # A load killed outright (SIGKILL) leaves its upload chunks, clear ids and all, in the
    # temporary folder for good; the next load removes what a gone process left.
    import subprocess
    import sys
    import tempfile

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    root = Path(tempfile.gettempdir())
    abandoned = root / f"salesmart-bq-{gone.stdout.strip()}-test"
    alive = root / f"salesmart-bq-{os.getpid()}-test"  # a load still running
    for folder in (abandoned, alive):
        folder.mkdir(exist_ok=True)
        (folder / "chunk-00000.ndjson").write_text('{"raw_text": "T1,Halal Dates"}\n')
    try:
        ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
        assert not abandoned.exists()
        assert (alive / "chunk-00000.ndjson").exists()
    finally:
        import shutil

        for folder in (abandoned, alive):
            shutil.rmtree(folder, ignore_errors=True)


def test_the_sample_answers_the_contract_numbers(bq_settings: Settings) -> None:
    """Loaded sample + a summary built as the dbt model does = the issue's expected answer."""
    ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    s = bq_settings.bigquery
    bq.run_query(
        f"CREATE TABLE {bq.table_ref(s.mart_dataset, 'summary_sales', s)} AS "
        "SELECT product, CAST(DATE_TRUNC(sale_date, MONTH) AS DATE) AS sale_month, "
        "SUM(price * quantity) AS total_amount, SUM(quantity) AS total_quantity, "
        "AVG(price) AS avg_price, COUNT(*) AS transaction_count "
        f"FROM {bq.table_ref(s.warehouse_dataset, ib.RAW_TABLE, s)} GROUP BY 1, 2",
        function="test",
        settings=s,
    )
    rows = bq.query_summary(TrendFilters(sale_month=date(2023, 10, 1)), settings=s)
    assert [(r["product"], r["total_amount"]) for r in rows] == [
        ("Halal Laptop", Decimal("1999.98")),
        ("Halal Keyboard", Decimal("249.95")),
        ("Halal Mouse", Decimal("249.90")),
    ]


# -- the staged NDJSON, without a warehouse -------------------------------------------------
_text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=200)
@given(
    raw=_text,
    tid=_text,
    product=_text,
    price=st.none() | st.decimals(min_value=0, max_value=10**15, places=2),
    quantity=st.none() | st.integers(min_value=0, max_value=10**12),
    day=st.none() | st.dates(),
    reason=st.none() | st.sampled_from(["missing_price", "malformed_row"]),
)
def test_staged_lines_are_exact_json(
    raw: str,
    tid: str,
    product: str,
    price: Decimal | None,
    quantity: int | None,
    day: date | None,
    reason: str | None,
) -> None:
    row = CheckedRow(7, raw, tid, tid[::-1], product, price, quantity, day, reason)
    line = ib._ndjson_line(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = json.loads(line)
    assert decoded == {
        "line_number": 7,
        "raw_text": raw,
        "transaction_id": tid or None,
        "masked_transaction_id": tid[::-1] or None,
        "product": product or None,
        "price": None if price is None else format(price, "f"),
        "quantity": quantity,
        "sale_date": None if day is None else day.isoformat(),
        "reason": reason,
    }
    if price is not None:
        assert Decimal(decoded["price"]) == price


def _interrupt_the_script(monkeypatch: pytest.MonkeyPatch, *, before_its_end: bool) -> list[Any]:
    """Fault injected (a Ctrl-C cannot be timed to a job's end): the load's apply script is
    interrupted while the command waits for it, after (or before) the real wait returned."""
    from google.cloud.bigquery.job import QueryJob

    real_result = QueryJob.result
    interrupted: list[Any] = []

    def result(job: QueryJob, *args: Any, **kwargs: Any) -> Any:
        if "COMMIT TRANSACTION" not in job.query:
            return real_result(job, *args, **kwargs)
        interrupted.append(job)
        if before_its_end:
            raise KeyboardInterrupt
        real_result(job, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(QueryJob, "result", result)
    return interrupted


def test_an_interrupt_as_the_load_commits_says_the_file_is_loaded(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said only "interrupted" (exit 130), the file being in BigQuery (an audit found it)."""
    interrupted = _interrupt_the_script(monkeypatch, before_its_end=False)
    with pytest.raises(KeyboardInterrupt) as told:
        ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert interrupted
    (load,) = rows_of(bq_settings, ib.LOADS_TABLE, "load_id")
    assert str(told.value) == (
        f"the file is loaded into BigQuery (load {load['load_id']}): the interrupt came as it"
        " committed; ingest it again to see its counts"
    )
    assert stage_tables(bq_settings) == []
    monkeypatch.undo()
    again = ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert again.already_loaded and again.load_id == load["load_id"]


def _cancelled_jobs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs cancelled (the real cancel is still asked)."""
    from google.cloud.bigquery import Client

    real_cancel = Client.cancel_job
    cancelled: list[str] = []

    def cancel_job(client: Client, job_id: Any, *args: Any, **kwargs: Any) -> Any:
        cancelled.append(str(job_id))
        return real_cancel(client, job_id, *args, **kwargs)

    monkeypatch.setattr(Client, "cancel_job", cancel_job)
    return cancelled


def test_an_interrupt_while_the_script_runs_cancels_it_and_says_what_it_left(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupted = _interrupt_the_script(monkeypatch, before_its_end=True)
    cancelled = _cancelled_jobs(monkeypatch)
    real_drop = bq.drop_table
    drop_waits: list[float] = []

    def drop_table(*args: Any, timeout: float = 60.0, **kwargs: Any) -> None:
        drop_waits.append(timeout)
        real_drop(*args, timeout=timeout, **kwargs)

    monkeypatch.setattr(bq, "drop_table", drop_table)
    with pytest.raises(KeyboardInterrupt) as told:
        ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert cancelled == [interrupted[0].job_id]  # not left to run on
    # Given up: the staging tables are not waited on for minutes (BigQuery may not answer).
    assert drop_waits == [ib.ABANDONED_DROP_SECONDS] * 2
    assert stage_tables(bq_settings) == []
    loads = rows_of(bq_settings, ib.LOADS_TABLE, "load_id")
    # Whatever the job's end was, the line says it: loaded (the stand-in runs a script as
    # it is sent), or nothing of it.
    if loads:
        assert f"is loaded into BigQuery (load {loads[0]['load_id']})" in str(told.value)
    else:
        assert str(told.value) == "nothing of the file was loaded into BigQuery"
        assert snapshot(bq_settings) == ([], [], [])


@pytest.mark.parametrize("reached_bigquery", [True, False])
def test_an_interrupt_while_the_script_is_being_sent_finds_its_job_by_id(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch, reached_bigquery: bool
) -> None:
    """Where a Ctrl-C lands with the stand-in (it answers the request creating the job once
    the script has run): no job object yet, so the job is asked for by the id it was sent
    with (a review found every such interrupt told "not known", the job not cancelled)."""
    from google.cloud.bigquery import Client

    real_query = Client.query

    def query(client: Client, sql: str, *args: Any, **kwargs: Any) -> Any:
        if "COMMIT TRANSACTION" in sql:  # fault injected: the interrupt inside the request
            if reached_bigquery:
                real_query(client, sql, *args, **kwargs).result()
            raise KeyboardInterrupt
        return real_query(client, sql, *args, **kwargs)

    real_get_job = Client.get_job
    asked: list[str] = []

    def get_job(client: Client, job_id: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(job_id))
        if len(asked) == 1:  # fault injected: busy running the script, no answer in time
            raise requests.exceptions.ReadTimeout("read timeout=2.0")
        return real_get_job(client, job_id, *args, **kwargs)

    monkeypatch.setattr(Client, "query", query)
    monkeypatch.setattr(Client, "get_job", get_job)
    monkeypatch.setattr(bq, "STOPPED_SCRIPT_WAIT_SECONDS", 1.0)
    cancelled = _cancelled_jobs(monkeypatch)
    with pytest.raises(KeyboardInterrupt) as told:
        ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
    assert len(cancelled) == 1 and cancelled[0].startswith("salesmart_ingest_")
    loads = rows_of(bq_settings, ib.LOADS_TABLE, "load_id")
    if reached_bigquery:
        (load,) = loads
        assert f"is loaded into BigQuery (load {load['load_id']})" in str(told.value)
    else:  # never sent: BigQuery knows no such job, and says nothing more
        assert loads == []
        assert str(told.value).startswith("whether BigQuery had committed the file is not known")


def test_an_interrupt_while_counting_a_committed_load_says_it_is_loaded(
    bq_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_query = ib._query

    def interrupted_count(settings: Settings, sql: str, *args: Any) -> Any:
        if "rows_read" in sql:
            raise KeyboardInterrupt  # fault injected: a Ctrl-C during the count
        return real_query(settings, sql, *args)

    monkeypatch.setattr(ib, "_query", interrupted_count)
    with pytest.raises(KeyboardInterrupt, match=r"is loaded into BigQuery \(load \d+\)"):
        ib.ingest_bigquery(SAMPLE_CSV, bq_settings)
