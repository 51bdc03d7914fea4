"""``salesmart ingest --target bigquery``: validate a CSV and load it into BigQuery.

The same reader and row validator as PostgreSQL (``pipeline.csvsource``). Steps:

1. Rows are written as NDJSON to temporary files (at most ``CHUNK_BYTES`` each, memory
   flat) and appended by load jobs (no per-row streaming) to a private staging table
   ``transactions_warehouse._ingest_<load_id>_rows``; the load's metadata goes to
   ``_ingest_<load_id>_meta`` (a parameterized CTAS: the file name is never SQL text).
2. Content a finished load already holds, adding no row, stops here: counted, nothing
   recorded again. Otherwise one script, ``BEGIN TRANSACTION; ... COMMIT TRANSACTION;``,
   moves the staged rows:
   the first occurrence (in file order) of each transaction id not already in
   ``raw_transactions`` is inserted there; every other row goes to
   ``rejected_transactions`` with its reason (``duplicate_transaction_id`` for repeats);
   the ``loads`` row is written last. The script reads its values from the two private
   tables, as the stand-in does not pass query parameters to scripts.
3. The staging tables are dropped (and expire after a day on BigQuery in any case).

What a crash leaves:
- before step 2 commits: only private ``_ingest_*`` tables, invisible to dbt and the API
  (dropped by the next ingest after ``STALE_STAGE_AGE``);
- on real BigQuery the step-2 transaction is atomic: all of the file or none of it;
- on the stand-in a failing statement rolls the script back (it snapshots each table the
  transaction writes), but a stand-in process killed mid-script can leave part of it.
Concurrent ingests into one BigQuery dataset are not serialized (BigQuery has no row
locks; appends do not conflict), so run one ingest at a time per dataset, as the DAG does.
Real BigQuery aborts one of two transactions writing the same table at once ("concurrent
update"); before retrying, the aborted one checks again whether the same content was
loaded meanwhile, so two ingests of one file there record it once. The stand-in aborts
neither: loads into it take turns instead (``_stand_in_turn``, a lock file on the machine
that runs it).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Any

from common import bigquery as bq
from common.config import ConfigError, Settings
from common.validation import DUPLICATE
from pipeline.csvsource import CheckedRow, TransactionReader, file_sha256, recorded_name
from pipeline.ingest import FileProgress, IngestResult, track_rows

RAW_TABLE = "raw_transactions"
REJECTED_TABLE = "rejected_transactions"
LOADS_TABLE = "loads"
STAGE_PREFIX = "_ingest_"
CHUNK_BYTES = 256 * 1024 * 1024
STAGE_EXPIRY = timedelta(days=1)
#: How long a load given up waits to drop each of its staging tables.
ABANDONED_DROP_SECONDS = 2.0
# The local folder of a load's upload chunks: salesmart-bq-<pid>-<random> (clear ids inside).
CHUNK_DIR_PREFIX = "salesmart-bq-"
STALE_STAGE_AGE = timedelta(hours=6)
LOAD_TIMEOUT_SECONDS = 3600.0
SCRIPT_TIMEOUT_SECONDS = 3600.0
QUERY_TIMEOUT_SECONDS = 300.0
CONCURRENT_UPDATE_RETRIES = 3
NUMERIC_MAX_DECIMALS = 9

RAW_COLUMNS: tuple[bq.Column, ...] = (
    ("transaction_id", "STRING", "REQUIRED"),
    ("masked_transaction_id", "STRING", "REQUIRED"),
    ("product", "STRING", "REQUIRED"),
    ("price", "NUMERIC", "REQUIRED"),
    ("quantity", "INT64", "REQUIRED"),
    ("sale_date", "DATE", "REQUIRED"),
    ("load_id", "INT64", "REQUIRED"),
    ("source_line", "INT64", "REQUIRED"),
    ("loaded_at", "TIMESTAMP", "REQUIRED"),
)
REJECTED_COLUMNS: tuple[bq.Column, ...] = (
    ("load_id", "INT64", "REQUIRED"),
    ("source_file", "STRING", "REQUIRED"),
    ("line_number", "INT64", "REQUIRED"),
    ("raw_text", "STRING", "REQUIRED"),
    ("reason", "STRING", "REQUIRED"),
    ("rejected_at", "TIMESTAMP", "REQUIRED"),
)
LOADS_COLUMNS: tuple[bq.Column, ...] = (
    ("load_id", "INT64", "REQUIRED"),
    ("source_file", "STRING", "REQUIRED"),
    ("file_sha256", "STRING", "REQUIRED"),
    ("started_at", "TIMESTAMP", "REQUIRED"),
    ("finished_at", "TIMESTAMP", "REQUIRED"),
    ("rows_read", "INT64", "REQUIRED"),
    ("rows_loaded", "INT64", "REQUIRED"),
    ("rows_rejected", "INT64", "REQUIRED"),
)
STAGE_COLUMNS: tuple[bq.Column, ...] = (
    ("line_number", "INT64", "REQUIRED"),
    ("raw_text", "STRING", "REQUIRED"),
    ("transaction_id", "STRING", "NULLABLE"),
    ("masked_transaction_id", "STRING", "NULLABLE"),
    ("product", "STRING", "NULLABLE"),
    ("price", "NUMERIC", "NULLABLE"),
    ("quantity", "INT64", "NULLABLE"),
    ("sale_date", "DATE", "NULLABLE"),
    ("reason", "STRING", "NULLABLE"),
)

# The first staged occurrence of each new transaction id: the rows that get loaded.
_ACCEPTED = """(
    SELECT ranked.*
    FROM (
        SELECT st.*,
               ROW_NUMBER() OVER (PARTITION BY st.transaction_id ORDER BY st.line_number) AS rn
        FROM {stage} AS st
        WHERE st.reason IS NULL
    ) AS ranked
    WHERE ranked.rn = 1
      AND NOT EXISTS (
          SELECT 1 FROM {raw} AS r WHERE r.transaction_id = ranked.transaction_id
      )
)"""

_APPLY = """
BEGIN TRANSACTION;

INSERT INTO {rejected} (load_id, source_file, line_number, raw_text, reason, rejected_at)
SELECT m.load_id, m.source_file, s.line_number, s.raw_text,
       COALESCE(s.reason, '{duplicate}'), CURRENT_TIMESTAMP()
FROM {stage} AS s
CROSS JOIN {meta} AS m
LEFT JOIN {accepted} AS a ON a.line_number = s.line_number
WHERE a.line_number IS NULL;

INSERT INTO {raw} (transaction_id, masked_transaction_id, product, price, quantity,
                   sale_date, load_id, source_line, loaded_at)
SELECT a.transaction_id, a.masked_transaction_id, a.product, a.price, a.quantity,
       a.sale_date, m.load_id, a.line_number, CURRENT_TIMESTAMP()
FROM {accepted} AS a
CROSS JOIN {meta} AS m;

INSERT INTO {loads} (load_id, source_file, file_sha256, started_at, finished_at,
                     rows_read, rows_loaded, rows_rejected)
SELECT m.load_id, m.source_file, m.file_sha256, m.started_at, CURRENT_TIMESTAMP(),
       (SELECT COUNT(*) FROM {stage}),
       (SELECT COUNT(*) FROM {raw} AS r WHERE r.load_id = m.load_id),
       (SELECT COUNT(*) FROM {rejected} AS j WHERE j.load_id = m.load_id)
FROM {meta} AS m;

COMMIT TRANSACTION;
"""


class IngestIntegrityError(RuntimeError):
    """The warehouse's counts disagree with what was sent; nothing is trusted."""


def ensure_warehouse_tables(settings: Settings) -> list[tuple[str, datetime | None]]:
    """The datasets and the three raw-area tables (created when absent); the tables seen."""
    s = settings.bigquery
    bq.ensure_datasets(s)
    dataset = s.warehouse_dataset
    tables = bq.list_tables(dataset, "", s)
    present = {name for name, _ in tables}
    for name, columns, clustering in (
        (RAW_TABLE, RAW_COLUMNS, ("transaction_id",)),
        (REJECTED_TABLE, REJECTED_COLUMNS, None),
        (LOADS_TABLE, LOADS_COLUMNS, None),
    ):
        if name not in present:
            bq.create_table(dataset, name, columns, clustering=clustering, settings=s)
    return tables


def _new_load_id() -> int:
    """Microseconds since the epoch: unique per ingest, ordered, an INT64 like PostgreSQL's."""
    return time.time_ns() // 1000


def _json_text(value: str | None) -> str:
    return "null" if not value else encode_basestring(value)


def _ndjson_line(row: CheckedRow) -> bytes:
    """One staged row as a JSON object (built directly: 4x faster than ``json.dumps``)."""
    price = "null" if row.price is None else f'"{row.price:f}"'
    quantity = "null" if row.quantity is None else str(int(row.quantity))
    sale_date = "null" if row.sale_date is None else f'"{row.sale_date.isoformat()}"'
    return (
        f'{{"line_number":{int(row.line_number)},"raw_text":{encode_basestring(row.raw_text)},'
        f'"transaction_id":{_json_text(row.transaction_id)},'
        f'"masked_transaction_id":{_json_text(row.masked_transaction_id)},'
        f'"product":{_json_text(row.product)},"price":{price},"quantity":{quantity},'
        f'"sale_date":{sale_date},"reason":{_json_text(row.reason)}}}\n'
    ).encode()


def _chunks(rows: Iterable[CheckedRow], folder: Path) -> Iterator[tuple[IO[bytes], int]]:
    """Temporary NDJSON files of at most ``CHUNK_BYTES`` (open for reading) and row counts."""
    source = iter(rows)
    index = 0
    while True:
        path = folder / f"chunk-{index:05d}.ndjson"
        count = 0
        size = 0
        with path.open("wb") as out:
            for row in source:
                line = _ndjson_line(row)
                out.write(line)
                count += 1
                size += len(line)
                if size >= CHUNK_BYTES:
                    break
        if count == 0:
            path.unlink()
            return
        with path.open("rb") as handle:
            yield handle, count
        path.unlink()
        index += 1
        if size < CHUNK_BYTES:
            return


def _drop_stale_stages(settings: Settings, tables: list[tuple[str, datetime | None]]) -> None:
    """Staging tables a crashed ingest left behind (BigQuery also expires them)."""
    s = settings.bigquery
    cutoff = datetime.now(UTC) - STALE_STAGE_AGE
    for name, created in tables:
        if name.startswith(STAGE_PREFIX) and created is not None and created < cutoff:
            bq.drop_table(s.warehouse_dataset, name, s)


def _apply_sql(settings: Settings, stage: str, meta: str) -> str:
    s = settings.bigquery
    ds = s.warehouse_dataset
    names = {
        "stage": bq.table_ref(ds, stage, s),
        "meta": bq.table_ref(ds, meta, s),
        "raw": bq.table_ref(ds, RAW_TABLE, s),
        "rejected": bq.table_ref(ds, REJECTED_TABLE, s),
        "loads": bq.table_ref(ds, LOADS_TABLE, s),
    }
    assert DUPLICATE.replace("_", "").isalpha()  # a constant, safe as a literal
    accepted = _ACCEPTED.format(**names)
    return _APPLY.format(accepted=accepted, duplicate=DUPLICATE, **names)


def _unchanged_reload(
    settings: Settings, stage: str, sha256: str
) -> tuple[int, Counter[str]] | None:
    """For content a finished load already holds (``loads`` rows are written at commit)
    when it would add no row: that load's id and the staged rows' reasons, counted as a
    load counts them (valid rows as duplicates). None: load it."""
    previous = previous_load(sha256, settings)
    if previous is None:
        return None
    s = settings.bigquery
    names = {
        "stage": bq.table_ref(s.warehouse_dataset, stage, s),
        "raw": bq.table_ref(s.warehouse_dataset, RAW_TABLE, s),
    }
    [new_rows] = _query(
        settings,
        f"SELECT COUNT(*) AS n FROM {_ACCEPTED.format(**names)}",  # nosec B608 - identifiers from settings/constants
    )
    if int(new_rows["n"]):
        return None
    by_reason = _query(
        settings,
        f"SELECT COALESCE(reason, @duplicate) AS reason, COUNT(*) AS n FROM {names['stage']}"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        " GROUP BY 1",
        {"duplicate": DUPLICATE},
    )
    return previous, Counter({str(r["reason"]): int(r["n"]) for r in by_reason})


def previous_load(sha256: str, settings: Settings) -> int | None:
    """The id of a finished load of content with this SHA-256 (``loads`` rows are written
    when a load commits), if any. ``ensure_warehouse_tables`` must have run."""
    s = settings.bigquery
    rows = _query(
        settings,
        f"SELECT load_id FROM {bq.table_ref(s.warehouse_dataset, LOADS_TABLE, s)}"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        " WHERE file_sha256 = @sha256 ORDER BY load_id LIMIT 1",
        {"sha256": sha256},
    )
    return int(rows[0]["load_id"]) if rows else None


def _query(
    settings: Settings, sql: str, params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One of ingestion's own queries (labelled ``ingest``, a generous deadline)."""
    return bq.run_query(
        sql, params, function="ingest", settings=settings.bigquery, timeout=QUERY_TIMEOUT_SECONDS
    )


def _apply(
    settings: Settings, sql: str, stage: str, sha256: str
) -> tuple[int, Counter[str]] | None:
    """Run the apply script; or, when the same content turns out to be loaded meanwhile
    (checked before every attempt: the race real BigQuery aborts is often that very load),
    what ``_unchanged_reload`` says instead of loading it twice."""
    for attempt in range(CONCURRENT_UPDATE_RETRIES + 1):
        unchanged = _unchanged_reload(settings, stage, sha256)
        if unchanged is not None:
            return unchanged
        try:
            bq.run_script(
                sql, function="ingest", settings=settings.bigquery, timeout=SCRIPT_TIMEOUT_SECONDS
            )
            return None
        except Exception as exc:
            # Real BigQuery aborts a transaction that raced another one on the same table;
            # nothing of it was committed, so running it again is safe.
            if "concurrent update" not in str(exc).lower() or attempt == CONCURRENT_UPDATE_RETRIES:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def ingest_rows(
    rows: Iterable[CheckedRow],
    source_file: str,
    sha256: str,
    settings: Settings,
) -> IngestResult:
    """Load checked rows as one file (one load id, one transaction); the counts."""
    if settings.validation.max_decimals > NUMERIC_MAX_DECIMALS:
        raise ConfigError(
            f"ingestion.validation.max_decimals={settings.validation.max_decimals}: BigQuery "
            f"NUMERIC keeps at most {NUMERIC_MAX_DECIMALS} decimals"
        )
    _drop_stale_stages(settings, ensure_warehouse_tables(settings))
    load_id = _new_load_id()
    # An interrupt is told what it left: after the commit (counting, dropping the staging
    # tables) the file is loaded, though no counts were printed.
    progress = _LoadProgress()
    try:
        with _stand_in_turn(settings):
            return _load(rows, source_file, sha256, settings, load_id, progress)
    except bq.ScriptInterrupted as stopped:
        raise KeyboardInterrupt(interrupted_load(load_id, stopped.finished)) from None
    except KeyboardInterrupt as interrupt:
        if interrupt.args or not progress.committed:
            raise
        raise KeyboardInterrupt(interrupted_load(load_id, finished=True)) from None


@contextmanager
def _stand_in_turn(settings: Settings) -> Iterator[None]:
    """Loads into one local stand-in take turns (a lock file of this user's, by stand-in and
    dataset):
    it aborts neither of two transactions at once, as BigQuery does, and two ingests of
    one file both loaded it (the second as 100,000 duplicate rejects; an audit). Real
    BigQuery needs none: the aborted one finds the other's load. A lock that cannot be had
    (the folder not this user's) is said, and the load goes on without its turn."""
    if not settings.bigquery.is_emulated:
        yield
        return
    import fcntl
    import hashlib
    import urllib.parse

    # By stand-in (its address, localhost as 127.0.0.1) and dataset: a load into one
    # folder's stand-in waited without end behind another folder's frozen one. A new port
    # per start leaves one more empty file in this user's folder, a few bytes of directory.
    bq_settings = settings.bigquery
    where = urllib.parse.urlsplit(bq_settings.api_endpoint)
    host = "127.0.0.1" if where.hostname in ("localhost", "::1") else where.hostname
    named = f"{host}:{where.port} {bq_settings.project}.{bq_settings.warehouse_dataset}"
    lock = _TURNS_FOLDER / f"{hashlib.sha256(named.encode()).hexdigest()[:16]}.lock"
    # Re-entrant: a load started inside another's turn in the same thread (the test that
    # injects a concurrent load) takes no second one.
    held: set[Path] = _turns.__dict__.setdefault("held", set())
    if lock in held:
        yield
        return

    try:
        _TURNS_FOLDER.mkdir(mode=0o700, exist_ok=True)  # this user's only: no one else's lock
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        print(
            f"salesmart: warning: loading without taking turns ({lock} cannot be opened:"
            f" {exc.strerror}); run one load into the stand-in at a time",
            file=sys.stderr,
        )
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                "salesmart: waiting for another load into the BigQuery stand-in"
                f" ({settings.bigquery.warehouse_dataset}) to finish",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        held.add(lock)
        yield
    finally:
        held.discard(lock)
        os.close(descriptor)  # releases the lock


#: The stand-in turns each thread holds (see ``_stand_in_turn``).
_turns = threading.local()
#: Per user: a folder other users can write to let them block or break the turns.
_TURNS_FOLDER = Path(tempfile.gettempdir()) / f"salesmart-bigquery-turns-{os.getuid()}"


@dataclass
class _LoadProgress:
    #: The load's transaction has committed: the file is in BigQuery.
    committed: bool = False


def interrupted_load(load_id: int, finished: bool | None) -> str:
    """What an interrupt during a BigQuery load left, for the command's last line: the
    file is in BigQuery or not, or (BigQuery not answering) that is not known."""
    if finished:
        return (
            f"the file is loaded into BigQuery (load {load_id}): the interrupt came as it"
            " committed; ingest it again to see its counts"
        )
    if finished is None:
        return (
            "whether BigQuery had committed the file is not known; ingest it again:"
            " it loads what is missing, once"
        )
    return "nothing of the file was loaded into BigQuery"


def _load(
    rows: Iterable[CheckedRow],
    source_file: str,
    sha256: str,
    settings: Settings,
    load_id: int,
    progress: _LoadProgress,
) -> IngestResult:
    started_at = datetime.now(UTC)
    stage = f"{STAGE_PREFIX}{load_id}_rows"
    meta = f"{STAGE_PREFIX}{load_id}_meta"
    result = IngestResult(target="bigquery", source_file=source_file, load_id=load_id)
    try:
        sent = _stage_rows(rows, settings, stage, expires=started_at + STAGE_EXPIRY)
        _record_meta(settings, meta, load_id, source_file, sha256, started_at)
        unchanged = _apply(settings, _apply_sql(settings, stage, meta), stage, sha256)
        if unchanged is not None:
            result.load_id, result.rejected_by_reason = unchanged
            result.read, result.already_loaded = sent, True
            return result
        progress.committed = True
    finally:
        # A load given up (an interrupt, an error) waits little on its staging tables: later
        # ingests sweep what is left (a BigQuery not answering held a Ctrl-C two minutes).
        _drop_stages(settings, (stage, meta), given_up=sys.exc_info()[0] is not None)
    _read_counts(settings, result, load_id, sent)
    return result


def _stage_rows(
    rows: Iterable[CheckedRow], settings: Settings, stage: str, *, expires: datetime
) -> int:
    """Append the rows to a new private staging table by load jobs; how many were sent."""
    s = settings.bigquery
    ds = s.warehouse_dataset
    bq.create_table(ds, stage, STAGE_COLUMNS, expires=expires, exists_ok=False, settings=s)
    sent = 0
    sweep_abandoned_chunk_folders()
    prefix = f"{CHUNK_DIR_PREFIX}{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        for handle, count in _chunks(rows, Path(folder)):
            sent += count
            bq.load_file(
                handle, ds, stage, columns=STAGE_COLUMNS, settings=s, timeout=LOAD_TIMEOUT_SECONDS
            )
    # Counted, not summed from the jobs' outputRows: the stand-in reports the table's
    # total there after an append.
    [staged_row] = _query(
        settings,
        f"SELECT COUNT(*) AS n FROM {bq.table_ref(ds, stage, s)}",  # nosec B608 - identifiers from settings/constants; values are bound parameters
    )
    staged = int(staged_row["n"])
    if staged != sent:
        raise IngestIntegrityError(f"staged {staged} of {sent} rows; nothing was loaded")
    return sent


def _record_meta(
    settings: Settings,
    meta: str,
    load_id: int,
    source_file: str,
    sha256: str,
    started_at: datetime,
) -> None:
    """The load's metadata table, read by the apply script (a parameterized CTAS: the file
    name is never SQL text)."""
    s = settings.bigquery
    _query(
        settings,
        f"CREATE TABLE {bq.table_ref(s.warehouse_dataset, meta, s)} AS SELECT @load_id AS load_id,"
        " @source_file AS source_file, @file_sha256 AS file_sha256,"
        " @started_at AS started_at",
        {
            "load_id": load_id,
            "source_file": source_file,
            "file_sha256": sha256,
            "started_at": bq.Param("TIMESTAMP", started_at),
        },
    )


def _drop_stages(settings: Settings, names: Iterable[str], *, given_up: bool) -> None:
    """Drop a load's staging tables, briefly when the load was given up (what is left is
    swept by later ingests and expires)."""
    s = settings.bigquery
    for name in names:
        try:
            bq.drop_table(
                s.warehouse_dataset, name, s, timeout=ABANDONED_DROP_SECONDS if given_up else 60.0
            )
        except Exception:  # noqa: S112 - left for expiry and the next ingest's sweep  # nosec B112
            continue


def _read_counts(settings: Settings, result: IngestResult, load_id: int, sent: int) -> None:
    """Fill ``result`` from the committed load's ``loads`` row and rejects, checking that
    they agree with each other and with the rows sent."""
    s = settings.bigquery
    ds = s.warehouse_dataset
    counts = _query(
        settings,
        f"SELECT rows_read, rows_loaded, rows_rejected FROM {bq.table_ref(ds, LOADS_TABLE, s)}"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        " WHERE load_id = @load_id",
        {"load_id": load_id},
    )
    by_reason = _query(
        settings,
        f"SELECT reason, COUNT(*) AS n FROM {bq.table_ref(ds, REJECTED_TABLE, s)}"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        " WHERE load_id = @load_id GROUP BY reason",
        {"load_id": load_id},
    )
    if len(counts) != 1:
        raise IngestIntegrityError(f"load {load_id} has no loads row after its transaction")
    result.read = int(counts[0]["rows_read"])
    result.loaded = int(counts[0]["rows_loaded"])
    result.rejected_by_reason = Counter({str(r["reason"]): int(r["n"]) for r in by_reason})
    if (
        result.read != sent
        or result.read != result.loaded + result.rejected
        or result.rejected != int(counts[0]["rows_rejected"])
    ):
        raise IngestIntegrityError(
            f"load {load_id}: read {result.read} (sent {sent}), loaded {result.loaded}, "
            f"rejected {result.rejected}: counts disagree"
        )


def sweep_abandoned_chunk_folders() -> None:
    """Remove this user's chunk folders of loads whose process is gone: one killed outright
    (SIGKILL, the OOM killer) ran no cleanup and left up to the whole file there, clear ids
    included."""
    import shutil

    import psutil

    for folder in Path(tempfile.gettempdir()).glob(f"{CHUNK_DIR_PREFIX}*-*"):
        pid = folder.name.removeprefix(CHUNK_DIR_PREFIX).split("-", 1)[0]
        try:
            mine = folder.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def ingest_bigquery(
    path: Path,
    settings: Settings,
    *,
    progress: bool = False,
    source_name: str | None = None,
    digest: str | None = None,
) -> IngestResult:
    """Validate and load one CSV file into ``transactions_warehouse``; the counts.
    ``source_name``: the file's name in the load and its rejects (default: ``path``);
    ``digest``: the file's SHA-256, when the caller has it already.

    Raises ``UnusableInputError`` (nothing loaded) for a file that cannot be used, and
    ``common.bigquery.BigQueryUnavailable`` when BigQuery cannot be reached.
    """
    reader = TransactionReader(path, settings.validation, settings.pii_key)
    sha256 = digest or file_sha256(path)
    with FileProgress(path, progress) as shown:
        source_file = recorded_name(source_name or path)
        return ingest_rows(track_rows(reader, shown), source_file, sha256, settings)
