"""Real dbt against real PostgreSQL: the sample file's marts, masking, idempotence, indexes,
and a broken invariant failing the build."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from common.config import Settings, build_settings
from common.masking import mask
from common.pg import connect, parse_dsn
from common.process import stopped_by_signals
from pipeline.ingest import ingest_postgres
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.transform import TransformError, TransformResult, run_dbt
from tests.conftest import SAMPLE_CSV, create_database


def query(settings: Settings, sql: str) -> list[list[Any]]:
    conn = connect(settings.database_url)
    try:
        return [list(row) for row in conn.run(sql)]
    finally:
        conn.close()


def index_plan(settings: Settings, sql: str, **params: Any) -> str:
    """PostgreSQL's plan for ``sql`` where an index can serve at all (no sequential scans)."""
    conn = connect(settings.database_url)
    try:
        conn.run("SET enable_seqscan = off")
        return "\n".join(row[0] for row in conn.run(f"EXPLAIN {sql}", **params))
    finally:
        conn.close()


def loaded_settings(server: EmbeddedPostgres, **env: str) -> Settings:
    """A new database with the sample file ingested."""
    dsn = create_database(server)
    settings = build_settings({**os.environ, "SALESMART_DATABASE_URL": dsn, **env})
    conn = connect(dsn)
    try:
        ingest_postgres(conn, SAMPLE_CSV, settings)
    finally:
        conn.close()
    return settings


@dataclasses.dataclass
class Built:
    settings: Settings
    work_dir: Path
    result: TransformResult


@pytest.fixture(scope="module")
def built(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    settings = loaded_settings(pg_server)
    work_dir = tmp_path_factory.mktemp("dbt-pg")
    yield Built(settings, work_dir, run_dbt("postgres", settings, work_dir=work_dir))


def test_build_reports_models_and_tests(built: Built) -> None:
    result = built.result
    assert result.success
    assert result.models == 3  # stg_transactions, pg_sales, summary_sales (no fact_sales)
    assert result.data_tests >= 15
    assert result.unit_tests == 6
    assert result.failed == ()
    assert "3 models" in result.summary()
    assert (built.work_dir / "target" / "run_results.json").exists()


def test_summary_sales_for_the_sample(built: Built) -> None:
    rows = query(
        built.settings,
        "SELECT product, sale_month::text, total_amount, total_quantity, avg_price,"
        " transaction_count FROM public.summary_sales ORDER BY total_amount DESC, product",
    )
    assert rows == [
        ["Halal Laptop", "2023-10-01", Decimal("1999.98"), 2, Decimal("999.99"), 1],
        ["Halal Keyboard", "2023-10-01", Decimal("249.95"), 5, Decimal("49.99"), 1],
        ["Halal Mouse", "2023-10-01", Decimal("249.90"), 10, Decimal("24.99"), 1],
    ]
    types = dict(
        query(
            built.settings,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'summary_sales'",
        )
    )
    assert types == {
        "product": "text",
        "sale_month": "date",
        "total_amount": "numeric",
        "total_quantity": "bigint",
        "avg_price": "numeric",
        "transaction_count": "bigint",
    }


def test_pg_sales_has_masked_ids_only(built: Built) -> None:
    rows = query(
        built.settings,
        "SELECT transaction_id, product, sale_date::text, price, quantity, amount"
        " FROM public.pg_sales ORDER BY sale_date",
    )
    key = built.settings.pii_key
    assert rows == [
        [mask("T001", key), "Halal Laptop", "2023-10-01", Decimal("999.99"), 2, Decimal("1999.98")],
        [mask("T002", key), "Halal Mouse", "2023-10-02", Decimal("24.99"), 10, Decimal("249.90")],
        [mask("T003", key), "Halal Keyboard", "2023-10-03", Decimal("49.99"), 5, Decimal("249.95")],
    ]
    assert all(len(row[0]) == 12 for row in rows)
    # The clear ids stay in raw: no column of any mart or staging relation holds them.
    leaks = query(
        built.settings,
        "SELECT count(*) FROM staging.stg_transactions WHERE transaction_id LIKE 'T00%'"
        " UNION ALL SELECT count(*) FROM public.pg_sales WHERE transaction_id LIKE 'T00%'",
    )
    assert leaks == [[0], [0]]


def test_relations_live_in_their_schemas(built: Built) -> None:
    relations = query(
        built.settings,
        "SELECT table_schema, table_name, table_type FROM information_schema.tables"
        " WHERE table_schema IN ('public', 'staging') ORDER BY 1, 2",
    )
    assert relations == [
        ["public", "pg_sales", "BASE TABLE"],
        ["public", "summary_sales", "BASE TABLE"],
        ["staging", "stg_transactions", "VIEW"],
    ]


def indexes(settings: Settings) -> dict[str, str]:
    return dict(
        query(
            settings,
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' ORDER BY indexname",
        )
    )


def test_trend_indexes_serve_the_trends_query(built: Built) -> None:
    found = indexes(built.settings)
    assert set(found) == {
        "pg_sales_transaction_id_idx",
        "summary_sales_grain_idx",
        "summary_sales_month_amount_idx",
        "summary_sales_amount_idx",
        "summary_sales_product_prefix_idx",
    }
    assert "(sale_month, total_amount DESC, product)" in found["summary_sales_month_amount_idx"]
    assert "text_pattern_ops" in found["summary_sales_product_prefix_idx"]
    assert "UNIQUE" in found["summary_sales_grain_idx"]
    # A product-prefix filter (as trends_pg writes it) can use the prefix index.
    plan = index_plan(
        built.settings,
        "SELECT * FROM public.summary_sales WHERE starts_with(product, :p)"
        " ORDER BY total_amount DESC, product LIMIT 10",
        p="Halal M",
    )
    assert "summary_sales_product_prefix_idx" in plan


def test_products_sort_by_their_bytes_as_on_bigquery(built: Built) -> None:
    # Whatever the database's collation (en_US on a managed server puts "Halal apple" before
    # "Halal Banana"; BigQuery, the reverse), the trends APIs page ties alike on both.
    (collation,) = query(
        built.settings,
        "SELECT collation_name FROM information_schema.columns"
        " WHERE table_name = 'summary_sales' AND column_name = 'product'",
    )
    assert collation == ["C"]
    plan = index_plan(
        built.settings,
        "SELECT * FROM public.summary_sales ORDER BY total_amount DESC, product LIMIT 10",
    )
    assert "summary_sales_amount_idx" in plan and "Sort" not in plan, plan  # still indexed


def test_rerun_is_idempotent(built: Built) -> None:
    def snapshot() -> tuple[Any, ...]:
        return (
            query(built.settings, "SELECT * FROM public.summary_sales ORDER BY product"),
            query(built.settings, "SELECT * FROM public.pg_sales ORDER BY transaction_id"),
            indexes(built.settings),
        )

    before = snapshot()
    again = run_dbt("postgres", built.settings, work_dir=built.work_dir)
    assert again.success
    assert (again.models, again.tests) == (built.result.models, built.result.tests)
    assert snapshot() == before
    # No backup or intermediate relations are left behind.
    leftovers = query(
        built.settings,
        "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('public', 'staging') AND relname LIKE '%dbt%'",
    )
    assert leftovers == []


def built_with_sales(
    pg_server: EmbeddedPostgres, work: Path, txid: str, product: str, price: str, count: int
) -> Settings:
    """The sample plus ``count`` sales of one product on 2024-03-15 put straight into raw
    (SQL expressions of ``n``, 1..count), then a dbt build that must pass."""
    settings = loaded_settings(pg_server)
    conn = connect(settings.database_url)
    try:
        conn.run(
            "INSERT INTO raw.transactions (transaction_id, masked_transaction_id, product,"
            " price, quantity, sale_date, load_id, source_line)"
            f" SELECT {txid}, lpad(to_hex(n), 12, '0'), {product}, {price}, 1,"
            " DATE '2024-03-15', (SELECT max(load_id) FROM raw.loads), n"
            " FROM generate_series(1, CAST(:count AS integer)) AS n",
            count=count,
        )
    finally:
        conn.close()
    result = run_dbt("postgres", settings, work_dir=work)
    assert result.success and not result.failed, result.summary()
    return settings


def test_a_month_of_many_sales_passes_the_average_price_check(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """avg_price x count never exceeds the total (avg_price is cut after 9 decimals; when it
    was rounded, 6,000 valid sales of one product in one month failed a fixed 1e-6
    tolerance, found by a review)."""
    settings = built_with_sales(
        pg_server,
        tmp_path,
        "'R' || n",
        "'Halal Rice'",
        "CASE WHEN n <= 2000 THEN 10.02 ELSE 10.00 END",
        6000,
    )
    assert query(
        settings,
        "SELECT transaction_count, avg_price::text FROM summary_sales WHERE product = 'Halal Rice'",
    ) == [[6000, "10.006666666"]]


def test_the_average_price_is_exact_to_nine_decimals_for_large_prices(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """PostgreSQL's own AVG divides with about 20 significant digits: for these prices it
    gives 666666666666669.9933 where the exact mean is 666666666666669.993333333..."""
    settings = built_with_sales(
        pg_server,
        tmp_path,
        "'B' || n",
        "'Halal Big'",
        "(ARRAY[999999999999999.99, 999999999999999.98, 10.01])[n]",
        3,
    )
    assert query(
        settings,
        "SELECT avg_price::text FROM summary_sales WHERE product = 'Halal Big'",
    ) == [["666666666666669.993333333"]]


def test_a_broken_invariant_fails_the_build(pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    settings = loaded_settings(pg_server)
    load_id = query(settings, "SELECT max(load_id) FROM raw.loads")[0][0]

    def slip_in(transaction_id: str, masked: str, line: int) -> None:
        """A row put into raw behind the loader's back."""
        conn = connect(settings.database_url)
        try:
            conn.run(
                "INSERT INTO raw.transactions (transaction_id, masked_transaction_id, product,"
                " price, quantity, sale_date, load_id, source_line) VALUES"
                " (:t, :m, 'Halal Tea', 12.50, 1, '2023-11-03', :l, :line)",
                t=transaction_id,
                m=masked,
                l=load_id,
                line=line,
            )
        finally:
            conn.close()

    # A second transaction whose masked id is T001's: 48 bits do collide now and then
    # (even odds near 20M transactions), so it is a warning, and the marts are built.
    slip_in("X2", mask("T001", settings.pii_key), 91)
    result = run_dbt("postgres", settings, work_dir=tmp_path)
    assert result.success and result.warnings == 2, result.summary()  # stg and pg_sales
    assert query(settings, "SELECT count(*) FROM pg_sales WHERE product = 'Halal Tea'") != [[0]]

    # A clear id where the masked one belongs stops the build.
    slip_in("X1", "X1", 90)
    with pytest.raises(TransformError) as caught:
        run_dbt("postgres", settings, work_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("dbt build on postgres 1 of ")
    assert "test matches_pattern_stg_transactions_transaction_id" in message
    assert "unique_stg_transactions_transaction_id" not in message
    assert "(fail, 1 row)" in message
    assert parse_dsn(settings.database_url).password not in message
    # The marts downstream of the failing test were skipped, not rebuilt from bad rows.
    assert query(settings, "SELECT count(*) FROM pg_sales WHERE transaction_id = 'X1'") == [[0]]


# Each breaks one loading rule, so a warning for all of them means every rule is checked.
RULE_BREAKERS = [
    ("Not Halal", "12.50", 1),  # the product prefix
    ("halal Tea", "12.50", 1),  # ... which is case-sensitive
    ("Halal Tea", "9.99", 1),  # below min_price
    ("Halal Tea", "12.505", 1),  # more than max_decimals
    ("Halal Tea", "12.50", 101),  # above max_quantity
]


def test_rows_no_loader_accepts_are_a_named_warning(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Rows put into raw behind the loader's back, each breaking one configured loading rule
    (found by an audit: the build and check-marts passed in silence). They warn, naming the
    test, and do not stop the build: rows loaded under earlier thresholds stay valid."""
    settings = loaded_settings(pg_server)
    baseline = run_dbt("postgres", settings, work_dir=tmp_path)
    assert not any("loading_rules" in warned for warned in baseline.warned)
    conn = connect(settings.database_url)
    try:
        for n, (product, price, quantity) in enumerate(RULE_BREAKERS):
            conn.run(
                "INSERT INTO raw.transactions (transaction_id, masked_transaction_id, product,"
                " price, quantity, sale_date, load_id, source_line) VALUES (:t, :m, :p, :price,"
                " :q, '2023-11-03', (SELECT max(load_id) FROM raw.loads), :line)",
                t=f"SLIPPED{n}",
                m=mask(f"SLIPPED{n}", settings.pii_key),
                p=product,
                price=Decimal(price),
                q=quantity,
                line=90 + n,
            )
    finally:
        conn.close()
    result = run_dbt("postgres", settings, work_dir=tmp_path)
    assert result.success
    assert result.warnings == baseline.warnings + 1, result.summary()
    warned = f"test stg_transactions_follow_the_loading_rules (warn, {len(RULE_BREAKERS)} rows)"
    assert warned in result.warned and warned in result.summary()


def test_bad_raw_values_stop_the_build_before_any_mart_changes(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """A row no loader accepts (quantity 0), put into raw with its check dropped: the
    staging view's test stops the build, so pg_sales and summary_sales keep the previous
    build. A mart's own test runs only after dbt has replaced the mart (found by an audit:
    the trends API then served total_quantity 0)."""
    settings = built_with_sales(pg_server, tmp_path, "'N' || n", "'Halal Rice'", "10.00", 1)
    conn = connect(settings.database_url)
    try:
        conn.run("ALTER TABLE raw.transactions DROP CONSTRAINT transactions_quantity_check")
        conn.run("UPDATE raw.transactions SET quantity = 0 WHERE product = 'Halal Rice'")
    finally:
        conn.close()
    with pytest.raises(TransformError, match="stg_transactions_values_are_valid"):
        run_dbt("postgres", settings, work_dir=tmp_path)
    assert query(settings, "SELECT quantity FROM pg_sales WHERE product = 'Halal Rice'") == [[1]]
    assert query(
        settings, "SELECT total_quantity FROM summary_sales WHERE product = 'Halal Rice'"
    ) == [[1]]


def test_an_interrupted_build_lets_dbt_cancel_its_queries(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Ctrl-C mid-build (raised here by the progress callback at dbt's first node, inside
    the command's signal handling as in ``salesmart transform``): dbt is asked to stop as
    by Ctrl-C, cancels the queries it has running and ends on its own, as its log shows.
    It used to be SIGKILLed at once, leaving its queries to run on in the warehouse."""
    settings = loaded_settings(pg_server)

    def interrupt_at_the_first_node(line: str) -> None:
        if " START " in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), stopped_by_signals():
        run_dbt("postgres", settings, work_dir=tmp_path, on_line=interrupt_at_the_first_node)
    log = (tmp_path / "logs" / "dbt.log").read_text()
    assert "KeyboardInterrupt" in log  # dbt saw the interruption as Ctrl-C ...
    ending = log.splitlines()[-5:]  # ... and ended by itself (a killed dbt writes none)
    assert any("Command `dbt build` failed" in line for line in ending), ending


def test_a_password_given_only_in_pgpassword_reaches_dbt(
    pg_server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README names PGPASSWORD as a source of the database password. dbt's profile
    always hands libpq one, and libpq reads PGPASSWORD only when none is given (an empty
    one too): `transform` and `up` failed at dbt ("no password supplied") where every other
    command connected."""
    settings = loaded_settings(pg_server)
    dsn = parse_dsn(settings.database_url)
    assert dsn.password  # the server checks passwords (scram-sha-256)
    without = settings.database_url.replace(f":{quote(dsn.password, safe='')}@", "@", 1)
    assert parse_dsn(without).password == ""
    monkeypatch.setenv("PGPASSWORD", dsn.password)
    lines: list[str] = []
    result = run_dbt(
        "postgres",
        build_settings({**os.environ, "SALESMART_DATABASE_URL": without}),
        command="run",
        select="+summary_sales",
        work_dir=tmp_path,
        on_line=lines.append,
    )
    assert result.success, lines
    assert not any(dsn.password in line for line in lines)


def test_a_long_reader_fails_the_swap_instead_of_stalling_every_reader(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """dbt's rename of a rebuilt mart queued for ACCESS EXCLUSIVE behind a long report, and
    every later reader queued behind it: trends_pg and the dashboard answered 503 for as
    long as the report ran (a resilience audit). Now dbt's lock waits are bounded below the
    functions' statement timeout, and the build fails instead."""
    import threading

    from common.db import STATEMENT_TIMEOUT_MS

    settings = loaded_settings(pg_server)
    run_dbt("postgres", settings, work_dir=tmp_path)
    mart = f"{settings.mart_schema}.summary_sales"
    report = connect(settings.database_url)  # a long report, holding its ACCESS SHARE
    report.run("BEGIN")
    report.run(f"SELECT count(*) FROM {mart}")
    outcome: list[BaseException | TransformResult] = []

    def build() -> None:
        try:
            outcome.append(run_dbt("postgres", settings, work_dir=tmp_path))
        except BaseException as exc:  # kept for the assertion below
            outcome.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    reader = connect(settings.database_url)  # what a function's pool connection does
    reader.run(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    reads = 0
    try:
        while builder.is_alive():
            assert reader.run(f"SELECT count(*) FROM {mart}")[0][0] > 0  # never cancelled
            reads += 1
            builder.join(0.2)
    finally:
        reader.close()
        report.run("ROLLBACK")
        report.close()
    assert reads > 0
    assert len(outcome) == 1 and isinstance(outcome[0], TransformError), outcome
    assert "lock timeout" in str(outcome[0]), outcome[0]
    # With the report gone, the same build swaps its marts in.
    assert run_dbt("postgres", settings, work_dir=tmp_path).success
