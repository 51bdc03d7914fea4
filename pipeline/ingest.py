"""``salesmart ingest``: validate a CSV and load it into PostgreSQL in one transaction.

Rows stream from the reader through one ``COPY`` into a temporary staging table (memory
stays flat whatever the file size); for large files worker processes parse, validate and
mask while PostgreSQL copies (``StageFeed``). Then, with concurrent loads of the database
waiting their turn, one ``INSERT`` keeps the first occurrence (in file order) of each
transaction id not loaded before; every other staged row goes to
``raw.rejected_transactions`` with its reason. A crash anywhere before ``COMMIT`` leaves
nothing of the file.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from common.config import Settings
from common.pg import close_quietly, connect
from common.process import die_with_parent
from common.validation import DUPLICATE
from pipeline.csvsource import (
    CheckedRow,
    Segment,
    TextRow,
    TransactionReader,
    UnusableInputError,
    file_sha256,
    recorded_name,
)
from pipeline.progress import StatusLine, bar_size, printable, stderr_is_terminal

COPY_CHUNK_ROWS = 4000
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
# Files from this size on are read by worker processes (about 100,000 rows).
PARALLEL_MIN_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


@dataclass
class IngestResult:
    target: str
    source_file: str
    read: int = 0
    loaded: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    load_id: int | None = None
    #: The same content was loaded before and adds nothing: nothing was recorded again.
    already_loaded: bool = False

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def summary(self) -> str:
        line = (
            f"{printable(self.source_file)} -> {self.target}: read {self.read},"
            f" loaded {self.loaded}, "
            f"rejected {self.rejected}"
        )
        if self.rejected_by_reason:
            reasons = ", ".join(
                f"{reason} {count}" for reason, count in sorted(self.rejected_by_reason.items())
            )
            line += f" ({reasons})"
        if self.already_loaded:
            line += f"; already loaded (load {self.load_id}), nothing recorded again"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "source_file": self.source_file,
            "read": self.read,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "already_loaded": self.already_loaded,
            # The load that holds the file: this one, or the earlier one (already_loaded).
            "load_id": self.load_id,
        }


def _escape(text: str) -> str:
    """A value for COPY's text format (backslash escapes for the special characters)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _stage_line(row: CheckedRow) -> str:
    """One ``ingest_stage`` row in COPY text format (tab-separated, ``\\N`` for NULL)."""
    if row.reason is None:
        return (
            f"{row.line_number}\t{_escape(row.raw_text)}\t{_escape(row.transaction_id)}\t"
            f"{row.masked_transaction_id}\t{_escape(row.product)}\t{row.price}\t"
            f"{row.quantity}\t{row.sale_date}\t\\N\n"
        )
    return (
        f"{row.line_number}\t{_escape(row.raw_text)}\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t{row.reason}\n"
    )


def _stage_blocks(rows: Iterable[CheckedRow | TextRow]) -> Iterator[tuple[int, bytes]]:
    """``(rows, COPY text)`` for ``COPY ingest_stage FROM STDIN``, a few thousand rows each."""
    lines: list[str] = []
    for row in rows:
        if len(row) == 8:  # a TextRow: canonical, nothing to escape (see check_line_text)
            line, raw, tid, masked, product, price, quantity, day = row
            lines.append(
                f"{line}\t{raw}\t{tid}\t{masked}\t{product}\t{price}\t{quantity}\t{day}\t\\N\n"
            )
        else:
            lines.append(_stage_line(row))
        if len(lines) >= COPY_CHUNK_ROWS:
            yield len(lines), "".join(lines).encode()
            lines.clear()
    if lines:
        yield len(lines), "".join(lines).encode()


class StageFeed:
    """The COPY data of one file, made by worker processes while PostgreSQL consumes it.

    A plain file (``TransactionReader.segments``) is cut into one segment per worker; any
    other file is read by one worker from start to end. Either way the main process only
    passes bytes on, so parsing, validating and masking overlap with the COPY. Small files
    are read in-process (a worker costs more than it saves there). Memory stays flat: each
    pipe holds a few blocks at most. ``rows`` counts the rows sent so far.
    """

    def __init__(self, reader: TransactionReader, *, workers: int | None = None) -> None:
        self.reader = reader
        self.rows = 0
        self.chars = 0
        self._processes: list[Any] = []
        count = workers if workers is not None else default_workers()
        size = reader.path.stat().st_size
        self._segments: list[Segment] | None = None
        self._parallel = count > 1 and size >= PARALLEL_MIN_BYTES
        if self._parallel:
            self._segments = reader.segments(count)

    def __iter__(self) -> Iterator[bytes]:
        if not self._parallel:
            for count, block in _stage_blocks(self.reader.copy_rows()):
                self.rows += count
                self.chars = self.reader.chars_read
                yield block
            return
        yield from self._from_workers()

    def _from_workers(self) -> Iterator[bytes]:
        import multiprocessing
        from multiprocessing.connection import wait

        context = multiprocessing.get_context("fork")
        jobs: list[Segment | None] = list(self._segments) if self._segments else [None]
        pipes: list[Connection] = []
        for job in jobs:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_stage_worker,
                args=(self.reader, job, sender, os.getpid(), [*pipes, receiver]),
                daemon=True,
            )
            process.start()
            sender.close()
            self._processes.append(process)
            pipes.append(receiver)
        try:
            open_pipes = list(pipes)
            while open_pipes:
                for pipe in wait(open_pipes):
                    assert isinstance(pipe, Connection)
                    try:
                        message = pipe.recv_bytes()
                    except EOFError:
                        raise RuntimeError("an ingest worker died unexpectedly") from None
                    kind, body = message[:1], message[1:]
                    if kind == b"D":
                        rows, chars = _BLOCK_HEAD.unpack_from(body)
                        self.rows += rows
                        self.chars += chars
                        yield body[_BLOCK_HEAD.size :]
                    elif kind == b"F":
                        open_pipes.remove(pipe)
                        pipe.close()
                    else:
                        error, _, text = body.decode().partition("\n")
                        if error == "UnusableInputError":
                            raise UnusableInputError(text)
                        raise RuntimeError(f"ingest worker failed: {error}: {text}")
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers (idempotent); called when the feed ends or the load fails."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(5)
        self._processes.clear()


_BLOCK_HEAD = struct.Struct("!QQ")


def default_workers() -> int:
    """One per CPU (the PostgreSQL backend shares them), at least 1, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def _stage_worker(
    reader: TransactionReader,
    segment: Segment | None,
    pipe: Connection,
    parent: int,
    inherited: list[Connection],
) -> None:
    """In a worker process: COPY blocks of one segment (or the whole file) into ``pipe``.

    The worker dies with ``parent``, the loader: a fork copies every descriptor, the
    loader's PostgreSQL socket too, and a worker outliving the loader would keep its session
    (and open transaction) alive. ``inherited``: the loader's ends of the workers' pipes,
    copied here too; closed, so that only the loader can read them.
    """
    die_with_parent(parent)
    for other in inherited:
        other.close()
    try:
        rows = reader.copy_rows(segment)
        chars = 0
        for count, block in _stage_blocks(rows):
            done = reader.chars_read
            pipe.send_bytes(b"D" + _BLOCK_HEAD.pack(count, done - chars) + block)
            chars = done
        pipe.send_bytes(b"F")
    except BaseException as exc:  # reported to the main process, which raises it there
        with contextlib.suppress(OSError):
            pipe.send_bytes(f"E{type(exc).__name__}\n{exc}".encode())
    finally:
        pipe.close()


class FileProgress:
    """What a long load shows on a terminal: a bar while ``path`` is read, then one line
    saying what is still being done, erased when the load ends. Nothing for small files,
    when ``show`` is false, or when stderr is not a terminal (logs, CI, pipes)."""

    def __init__(self, path: Path, show: bool) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.on = show and self.size >= PROGRESS_MIN_BYTES and stderr_is_terminal()
        self._status = StatusLine(self.on)

    def __enter__(self) -> FileProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._status.clear()

    def track(
        self, items: Iterable[T], position: Callable[[], int], every: int = 1, then: str = ""
    ) -> Iterator[T]:
        """``items``, drawing the bar; ``position()`` is how far into the file they are,
        asked every ``every`` items. ``then``: the line shown once they are all read."""
        if not self.on:
            yield from items
            return
        from tqdm import tqdm

        columns, rows = bar_size()
        with tqdm(
            total=self.size,
            unit="B",
            unit_scale=True,
            desc=self.path.name,
            leave=False,
            ncols=columns,
            nrows=rows,
        ) as bar:
            last = 0
            for count, item in enumerate(items):
                yield item
                if count % every == 0:
                    now = position()
                    bar.update(now - last)
                    last = now
            bar.update(self.size - last)
            # tqdm draws at most every 0.1 s, so on a fast load the last update may not be
            # drawn; the finished bar is shown before it gives way to the next line.
            bar.refresh()
        if then:
            self._status.show(f"{self.path.name}: {then}...")


def track_rows(reader: TransactionReader, progress: FileProgress) -> Iterator[CheckedRow]:
    """The rows of ``reader``, drawn on ``progress`` (a reader counts characters, not rows)."""
    return progress.track(
        reader, lambda: reader.chars_read, every=20000, then="loading the new rows"
    )


_STAGE_DDL = """
CREATE TEMP TABLE ingest_stage (
    line_number integer NOT NULL,
    raw_text text NOT NULL,
    transaction_id text,
    masked_transaction_id text,
    product text,
    price numeric,
    quantity integer,
    sale_date date,
    reason text
) ON COMMIT DROP
"""

# Loads of one database take turns from here to COMMIT (readers are never blocked), so the
# rows already in raw.transactions are all there is to compare with: a plain INSERT of
# the new ids' first occurrences, cheaper than ON CONFLICT's speculative insertion.
_LOCK = "LOCK TABLE {raw}.transactions IN SHARE ROW EXCLUSIVE MODE"


def _take_turn(conn: Any, raw: str) -> None:
    """The loads' lock, said when another load holds it (an ingest waited minutes without a
    word behind another one, or a long transaction of someone's; a resilience audit)."""
    from psycopg2 import errors

    conn.run("SAVEPOINT turn")  # a refused NOWAIT must not end the load's transaction
    try:
        conn.run(_LOCK.format(raw=raw) + " NOWAIT")
    except errors.LockNotAvailable:
        conn.run("ROLLBACK TO SAVEPOINT turn")
        print(
            f"salesmart: waiting for {raw}.transactions: another load, or a transaction of"
            " someone's, holds it",
            file=sys.stderr,
            flush=True,
        )
        conn.run(_LOCK.format(raw=raw))
    conn.run("RELEASE SAVEPOINT turn")


_APPLY = """
WITH inserted AS (
    INSERT INTO {raw}.transactions
        (transaction_id, masked_transaction_id, product, price, quantity, sale_date,
         load_id, source_line)
    SELECT DISTINCT ON (s.transaction_id)
           s.transaction_id, s.masked_transaction_id, s.product, s.price, s.quantity,
           s.sale_date, :load_id, s.line_number
    FROM ingest_stage AS s
    WHERE s.reason IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM {raw}.transactions AS t WHERE t.transaction_id = s.transaction_id
      )
    ORDER BY s.transaction_id, s.line_number
    RETURNING source_line
)
INSERT INTO {raw}.rejected_transactions (load_id, source_file, line_number, raw_text, reason)
SELECT :load_id, :source_file, s.line_number, s.raw_text, coalesce(s.reason, :duplicate)
FROM ingest_stage AS s
LEFT JOIN inserted AS i ON i.source_line = s.line_number
WHERE s.reason IS NOT NULL OR i.source_line IS NULL
"""


# Whether a staged valid row is new: were the file loaded before, the load would add it.
_ADDS_ROWS = """
SELECT EXISTS (
    SELECT 1 FROM ingest_stage AS s
    WHERE s.reason IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM {raw}.transactions AS t WHERE t.transaction_id = s.transaction_id
      )
)
"""


def previous_load(conn: Any, digest: str, settings: Settings) -> int | None:
    """The id of a finished (committed) load of a file with this SHA-256, if any."""
    rows = conn.run(
        f"SELECT load_id FROM {settings.raw_schema}.loads WHERE file_sha256 = :h"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        " AND finished_at IS NOT NULL ORDER BY load_id LIMIT 1",
        h=digest,
    )
    return int(rows[0][0]) if rows else None


def ingest_into(
    target: str,
    path: Path,
    settings: Settings,
    *,
    progress: bool = False,
    source_name: str | None = None,
    digest: str | None = None,
) -> IngestResult:
    """Load one file into one warehouse (``postgres`` or ``bigquery``), in one transaction
    there; a connection of its own. For BigQuery, ``ensure_warehouse_tables`` must have
    run. The arguments as for ``ingest_postgres``."""
    if target == "bigquery":
        from pipeline.ingest_bigquery import ingest_bigquery

        return ingest_bigquery(
            path, settings, progress=progress, source_name=source_name, digest=digest
        )
    conn = connect(settings.database_url)
    try:
        return ingest_postgres(
            conn, path, settings, progress=progress, source_name=source_name, digest=digest
        )
    finally:
        close_quietly(conn)


def loaded_before(target: str, digest: str, settings: Settings) -> bool:
    """Whether ``target`` holds a finished load of content with this SHA-256."""
    if target == "bigquery":
        from pipeline.ingest_bigquery import previous_load as previous_bigquery_load

        return previous_bigquery_load(digest, settings) is not None
    conn = connect(settings.database_url)
    try:
        return previous_load(conn, digest, settings) is not None
    finally:
        close_quietly(conn)


def ingest_postgres(
    conn: Any,
    path: Path,
    settings: Settings,
    *,
    progress: bool = False,
    workers: int | None = None,
    source_name: str | None = None,
    digest: str | None = None,
) -> IngestResult:
    """Load one file in one transaction; on failure the connection is closed.

    ``workers``: processes that read the file while PostgreSQL loads it (default: one per
    CPU, see ``StageFeed``; 1 reads in this process). ``source_name``: the file's name in
    the load and its rejects (default: ``path``). ``digest``: the file's SHA-256, when the
    caller has it already.
    """
    reader = TransactionReader(path, settings.validation, settings.pii_key)
    digest = digest or file_sha256(path)
    feed = StageFeed(reader, workers=workers)
    with FileProgress(path, progress) as shown:
        source_file = recorded_name(source_name or path)
        return _load_postgres(conn, source_file, digest, feed, shown, settings)


def _count_unchanged_reload(
    conn: Any, feed: StageFeed, result: IngestResult, previous: int
) -> None:
    """The same content again, adding nothing: counted as a load would count it, but
    neither a load nor its rejects are recorded again (idempotent); rolls back."""
    by_reason = conn.run(
        "SELECT coalesce(reason, :duplicate), count(*) FROM ingest_stage GROUP BY 1",
        duplicate=DUPLICATE,
    )
    conn.run("ROLLBACK")
    result.read = feed.rows
    result.rejected_by_reason = Counter({reason: int(n) for reason, n in by_reason})
    result.load_id = previous
    result.already_loaded = True


def _apply_stage(conn: Any, raw: str, load_id: int, feed: StageFeed, result: IngestResult) -> None:
    """Move the staged rows into raw (new ones) and the rejects (the rest); record the
    load's counts in ``result`` and its ``loads`` row."""
    conn.run(
        _APPLY.format(raw=raw),
        load_id=load_id,
        source_file=result.source_file,
        duplicate=DUPLICATE,
    )
    by_reason = conn.run(
        f"SELECT reason, count(*) FROM {raw}.rejected_transactions"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        " WHERE load_id = :load_id GROUP BY reason",
        load_id=load_id,
    )
    result.read = feed.rows
    result.rejected_by_reason = Counter({reason: int(n) for reason, n in by_reason})
    result.loaded = result.read - result.rejected
    conn.run(
        f"UPDATE {raw}.loads SET finished_at = clock_timestamp(), rows_read = :r,"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        " rows_loaded = :l, rows_rejected = :j WHERE load_id = :load_id",
        r=result.read,
        l=result.loaded,
        j=result.rejected,
        load_id=load_id,
    )


def _load_postgres(
    conn: Any,
    source_file: str,
    digest: str,
    feed: StageFeed,
    progress: FileProgress,
    settings: Settings,
) -> IngestResult:
    raw = settings.raw_schema
    result = IngestResult(target="postgres", source_file=source_file)
    # If this process is killed, the server stops the load's statement within a second
    # (PostgreSQL 14+ on Linux, macOS, BSD) instead of holding raw.transactions' lock
    # until the statement would have ended; elsewhere the setting is simply not made.
    with contextlib.suppress(Exception):
        conn.run("SET client_connection_check_interval = '1s'")
    conn.run("BEGIN")
    try:
        # Sorting a million staged rows by line number fits in memory with this.
        conn.run("SET LOCAL work_mem = '128MB'")
        load_id = conn.run(
            f"INSERT INTO {raw}.loads (source_file, file_sha256) VALUES (:f, :h) RETURNING load_id",  # nosec B608 - identifiers from settings/constants; values are bound parameters
            f=source_file,
            h=digest,
        )[0][0]
        result.load_id = load_id
        conn.run(_STAGE_DDL)
        blocks = progress.track(feed, lambda: feed.chars, then="loading the new rows")
        conn.run("COPY ingest_stage FROM STDIN", stream=blocks)
        # Temporary tables are never auto-analysed: without statistics the planner may
        # choose a nested loop for the join below.
        conn.run("ANALYZE ingest_stage")
        _take_turn(conn, raw)
        previous = previous_load(conn, digest, settings)
        if previous is not None and not conn.run(_ADDS_ROWS.format(raw=raw))[0][0]:
            _count_unchanged_reload(conn, feed, result, previous)
            return result
        _apply_stage(conn, raw, load_id, feed, result)
        conn.run("COMMIT")
    except BaseException:
        # The connection may be mid-COPY: closing it makes PostgreSQL roll the whole file
        # back, whereas a ROLLBACK sent now could be misread. Callers must not reuse it.
        feed.close()
        close_quietly(conn)
        raise
    return result
