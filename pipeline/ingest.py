"""``salesmart ingest``: validate a CSV and load it into PostgreSQL in one transaction.

Rows stream from the reader through one ``COPY`` into a temporary staging table (memory
stays flat whatever the file size). One ``INSERT ... ON CONFLICT DO NOTHING`` in file
order then keeps the first occurrence of each new transaction id; every other staged row
goes to ``raw.rejected_transactions`` with its reason. A crash anywhere before ``COMMIT``
leaves nothing of the file.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import Settings
from common.pg import close_quietly
from common.validation import DUPLICATE
from pipeline.csvsource import CheckedRow, TransactionReader, file_sha256

COPY_CHUNK_ROWS = 2000
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


@dataclass
class IngestResult:
    target: str
    source_file: str
    read: int = 0
    loaded: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    load_id: int | None = None

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def summary(self) -> str:
        line = (
            f"{self.source_file} -> {self.target}: read {self.read}, loaded {self.loaded}, "
            f"rejected {self.rejected}"
        )
        if self.rejected_by_reason:
            reasons = ", ".join(
                f"{reason} {count}" for reason, count in sorted(self.rejected_by_reason.items())
            )
            line += f" ({reasons})"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "source_file": self.source_file,
            "read": self.read,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
        }


def with_progress(reader: TransactionReader, path: Path, show: bool) -> Iterator[CheckedRow]:
    """Rows from ``reader``, with a progress bar on stderr for large files on a terminal."""
    size = path.stat().st_size
    if not show or size < PROGRESS_MIN_BYTES:
        yield from reader
        return
    from tqdm import tqdm

    with tqdm(
        total=size, unit="B", unit_scale=True, desc=path.name, disable=None, leave=False
    ) as bar:
        last = 0
        for count, row in enumerate(reader):
            yield row
            if count % 20000 == 0:
                now = reader.chars_read
                bar.update(now - last)
                last = now
        bar.update(size - last)


def _stage_chunks(rows: Iterable[CheckedRow]) -> Iterator[str]:
    """CSV text for ``COPY stage FROM STDIN``, a few thousand rows per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    pending = 0
    for row in rows:
        writer.writerow(
            (
                row.line_number,
                row.raw_text,
                row.transaction_id,
                row.masked_transaction_id,
                row.product,
                row.price,
                row.quantity,
                row.sale_date,
                row.reason,
            )
        )
        pending += 1
        if pending >= COPY_CHUNK_ROWS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue()


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

_APPLY = """
WITH inserted AS (
    INSERT INTO {raw}.transactions
        (transaction_id, masked_transaction_id, product, price, quantity, sale_date,
         load_id, source_line)
    SELECT transaction_id, masked_transaction_id, product, price, quantity, sale_date,
           :load_id, line_number
    FROM ingest_stage
    WHERE reason IS NULL
    ORDER BY line_number
    ON CONFLICT (transaction_id) DO NOTHING
    RETURNING source_line
)
INSERT INTO {raw}.rejected_transactions (load_id, source_file, line_number, raw_text, reason)
SELECT :load_id, :source_file, s.line_number, s.raw_text, coalesce(s.reason, :duplicate)
FROM ingest_stage AS s
LEFT JOIN inserted AS i ON i.source_line = s.line_number
WHERE s.reason IS NOT NULL OR i.source_line IS NULL
"""


def already_loaded(conn: Any, digest: str, settings: Settings) -> bool:
    """Whether a file with this SHA-256 was loaded (committed) before."""
    rows = conn.run(
        f"SELECT 1 FROM {settings.raw_schema}.loads WHERE file_sha256 = :h"
        " AND finished_at IS NOT NULL LIMIT 1",
        h=digest,
    )
    return bool(rows)


def ingest_postgres(
    conn: Any, path: Path, settings: Settings, *, progress: bool = False
) -> IngestResult:
    """Load one file in one transaction; on failure the connection is closed."""
    reader = TransactionReader(path, settings.validation, settings.pii_key)
    digest = file_sha256(path)
    raw = settings.raw_schema
    result = IngestResult(target="postgres", source_file=str(path))
    conn.run("BEGIN")
    try:
        # Sorting a million staged rows by line number fits in memory with this.
        conn.run("SET LOCAL work_mem = '128MB'")
        load_id = conn.run(
            f"INSERT INTO {raw}.loads (source_file, file_sha256) VALUES (:f, :h) RETURNING load_id",
            f=str(path),
            h=digest,
        )[0][0]
        result.load_id = load_id
        conn.run(_STAGE_DDL)
        conn.run(
            "COPY ingest_stage FROM STDIN WITH (FORMAT csv)",
            stream=_stage_chunks(with_progress(reader, path, progress)),
        )
        # Temporary tables are never auto-analysed: without statistics the planner may
        # choose a nested loop for the join below.
        conn.run("ANALYZE ingest_stage")
        conn.run(
            _APPLY.format(raw=raw),
            load_id=load_id,
            source_file=str(path),
            duplicate=DUPLICATE,
        )
        read = conn.run("SELECT count(*) FROM ingest_stage")[0][0]
        by_reason = conn.run(
            f"SELECT reason, count(*) FROM {raw}.rejected_transactions"
            " WHERE load_id = :load_id GROUP BY reason",
            load_id=load_id,
        )
        result.read = int(read)
        result.rejected_by_reason = Counter({reason: int(n) for reason, n in by_reason})
        result.loaded = result.read - result.rejected
        conn.run(
            f"UPDATE {raw}.loads SET finished_at = now(), rows_read = :r, rows_loaded = :l,"
            " rows_rejected = :j WHERE load_id = :load_id",
            r=result.read,
            l=result.loaded,
            j=result.rejected,
            load_id=load_id,
        )
        conn.run("COMMIT")
    except BaseException:
        # The connection may be mid-COPY: closing it makes PostgreSQL roll the whole file
        # back, whereas a ROLLBACK sent now could be misread. Callers must not reuse it.
        close_quietly(conn)
        raise
    return result
