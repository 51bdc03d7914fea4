"""``salesmart check-marts``: do the marts hold what the raw area holds?

Run after ``dbt build``, this is the DAG's freshness / row-count gate. The marts are
rebuilt from the raw area on every build (one sales row per raw transaction; the summary
adds them up by product and month), so after a good build, on each warehouse:

- the sales mart (``pg_sales`` / ``fact_sales``) has as many rows as the raw transactions
  and the same total amount (sum of price x quantity, exact NUMERIC);
- ``summary_sales`` counts the same transactions and the same total amount;
- every row of the newest load (the last file ingested) is in the sales mart.

When new rows landed and the marts did not move (dbt skipped, failed quietly, or built
somewhere else), these fail and so does the run. A run with nothing new passes: the marts
still match the raw area. A mart that does not exist fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from common.config import ConfigError, Settings
from common.trends import CENT, MONEY_CONTEXT
from pipeline import TARGETS

SALES_MART = {"postgres": "pg_sales", "bigquery": "fact_sales"}
SUMMARY_MART = "summary_sales"


class MartCheckError(RuntimeError):
    """The marts do not match the raw area; the message names what differs."""


@dataclass(frozen=True)
class MartCounts:
    """What the check compares, read from one warehouse in one go."""

    raw_rows: int
    raw_amount: Decimal
    sales_rows: int
    sales_amount: Decimal
    summary_transactions: int
    summary_amount: Decimal
    latest_load_id: int | None
    latest_load_rows: int
    latest_load_missing: int
    latest_load_at: datetime | None


@dataclass(frozen=True)
class MartCheck:
    target: str
    counts: MartCounts | None
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        sales = SALES_MART[self.target]
        if self.counts is None:
            return f"{self.target}: FAILED: {'; '.join(self.problems)}"
        c = self.counts
        line = (
            f"{self.target}: raw {c.raw_rows} rows (amount {_money(c.raw_amount)}), {sales}"
            f" {c.sales_rows} rows (amount {_money(c.sales_amount)}), {SUMMARY_MART}"
            f" {c.summary_transactions} transactions (amount {_money(c.summary_amount)})"
        )
        if c.latest_load_id is not None:
            when = f" at {_utc(c.latest_load_at)}" if c.latest_load_at else ""
            line += f", newest load {c.latest_load_id}{when}: {c.latest_load_rows} rows"
        return f"{line}: " + ("ok" if self.ok else "FAILED: " + "; ".join(self.problems))

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"target": self.target, "ok": self.ok, "problems": self.problems}
        if self.counts is not None:
            c = self.counts
            data.update(
                raw_rows=c.raw_rows,
                raw_amount=_money(c.raw_amount),
                sales_rows=c.sales_rows,
                sales_amount=_money(c.sales_amount),
                summary_transactions=c.summary_transactions,
                summary_amount=_money(c.summary_amount),
                latest_load_id=c.latest_load_id,
                latest_load_at=c.latest_load_at and _utc(c.latest_load_at),
                latest_load_rows=c.latest_load_rows,
                latest_load_missing=c.latest_load_missing,
            )
        return data


def compare(target: str, counts: MartCounts) -> MartCheck:
    """The problems with ``counts`` (none: the marts match the raw area)."""
    sales = SALES_MART[target]
    problems: list[str] = []
    if counts.sales_rows != counts.raw_rows:
        problems.append(f"{sales} has {counts.sales_rows} rows, raw has {counts.raw_rows}")
    if counts.sales_amount != counts.raw_amount:
        problems.append(
            f"{sales} amounts to {_money(counts.sales_amount)}, raw to {_money(counts.raw_amount)}"
        )
    if counts.summary_transactions != counts.raw_rows:
        problems.append(
            f"{SUMMARY_MART} counts {counts.summary_transactions} transactions,"
            f" raw has {counts.raw_rows}"
        )
    if counts.summary_amount != counts.raw_amount:
        problems.append(
            f"{SUMMARY_MART} amounts to {_money(counts.summary_amount)},"
            f" raw to {_money(counts.raw_amount)}"
        )
    if counts.latest_load_missing:
        problems.append(
            f"{counts.latest_load_missing} of the {counts.latest_load_rows} rows of the newest"
            f" load ({counts.latest_load_id}) are not in {sales}"
        )
    return MartCheck(target, counts, tuple(problems))


def _utc(moment: datetime) -> str:
    """In UTC, whichever warehouse it came from: PostgreSQL gives its session's time zone,
    BigQuery UTC (and a time without zone is taken as UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{aware.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _money(value: Decimal) -> str:
    """An amount for people: 2 decimals unless more are significant (BigQuery gives 9);
    every digit of it (a default context rounds to 28 and fails from 10^26 on)."""
    cents = value.quantize(CENT, context=MONEY_CONTEXT)
    return str(cents if cents == value else value.normalize(MONEY_CONTEXT))


def _decimal(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


# -- PostgreSQL ----------------------------------------------------------------------------
_PG_COUNTS = """
WITH latest AS (
    SELECT max(load_id) AS load_id FROM {raw}.transactions
)
SELECT
    (SELECT count(*) FROM {raw}.transactions),
    (SELECT coalesce(sum(price * quantity), 0) FROM {raw}.transactions),
    (SELECT count(*) FROM "{mart}".{sales}),
    (SELECT coalesce(sum(amount), 0) FROM "{mart}".{sales}),
    (SELECT coalesce(sum(transaction_count), 0) FROM "{mart}".{summary}),
    (SELECT coalesce(sum(total_amount), 0) FROM "{mart}".{summary}),
    (SELECT load_id FROM latest),
    (SELECT count(*) FROM {raw}.transactions AS r, latest WHERE r.load_id = latest.load_id),
    (SELECT count(*) FROM {raw}.transactions AS r, latest
      WHERE r.load_id = latest.load_id
        AND NOT EXISTS (SELECT 1 FROM "{mart}".{sales} AS s
                        WHERE s.transaction_id = r.masked_transaction_id)),
    (SELECT max(finished_at) FROM {raw}.loads)
"""


def postgres_counts(conn: Any, settings: Settings) -> MartCounts | str:
    """The counts, or why they cannot be read (a missing table)."""
    raw, mart, sales = settings.raw_schema, settings.mart_schema, SALES_MART["postgres"]
    for schema, table in ((raw, "transactions"), (mart, sales), (mart, SUMMARY_MART)):
        # Quoted, as dbt and trends_pg name it: a schema may be a keyword ("order").
        found = conn.run("SELECT to_regclass(:name) IS NOT NULL", name=f'"{schema}".{table}')
        if not found[0][0]:
            return f"{schema}.{table} does not exist (has dbt build run?)"
    row = conn.run(_PG_COUNTS.format(raw=raw, mart=mart, sales=sales, summary=SUMMARY_MART))[0]
    return MartCounts(
        raw_rows=int(row[0]),
        raw_amount=_decimal(row[1]),
        sales_rows=int(row[2]),
        sales_amount=_decimal(row[3]),
        summary_transactions=int(row[4]),
        summary_amount=_decimal(row[5]),
        latest_load_id=None if row[6] is None else int(row[6]),
        latest_load_rows=int(row[7]),
        latest_load_missing=int(row[8]),
        latest_load_at=row[9],
    )


def check_postgres(settings: Settings) -> MartCheck:
    from common.pg import close_quietly, connect

    if not settings.database_url:
        raise ConfigError("no PostgreSQL: set SALESMART_DATABASE_URL or run 'salesmart up'")
    conn = connect(settings.database_url)
    try:
        counts = postgres_counts(conn, settings)
    finally:
        close_quietly(conn)
    if isinstance(counts, str):
        return MartCheck("postgres", None, (counts,))
    return compare("postgres", counts)


# -- BigQuery ------------------------------------------------------------------------------
_BQ_COUNTS = """
WITH latest AS (
    SELECT MAX(load_id) AS load_id FROM {raw}
)
SELECT
    (SELECT COUNT(*) FROM {raw}) AS raw_rows,
    (SELECT COALESCE(SUM(price * quantity), 0) FROM {raw}) AS raw_amount,
    (SELECT COUNT(*) FROM {sales}) AS sales_rows,
    (SELECT COALESCE(SUM(amount), 0) FROM {sales}) AS sales_amount,
    (SELECT COALESCE(SUM(transaction_count), 0) FROM {summary}) AS summary_transactions,
    (SELECT COALESCE(SUM(total_amount), 0) FROM {summary}) AS summary_amount,
    (SELECT load_id FROM latest) AS latest_load_id,
    (SELECT COUNT(*) FROM {raw} AS r CROSS JOIN latest
      WHERE r.load_id = latest.load_id) AS latest_load_rows,
    (SELECT COUNT(*) FROM {raw} AS r CROSS JOIN latest
      WHERE r.load_id = latest.load_id
        AND r.masked_transaction_id NOT IN (SELECT transaction_id FROM {sales}))
        AS latest_load_missing,
    (SELECT MAX(finished_at) FROM {loads}) AS latest_load_at
"""


def check_bigquery(settings: Settings) -> MartCheck:
    from common import bigquery as bq
    from pipeline.ingest_bigquery import LOADS_TABLE, RAW_TABLE

    s = settings.bigquery
    sql = _BQ_COUNTS.format(
        raw=bq.table_ref(s.warehouse_dataset, RAW_TABLE, s),
        loads=bq.table_ref(s.warehouse_dataset, LOADS_TABLE, s),
        sales=bq.table_ref(s.mart_dataset, SALES_MART["bigquery"], s),
        summary=bq.table_ref(s.mart_dataset, SUMMARY_MART, s),
    )
    try:
        row = bq.run_query(sql, function="check", settings=s, timeout=120.0)[0]
    except bq.BigQueryUnavailable as exc:
        if exc.reason != "not_built":
            raise
        return MartCheck("bigquery", None, (f"a table is missing (has dbt build run?): {exc}",))
    counts = MartCounts(
        raw_rows=int(row["raw_rows"]),
        raw_amount=_decimal(row["raw_amount"]),
        sales_rows=int(row["sales_rows"]),
        sales_amount=_decimal(row["sales_amount"]),
        summary_transactions=int(row["summary_transactions"]),
        summary_amount=_decimal(row["summary_amount"]),
        latest_load_id=None if row["latest_load_id"] is None else int(row["latest_load_id"]),
        latest_load_rows=int(row["latest_load_rows"]),
        latest_load_missing=int(row["latest_load_missing"]),
        latest_load_at=row["latest_load_at"],
    )
    return compare("bigquery", counts)


def check_marts(settings: Settings, targets: Sequence[str] = TARGETS) -> list[MartCheck]:
    """One check per target; raises nothing for stale marts (see :func:`require_fresh`)."""
    checks: list[MartCheck] = []
    for target in targets:
        if target == "postgres":
            checks.append(check_postgres(settings))
        elif target == "bigquery":
            checks.append(check_bigquery(settings))
        else:
            raise ConfigError(f"unknown target {target!r}; expected postgres or bigquery")
    return checks


def require_fresh(checks: Sequence[MartCheck]) -> None:
    """Raise :class:`MartCheckError` when any check found a problem."""
    failed = [check for check in checks if not check.ok]
    if failed:
        # The problems themselves are in each check's own line, printed before this one.
        targets = ", ".join(c.target for c in failed)
        raise MartCheckError(
            f"the marts do not match the raw area on {targets} (`salesmart transform` builds"
            " them again from it)"
        )
